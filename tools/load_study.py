"""Model against measurement under load (issue 14, item 3): one plan, utilizations 0.2 to 1.2.

The plan's bundle is deployed once on this host over emulated links
(``earlyexit.runtime.deployment.deploy``, every worker acking at once), and
:func:`earlyexit.runtime.load.open_loop` offers it an open-loop Poisson stream
at each rate ``rho / E[S_0]``, E[S_0] the first tier's mean service time when it
is never idle, as ``planner.queueing.evaluate_load`` computes it from the profile; the first tier
holds at most K samples (the generator drops an arrival that finds K there),
the same K the model is given. Per rate it writes the measured mean and p95
latency, throughput and loss ratio next to the model's, and the plan's
capacity (``plan_capacity``, loss <= 0.01) next to the measured knee (the rate
where the measured loss ratio crosses 0.01, interpolated).

To tell the service-time estimate from the queue model, the first tier's
service time is also measured (1 / throughput in runs at twice its modelled
capacity, where it never idles), and the model is evaluated again at the utilization that
measured time gives (for one M/GI/1/K station, scaling the service time by c
is scaling the rate by c and the waits by c; the unloaded part is then the
measured unloaded latency): "model, measured E[S_0]".

Inputs are the held-out (odd) half of the embedded Fashion-MNIST test images,
normalized as the bundle's manifest says, so the exits are taken as the
profile counted them.

Run (a bundle, profile, plan and topology of ``earlyexit demo DIR``):
    python tools/load_study.py --demo-dir DIR -o docs/img/load   # writes load.json, load.png
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

RHOS = tuple(round(0.2 + 0.1 * i, 1) for i in range(11))  # 0.2 .. 1.2
MAX_LOSS = 0.01


def held_out_inputs(manifest: Any) -> np.ndarray:
    """The odd half of the embedded Fashion-MNIST test images, normalized for the bundle."""
    from earlyexit.data.fashion_mnist import embedded_fashion_mnist_path

    with np.load(embedded_fashion_mnist_path(), allow_pickle=False) as z:
        x = z["x_test"][1::2].astype(np.float32) / 255.0
    norm = getattr(manifest, "normalization", None) or {"mean": [0.0], "std": [1.0]}
    x = (x - float(norm["mean"][0])) / float(norm["std"][0])
    return x[:, None, :, :].astype(np.float32)


def knee(rates: list[float], losses: list[float], bound: float = MAX_LOSS) -> float:
    """The rate where the loss first crosses ``bound`` (linear between measured points)."""
    for i in range(1, len(rates)):
        if losses[i] > bound >= losses[i - 1]:
            f = (bound - losses[i - 1]) / (losses[i] - losses[i - 1])
            return rates[i - 1] + f * (rates[i] - rates[i - 1])
    return math.nan if losses and losses[0] > bound else rates[-1]


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the median over repeated runs (a run starved by other work moves it little)."""
    out = dict(runs[len(runs) // 2])
    med = lambda f: float(np.median([f(r) for r in runs]))  # noqa: E731
    out["latency_s"] = {q: med(lambda r, q=q: r["latency_s"][q]) for q in runs[0]["latency_s"]}
    for key in ("throughput", "loss_ratio"):
        out[key] = med(lambda r, key=key: r[key])
    out["lateness_s"] = {q: med(lambda r, q=q: r["lateness_s"][q]) for q in runs[0]["lateness_s"]}
    out["runs"] = len(runs)
    return out


def model_row(prof: Any, topo: Any, plan: Any, lam: float, k: int, queue_model: str) -> dict:
    """The model's mean latency, loss ratio, throughput and first-tier figures at rate ``lam``."""
    from earlyexit.planner import evaluate_load

    est = evaluate_load(prof, topo, plan.threshold, plan.cut_points, plan.tier_indices, lam, k,
                        queue_model=queue_model)  # fmt: skip
    first = next(s for s in est.stations if s.kind == "tier" and s.index == plan.tier_indices[0])
    return {"latency_s": est.latency_s, "loss_ratio": est.loss_ratio,
            "throughput": est.throughput, "unloaded_s": est.unloaded_latency_s,
            "first_service_s": first.service_mean_s, "first_scv": first.service_scv,
            "first_wait_s": first.wait_s, "first_loss": first.loss_ratio}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Deploy, sweep the rates, evaluate the model; the JSON-ready result."""
    from earlyexit.formats import Manifest, Plan, Profile, Topology
    from earlyexit.runtime.deployment import deploy
    from earlyexit.runtime.load import open_loop

    d = Path(args.demo_dir)
    prof = Profile.load(d / "profile.json")
    topo = Topology.load(d / "topology.yaml")
    plan = Plan.load(d / "plan.json")
    manifest = Manifest.load(d / "bundle")
    k = args.queue_capacity
    # the first tier's mean service when it is never idle (a rate far past saturation:
    # every message finds it busy), the basis of the utilizations rho
    eprof, etopo = emulated(prof, topo, plan)
    e_idle = model_row(eprof, etopo, plan, 1e-9, k, args.queue_model)["first_service_s"]
    es0 = model_row(eprof, etopo, plan, 1e3 / e_idle, k, args.queue_model)["first_service_s"]
    x = held_out_inputs(manifest)
    worker_curve = None
    if args.worker_curve:  # the first tier's worker, deployed as in the sweep, after idle gaps
        from earlyexit.profiling.overhead import measure_idle_curve

        first = topo.tiers[plan.tier_indices[0]]
        worker_curve = measure_idle_curve(
            d / "bundle", slowdown=max(first.slowdown, 1.01), cpu_latency_us=args.cpu_latency_us,
            cpu_affinity=args.cpu_affinity,
        )  # fmt: skip
        worker_curve["slowdown"] = first.slowdown
    rows: list[dict[str, Any]] = []
    with deploy(d / "bundle", topology=topo, hwm=max(64, k), ack_interval_s=0.0,
                cpu_latency_us=args.cpu_latency_us, cpu_affinity=args.cpu_affinity) as dep:  # fmt: skip
        # unloaded: one at a time, then the sweep
        lat0 = [dep.client.infer(x[i]).latency_s for i in range(args.unloaded_samples)]
        for j, rho in enumerate(args.rhos):
            lam = rho / es0
            reps = []
            for rep in range(args.reps):
                res = open_loop(dep.client, x, lam, args.duration, queue_capacity=k,
                                seed=100 * j + rep, max_samples=args.max_samples)  # fmt: skip
                m = res.to_dict()
                alone = res.ahead == 0  # found the first tier empty: no wait there
                m["no_wait_mean_s"] = float(res.latencies[alone].mean()) if alone.any() else None
                m["exit_latency_s"] = {str(e): float(res.latencies[res.exits == e].mean())
                                       for e in sorted(set(res.exits.tolist()))}  # fmt: skip
                reps.append(m)
                time.sleep(0.3)
            rows.append({"rho": rho, "rate": lam, "measured": _median_run(reps), "runs": reps,
                         "model": model_row(eprof, etopo, plan, lam, k, args.queue_model)})  # fmt: skip
            m = rows[-1]["measured"]
            print(f"rho {rho:.1f} rate {lam:7.1f}/s: mean {m['latency_s']['mean'] * 1e3:7.2f} ms "
                  f"(model {rows[-1]['model']['latency_s'] * 1e3:7.2f}), loss {m['loss_ratio']:.3f} "
                  f"(model {rows[-1]['model']['loss_ratio']:.3f}), runs' loss "
                  f"{[round(r['loss_ratio'], 3) for r in reps]}, late p99 "
                  f"{[round(r['lateness_s']['p99'] * 1e3, 1) for r in reps]} ms", flush=True)  # fmt: skip
        # saturated (2x the model's capacity of the first tier): never idle, so
        # 1 / throughput is its mean service time back to back
        sat_runs = [open_loop(dep.client, x, 2.0 / es0, args.duration, queue_capacity=k,
                              seed=9000 + rep, max_samples=args.max_samples).to_dict()
                    for rep in range(args.reps)]  # fmt: skip
    unloaded = float(np.mean(lat0[5:])) if len(lat0) > 5 else float(np.mean(lat0))
    res = {
        "plan": {
            "threshold": plan.threshold,
            "cut_points": list(plan.cut_points),
            "tier_indices": list(plan.tier_indices),
        },  # fmt: skip
        "topology": topo.name,
        "queue_capacity": k,
        "queue_model": args.queue_model,
        "duration_s": args.duration,
        "reps": args.reps,
        "cpu_latency_us": args.cpu_latency_us,
        "cpu_affinity": args.cpu_affinity,
        # the first tier's measured service time: 1 / throughput where it never idles
        "first_service_measured_s": float(np.median([1.0 / r["throughput"] for r in sat_runs])),
        "saturated_runs": sat_runs,
        "unloaded_measured_s": unloaded,
        "capacity_measured": knee([r["rate"] for r in rows],
                                  [r["measured"]["loss_ratio"] for r in rows]),  # fmt: skip
        "rows": rows,
        "load_average": list(__import__("os").getloadavg()),
    }
    if worker_curve is not None:
        res["worker_curve"] = worker_curve
    return remodel(res, prof, topo, plan)


def emulated(
    prof: Any, topo: Any, plan: Any, first_curve: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    """The profile and topology of the devices as this host's emulator runs them.

    The emulator runs a tier of slowdown s > 1 on this host and sleeps (s - 1) t after
    every run (t its CPU time), so even a saturated emulated tier idles that long
    before each run, and its caches cool: a real slower device would compute all that
    time. Per tier of the plan with an idle curve: g0 = (s - 1) (busy time of its
    partition + ``hop_cpu_s``) from the profile; the busy time (and ``hop_cpu_s``)
    becomes f(g0) times it, and the curve f(g + g0) / f(g0) (at least 1). Each such
    tier gets its own device (``name@tier``). Nothing measured goes in, except
    ``first_curve``: the first tier's idle curve measured in its worker as deployed
    (``--worker-curve``), relative to back to back there, so it replaces the
    re-based curve as it is (with its wake-up times); where it has the worker's
    CPU per message back to back (``cpu_s[0]``), f0 is that over the profile's
    busy time plus ``hop_cpu_s`` (at least 1). A profile curve measured in a
    worker at the tier's own slowdown (``profile(worker_idle_curve=True,
    idle_slowdown=s)``, its ``extra["idle"]``) is taken the same way, f0 from the
    whole network's CPU.
    """
    import dataclasses

    devices = dict(prof.devices)
    tiers = list(topo.tiers)
    for k, w in enumerate(plan.tier_indices):
        tier = tiers[w]
        dev = prof.devices[tier.device]
        if tier.slowdown <= 1.0 or dev.idle_curve is None or dev.partition_time_busy_s is None:
            continue
        a = plan.cut_points[k - 1] if k else 0
        b = plan.cut_points[k] - 1
        gaps = np.array([0.0, *dev.idle_curve["gap_s"]])
        fac = np.array([1.0, *dev.idle_curve["factor"]])
        hop_cpu = dev.hop_cpu_s or 0.0
        g0 = (tier.slowdown - 1.0) * (float(dev.partition_time_busy_s[a, b]) + hop_cpu)
        # a curve measured in a worker emulating this tier is taken as it is
        idle = dict(dev.extra.get("idle") or {})
        src: dict[str, Any] | None = None
        if k == 0 and first_curve is not None:
            src, span = first_curve, (a, b)
        elif idle.get("slowdown") == tier.slowdown:
            src, span = {**dev.idle_curve, **idle}, (0, prof.num_blocks - 1)
        if src is not None and "cpu_s" in src:  # its CPU back to back over the profile's
            f0 = max(1.0, float(src["cpu_s"][0])
                     / (float(dev.partition_time_busy_s[span]) + hop_cpu))  # fmt: skip
        else:
            f0 = float(np.interp(g0, gaps, fac))
        if src is not None:
            curve = {key: list(src[key]) for key in ("gap_s", "factor", "wake_s") if key in src}
        else:
            curve = {"gap_s": dev.idle_curve["gap_s"],
                     "factor": [max(1.0, float(np.interp(g + g0, gaps, fac)) / f0)
                                for g in dev.idle_curve["gap_s"]]}  # fmt: skip
            if "wake_s" in dev.idle_curve:  # waking up from the idle: not during its sleeps
                curve["wake_s"] = list(dev.idle_curve["wake_s"])
        name = f"{tier.device}@{tier.name}"
        devices[name] = dataclasses.replace(
            dev, partition_time_busy_s=dev.partition_time_busy_s * f0,
            hop_cpu_s=hop_cpu * f0, idle_curve=curve,
        )  # fmt: skip
        tiers[w] = dataclasses.replace(tier, device=name)
    return (dataclasses.replace(prof, devices=devices),
            dataclasses.replace(topo, tiers=tuple(tiers)))  # fmt: skip


def remodel(res: dict[str, Any], prof: Any, topo: Any, plan: Any) -> dict[str, Any]:
    """The model's columns of a result (``rows[i]["model"]``, the capacity, ...) from
    ``prof``: what a sweep computes, and ``--remodel`` recomputes with today's code."""
    from earlyexit.planner.api import plan_capacity

    k, qm = res["queue_capacity"], res["queue_model"]
    if res.get("emulated", True):
        import dataclasses

        prof, topo = emulated(prof, topo, plan, res.get("worker_curve"))
        plan = dataclasses.replace(plan, profile_digest=prof.digest(), topology_digest=topo.digest())
    e_idle = model_row(prof, topo, plan, 1e-9, k, qm)["first_service_s"]
    es0 = model_row(prof, topo, plan, 1e3 / e_idle, k, qm)["first_service_s"]
    c = res["first_service_measured_s"] / es0
    for r in res["rows"]:
        r["model"] = model_row(prof, topo, plan, r["rate"], k, qm)
        if math.isfinite(c):  # the model again, at the utilization the measured time gives
            mm = model_row(prof, topo, plan, r["rate"] * c, k, qm)
            r["model_measured_service"] = {
                "latency_s": res["unloaded_measured_s"] + c * (mm["latency_s"] - mm["unloaded_s"]),
                "loss_ratio": mm["loss_ratio"],
                "throughput": r["rate"] * (1 - mm["loss_ratio"]),
            }
    cap_model = plan_capacity(plan, prof, topo, max_loss=MAX_LOSS, queue_capacity=k,
                              queue_model=qm)  # fmt: skip
    res.update({
        "first_service_model_s": es0,
        "first_service_model_alone_s": e_idle,
        "unloaded_model_s": model_row(prof, topo, plan, 0.0, k, qm)["latency_s"],
        "capacity_model": cap_model,
        "capacity_model_measured_service": cap_model / c if math.isfinite(c) else math.nan,
    })  # fmt: skip
    return res


