"""``earlyexit plan``, ``capacity``, ``pareto`` and ``whatif``: thin wrappers of the API."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from earlyexit._checks import (
    atomic_output,
    float_range,
    image_file,
    input_file,
    int_range,
    output_file,
)
from earlyexit.formats import BREAKDOWN_KEYS, Plan, Topology
from earlyexit.planner.api import baselines, pareto, plan, plan_capacity
from earlyexit.planner.queueing import DEFAULT_QUEUE_CAPACITY, MAX_EXACT_CAPACITY, QUEUE_MODELS
from earlyexit.planner.topology import bind_devices, resolve_profile, resolve_topology
from earlyexit.planner.whatif import MAX_VALUES, parse_vary, set_parameter, whatif

__all__ = ["register"]


_MAX_LIST = 10_000  # blocks, tiers or thresholds in one hint list


def _int_list(text: str) -> list[int]:
    """``5,10-20`` -> block numbers (>= 1), at most ``_MAX_LIST`` of them."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            a, sep, b = part.partition("-")
            lo, hi = int(a), int(b if sep else a)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected block numbers >= 1 and ranges like 5,10-20, got {text!r}"
            ) from None
        if lo < 1 or hi < lo:
            raise argparse.ArgumentTypeError(
                f"expected block numbers >= 1 and ranges a-b with a <= b, got {part!r}"
            )
        if hi - lo + 1 + len(out) > _MAX_LIST:
            raise argparse.ArgumentTypeError(f"at most {_MAX_LIST} blocks, got {text!r}")
        out.extend(range(lo, hi + 1))
    if not out:
        raise argparse.ArgumentTypeError(f"expected at least one block number, got {text!r}")
    return out


def _str_list(text: str) -> list[int | str]:
    """``0,2`` or ``edge,cloud`` -> tier indices or names."""
    out = [int(t) if t.strip().isdigit() else t.strip() for t in text.split(",") if t.strip()]
    if not out or len(out) > _MAX_LIST:
        raise argparse.ArgumentTypeError(
            f"expected 1 to {_MAX_LIST} tier indices or names, e.g. 0,2 or edge,cloud, got {text!r}"
        )
    return out


def _float_list(text: str) -> list[float]:
    """``0.3,0.5`` -> thresholds in [0, 1]."""
    try:
        out = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        out = []
    if not out or len(out) > _MAX_LIST or not all(0.0 <= t <= 1.0 for t in out):
        raise argparse.ArgumentTypeError(
            f"expected 1 to {_MAX_LIST} thresholds in [0, 1], e.g. 0.3,0.5, got {text!r}"
        )
    return out


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", required=True, help="profile JSON (earlyexit.profile/1)")
    p.add_argument(
        "--topology",
        required=True,
        help="topology YAML or a built-in name: portend-aws, mobile, iot",
    )
    p.add_argument(
        "--estimator",
        choices=("portend", "exact"),
        default="portend",
        help="portend (the paper) or exact (replays the per-sample record)",
    )
    p.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="TIER=DEVICE",
        help="run a tier (name, index or current device) on another profile device; repeatable",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PARAM=VALUE",
        dest="set_params",
        help="change a topology parameter, e.g. destination=2 or links[0].bandwidth_mbps=5",
    )
    h = p.add_argument_group("hints")
    h.add_argument("--num-partitions", type=int_range(1, 1000), help="fixed number of partitions L")
    h.add_argument("--max-partitions", type=int_range(1, 1000), help="at most this many partitions")
    h.add_argument("--tiers", type=_str_list, help="allowed tiers, e.g. 0,2 or edge,cloud")
    h.add_argument("--placement", type=_str_list, help="fixed tier of each partition, e.g. 0,2")
    h.add_argument(
        "--cut-points", type=_int_list, help="blocks allowed as partition ends, e.g. 5,10-20"
    )
    h.add_argument(
        "--exits", type=_int_list, help="blocks that must be exits, e.g. 55 for the full DNN"
    )
    h.add_argument("--thresholds", type=_float_list, help="thresholds to search, e.g. 0.3,0.5")


