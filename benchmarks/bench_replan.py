"""Re-planning time inside the controller, and the adaptive deployment against static and oracle.

Part 1 (always): the :class:`~earlyexit.runtime.replan.Replanner` is fed an
estimate that moves the link, and times its own re-planning (``replan_s``,
measured around the planner call inside ``observe``): on the demo's profile
(``--profile``, from ``earlyexit demo -o DIR``) over the whole search space and
over the candidate plans, and on a synthetic profile at N=55 blocks on the
3-tier ``portend-aws`` topology. Targets (issue #15): 50 ms and 0.5 s.

Part 2 (``--adapt``, needs torch): exports the candidate plans of the demo's
model (``--checkpoint``, default the shipped one) for the bandwidths of the
trace, deploys them switchable over emulated links that follow the trace, and
prints per phase the mean latency and accuracy of the adaptive, static and
oracle runs (``earlyexit.runtime.adaptive.compare_on_trace``), with a plot.
With ``--rounds R`` the three modes run R times interleaved (order rotated each
round); the table pools the rounds and prints each round's adaptive/oracle
ratio. Per phase it also prints the oracle's speed-up over static, measured and
in the model (the candidates' estimates; and the whole search space's optimum,
which no plan can beat), and the adaptive run's share of it; ``OUT/NAME.md``
holds the table in Markdown.

Usage::

    python benchmarks/bench_replan.py --profile DEMO/profile.json [--json]
    python benchmarks/bench_replan.py --profile DEMO/profile.json --adapt OUT \\
        --trace step-50-2-50 --trace ramp-50-2-50:0.5 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from earlyexit.formats import Link, Plan, Profile
from earlyexit.planner import plan, resolve_topology
from earlyexit.planner.synthetic import synthetic_profile
from earlyexit.runtime.replan import Replanner, candidate_plans, same_configuration

BANDWIDTHS = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]


def _time_replans(prof: Profile, topo: Any, reps: int, **kw: Any) -> dict[str, float]:
    """Median and max re-planning time (ms) of ``reps`` link moves, as measured by the Replanner."""
    start = plan(prof, topo, estimator=kw.get("estimator", "portend"),
                 min_accuracy=kw.get("min_accuracy"), **kw.get("hints", {}))  # fmt: skip
    r = Replanner(prof, topo, start, dwell_s=0.0, change=0.1, **kw)
    bw0 = topo.links[0].bandwidth_mbps
    for i in range(reps):  # alternate far apart so that every observation re-plans
        bw = bw0 / 20 if i % 2 == 0 else bw0
        r.observe(0, bandwidth_mbps=bw, propagation_ms=topo.links[0].propagation_ms, now=float(i))
    ms = [1e3 * s for s in r.stats.replan_s]
    cpu = [1e3 * s for s in r.stats.replan_cpu_s]
    return {"replans": len(ms), "median_ms": statistics.median(ms), "max_ms": max(ms),
            "median_cpu_ms": statistics.median(cpu), "max_cpu_ms": max(cpu)}  # fmt: skip


def timing(profile: str | None, reps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if profile:
        from earlyexit._demo import demo_topology

        prof, topo = Profile.load(profile), demo_topology()
        acc = float(prof.branch_accuracy[-1])
        hints = {"exits": [prof.num_blocks]}
        kw = {"min_accuracy": acc, "estimator": "exact", "hints": hints}
        out["demo, whole space"] = _time_replans(prof, topo, reps, **kw)
        cands = candidate_plans(prof, topo, 0, BANDWIDTHS, min_accuracy=acc, estimator="exact",
                                **hints)  # fmt: skip
        out["demo, candidates"] = {**_time_replans(prof, topo, reps, candidates=cands, **kw),
                                   "candidates": len(cands)}  # fmt: skip
    prof55, aws = synthetic_profile(55), resolve_topology("portend-aws")
    out["N=55, M=3, whole space"] = _time_replans(prof55, aws, reps, min_accuracy=0.5)
    return out


def _export_candidates(
    checkpoint: str | None, prof: Profile, topo: Any, out: Path, bws: list[float]
):
    import earlyexit
    from earlyexit._demo import DEFAULT_CHECKPOINT
    from earlyexit.export import export_bundle
    from earlyexit.export.bundle import resolve_data

    model = earlyexit.load(checkpoint or DEFAULT_CHECKPOINT)
    acc = float(prof.branch_accuracy[-1])
    cands = candidate_plans(prof, topo, 0, bws, min_accuracy=acc, estimator="exact",
                            exits=[prof.num_blocks])  # fmt: skip
    dirs = []
    for i, p in enumerate(cands):
        d = out / f"plan{i}"
        if not (d / "manifest.json").is_file():
            export_bundle(model, p, d, formats="onnx", verify_data="fashion-mnist", overwrite=True)
        dirs.append(str(d))
    test_x, test_y, _ = resolve_data("fashion-mnist", "test", model)
    return dirs, test_x[1::2].numpy(), test_y[1::2].numpy(), acc


def degraded_model(
    every: Replanner, plans: list[Plan], trace: Any, table: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each candidate's and the whole space's estimate at each bandwidth of the degraded phase."""
    low = next(row for row in table if row["degraded"])
    steps = [st for a, _, st in trace.phases(low["end"]) if low["start"] <= a < low["end"]]
    out = []
    for st in sorted({(round(s.bandwidth_mbps, 6), s.propagation_ms) for s in steps}):
        t = replace(every.topology, links=(Link(*st),) + every.topology.links[1:])
        out.append({"bandwidth_mbps": st[0], "propagation_ms": st[1],
                    "candidates_ms": [1e3 * every._latency(p, t) for p in plans],
                    "any_plan_ms": 1e3 * every._latency(every.best(t), t)})  # fmt: skip
    return out


