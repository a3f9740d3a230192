"""Records of configurations whose estimates follow a known line per cluster."""

from __future__ import annotations

import numpy as np

from earlyexit.formats import Estimate
from earlyexit.validation import Config, ConfigResult, MeasuredSummary

LINES = {"edge-only": (0.73, 0.0004), "multi-tier": (0.98, 0.002), "cloud": (1.05, -0.003)}


def _est(latency_s: float, n: int, accuracy: float = 0.9) -> Estimate:
    return Estimate(latency_s, accuracy, tuple([1.0 / n] * n),
                    {"compute": latency_s, "serialize": 0.0, "transmit": 0.0,
                     "propagate": 0.0, "overhead": 0.0})  # fmt: skip


def cluster_records(source: int = 0) -> list[ConfigResult]:
    """Six configurations per cluster; ``exact`` estimates 1 % above ``portend``'s."""
    rng = np.random.default_rng(7)
    tiers = {"edge-only": [(source,)], "multi-tier": [(0, 1), (0, 2), (1, 2), (0, 1, 2)],
             "cloud": [(t,) for t in range(3) if t != source]}  # fmt: skip
    records = []
    for name, (beta, icpt) in LINES.items():
        for j in range(6):
            d = tiers[name][j % len(tiers[name])]
            m = float(rng.uniform(0.003, 0.12))
            e = beta * m + icpt + float(rng.normal(0, 2e-4))
            records.append(ConfigResult(
                Config(0.5, tuple(range(1, len(d) + 1)), d),
                MeasuredSummary(m, 0.9, tuple([1.0 / len(d)] * len(d))),
                {"portend": _est(e, len(d)), "exact": _est(e * 1.01, len(d))},
            ))  # fmt: skip
    return records