def _hints(args: argparse.Namespace) -> dict[str, Any]:
    keys = (
        "num_partitions",
        "max_partitions",
        "tiers",
        "placement",
        "cut_points",
        "exits",
        "thresholds",
    )
    return {k: getattr(args, k) for k in keys if getattr(args, k) is not None}


def _inputs(args: argparse.Namespace) -> tuple[Any, Topology]:
    prof = resolve_profile(args.profile)
    topo = resolve_topology(args.topology)
    if args.device:
        mapping = {}
        for item in args.device:
            if "=" not in item:
                raise ValueError(f"--device {item!r}: expected TIER=DEVICE")
            k, v = item.split("=", 1)
            mapping[k.strip()] = v.strip()
        topo = bind_devices(topo, mapping)
    for item in args.set_params:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected PARAM=VALUE")
        k, v = item.split("=", 1)
        try:
            value = float(v)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"--set {item!r}: the value must be a finite number")
        topo = set_parameter(topo, k, value)
    return prof, topo


def _describe(p: Plan) -> str:
    return ", ".join(
        f"{q.tier_name}(tier {q.tier}) [{q.first_block}-{q.last_block}]" for q in p.partitions
    )


def _table(p: Plan, base: dict[str, Plan]) -> str:
    e = p.estimate
    lines = [
        f"objective: {p.objective} {json.dumps(dict(p.constraint))}   estimator: {p.estimator}",
        f"threshold: {p.threshold:g}",
        "",
        f"{'partition':<10}{'tier':<22}{'blocks':<12}{'exit fraction':>14}",
    ]
    for k, (q, ef) in enumerate(zip(p.partitions, e.exit_fractions, strict=False), 1):
        lines.append(
            f"{k:<10}{f'{q.tier} {q.tier_name}':<22}{f'{q.first_block}-{q.last_block}':<12}{ef:>14.4f}"
        )
    lines += [
        "",
        f"estimated latency: {e.latency_s * 1e3:.3f} ms   accuracy: {e.accuracy:.4f}",
        "breakdown (ms): "
        + "  ".join(
            f"{k} {v * 1e3:.3f}" for k, v in e.breakdown_s.items() if k in BREAKDOWN_KEYS or v
        ),
        "",
        f"{'baseline':<14}{'latency (ms)':>14}{'accuracy':>10}{'speed-up':>10}  placement",
    ]
    for name, b in base.items():
        be = b.estimate
        lines.append(
            f"{name:<14}{be.latency_s * 1e3:>14.3f}{be.accuracy:>10.4f}"
            f"{be.latency_s / e.latency_s:>9.2f}x  {_describe(b)}"
        )
    return "\n".join(lines)


def _load_table(load: dict[str, Any]) -> str:
    lines = [
        "",
        f"under load: {load['arrival_rate']:g} samples/s, K = {load['queue_capacity']}, "
        f"{load['queue_model']} queue model",
        f"mean latency: {load['latency_s'] * 1e3:.3f} ms (unloaded {load['unloaded_latency_s'] * 1e3:.3f})"
        f"   loss ratio: {load['loss_ratio']:.3g}   throughput: {load['throughput']:.4g}/s",
        f"{'station':<22}{'rate (/s)':>11}{'rho':>8}{'E[S] (ms)':>11}{'SCV':>8}{'loss':>10}"
        f"{'wait (ms)':>11}",
    ]
    for st in load["stations"]:
        lines.append(
            f"{st['name']:<22}{st['arrival_rate']:>11.4g}{st['utilization']:>8.3f}"
            f"{st['service_mean_s'] * 1e3:>11.4f}{st['service_scv']:>8.3f}{st['loss_ratio']:>10.3g}"
            f"{st['wait_s'] * 1e3:>11.4f}"
        )
    return "\n".join(lines)


def _load_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    if args.arrival_rate is None:
        if args.queue_capacity is not None or args.max_loss is not None:
            raise ValueError("--queue-capacity and --max-loss need --arrival-rate")
        return {}
    return {
        "arrival_rate": args.arrival_rate,
        "queue_capacity": args.queue_capacity,
        "max_loss": args.max_loss,
        "queue_model": args.queue_model,
    }