def adapt(args: argparse.Namespace) -> dict[str, Any]:
    from earlyexit._demo import demo_topology
    from earlyexit.formats.trace import LinkTrace
    from earlyexit.runtime.adaptive import compare_on_trace, phase_model

    out = Path(args.adapt)
    out.mkdir(parents=True, exist_ok=True)
    prof, topo = Profile.load(args.profile), demo_topology()
    traces = []
    for spec in args.trace:
        name, _, scale = spec.partition(":")
        tr = LinkTrace.builtin(name).scaled(float(scale or 1.0))
        if args.delay_ms is not None:  # the topology's own delay, so that bandwidth is what moves
            tr = replace(tr, name=f"{tr.name}-delay{args.delay_ms:g}ms", steps=tuple(
                replace(s, propagation_ms=args.delay_ms) for s in tr.steps))  # fmt: skip
        traces.append(tr)
    bws = sorted({s.bandwidth_mbps for t in traces for s in t.steps} | set(BANDWIDTHS))
    dirs, x, y, acc = _export_candidates(args.checkpoint, prof, topo, out / "bundles", bws)
    # would a finer sweep of the range carry more plans? (60 bandwidths, 1-100 Mb/s)
    fine = candidate_plans(prof, topo, 0, list(np.geomspace(1.0, 100.0, 60)), min_accuracy=acc,
                           estimator="exact", exits=[prof.num_blocks])  # fmt: skip
    results = {}
    for tr in traces:
        res = compare_on_trace(prof, topo, dirs, x, y, tr, min_accuracy=acc, settle_s=args.settle,
                               rounds=args.rounds)  # fmt: skip
        plans = [Plan.from_dict(p) for p in res["candidates"]]
        res["finer_sweep_plans"] = len(fine)
        res["finer_sweep_new"] = sum(not any(same_configuration(f, p) for p in plans) for f in fine)
        # the most any plan at all could gain over static (the whole space, any exit)
        every = Replanner(prof, tr.topology_at(topo, 0.0), plans[0], min_accuracy=acc,
                          estimator="exact")  # fmt: skip
        for row, m in zip(res["table"], phase_model(every, tr, res["table"], args.settle),
                          strict=True):  # fmt: skip
            row["model_any_plan_ms"] = m["model_oracle_ms"]
            row["model_any_plan_speedup"] = m["model_oracle_speedup"]
        res["model_degraded"] = degraded_model(every, plans, tr, res["table"])
        results[tr.name] = res
        (out / f"{tr.name}.md").write_text(markdown(res))
        (out / f"{tr.name}.json").write_text(json.dumps(res, indent=1, default=str))
        try:
            from earlyexit.plotting import plot_adaptive

            plot_adaptive(res, out / f"{tr.name}.png")
        except ImportError:
            pass
    return results


