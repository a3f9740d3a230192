"""tools/final_accuracy.py, the study of final models' accuracy (docs/final-accuracy.md).

The rule and the statistics are checked on hand-made arrays; a 1-plan
miniature of the whole study (a few fine-tuning steps, 256 test images) is slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests._scripts import load_script


@pytest.fixture(scope="module")
def tool():
    return load_script("tools/final_accuracy.py")


def test_replay_leaves_at_the_first_confident_exit_else_the_last(tool):
    # 3 blocks x 4 samples
    entropy = np.array([[0.05, 0.9, 0.9, 0.2], [0.9, 0.05, 0.9, 0.9], [0.9, 0.9, 0.9, 0.01]])
    correct = np.array([[1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]], dtype=bool)
    # exits 1 and 3 at T = 0.1: samples 0 leave at 1 (right), 1-3 at 3 (wrong, right, wrong)
    assert tool.replay(entropy, correct, [1, 3], 0.1) == pytest.approx(2 / 4)
    # exits 2 and 3 at T = 0.1: sample 1 leaves at 2 (right); 0, 2, 3 at 3 (wrong, right, wrong)
    assert tool.replay(entropy, correct, [2, 3], 0.1) == pytest.approx(2 / 4)
    # T = 0: nobody leaves early, the last exit answers
    assert tool.replay(entropy, correct, [1, 2], 0.0) == pytest.approx(2 / 4)


def test_summary_bias_and_mae_are_in_points(tool):
    recs = [
        {"finetuned": {"accuracy": 0.90}, "selected": {"accuracy": 0.89},
         "predicted": {"portend": 0.88, "exact": 0.91}, "corrected": {"portend": 0.9, "exact": 0.9}},
        {"finetuned": {"accuracy": 0.80}, "selected": {"accuracy": 0.80},
         "predicted": {"portend": 0.79, "exact": 0.78}, "corrected": {"portend": 0.8, "exact": 0.81}},
    ]  # fmt: skip
    s = tool.summarize(recs)
    assert s["plans"] == 2
    assert s["predicted.portend vs finetuned"]["bias_points"] == pytest.approx(-1.5)
    assert s["predicted.exact vs finetuned"]["bias_points"] == pytest.approx(-0.5)
    assert s["predicted.exact vs finetuned"]["mae_points"] == pytest.approx(1.5)
    assert s["corrected.exact vs finetuned"]["max_abs_points"] == pytest.approx(1.0)
    assert s["predicted.portend vs selected"]["bias_points"] == pytest.approx(-1.0)


@pytest.mark.slow
def test_a_one_plan_miniature_of_the_study(tool, tmp_path):
    from earlyexit.formats import Profile
    from earlyexit.planner.estimators import exit_fractions

    if not Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("needs Debian's dataset-fashion-mnist (CI installs it)")
    out = tmp_path / "study"
    assert (
        tool.main(["--out", str(out), "--plans", "1", "--train-batches", "2", "--limit", "256"])
        == 0
    )
    result = json.loads((out / "final_accuracy.json").read_text())
    (rec,) = result["plans"]
    assert len(rec["cuts"]) >= 2 and rec["threshold"] > 0 and rec["test_samples"] == 256
    prof = Profile.load(out / "profile.json")
    for est in ("portend", "exact"):
        expected = exit_fractions(prof, rec["threshold"], rec["cuts"], est)[2]
        assert rec["predicted"][est] == pytest.approx(expected)
    assert abs(sum(rec["finetuned"]["exit_fractions"]) - 1) < 1e-5
    err = 100 * (rec["predicted"]["exact"] - rec["finetuned"]["accuracy"])
    assert result["summary"]["predicted.exact vs finetuned"]["bias_points"] == pytest.approx(err)
    assert (out / "final_accuracy.png").is_file()
    assert not list(out.glob("plan-*/finetuned.pt"))  # fine-tuned weights are not kept