def _cmd_plan(args: argparse.Namespace) -> int:
    prof, topo = _inputs(args)
    p = plan(
        prof,
        topo,
        min_accuracy=args.min_accuracy,
        max_latency=args.max_latency,
        estimator=args.estimator,
        **_load_kwargs(args),
        **_hints(args),
    )
    if args.output:
        p.save(args.output)  # checked before planning (-o type); written atomically
    if args.json:
        sys.stdout.write(p.to_json())
    else:
        print(_table(p, baselines(prof, topo, args.estimator)))
        if isinstance(p.extra.get("load"), dict):
            print(_load_table(p.extra["load"]))
        if args.output:
            print(f"\nwrote {args.output}")
    return 0


def _cmd_pareto(args: argparse.Namespace) -> int:
    prof, topo = _inputs(args)
    front = pareto(prof, topo, estimator=args.estimator, **_hints(args))
    base = baselines(prof, topo, args.estimator)
    if args.plot:
        from earlyexit.planner.plot import plot_pareto

        with atomic_output(args.plot) as tmp:
            plot_pareto(
                front,
                tmp,
                base,
                title=f"{prof.model} / {prof.dataset} on {topo.name or 'topology'}",
            )
    if args.json:
        data = {
            "frontier": [q.to_dict() for q in front],
            "baselines": {k: v.to_dict() for k, v in base.items()},
        }
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return 0
    print(f"{'latency (ms)':>13}{'accuracy':>10}{'T':>6}  placement")
    for q in front:
        print(
            f"{q.estimate.latency_s * 1e3:>13.3f}{q.estimate.accuracy:>10.4f}{q.threshold:>6g}  {_describe(q)}"
        )
    print(f"\n{len(front)} Pareto-optimal configurations")
    for name, b in base.items():
        print(
            f"{name}: {b.estimate.latency_s * 1e3:.3f} ms, accuracy {b.estimate.accuracy:.4f} ({_describe(b)})"
        )
    if args.plot:
        print(f"wrote {args.plot}")
    return 0


def _cmd_whatif(args: argparse.Namespace) -> int:
    prof, topo = _inputs(args)
    name, values = parse_vary(args.vary)
    rows = whatif(
        prof,
        topo,
        name,
        values,
        min_accuracy=args.min_accuracy,
        max_latency=args.max_latency,
        estimator=args.estimator,
        **_hints(args),
    )
    if args.plot:
        from earlyexit.planner.plot import plot_whatif

        with atomic_output(args.plot) as tmp:
            plot_whatif(rows, name, tmp, title=f"{prof.model}: what if {name} changes")
    if args.json:
        out = [
            {
                **{k: v for k, v in r.items() if k != "plan"},
                "plan": None if r["plan"] is None else r["plan"].to_dict(),
            }
            for r in rows
        ]
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return 0
    print(
        f"{name:>24}{'optimal (ms)':>14}{'accuracy':>10}{'edge (ms)':>11}{'cloud (ms)':>12}"
        f"{'neuro (ms)':>12}  placement"
    )
    for r in rows:
        p = r["plan"]
        opt = "infeasible" if p is None else f"{r['latency_s'] * 1e3:.3f}"
        acc = "" if p is None else f"{r['accuracy']:.4f}"
        print(
            f"{r['value']:>24g}{opt:>14}{acc:>10}{r['edge_only_s'] * 1e3:>11.3f}{r['cloud_only_s'] * 1e3:>12.3f}"
            f"{r['neurosurgeon_s'] * 1e3:>12.3f}  {'' if p is None else _describe(p)}"
        )
    if args.plot:
        print(f"wrote {args.plot}")
    return 0


def _cmd_capacity(args: argparse.Namespace) -> int:
    prof, topo = resolve_profile(args.profile), resolve_topology(args.topology)
    lam = plan_capacity(
        args.plan,
        prof,
        topo,
        max_loss=args.max_loss,
        queue_capacity=args.queue_capacity,
        queue_model=args.queue_model,
    )
    if args.json:
        out = {
            "capacity": lam if math.isfinite(lam) else None,
            "max_loss": args.max_loss,
            "queue_capacity": args.queue_capacity,
            "queue_model": args.queue_model,
            "plan": args.plan,
        }
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return 0
    shown = "unbounded" if not math.isfinite(lam) else f"{lam:.6g} samples/s"
    print(
        f"capacity: {shown} with loss ratio <= {args.max_loss:g} ({args.queue_model} queue model)"
    )
    return 0


