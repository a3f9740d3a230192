"""The two estimators of docs/spec.md: exit fractions E_k, stay fractions S_k and accuracy.

- ``portend`` is the paper's, exactly: E_1 = ER_{P_1}; E_k = ER_{P_k} - ER_{P_{k-1}}
  (1 < k < L); E_L = 1 - sum_{a<L} E_a; S_k = 1 - sum_{a<=k} E_a;
  Acc = sum_k A_{P_k} E_k. Nothing is clamped (E_k < 0 is possible when exit
  rates are not nested).
- ``exact`` replays the per-sample record: a sample exits at the first used
  branch whose entropy is < T, the last used branch otherwise.

Cut points ``cuts`` are docs/spec.md's P, 1-based last blocks, strictly increasing.
A threshold of 0 means no early exit (entropies are >= 0), even when the
profile does not list T = 0.

Example:
    >>> from earlyexit.planner.synthetic import synthetic_profile
    >>> p = synthetic_profile(6, ("reference",), num_samples=50)
    >>> E, S, acc = exit_fractions(p, 0.5, [2, 6], "portend")
    >>> len(E), S[-1]
    (2, 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from earlyexit.formats import Profile

__all__ = [
    "ESTIMATORS",
    "check_estimator",
    "threshold_index",
    "portend_fractions",
    "exact_fractions",
    "exit_fractions",
    "check_cuts",
]

ESTIMATORS: tuple[str, ...] = ("portend", "exact")
THRESHOLD_ATOL = 1e-9


def check_estimator(estimator: str, profile: Profile | None = None) -> str:
    """Validate an estimator name (and, for ``exact``, that the profile has samples).

    Raises:
        ValueError: unknown name, or ``exact`` without ``profile.samples``.

    Example:
        >>> check_estimator("portend")
        'portend'
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator: expected one of {list(ESTIMATORS)}, got {estimator!r}")
    if estimator == "exact" and profile is not None and profile.samples is None:
        raise ValueError(
            "estimator 'exact' needs a per-sample record (profile.samples: entropy and "
            "correct, N x S); this profile has none, use estimator='portend'"
        )
    return estimator


def threshold_index(profile: Profile, threshold: float) -> int | None:
    """Index of ``threshold`` in ``profile.thresholds`` (within 1e-9), or None.

    Example:
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> threshold_index(synthetic_profile(3, ("reference",)), 0.3)
        3
    """
    hits = np.flatnonzero(np.abs(profile.thresholds - float(threshold)) <= THRESHOLD_ATOL)
    return int(hits[0]) if hits.size else None


def check_cuts(cuts: Sequence[int], num_blocks: int) -> list[int]:
    """Validate a partitioning P (1-based, strictly increasing, <= N).

    Raises:
        ValueError / TypeError: naming what is wrong.

    Example:
        >>> check_cuts([3, 5], 10)
        [3, 5]
    """
    if isinstance(cuts, (str, bytes)) or not isinstance(cuts, Sequence):
        raise TypeError(f"partitions: expected a list of last blocks (1-based), got {cuts!r}")
    out = []
    for i, c in enumerate(cuts):
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
            raise TypeError(f"partitions[{i}]: expected an integer block index, got {c!r}")
        out.append(int(c))
    if not out:
        raise ValueError("partitions: needs at least one partition (its last block)")
    if (
        out[0] < 1
        or out[-1] > num_blocks
        or any(b <= a for a, b in zip(out, out[1:], strict=False))
    ):
        raise ValueError(
            f"partitions: last blocks must be strictly increasing in 1..{num_blocks}, got {out}"
        )
    return out