def table(res: dict[str, Any]) -> str:
    """The markdown table of a result."""
    lines = [
        "| rho | rate (/s) | mean ms meas. | mean ms model | err | p95 ms meas. | thru meas. | "
        "thru model | loss meas. | loss model | mean ms model (meas. E[S0]) | loss model (meas. E[S0]) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        m, p = r["measured"], r["model"]
        q = r.get("model_measured_service", {})
        err = p["latency_s"] / m["latency_s"]["mean"] - 1
        lines.append(
            f"| {r['rho']:.1f} | {r['rate']:.1f} | {m['latency_s']['mean'] * 1e3:.2f} | "
            f"{p['latency_s'] * 1e3:.2f} | {err:+.0%} | {m['latency_s']['p95'] * 1e3:.2f} | "
            f"{m['throughput']:.1f} | {p['throughput']:.1f} | {m['loss_ratio']:.3f} | "
            f"{p['loss_ratio']:.3f} | {q.get('latency_s', math.nan) * 1e3:.2f} | "
            f"{q.get('loss_ratio', math.nan):.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo-dir", required=True,
                   help="a directory of earlyexit demo: bundle/, profile.json, plan.json, topology.yaml")  # fmt: skip
    p.add_argument("-o", "--out", required=True, help="output directory (load.json, load.png)")
    p.add_argument(
        "--queue-capacity", type=int, default=10, help="K of the first tier (default 10)"
    )
    p.add_argument("--queue-model", choices=("approx", "exact"), default="exact")
    p.add_argument("--duration", type=float, default=8.0, help="seconds of arrivals per run")
    p.add_argument("--reps", type=int, default=3, help="runs per rate; the table takes medians")
    p.add_argument("--max-samples", type=int, default=20_000)
    p.add_argument("--unloaded-samples", type=int, default=60)
    p.add_argument("--rhos", type=lambda s: [float(v) for v in s.split(",")], default=list(RHOS))
    p.add_argument("--cpu-latency-us", type=int, default=None,
                   help="the workers' CPU wake-up latency request (deploy(cpu_latency_us=))")  # fmt: skip
    p.add_argument("--cpu-affinity", choices=("spread",), default=None,
                   help="pin each tier's worker to its own core (deploy(cpu_affinity=))")
    p.add_argument("--worker-curve", action="store_true",
                   help="before the sweep, measure the first tier's idle curve in its worker "
                        "as deployed (measure_idle_curve at its slowdown, with these CPU "
                        "options) and model with it")  # fmt: skip
    p.add_argument("--replot", action="store_true", help="redraw from OUT/load.json, run nothing")
    p.add_argument("--remodel", action="store_true",
                   help="recompute OUT/load.json's model columns from --demo-dir's profile "
                        "with this code, keep the measurements")  # fmt: skip
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot or args.remodel:
        res = json.loads((out / "load.json").read_text())
        if args.remodel:
            from earlyexit.formats import Plan, Profile, Topology

            d = Path(args.demo_dir)
            res = remodel(res, Profile.load(d / "profile.json"),
                          Topology.load(d / "topology.yaml"), Plan.load(d / "plan.json"))  # fmt: skip
            (out / "load.json").write_text(json.dumps(res, indent=1, default=float))
    else:
        res = run(args)
        (out / "load.json").write_text(json.dumps(res, indent=1, default=float))
    from earlyexit.plotting import plot_load

    plot_load(res, out / "load.png")
    print(table(res))
    print(f"first tier E[S]: model {res['first_service_model_s'] * 1e3:.2f} ms, measured "
          f"{res['first_service_measured_s'] * 1e3:.2f} ms; unloaded latency model "
          f"{res['unloaded_model_s'] * 1e3:.2f} ms, measured {res['unloaded_measured_s'] * 1e3:.2f} ms")  # fmt: skip
    print(f"capacity (loss <= {MAX_LOSS}): model {res['capacity_model']:.1f}/s "
          f"(with the measured E[S0] {res['capacity_model_measured_service']:.1f}/s), measured knee "
          f"{res['capacity_measured']:.1f}/s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
