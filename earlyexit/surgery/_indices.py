"""One normalizer for exit and cut indices, shared by heads, slicing and export."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["even_ends", "normalize_exits"]


def normalize_exits(
    exits: Iterable[int] | int | None, num_blocks: int, what: str = "exits"
) -> tuple[int, ...]:
    """Validate 1-based block numbers of exits (or cut points).

    Args:
        exits: ``None`` for every block, an int, or strictly increasing ints in
            ``1..num_blocks``; negative values count from the end (-1 is block N).
        num_blocks: N.
        what: the argument's name, for error messages.

    Returns:
        The exits as a tuple of strictly increasing positive ints.

    Raises:
        TypeError: if an entry is not an int.
        ValueError: if an entry is out of range, the list is empty or not
            strictly increasing.

    Example:
        >>> normalize_exits([2, -1], 10)
        (2, 10)
    """
    if exits is None:
        return tuple(range(1, num_blocks + 1))
    if isinstance(exits, int) and not isinstance(exits, bool):
        exits = [exits]
    try:
        values = list(exits)
    except TypeError:
        raise TypeError(f"{what} must be None, an int or a list of ints, got {exits!r}") from None
    if not values:
        raise ValueError(f"{what} must not be empty; valid block numbers are 1..{num_blocks}")
    out: list[int] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{what} must hold ints, got {value!r} ({type(value).__name__})")
        block = value + num_blocks + 1 if value < 0 else value
        if not 1 <= block <= num_blocks:
            raise ValueError(
                f"{what}: block {value} is out of range; valid block numbers are 1..{num_blocks} "
                f"(or -1..-{num_blocks} from the end)"
            )
        out.append(block)
    if any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ValueError(f"{what} must be strictly increasing block numbers, got {values}")
    return tuple(out)


def even_ends(count: int, parts: int) -> tuple[int, ...]:
    """Where ``parts`` runs of about equal length end when ``count`` items are grouped.

    The ends are exclusive positions ``1..count``, strictly increasing, the last
    one ``count``; with ``parts >= count`` every item ends a run. Merging blocks
    into ``max_blocks`` and thinning cut points to ``max_blocks`` both use them.

    Args:
        count: how many items (blocks or cut points), >= 1.
        parts: how many runs at most, >= 1.

    Returns:
        The exclusive end of each run.

    Example:
        >>> even_ends(10, 4)
        (2, 5, 8, 10)
    """
    parts = min(parts, count)
    return tuple(sorted({round((k + 1) * count / parts) for k in range(parts)}))
