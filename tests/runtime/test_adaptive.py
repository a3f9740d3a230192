"""Switchable deployments: plan switches lose nothing, answer once, under the tagged plan."""

from __future__ import annotations

import time

import numpy as np
import pytest

from earlyexit.runtime.adaptive import deploy_switchable
from earlyexit.runtime.monitor import LinkEstimator
from earlyexit.runtime.synthetic import SyntheticModel

SYN = {"num_partitions": 2}
PLANS = [(0.2, (0, 1)), (0.9, (0, 1)), (0.5, (0, 1))]


@pytest.mark.slow
def test_switches_lose_nothing_and_answer_each_sample_once_under_its_plan():
    """Count in = count out across 60 switches, with samples of several plans in flight."""
    with deploy_switchable(synthetic=SYN, plans=PLANS, topology="pi4-wifi") as d:
        x = d.inputs(300)
        tags: dict[int, int] = {}
        for i in range(0, 300, 5):  # a switch every 5 samples, without waiting for results
            d.use((i // 5) % 3)
            for j in d.client.submit(x[i : i + 5]):
                tags[j] = d.active
        results = d.client.gather(timeout_s=60)
        stats = dict(d.client.stats)
        time.sleep(0.5)
        d.client.poll(0.0)
        reports = dict(d.client.link_reports)
    assert len(results) == 300 and sorted(r.id for r in results) == list(range(300))
    assert stats["duplicates"] == 0 and stats["degraded"] == 0 and stats["delivered"] == 300
    model = SyntheticModel(**SYN)
    parts = set()
    for r in results:
        ref = model.reference(x[r.id : r.id + 1], PLANS[tags[r.id]][0])[0]
        assert r.partition == ref["partition"]
        np.testing.assert_allclose(r.logits, ref["logits"], rtol=1e-5, atol=1e-5)
        parts.add((tags[r.id], r.partition))
    assert len({p for _, p in parts}) == 2  # the thresholds differ in what they do
    # the first worker measured link 0 (tier 0 -> 1) from its own transfers and reported it
    bw, delay_ms, _ = reports[(0, 1)]
    assert 5.0 < bw < 500.0 and 0.0 <= delay_ms < 100.0


def test_switchable_refuses_bad_candidates():
    with pytest.raises(ValueError, match="exactly one of"):
        deploy_switchable()
    with pytest.raises(ValueError, match="distinct tiers"):
        deploy_switchable(synthetic=SYN, plans=[(0.5, (0, 0))])
    with pytest.raises(ValueError, match="plans="):
        deploy_switchable(synthetic=SYN)


def test_estimator_forgets_transfers_older_than_max_age():
    """After a step from 50 to 2 Mb/s, only the new transfers count once the old ones age out."""
    est = LinkEstimator(window=64, min_samples=4, max_age_s=3.0)
    for i in range(20):
        for n in (100, 20_000):
            est.observe(n, 0.005 + 8 * n / 50e6, now=i * 0.1)
    for i in range(40):
        for n in (100, 20_000):
            est.observe(n, 0.005 + 8 * n / 2e6, now=2.0 + i * 0.1)
    assert est.estimate().bandwidth_mbps == pytest.approx(2.0, rel=1e-6)
    with pytest.raises(ValueError, match="max_age_s"):
        LinkEstimator(max_age_s=0)


@pytest.mark.slow
def test_a_link_that_only_carried_probes_is_not_taken_for_dead():
    """Only probes cross for 3 s, then nothing for 5 s, then samples that go on: none degraded."""
    model, threshold = SyntheticModel(**SYN), 0.5
    x = model.inputs(400)
    part = np.array([r["partition"] for r in model.reference(x, threshold)])
    stay, go = x[part == 0][:1], x[part == 1][:8]
    assert len(stay) == 1 and len(go) == 8
    with deploy_switchable(synthetic=SYN, plans=[(threshold, (0, 1))], topology="pi4-wifi") as d:
        end = time.monotonic() + 3.0
        while time.monotonic() < end:  # longer than dead_after_s (2 s); only probes cross
            assert d.client.infer(stay[0]).partition == 0
            time.sleep(0.05)
        reports = dict(d.client.link_reports)
        time.sleep(5.0)  # idle: probes stop 2 s after the last sample; heartbeats must come
        results = [d.client.infer(xi) for xi in go]
    assert [r.partition for r in results] == [1] * 8
    assert not any(r.degraded for r in results)
    assert (0, 1) in reports  # measured by probes alone while nothing else crossed


def _run(samples):
    return {"samples": [{"t": t, "latency_s": lat, "correct": c, "degraded": False}
                        for t, lat, c in samples], "switches": [{"t": 10.5}]}  # fmt: skip


def test_phase_table_merges_steps_the_oracle_keeps_and_leaves_out_the_settling():
    from earlyexit.formats.trace import LinkTrace
    from earlyexit.runtime.adaptive import phase_table

    tr = LinkTrace.builtin("ramp-50-2-50")  # 1-s steps
    n = len(tr.steps)
    best = [0 if s.bandwidth_mbps > 15 else 1 for s in tr.steps]
    run = _run([(t + 0.5, 0.010 if best[min(int(t), n - 1)] == 0 else 0.030, t % 2 == 0)
                for t in range(41)])  # fmt: skip
    run["samples"][16]["latency_s"] = 1.0  # within the settling time of the second phase
    rows = phase_table({"adaptive": run}, tr, 41.0, settle_s=2.0, best=best)
    assert [r["best"] for r in rows] == [0, 1, 0]
    assert rows[0]["start"] == 0.0 and rows[1]["start"] == best.index(1)
    assert rows[1]["bandwidth_mbps"][0] == 2.0 and rows[0]["bandwidth_mbps"][1] == 50.0
    assert rows[1]["adaptive_latency_ms"] == pytest.approx(30.0)  # the 1 s sample left out
    assert rows[1]["adaptive_all_latency_ms"] > 30.0
    assert rows[0]["adaptive_samples"] == best.index(1)  # the first phase has no settling
    with pytest.raises(ValueError, match="one index per trace step"):
        phase_table({"adaptive": run}, tr, 41.0, 2.0, best=[0])


def test_plot_adaptive_draws_each_run_and_marks_the_switches(tmp_path):
    from earlyexit.formats.trace import LinkTrace
    from earlyexit.plotting import plot_adaptive

    tr = LinkTrace.builtin("step-50-2-50")
    runs = {"adaptive": _run([(t / 10, 0.01, True) for t in range(300)]),
            "static": _run([(t / 10, 0.02, True) for t in range(300)])}  # fmt: skip
    fig = plot_adaptive({"runs": runs, "trace": tr.to_dict()}, tmp_path / "a.png", window=5)
    ax = fig.axes[0]
    ys = {
        round(float(line.get_ydata()[-1]), 3)
        for line in ax.get_lines()
        if len(line.get_ydata()) == 300
    }
    assert ys == {10.0, 20.0}  # each run's samples and its rolling median, in ms
    assert any(list(line.get_xdata()) == [10.5, 10.5] for line in ax.get_lines())  # the switch
    assert (tmp_path / "a.png").is_file()
    assert not any(p.get_label().startswith("degraded") for p in ax.patches)
    table = [{"start": 10.0, "end": 20.0, "degraded": True, "oracle_speedup": 2.5}]
    fig = plot_adaptive({"runs": runs, "trace": tr.to_dict(), "table": table}, tmp_path / "b.png")
    (span,) = [p for p in fig.axes[0].patches if p.get_label().startswith("degraded")]
    x0, x1 = span.get_bbox().x0, span.get_bbox().x1  # data coordinates along x
    assert (x0, x1) == (10.0, 20.0) and "2.50x" in span.get_label()


@pytest.mark.slow
def test_the_client_measures_the_link_its_inputs_cross():
    """One partition on tier 1: the source's inputs cross link 0; the client's acks measure it."""
    with deploy_switchable(synthetic={"num_partitions": 1}, plans=[(0.5, (1,))],
                           topology="pi4-wifi") as d:  # fmt: skip
        assert d.client.route_tiers == (0, 1)
        x = d.inputs(40)
        probes = 0
        for xi in x:
            probes += d.client.probe()
            d.client.infer(xi)
        reports = dict(d.client.link_reports)
    assert probes >= 1  # inputs have one size: the line needs another
    bw, delay_ms, _ = reports[(0, 1)]
    assert 5.0 < bw < 500.0 and 0.0 <= delay_ms < 100.0  # pi4-wifi: 50 Mb/s, 5 ms


def test_rounds_interleave_with_the_order_rotated_and_pool_every_sample():
    """A S O, S O A, O A S; each round's samples counted in and out, per phase and pooled."""
    from earlyexit.formats.trace import LinkTrace
    from earlyexit.runtime.adaptive import interleave_rounds, phase_table, pool_rounds

    tr = LinkTrace.builtin("step-50-2-50")  # changes at 10 and 20 s
    played: list[str] = []
    rng = np.random.default_rng(0)

    def play(mode):  # a run of this mode: its own number of samples, spread over 30 s
        played.append(mode)
        n = int(rng.integers(50, 120))
        t = np.sort(rng.uniform(0, 30, n))
        lat = {"adaptive": 0.010, "static": 0.020, "oracle": 0.011}[mode] * (1 + len(played) / 100)
        return _run([(float(ti), lat, bool(i % 3)) for i, ti in enumerate(t)])

    modes = ("adaptive", "static", "oracle")
    rounds = interleave_rounds(play, modes, 4)
    assert played == ["adaptive", "static", "oracle", "static", "oracle", "adaptive",
                      "oracle", "adaptive", "static", "adaptive", "static", "oracle"]  # fmt: skip
    assert [list(r) for r in rounds] == [list(modes)] * 4  # keyed in the modes' order
    assert [r["static"]["slot"] for r in rounds] == [1, 0, 2, 1]
    pooled = pool_rounds(rounds)
    for mode in modes:
        per_round = [len(r[mode]["samples"]) for r in rounds]
        assert len(pooled[mode]["samples"]) == sum(per_round) and pooled[mode]["rounds"] == 4
        assert [
            sum(s["round"] == k for s in pooled[mode]["samples"]) for k in range(4)
        ] == per_round
        assert len(pooled[mode]["switches"]) == 4
    # per phase, the pooled table counts every round's settled samples of that phase
    table = phase_table(pooled, tr, 30.0, settle_s=2.0)
    each = [phase_table(r, tr, 30.0, settle_s=2.0) for r in rounds]
    for k, row in enumerate(table):
        for mode in modes:
            assert row[f"{mode}_samples"] == sum(t[k][f"{mode}_samples"] for t in each)
            lat = [s["latency_s"] for s in pooled[mode]["samples"]
                   if row["start"] + (2.0 if k else 0.0) <= s["t"] < row["end"]]  # fmt: skip
            assert row[f"{mode}_latency_ms"] == pytest.approx(1e3 * np.mean(lat))
    with pytest.raises(ValueError, match="rounds must be an integer >= 1"):
        interleave_rounds(play, modes, 0)


def test_phase_model_gives_the_oracles_room_over_static_from_the_candidates_estimates():
    """On a step to 2 Mb/s the low phase's static/oracle ratio is the candidates' estimate ratio."""
    from dataclasses import replace

    from earlyexit.formats import Link
    from earlyexit.formats.trace import LinkTrace
    from earlyexit.planner import resolve_topology
    from earlyexit.planner.synthetic import synthetic_profile
    from earlyexit.runtime.adaptive import _best_index, phase_model, phase_table, settling_times
    from earlyexit.runtime.replan import Replanner, candidate_plans

    prof = synthetic_profile(8)
    topo = resolve_topology("pi4-wifi")
    cands = candidate_plans(prof, topo, 0, [0.2, 2.0, 50.0], min_accuracy=0.5)
    tr = LinkTrace.builtin("step-50-2-50")  # with the topology's 5 ms: bandwidth is what moves
    tr = replace(tr, steps=tuple(replace(s, propagation_ms=5.0) for s in tr.steps))
    start = tr.topology_at(topo, 0.0)
    rp = Replanner(prof, start, cands[0], min_accuracy=0.5, candidates=cands)
    first = _best_index(cands, rp, start)
    cands = [cands[first]] + [c for i, c in enumerate(cands) if i != first]
    rp = Replanner(prof, start, cands[0], min_accuracy=0.5, candidates=cands)
    best = [_best_index(cands, rp, tr.topology_at(topo, a)) for a, _, _ in tr.phases(30.0)]
    rows = phase_table({}, tr, 30.0, settle_s=4.0, best=best)
    model = phase_model(rp, tr, rows, settle_s=4.0)
    low = replace(topo, links=(Link(2.0, tr.steps[1].propagation_ms),))
    lat = [rp._latency(c, low) for c in cands]
    assert model[0]["model_oracle_speedup"] == pytest.approx(1.0)  # static is the start's best
    mid = next(k for k, r in enumerate(rows) if r["bandwidth_mbps"][0] == 2.0)
    assert model[mid]["model_static_ms"] == pytest.approx(1e3 * lat[0])
    assert model[mid]["model_oracle_ms"] == pytest.approx(1e3 * min(lat))
    # over the whole search space the oracle can only do as well or better than over the candidates
    every = phase_model(Replanner(prof, start, cands[0], min_accuracy=0.5), tr, rows, 4.0)
    assert every[mid]["model_static_ms"] == pytest.approx(model[mid]["model_static_ms"])
    assert every[mid]["model_oracle_ms"] <= model[mid]["model_oracle_ms"] + 1e-9
    # an adaptive run that switched 1.5 s after each change of the oracle's plan
    changes = [
        (a, b)
        for (a, _, _), b, prev in zip(tr.phases(30.0)[1:], best[1:], best[:-1], strict=True)
        if b != prev
    ]
    assert (
        len(changes) == 2 and model[mid]["model_oracle_speedup"] > 1.5
    )  # the drop moves the optimum
    run = {"switches": [{"t": a + 1.5, "to": b} for a, b in changes]}
    got = settling_times(run, tr, 30.0, best)
    assert [g["t"] for g in got] == [a for a, _ in changes]
    assert all(g["after_s"] == pytest.approx(1.5) for g in got)
    assert settling_times({"switches": []}, tr, 30.0, best)[0]["after_s"] is None
    # a run that switched 0.4 s before the first change (it anticipated), then never back
    early = {"switches": [{"t": changes[0][0] - 0.4, "to": changes[0][1]}]}
    got = settling_times(early, tr, 30.0, best)
    assert got[0]["after_s"] == pytest.approx(-0.4) and got[1]["after_s"] is None


def test_the_oracle_runs_the_plan_of_the_step_in_force_and_goes_back():
    """Step 50 -> 2 -> 50 Mb/s: plan 0, 1, then 0 again (it kept plan 1 once: the largest index)."""
    from earlyexit.runtime.adaptive import oracle_choice

    schedule = [(0.0, 0), (10.0, 1), (20.0, 0)]
    got = [oracle_choice(schedule, t) for t in (-1.0, 0.0, 9.9, 10.0, 19.9, 20.0, 35.0)]
    assert got == [0, 0, 0, 1, 1, 0, 0]


def test_switchable_runs_a_policy_on_every_candidate_and_refuses_adaee():
    spec = {"policy": "probabilities", "p": [0.5, 0.5], "seed": 1}
    with deploy_switchable(synthetic=SYN, plans=PLANS[:2], policy=spec) as d:
        x = d.inputs(80)
        d.use(0)
        ids = d.client.submit(x[:40])
        d.use(1)
        ids += d.client.submit(x[40:])
        results = d.client.gather(ids, timeout_s=60)
        end = time.monotonic() + 2.0
        while not d.client.policies and time.monotonic() < end:
            d.client.poll(0.05)
        reports = dict(d.client.policies)
    assert len(results) == 80
    # whatever the thresholds (0.2 and 0.9), about half leave at the first exit
    first = sum(r.partition == 0 for r in results)
    assert 20 <= first <= 60
    assert reports[0]["policy"] == "probabilities"
    with pytest.raises(ValueError, match="adaee"):
        deploy_switchable(synthetic=SYN, plans=PLANS, policy={"policy": "adaee"})
    with pytest.raises(ValueError, match="policy"):
        deploy_switchable(synthetic=SYN, plans=PLANS, policy={"policy": "nope"})
