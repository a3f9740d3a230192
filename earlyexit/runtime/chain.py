"""The early-exit chain, written once: run partition k, leave if the entropy is below T, else go on.

Every part of earlyexit that chains partitions uses this module: the in-process
:meth:`~earlyexit.runtime.session.BundleSession.predict`, the tier worker
(one :func:`exit_step` per batch it receives), the export's verification of
every format and its accuracy report, and the synthetic model's reference.
numpy only (no torch, no ONNX Runtime), so a board runs it as it is.

A *runner* is ``run(x) -> (logits [n, C], entropy [n], features [n, ...] or
None)``; the last partition returns no features. The rule, per sample:

* partition ``k`` (0-based) runs on the samples that reached it, as one batch;
* a sample whose normalized entropy is below the threshold leaves with
  partition ``k``'s logits; the last partition takes every sample that reaches it;
* only the other samples' features go on to partition ``k + 1`` (the rows that
  left are not computed again: early exit skips real work).

The comparison is made in the entropy's own dtype (float32 for exported
partitions, as ``MultiExitModel.predict`` compares in torch), so that a sample
right at the threshold goes the same way everywhere.

Example:
    >>> from earlyexit.runtime.synthetic import SyntheticModel
    >>> m = SyntheticModel(num_partitions=3)
    >>> out = run_chain([m.runner(k) for k in range(3)], m.inputs(6), threshold=0.6)
    >>> out.logits.shape, out.exit_partition.shape
    ((6, 10), (6,))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "ChainResult",
    "PartitionRunner",
    "StepResult",
    "check_threshold",
    "exit_step",
    "first_exits",
    "leaves",
    "run_chain",
]

PartitionRunner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, "np.ndarray | None"]]
"""``run(x) -> (logits [n, C], normalized entropy [n], features [n, ...] or None)``."""


def check_threshold(threshold: Any) -> float:
    """Return ``threshold`` as a float after checking it is a number in [0, 1].

    Raises:
        TypeError: not a real number.
        ValueError: outside [0, 1] (or NaN).

    Example:
        >>> check_threshold(0.5)
        0.5
    """
    if isinstance(threshold, bool) or not isinstance(
        threshold, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"threshold must be a number in [0, 1], got {threshold!r}")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return float(threshold)


def leaves(entropy: np.ndarray, threshold: float, last: bool) -> np.ndarray:
    """Which samples leave at this exit: ``entropy < threshold``, or all at the last one.

    Args:
        entropy: ``[n]`` normalized entropies of one exit.
        threshold: T in [0, 1].
        last: whether this is the last partition's exit.

    Returns:
        A boolean mask ``[n]``.

    Example:
        >>> leaves(np.array([0.1, 0.9], np.float32), 0.5, last=False).tolist()
        [True, False]
    """
    entropy = np.asarray(entropy).reshape(-1)
    if last:
        return np.ones(entropy.shape[0], bool)
    if entropy.dtype.kind == "f":
        return entropy < entropy.dtype.type(threshold)
    return entropy < float(threshold)


class StepResult(NamedTuple):
    """One partition run on a batch, split into the samples that leave and those that go on.

    Attributes:
        logits: ``[n, C]`` of every sample of the batch.
        entropy: ``[n]`` of every sample of the batch.
        leave: indices (into the batch) of the samples that leave here.
        stay: indices of the samples that go on (empty at the last partition).
        features: the staying samples' features, ``[len(stay), ...]``, or None
            when nobody goes on.
    """

    logits: np.ndarray
    entropy: np.ndarray
    leave: np.ndarray
    stay: np.ndarray
    features: np.ndarray | None


_NOBODY = np.arange(0)
_NOBODY.flags.writeable = False
_EVERYONE: dict[int, np.ndarray] = {}  # n -> arange(n), read-only, for the batches seen


def _everyone(n: int) -> np.ndarray:
    idx = _EVERYONE.get(n)
    if idx is None:
        idx = np.arange(n)
        idx.flags.writeable = False
        if len(_EVERYONE) < 4096:
            _EVERYONE[n] = idx
    return idx


def exit_step(
    run: PartitionRunner,
    x: np.ndarray,
    threshold: float,
    last: bool,
    decide: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> StepResult:
    """Run one partition on a batch and apply the exit rule.

    Args:
        run: the partition's runner.
        x: ``[n, ...]`` its input.
        threshold: T.
        last: whether it is the last partition (every sample leaves).
        decide: another rule than ``entropy < T`` (an exit policy, not at the
            last partition): ``decide(logits, entropy)`` -> the boolean mask
            ``[n]`` of the samples that leave. None: the threshold.

    Returns:
        The :class:`StepResult`; when every sample leaves or every sample stays,
        no row is copied (and ``leave``/``stay`` are shared read-only indices).

    Raises:
        ValueError: a runner whose outputs do not match the batch, or a
            non-last partition that returns no features.
    """
    logits, entropy, features = run(x)
    if type(logits) is not np.ndarray:
        logits = np.asarray(logits)
    if type(entropy) is not np.ndarray or entropy.ndim != 1:
        entropy = np.asarray(entropy).reshape(-1)
    n = len(x)
    if logits.ndim != 2 or logits.shape[0] != n or entropy.shape[0] != n:
        raise ValueError(
            f"the partition returned logits {list(logits.shape)} and entropy "
            f"{list(entropy.shape)} for a batch of {n}; expected [{n}, C] and [{n}]"
        )
    if last:  # leaves() would say: everyone
        return StepResult(logits, entropy, _everyone(n), _NOBODY, None)
    if features is None:
        raise ValueError("a partition that is not the last must return features")
    mask = leaves(entropy, threshold, last) if decide is None else decide(logits, entropy)
    if mask.all():
        return StepResult(logits, entropy, _everyone(n), _NOBODY, None)
    feats = features if type(features) is np.ndarray else np.asarray(features)
    if not mask.any():
        return StepResult(logits, entropy, _NOBODY, _everyone(n), feats)
    stay = np.flatnonzero(~mask)
    return StepResult(logits, entropy, np.flatnonzero(mask), stay, feats[stay])


@dataclass(frozen=True)
class ChainResult:
    """Per-sample outcome of the early-exit chain, one row per input sample.

    Attributes:
        logits: ``[B, C]`` float32, the logits of the exit each sample took.
        entropy: ``[B]`` float32, its normalized entropy there.
        exit_partition: ``[B]`` int64, the 0-based partition whose exit it took.
        exit_block: ``[B]`` int64, the 1-based block of that exit (the
            partition number plus one when the blocks are unknown).

    It also reads like the dict that ``BundleSession.predict`` used to return:
    ``out["prediction"]``, ``out["exit_block"]`` and so on.
    """

    logits: np.ndarray
    entropy: np.ndarray
    exit_partition: np.ndarray
    exit_block: np.ndarray

    @property
    def prediction(self) -> np.ndarray:
        """``[B]`` int64, the predicted class (argmax of the logits)."""
        return self.logits.argmax(-1)

    def keys(self) -> tuple[str, ...]:
        """The field names, ``prediction`` included (dict-like access)."""
        return (*(f.name for f in fields(self)), "prediction")

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.keys():
            raise KeyError(f"{key!r}; a ChainResult has {', '.join(self.keys())}")
        return getattr(self, key)  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def to_dict(self) -> dict[str, np.ndarray]:
        """The fields and ``prediction`` as a dict of arrays."""
        return {k: self[k] for k in self.keys()}


def run_chain(
    runners: Sequence[PartitionRunner],
    x: np.ndarray,
    threshold: float,
    exit_blocks: Sequence[int] | None = None,
) -> ChainResult:
    """Chain partitions with per-sample early exit, in this process.

    Args:
        runners: one runner per partition, in order.
        x: ``[B, ...]`` the first partition's input.
        threshold: T in [0, 1].
        exit_blocks: the 1-based block of each partition's exit (default ``1..L``).

    Returns:
        The :class:`ChainResult`.

    Raises:
        TypeError, ValueError: a bad threshold, no runners, or a runner whose
            outputs do not match its batch.
    """
    threshold = check_threshold(threshold)
    if not runners:
        raise ValueError("run_chain needs at least one partition runner")
    blocks = np.asarray(
        range(1, len(runners) + 1) if exit_blocks is None else exit_blocks, np.int64
    )
    if blocks.shape != (len(runners),):
        raise ValueError(f"exit_blocks must give one block per runner, got {list(blocks)}")
    batch = len(x)
    logits_out: np.ndarray | None = None
    entropy_out = np.zeros(batch, np.float32)
    exit_part = np.full(batch, -1, np.int64)
    rows = np.arange(batch)  # which input sample each row of h is
    h: np.ndarray | None = x
    last = len(runners) - 1
    for k, run in enumerate(runners):
        step = exit_step(run, h, threshold, k == last)
        if logits_out is None:
            logits_out = np.zeros((batch, step.logits.shape[-1]), np.float32)
        gone = rows[step.leave]
        logits_out[gone] = step.logits[step.leave]
        entropy_out[gone] = step.entropy[step.leave]
        exit_part[gone] = k
        if step.features is None:
            break
        rows, h = rows[step.stay], step.features
    if logits_out is None:  # an empty batch
        logits_out = np.zeros((0, 0), np.float32)
    return ChainResult(logits_out, entropy_out, exit_part, blocks[np.maximum(exit_part, 0)])


def first_exits(entropy: np.ndarray, threshold: float) -> np.ndarray:
    """The exit each sample takes when every exit's entropy is known (forced through all).

    The same rule as :func:`run_chain`, read off ``[L, n]`` entropies at once:
    the first partition whose entropy is below T, the last one otherwise.

    Args:
        entropy: ``[L, n]``, row ``k`` the entropies at partition ``k``'s exit.
        threshold: T.

    Returns:
        ``[n]`` int64, the 0-based partition of each sample's exit.

    Example:
        >>> first_exits(np.array([[0.9, 0.1], [0.2, 0.8]], np.float32), 0.5).tolist()
        [1, 0]
    """
    entropy = np.asarray(entropy)
    if entropy.ndim != 2 or entropy.shape[0] < 1:
        raise ValueError(f"entropy must be [L, n] with L >= 1, got shape {list(entropy.shape)}")
    last = entropy.shape[0] - 1
    mask = np.stack([leaves(e, threshold, k == last) for k, e in enumerate(entropy)])
    return mask.argmax(0).astype(np.int64)