def _queue_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--queue-capacity",
        type=int_range(1, 10_000_000),
        metavar="K",
        help=f"messages a tier or link holds at most, waiting or in service "
        f"(default {DEFAULT_QUEUE_CAPACITY}; exact model: K <= {MAX_EXACT_CAPACITY})",
    )
    p.add_argument(
        "--queue-model",
        choices=QUEUE_MODELS,
        default="approx",
        help="approx (Casale & Roveri's M/GI/1/K loss formula) or exact (embedded Markov chain)",
    )


def _bounds(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--min-accuracy",
        type=float_range(0, 1),
        help="P_lat: minimize latency with accuracy >= A (in [0, 1])",
    )
    g.add_argument(
        "--max-latency",
        type=float_range(0, lo_open=True),
        help="P_acc: maximize accuracy with latency <= S seconds (> 0)",
    )


def register(subparsers: Any) -> None:
    """Add ``plan``, ``capacity``, ``pareto`` and ``whatif`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "plan",
        help="choose threshold, partitions and tiers (PORTEND P_lat / P_acc)",
        description="Find the optimal configuration of the model of docs/spec.md.",
    )
    _common(p)
    _bounds(p)
    load = p.add_argument_group("load (docs/spec.md#load)")
    load.add_argument(
        "--arrival-rate",
        type=float_range(0, lo_open=True),
        metavar="R",
        help="plan for a Poisson stream of R samples per second (> 0): queueing and loss",
    )
    load.add_argument(
        "--max-loss",
        type=float_range(0, 1, lo_open=True),
        help="with --arrival-rate: at most this fraction of samples dropped, in (0, 1]",
    )
    _queue_args(load)
    p.add_argument("--json", action="store_true", help="print exactly the plan JSON on stdout")
    p.add_argument("-o", "--output", type=output_file, help="also write the plan JSON to this file")
    p.set_defaults(func=_cmd_plan)

    c = subparsers.add_parser(
        "capacity",
        help="the highest arrival rate a plan sustains under a loss bound",
        description="Bisection on the arrival rate of the model under load (docs/spec.md#load).",
    )
    c.add_argument("--plan", required=True, type=input_file, help="plan JSON (earlyexit.plan/1)")
    c.add_argument("--profile", required=True, help="the plan's profile JSON")
    c.add_argument("--topology", required=True, help="the plan's topology (YAML or built-in name)")
    c.add_argument(
        "--max-loss",
        type=float_range(0, 1, lo_open=True, hi_open=True),
        default=0.01,
        help="the loss-ratio bound, in (0, 1) (default 0.01)",
    )
    _queue_args(c)
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(func=_cmd_capacity)

    q = subparsers.add_parser(
        "pareto",
        help="the latency-accuracy Pareto frontier",
        description="Every (latency, accuracy)-optimal configuration.",
    )
    _common(q)
    q.add_argument(
        "--plot", type=image_file, help="save the frontier with the baselines (png, pdf, svg)"
    )
    q.add_argument("--json", action="store_true", help="print the frontier and baselines as JSON")
    q.set_defaults(func=_cmd_pareto)

    w = subparsers.add_parser(
        "whatif",
        help="sweep a topology parameter and re-plan (PORTEND Fig. 9)",
        description="What-if study: re-plan for each value of one parameter.",
    )
    _common(w)
    _bounds(w)
    w.add_argument(
        "--vary",
        required=True,
        metavar="PARAM=VALUES",
        help="e.g. links[0].bandwidth_mbps=1:100:20, tiers[1].slowdown=1:0.1:10:log "
        f"(at most {MAX_VALUES} values)",
    )
    w.add_argument("--plot", type=image_file, help="save the sweep plot")
    w.add_argument("--json", action="store_true", help="print the rows as JSON")
    w.set_defaults(func=_cmd_whatif)
