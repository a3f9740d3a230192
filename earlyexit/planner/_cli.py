"""``earlyexit plan``, ``capacity``, ``pareto`` and ``whatif``: thin wrappers of the API.

Every option that a planner function takes is declared by it: ``--min-accuracy``,
``--estimator`` and the load options by :func:`earlyexit.plan`, the hints
(``--num-partitions`` ... ``--thresholds``) by
:func:`earlyexit.planner.space.make_space`, ``capacity``'s by
:func:`earlyexit.planner.api.plan_capacity` (read from the source, see
:mod:`earlyexit._signatures`). Declared here: the files the command loads,
``--device`` and ``--set`` (repeatable pairs), the output flags and the list
syntax of the hints.
"""

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
from earlyexit._cliutil import add_command, block_list, given, key_values, name_list, unit_list
from earlyexit._signatures import Param, add_param, read_constant, read_signature
from earlyexit.formats import BREAKDOWN_KEYS, Plan, Topology

__all__ = ["register"]


_API = "earlyexit.planner.api"
_FILES = ("profile", "topology")  # the command loads them (--device, --set change them)


# the command-line form of each hint of make_space (the meaning is its Args: line)
_HINT_FORMS: dict[str, tuple[Any, str]] = {
    "num_partitions": (int_range(1, 1000), ""),
    "max_partitions": (int_range(1, 1000), ""),
    "tiers": (name_list, "E.g. 0,2 or edge,cloud."),
    "placement": (name_list, "E.g. 0,2."),
    "cut_points": (block_list, "E.g. 5,10-20."),
    "exits": (block_list, "E.g. 55."),
    "thresholds": (unit_list, "E.g. 0.3,0.5."),
}


def _hint_params() -> dict[str, Param]:
    return {k: v for k, v in read_signature("earlyexit.planner.space", "make_space").items()
            if k != "cm"}  # fmt: skip


def _files(p: argparse.ArgumentParser, what: str = "") -> None:
    """``--profile`` and ``--topology``: loaded here, so that --device and --set can change them."""
    builtins = ", ".join(read_constant("earlyexit.planner.topology", "BUILTIN_TOPOLOGIES"))
    p.add_argument("--profile", required=True, help=f"{what}profile JSON (earlyexit.profile/1)")
    p.add_argument("--topology", required=True,
                   help=f"{what}topology YAML or a built-in name: {builtins}")  # fmt: skip


def _common(p: argparse.ArgumentParser, sig: dict[str, Param]) -> None:
    _files(p)
    estimators = read_constant("earlyexit.planner.estimators", "ESTIMATORS")
    add_param(p, sig["estimator"], choices=estimators)
    p.add_argument("--device", action="append", default=[], metavar="TIER=DEVICE",
                   help="run a tier (name, index or current device) on another profile device; "
                   "repeatable")  # fmt: skip
    p.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE", dest="set_params",
                   help="change a topology parameter, e.g. destination=2 or "
                   "links[0].bandwidth_mbps=5")  # fmt: skip
    h = p.add_argument_group("hints (earlyexit.planner.space.make_space)")
    for name, param in _hint_params().items():
        kind, example = _HINT_FORMS[name]
        add_param(h, param, type=kind, more=example)


def _hints(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in _HINT_FORMS if getattr(args, k) is not None}


def _inputs(args: argparse.Namespace) -> tuple[Any, Topology]:
    from earlyexit.planner.topology import bind_devices, resolve_profile, resolve_topology
    from earlyexit.planner.whatif import set_parameter

    prof = resolve_profile(args.profile)
    topo = resolve_topology(args.topology)
    if args.device:
        topo = bind_devices(topo, key_values(args.device, "--device"))
    for k, v in key_values(args.set_params, "--set", "PARAM=VALUE").items():
        try:
            value = float(v)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"--set {k}={v}: the value must be a finite number")
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


def _check_load(args: argparse.Namespace) -> None:
    if args.arrival_rate is None and (args.queue_capacity is not None or args.max_loss is not None):
        raise ValueError("--queue-capacity and --max-loss need --arrival-rate")


