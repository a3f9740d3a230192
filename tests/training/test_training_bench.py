"""The training benchmark runs and reports a sane ratio (a smoke test, not the measurement)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_training.py"


def test_bench_training_smoke() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--batch",
            "8",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--json",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    result = json.loads(out)
    assert result["exits"] == list(range(1, 11)) and result["batch"] == 8
    assert result["backbone_step_s"] > 0 and result["full_config_step_s"] > 0
    # the ratio is of the unrounded medians; the printed step times are rounded to 0.1 ms
    expected = result["full_config_step_s"] / result["backbone_step_s"]
    assert abs(result["ratio"] - expected) < 0.02 * expected + 0.01