def _f(v: float | None, fmt: str = ".2f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def markdown(res: dict[str, Any]) -> str:
    """The pooled table and the speed-ups over static, in Markdown (for docs/adaptive.md)."""
    modes = list(res["runs"])
    head = ["phase", *modes, "adaptive / oracle (rounds)", "oracle / static (model; any plan)",
            "adaptive / static (share)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in res["table"]:
        lo, hi = row["bandwidth_mbps"]
        bw = f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"
        phase = f"{row['start']:.0f}-{row['end']:.0f} s, {bw} Mb/s"
        phase = f"**{phase} (degraded)**" if row.get("degraded") else phase
        cells = [
            f"{_f(row[m + '_latency_ms'])}, {_f(100 * (row[m + '_accuracy'] or math.nan), '.1f')} %"
            f" (n={row[m + '_samples']})"
            for m in modes
        ]
        rounds = ", ".join(_f(v) for v in row.get("adaptive_oracle_rounds") or [])
        share = row.get("adaptive_share")
        lines.append("| " + " | ".join([
            phase, *cells,
            f"{_f(row.get('adaptive_oracle'))} ({rounds}; spread {_f(row.get('adaptive_oracle_spread'))})",
            f"{_f(row.get('oracle_speedup'))}x ({_f(row.get('model_oracle_speedup'))}x; "
            f"{_f(row.get('model_any_plan_speedup'))}x)",
            f"{_f(row.get('adaptive_speedup'))}x ({_f(None if share is None else 100 * share, '.0f')} %)",
        ]) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _cands(r: dict[str, Any]) -> str:
    return f", {r['candidates']} candidates" if "candidates" in r else ""


def _ms(v: float | None) -> str:
    return "   nan" if v is None else f"{v:6.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", help="the demo's profile.json (earlyexit demo -o DIR)")
    parser.add_argument("--reps", type=int, default=20, help="link moves timed per case")
    parser.add_argument("--adapt", metavar="OUT", help="run adaptive/static/oracle, write to OUT")
    parser.add_argument("--checkpoint", help="the demo's checkpoint (default: the shipped one)")
    parser.add_argument("--trace", action="append", default=[],
                        help="NAME[:TIME_SCALE] of a built-in trace (repeatable)")  # fmt: skip
    parser.add_argument("--delay-ms", type=float, help="set every step's delay (ms) of the traces")
    parser.add_argument("--settle", type=float, default=4.0, help="settling time left out (s)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the modes this many times, interleaved (default 1)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    if args.reps < 2:
        parser.error("--reps must be >= 2")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.adapt and not args.profile:
        parser.error("--adapt needs --profile")
    res = timing(args.profile, args.reps)
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        for name, r in res.items():
            print(
                f"{name:28s} re-planning median {r['median_ms']:8.2f} ms  max {r['max_ms']:8.2f} ms"
                f" (CPU median {r['median_cpu_ms']:.2f}, max {r['max_cpu_ms']:.2f} ms)"
                f"  ({r['replans']} re-plans{_cands(r)})"
            )
    if args.adapt:
        for name, r in adapt(args).items():
            ms = r["replan_ms"]
            print(f"\n{name}: {len(ms)} re-plans in the adaptive run, "
                  f"median {statistics.median(ms) if ms else float('nan'):.2f} ms, "
                  f"max {max(ms, default=float('nan')):.2f} ms")  # fmt: skip
            print(f"  {len(r['candidates'])} candidates; a sweep of 60 bandwidths over 1-100 Mb/s "
                  f"gives {r['finer_sweep_plans']} plans, {r['finer_sweep_new']} not among them")  # fmt: skip
            for row in r["table"]:
                cells = "  ".join(
                    f"{m}: mean {_ms(row[m + '_latency_ms'])} median {_ms(row[m + '_median_ms'])} "
                    f"acc {row[m + '_accuracy'] or float('nan'):.3f} (n={row[m + '_samples']})"
                    for m in r["runs"]
                )
                lo, hi = row["bandwidth_mbps"]
                print(f"  [{row['start']:5.1f}, {row['end']:5.1f}) s {lo:g}-{hi:g} Mb/s "
                      f"best=plan{row['best']}{'  DEGRADED' if row['degraded'] else ''}  {cells}")  # fmt: skip
                rounds = " ".join(_f(v) for v in row["adaptive_oracle_rounds"])
                print(f"      adaptive/oracle {_f(row['adaptive_oracle'])} (rounds {rounds}; spread "
                      f"{_f(row['adaptive_oracle_spread'])})  oracle/static measured "
                      f"{_f(row['oracle_speedup'])}x, model {_f(row['model_oracle_speedup'])}x "
                      f"({_f(row['model_static_ms'])} / {_f(row['model_oracle_ms'])} ms), any plan "
                      f"{_f(row['model_any_plan_speedup'])}x  adaptive/static "
                      f"{_f(row['adaptive_speedup'])}x, share {_f(row['adaptive_share'])}")  # fmt: skip
            print(
                "  model, degraded phase (ms): bandwidth, each candidate (plan0 = static), any plan"
            )
            for m in r["model_degraded"]:
                cands = " ".join(f"{v:6.2f}" for v in m["candidates_ms"])
                print(f"    {m['bandwidth_mbps']:6.1f} Mb/s  {cands}  {m['any_plan_ms']:6.2f}")
            for k, runs in enumerate(r["rounds"]):
                sw = runs.get("adaptive", {}).get("switches", [])
                settle = [_f(c["after_s"]) for c in r["settling"][k]] if r["settling"] else []
                print(f"  round {k + 1} (order {' '.join(sorted(runs, key=lambda m: runs[m]['slot']))}):"
                      f" adaptive switches at {[round(s['t'], 2) for s in sw]}, after the oracle's"
                      f" changes by {settle} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