def _cmd_plan(args: argparse.Namespace) -> int:
    from earlyexit.planner.api import baselines, plan

    prof, topo = _inputs(args)
    _check_load(args)
    p = plan(prof, topo, **given(args, read_signature(_API, "plan"), _FILES), **_hints(args))
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
    from earlyexit.planner.api import baselines, pareto

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
    from earlyexit.planner.whatif import parse_vary, whatif

    prof, topo = _inputs(args)
    name, values = parse_vary(args.vary)
    bounds = given(args, read_signature(_API, "plan"), _FILES)
    rows = whatif(prof, topo, name, values, **bounds, **_hints(args))
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
    from earlyexit.planner.api import plan_capacity
    from earlyexit.planner.topology import resolve_profile, resolve_topology

    prof, topo = resolve_profile(args.profile), resolve_topology(args.topology)
    cap = given(args, read_signature(_API, "plan_capacity"), ("plan", *_FILES))
    lam = plan_capacity(args.plan, prof, topo, **cap)
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


def _load(p: argparse.ArgumentParser | Any, sig: dict[str, Param], capacity: bool = False) -> None:
    """The load options: plan's (``arrival_rate`` ...) or plan_capacity's (``max_loss`` ...)."""
    exact_k = read_constant("earlyexit.planner.queueing", "MAX_EXACT_CAPACITY")
    if not capacity:
        add_param(p, sig["arrival_rate"], type=float_range(0, lo_open=True), metavar="R")
    loss = float_range(0, 1, lo_open=True, hi_open=capacity)  # plan: (0, 1]; capacity: (0, 1)
    add_param(p, sig["max_loss"], type=loss, more="" if capacity else "Needs --arrival-rate.")
    add_param(p, sig["queue_capacity"], type=int_range(1, 10_000_000), metavar="K",
              more=f"The exact model takes K <= {exact_k}.")  # fmt: skip
    add_param(p, read_signature(_API, "plan")["queue_model"],  # plan's says what the models are
              choices=read_constant("earlyexit.planner.queueing", "QUEUE_MODELS"))  # fmt: skip


def _bounds(p: argparse.ArgumentParser, sig: dict[str, Param]) -> None:
    g = p.add_mutually_exclusive_group()
    add_param(g, sig["min_accuracy"], type=float_range(0, 1), metavar="A",
              more="P_lat: minimize latency with accuracy >= A.")  # fmt: skip
    add_param(g, sig["max_latency"], type=float_range(0, lo_open=True), metavar="S",
              more="P_acc: maximize accuracy with latency <= S.")  # fmt: skip


def _output(p: argparse.ArgumentParser, what: str, plot: str = "") -> None:
    if plot:
        p.add_argument("--plot", type=image_file, help=plot)
    p.add_argument("--json", action="store_true", help=f"print {what}")


def register(subparsers: Any) -> None:
    """Add ``plan``, ``capacity``, ``pareto`` and ``whatif`` to an argparse subparsers object."""
    sig = read_signature(_API, "plan")
    p = add_command(subparsers, "plan", _cmd_plan,
                    "choose threshold, partitions and tiers (PORTEND P_lat / P_acc)",
                    description="Find the optimal configuration of the model of docs/spec.md.")  # fmt: skip
    _common(p, sig)
    _bounds(p, sig)
    _load(p.add_argument_group("load (docs/spec.md#load)"), sig)
    _output(p, "exactly the plan JSON on stdout")
    p.add_argument("-o", "--output", type=output_file, help="also write the plan JSON to this file")

    cap = read_signature(_API, "plan_capacity")
    c = add_command(subparsers, "capacity", _cmd_capacity,
                    "the highest arrival rate a plan sustains under a loss bound",
                    description="Bisection on the arrival rate of the model under load "
                    "(docs/spec.md#load).")  # fmt: skip
    add_param(c, cap["plan"], type=input_file, more="Here its path (earlyexit.plan/1).")
    _files(c, "the plan's ")
    _load(c, cap, capacity=True)
    _output(c, "the result as JSON")

    q = add_command(subparsers, "pareto", _cmd_pareto, "the latency-accuracy Pareto frontier",
                    description="Every (latency, accuracy)-optimal configuration.")  # fmt: skip
    _common(q, sig)
    _output(q, "the frontier and baselines as JSON",
            "save the frontier with the baselines (png, pdf, svg)")  # fmt: skip

    w = add_command(subparsers, "whatif", _cmd_whatif,
                    "sweep a topology parameter and re-plan (PORTEND Fig. 9)",
                    description="What-if study: re-plan for each value of one parameter.")  # fmt: skip
    _common(w, sig)
    _bounds(w, sig)
    max_values = read_constant("earlyexit.planner.whatif", "MAX_VALUES")
    w.add_argument("--vary", required=True, metavar="PARAM=VALUES",
                   help="e.g. links[0].bandwidth_mbps=1:100:20, tiers[1].slowdown=1:0.1:10:log "
                   f"(at most {max_values} values)")  # fmt: skip
    _output(w, "the rows as JSON", "save the sweep plot")
