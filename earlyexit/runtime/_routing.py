"""Routes: the addresses a message visits from one tier to another, over emulated links."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["route"]


def route(
    a: int, b: int, endpoint: str, up: Sequence[str] = (), down: Sequence[str] = ()
) -> list[str]:
    """The addresses a message visits from tier ``a`` to an endpoint on tier ``b``.

    Args:
        a, b: tiers.
        endpoint: the receiving socket's address.
        up, down: ``up[j]`` / ``down[j]`` is the address of link ``j`` in the
            direction of higher / lower tiers; empty when links are not emulated.

    Returns:
        The route, ending with ``endpoint``.

    Example:
        >>> route(0, 2, "E", up=["u0", "u1"], down=["d0", "d1"])
        ['u0', 'u1', 'E']
        >>> route(2, 0, "E", up=["u0", "u1"], down=["d0", "d1"])
        ['d1', 'd0', 'E']
    """
    if a == b or not (up or down):
        return [endpoint]
    if a < b:
        return [up[j] for j in range(a, b)] + [endpoint]
    return [down[j] for j in range(a - 1, b - 1, -1)] + [endpoint]