def portend_fractions(
    exit_rate: np.ndarray, cuts: Sequence[int]
) -> tuple[list[float], list[float]]:
    """PORTEND's E_k and S_k, exactly as docs/spec.md writes them (no clamping).

    Args:
        exit_rate: ER_i^T for i = 1..N at one threshold (0-based array of N).
        cuts: P_1 < .. < P_L (1-based).

    Returns:
        (E, S), two lists of L floats.

    Example:
        >>> portend_fractions(np.array([0.2, 0.5, 0.4]), [1, 2, 3])
        ([0.2, 0.3, 0.5], [0.8, 0.5, 0.0])
    """
    n_parts = len(cuts)
    er = [float(exit_rate[c - 1]) for c in cuts]
    e: list[float] = []
    for k in range(n_parts - 1):
        e.append(er[0] if k == 0 else er[k] - er[k - 1])
    e.append(1.0 - sum(e))
    s = [1.0 - sum(e[: k + 1]) for k in range(n_parts)]
    s[-1] = 0.0  # 1 - sum of all E is 0 by construction; avoid a rounding residue
    return e, s


def exact_fractions(
    entropy: np.ndarray, correct: np.ndarray, threshold: float, cuts: Sequence[int]
) -> tuple[list[float], list[float], float]:
    """Replay the per-sample record: E_k, S_k and accuracy counted over samples.

    Args:
        entropy: N x S normalized entropies.
        correct: N x S booleans.
        threshold: T; a sample exits at the first used branch with entropy < T.
        cuts: P (1-based).

    Returns:
        (E, S, accuracy).

    Example:
        >>> ent = np.array([[0.1, 0.9], [0.5, 0.2]]); cor = np.array([[1, 0], [0, 1]], bool)
        >>> exact_fractions(ent, cor, 0.3, [1, 2])
        ([0.5, 0.5], [0.5, 0.0], 1.0)
    """
    s_count = entropy.shape[1]
    remaining = np.ones(s_count, dtype=bool)
    e: list[float] = []
    hits = 0
    for k, c in enumerate(cuts):
        if k < len(cuts) - 1:
            here = remaining & (entropy[c - 1] < threshold)
        else:
            here = remaining
        e.append(int(here.sum()) / s_count)
        hits += int((here & correct[c - 1]).sum())
        remaining = remaining & ~here
    s = [1.0 - sum(e[: k + 1]) for k in range(len(cuts))]
    s[-1] = 0.0
    return e, s, hits / s_count


def exit_fractions(
    profile: Profile, threshold: float, cuts: Sequence[int], estimator: str = "portend"
) -> tuple[list[float], list[float], float]:
    """E_k, S_k and accuracy of a configuration with the chosen estimator.

    Args:
        profile: the profile.
        threshold: T, one of ``profile.thresholds`` for ``portend`` (or 0: no
            early exit); any value in [0, 1] for ``exact``.
        cuts: P (1-based last blocks).
        estimator: ``"portend"`` or ``"exact"``.

    Returns:
        (E, S, accuracy).

    Raises:
        ValueError: bad estimator, threshold or cuts.

    Example:
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> exit_fractions(synthetic_profile(4, ("reference",)), 0.0, [2, 4])[0]
        [0.0, 1.0]
    """
    check_estimator(estimator, profile)
    cuts = check_cuts(cuts, profile.num_blocks)
    t = float(threshold)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"threshold: must be in [0, 1], got {t}")
    if estimator == "exact" and profile.samples is not None:  # check_estimator ensured samples
        return exact_fractions(profile.samples.entropy, profile.samples.correct, t, cuts)
    idx = threshold_index(profile, t)
    if idx is None:
        if t != 0.0:
            raise ValueError(
                f"threshold {t}: the portend estimator needs one of the profile's "
                f"thresholds {profile.thresholds.tolist()} (or 0, no early exit)"
            )
        er = np.zeros(profile.num_blocks)
    else:
        er = profile.exit_rate[idx]
    e, s = portend_fractions(er, cuts)
    acc = sum(float(profile.branch_accuracy[c - 1]) * ek for c, ek in zip(cuts, e, strict=False))
    return e, s, acc
