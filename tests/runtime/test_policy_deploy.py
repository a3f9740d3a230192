"""Exit policies chosen at deploy/serve time, in live synthetic deployments (docs/load.md).

The threshold policy gives today's results exactly; the probabilities policy's
exit shares follow p; AdaEE in the first tier hears back about every sample
that went on, and every worker's policy reaches the client. A bad spec is
refused by ``serve`` in one line.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from earlyexit.cli import main
from earlyexit.runtime.deployment import deploy
from earlyexit.runtime.synthetic import SyntheticModel
from tests.test_cli_errors import write_bundle


def _reports(d, ready, seconds: float = 10.0) -> dict:
    """The client's policy reports once ``ready(reports)`` holds (heartbeats every 0.2 s)."""
    end = time.monotonic() + seconds
    while not ready(d.client.policies) and time.monotonic() < end:
        d.client.poll(0.05)
    return d.client.policies


@pytest.mark.slow
def test_the_threshold_policy_gives_todays_results_exactly():
    x = SyntheticModel(3).inputs(80, seed=4)
    ref = SyntheticModel(3).reference(x, 0.5)
    runs = []
    for policy in (None, "threshold", {"policy": "threshold"}):
        with deploy(synthetic={"num_partitions": 3}, threshold=0.5, policy=policy) as d:
            runs.append(d.run(x))
            reports = _reports(d, lambda r: len(r) == 3)
        assert d.client.feedback_address is None  # no feedback without AdaEE
        assert reports == {k: {"policy": "threshold", "threshold": 0.5} for k in range(3)}
    today = runs[0]  # no policy given: bit for bit what the named threshold policy gives
    assert [r.partition for r in today] == [f["partition"] for f in ref]
    for r, f in zip(today, ref, strict=True):  # in process, at batch 80: BLAS rounds apart
        np.testing.assert_allclose(r.logits, f["logits"], rtol=1e-5, atol=1e-5)
    for results in runs[1:]:
        for r, t in zip(results, today, strict=True):
            assert (r.id, r.partition, r.entropy) == (t.id, t.partition, t.entropy)
            assert r.logits.tobytes() == t.logits.tobytes()
    assert {r.partition for r in today} == {0, 1, 2}


@pytest.mark.slow
def test_the_probabilities_policy_exits_at_the_shares_p():
    p = np.array([0.3, 0.5, 0.2])
    n = 400
    spec = {"policy": "probabilities", "p": p.tolist(), "seed": 7}
    with deploy(synthetic={"num_partitions": 3}, threshold=0.5, policy=spec, max_batch=4,
                batch_timeout_s=0.002) as d:  # fmt: skip
        results = d.run(d.inputs(n, seed=2))
        reports = _reports(d, lambda r: len(r) == 3)
    shares = np.bincount([r.partition for r in results], minlength=3) / n
    tolerance = 4 * np.sqrt(p * (1 - p) / n)  # binomial, four standard deviations
    assert np.all(np.abs(shares - p) < tolerance), (shares, tolerance)
    assert not any(r.degraded for r in results)
    assert all(reports[k] == {"policy": "probabilities", "p": p.tolist()} for k in range(3))


@pytest.mark.slow
def test_adaee_in_the_first_tier_hears_about_every_sample_that_went_on():
    spec = {"policy": "adaee", "grid": [0.2, 0.5, 0.8], "exploration": 0.2, "seed": 1}
    n = 150
    with deploy(synthetic={"num_partitions": 2}, threshold=0.5, policy=spec) as d:
        assert d.client.feedback_address == d._workers[0].info["control"]
        half = d.run(d.inputs(n // 2, seed=3))  # a burst,
        rest = d.run(d.inputs(n - n // 2, seed=4), one_at_a_time=True)  # then one at a time
        results = half + rest
        went_on = sum(r.partition == 1 for r in results)
        reports = _reports(d, lambda r: r.get(0, {}).get("feedback") == went_on
                           and r[0].get("plays") == n and 1 in r)  # fmt: skip
    first = reports[0]
    assert 0 < went_on < n and d.client.feedback_sent == went_on
    assert first["policy"] == "adaee" and first["thresholds"] == [0.2, 0.5, 0.8]
    assert first["forwarded"] == first["feedback"] == went_on  # count in = count out
    assert first["feedback_unknown"] == first["feedback_rejected"] == first["feedback_lost"] == 0
    assert sum(first["counts"]) == pytest.approx(n) and first["plays"] == n
    assert first["awaiting"] == 0 and sum(first["pending"]) == 0
    assert reports[1] == {"policy": "threshold", "threshold": 0.5}  # later tiers: the threshold
    assert not any(r.degraded for r in results)


def test_deploy_refuses_a_bad_policy_before_starting_anything():
    with pytest.raises(ValueError, match="'p' gives 2 values; the plan has 3 exits"):
        deploy(synthetic={"num_partitions": 3}, threshold=0.5,
               policy={"policy": "probabilities", "p": [0.5, 0.5]})  # fmt: skip
    with pytest.raises(ValueError, match="policy: 'greedy' is no policy name"):
        deploy(synthetic={"num_partitions": 2}, threshold=0.5, policy="greedy")


@pytest.mark.parametrize(
    "spec, needle",
    [
        ('{"policy": "adaee", "grid": [2]}', "--policy: policy: adaee: grid: expected distinct"),
        ("greedy", "--policy: policy: 'greedy' is no policy name"),
        ('{"policy": "adaee", "cost": 1}', "valid: grid, exploration, cost_weight, discount, seed"),
        ('{"policy": "probabilities", "p": [1.0]}', "'p' gives 1 values; the plan has 2 exits"),
        ('{"policy": ', "--policy: policy: not valid JSON"),
    ],
)
def test_serve_refuses_a_bad_policy_in_one_line(tmp_path, capsys, spec, needle):
    bundle = str(write_bundle(tmp_path / "b", {1: {"onnx": b"\x08one"}, 2: {"onnx": b"\x08two"}}))
    argv = ["serve", "--bundle", bundle, "--partition", "1", "--results", "tcp://127.0.0.1:9",
            "--bind", "tcp://127.0.0.1:*", "--policy", spec]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("earlyexit serve: error: ") and needle in err[0], err
