"""Synthetic profiles, for tests, benchmarks and what-if studies without a model.

The numbers are plausible, not measured: per-block compute times of a
ResNet-like backbone, shrinking feature maps, and per-sample entropies from a
"difficulty" per sample, so that exit rates and accuracies are consistent with
the per-sample record (the ``exact`` estimator can replay them).

Example:
    >>> p = synthetic_profile(num_blocks=10, devices=("reference",), num_samples=100)
    >>> p.exit_rate.shape, p.samples.num_samples
    ((11, 10), 100)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from earlyexit.formats import DeviceProfile, Profile, ProfileSamples

__all__ = ["synthetic_profile", "DEFAULT_DEVICE_SPEEDS"]

# relative compute time of each device against "reference" (bigger = slower)
DEFAULT_DEVICE_SPEEDS: dict[str, float] = {
    "reference": 1.0,
    "a1.medium": 12.0,
    "m4.large": 4.0,
    "g4dn.xlarge": 1.0,
}


def synthetic_profile(
    num_blocks: int = 10,
    devices: Sequence[str] | Mapping[str, float] = (
        "a1.medium",
        "m4.large",
        "g4dn.xlarge",
        "reference",
    ),
    *,
    thresholds: int | Sequence[float] = 11,
    num_samples: int = 0,
    num_classes: int = 10,
    seed: int = 0,
    model: str = "synthetic",
    dataset: str = "synthetic",
    hop_s: float | None = None,
) -> Profile:
    """Make a consistent synthetic profile.

    Args:
        num_blocks: N.
        devices: device names (speeds from :data:`DEFAULT_DEVICE_SPEEDS`, else
            1.0) or a mapping name -> relative slowness.
        thresholds: how many evenly spaced thresholds in [0, 1], or the list.
        num_samples: if > 0, store a per-sample record of that many samples
            (exit rates and accuracies are then computed from it exactly).
        num_classes: C.
        seed: random seed.
        hop_s: the runtime's cost per hand-off of every device, scaled like the
            (de)serialization times by the square root of its slowness; None
            (the default) leaves it out, as in profiles made without it.

    Returns:
        A valid :class:`~earlyexit.formats.Profile`.

    Raises:
        ValueError: ``num_blocks < 1``, no devices, or a negative ``hop_s``.

    Example:
        >>> synthetic_profile(5, ("edge", "cloud")).devices.keys()
        dict_keys(['edge', 'cloud'])
    """
    if num_blocks < 1:
        raise ValueError(f"num_blocks: must be >= 1, got {num_blocks}")
    speeds = (
        dict(devices)
        if isinstance(devices, Mapping)
        else {d: DEFAULT_DEVICE_SPEEDS.get(d, 1.0) for d in devices}
    )
    if not speeds:
        raise ValueError("devices: needs at least one device")
    if hop_s is not None and not hop_s >= 0:
        raise ValueError(f"hop_s: must be >= 0 seconds (or None), got {hop_s!r}")
    rng = np.random.default_rng(seed)
    n = num_blocks
    if isinstance(thresholds, int):
        th = np.round(np.linspace(0.0, 1.0, thresholds), 10)
    else:
        th = np.asarray(thresholds, dtype=np.float64)

    # per-sample difficulty drives entropy (falls along depth) and correctness
    s_int = num_samples if num_samples > 0 else 2000
    depth = (np.arange(1, n + 1) / n)[:, None]
    difficulty = rng.beta(2.0, 2.0, size=(1, s_int))
    noise = rng.normal(0.0, 0.08, size=(n, s_int))
    entropy = np.clip(difficulty * (1.15 - 0.85 * depth) + 0.25 * (1 - depth) + noise, 0.0, 1.0)
    p_correct = np.clip(0.35 + 0.6 * depth**0.6 - 0.35 * difficulty * (1 - 0.5 * depth), 0.02, 0.99)
    correct = rng.random((n, s_int)) < p_correct
    exit_rate = (entropy[None, :, :] < th[:, None, None]).mean(axis=2)
    accuracy = correct.mean(axis=1)

    block_ms = rng.uniform(0.5, 1.5, size=n) * (1.0 + 0.5 * np.sin(np.arange(n))) ** 2 / 2 + 0.2
    csum = np.concatenate([[0.0], np.cumsum(block_ms)])
    a_idx, b_idx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    base = (csum[b_idx + 1] - csum[a_idx]) + 0.3  # + exit branch and entropy test
    input_bits = 32 * 32 * 3 * 32
    stage = np.minimum(np.arange(n) * 3 // n, 2)
    output_bits = (16 * 32 * 32 * 32 // (2**stage)).astype(np.int64)
    bits = np.concatenate([[input_bits], output_bits]).astype(np.float64)

    devs = {}
    for name, speed in speeds.items():
        jitter = rng.uniform(0.97, 1.03, size=(n, n))
        pt = np.where(b_idx >= a_idx, base * speed * jitter * 1e-3, np.nan)
        ser = (20e-6 + bits / 8 * 2e-9) * speed**0.5
        de = (15e-6 + bits / 8 * 1.5e-9) * speed**0.5
        devs[name] = DeviceProfile(
            pt,
            ser,
            de,
            10e-6 * speed**0.5,
            8e-6 * speed**0.5,
            {"host": "synthetic", "percentile": 50},
            hop_s=None if hop_s is None else float(hop_s) * speed**0.5,
        )
    samples = ProfileSamples(entropy, correct) if num_samples > 0 else None
    return Profile(
        model=model,
        dataset=dataset,
        num_blocks=n,
        num_classes=num_classes,
        input_bits=input_bits,
        output_bits=output_bits,
        result_bits=64 * 8,
        thresholds=th,
        branch_accuracy=accuracy,
        exit_rate=exit_rate,
        devices=devs,
        samples=samples,
        extra={"synthetic": {"seed": seed}},
    )
