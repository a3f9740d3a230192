"""Where does partitioning with early exit pay? A sweep of the demo's topology (issue 13).

For a profile (the demo's ``profile.json``), re-plans the two-tier topology of
``--topology`` (default ``pi4-wifi``) for every combination of the edge tier's
slowdown R, the link's bandwidth and one-way delay, and the accuracy the plan
may give up, with ``exits=[N]`` as the demo plans, and compares the estimated
latency with the best of PORTEND's baselines (edge-only, cloud-only,
Neurosurgeon) on the same topology. A row counts as *early exit across tiers*
when every partition of the plan receives at least ``--min-share`` of the
samples (a plan that answers every sample on the device is the network cut
short, not early exit).

Prints the best rows (``--json``: all of them), so that the choice of the
demo's topology comes from a run, not from memory:

    .venv/bin/python tools/topology_sweep.py --profile demo_out/profile.json
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
from typing import Any


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from err
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def sweep(
    profile: Any,
    topology: str = "pi4-wifi",
    slowdowns: list[float] = (10.0,),
    bandwidths: list[float] = (50.0,),
    delays: list[float] = (5.0,),
    drops: list[float] = (0.0,),
    min_share: float = 0.05,
) -> list[dict[str, Any]]:
    """One row per combination: the plan, its estimate and the baselines'.

    Args:
        profile: a :class:`~earlyexit.formats.Profile` or its path.
        topology: a built-in name or YAML path with two tiers and one link.
        slowdowns, bandwidths, delays: values of tier 0's slowdown, the link's
            Mb/s and one-way ms.
        drops: accuracy (a fraction) the plan may give up against the final exit.
        min_share: share of the samples each partition must receive for the row
            to count as early exit across tiers.

    Returns:
        Rows with ``slowdown``, ``bandwidth_mbps``, ``delay_ms``, ``drop``,
        ``threshold``, ``partitions`` ([first, last, tier]), ``exit_fractions``,
        ``latency_ms``, ``baselines_ms``, ``speedup`` (best baseline / plan) and
        ``across_tiers``.
    """
    from earlyexit.planner import baselines, bind_devices, plan, resolve_profile, resolve_topology

    prof = resolve_profile(profile)
    device = next(iter(prof.devices))
    base = bind_devices(resolve_topology(topology), {t.device: device for t in resolve_topology(topology).tiers})
    if base.num_tiers != 2 or len(base.links) != 1:
        raise ValueError(f"the sweep needs a topology of two tiers and one link, {topology!r} has "
                         f"{base.num_tiers} tiers")  # fmt: skip
    final = float(prof.branch_accuracy[-1])
    rows = []
    for r, bw, dl, drop in itertools.product(slowdowns, bandwidths, delays, drops):
        d = copy.deepcopy(base.to_dict())
        d["tiers"][0]["slowdown"] = r
        d["links"][0].update(bandwidth_mbps=bw, propagation_ms=dl)
        topo = type(base).from_dict(d)
        best = plan(prof, topo, min_accuracy=final - drop, estimator="exact", exits=[prof.num_blocks])
        base_ms = {k: 1e3 * v.estimate.latency_s
                   for k, v in baselines(prof, topo, estimator="exact").items()}  # fmt: skip
        fr = [float(f) for f in best.estimate.exit_fractions]
        rows.append({
            "slowdown": r, "bandwidth_mbps": bw, "delay_ms": dl, "drop": drop,
            "threshold": best.threshold,
            "partitions": [[p.first_block, p.last_block, p.tier] for p in best.partitions],
            "exit_fractions": fr,
            "latency_ms": 1e3 * best.estimate.latency_s,
            "baselines_ms": base_ms,
            "speedup": min(base_ms.values()) / (1e3 * best.estimate.latency_s),
            "across_tiers": len(fr) > 1 and min(fr) >= min_share,
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True, help="profile JSON (the demo's profile.json)")
    ap.add_argument("--topology", default="pi4-wifi", help="two tiers, one link (default pi4-wifi)")
    ap.add_argument("--slowdowns", type=_floats, default=[10, 20, 30], help="tier 0's R values")
    ap.add_argument("--bandwidths", type=_floats, default=[20, 50, 100, 300], help="Mb/s values")
    ap.add_argument("--delays", type=_floats, default=[1, 2, 5, 10], help="one-way ms values")
    ap.add_argument("--drops", type=lambda t: [float(v) for v in t.split(",")],
                    default=[0.0, 0.005, 0.01], help="accuracy the plan may give up")  # fmt: skip
    ap.add_argument("--min-share", type=float, default=0.05)
    ap.add_argument("--top", type=int, default=15, help="rows printed (early exit across tiers)")
    ap.add_argument("--json", action="store_true", help="print every row as JSON")
    args = ap.parse_args(argv)
    rows = sweep(args.profile, args.topology, args.slowdowns, args.bandwidths, args.delays,
                 args.drops, args.min_share)  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    good = sorted((r for r in rows if r["across_tiers"]), key=lambda r: -r["speedup"])
    print(f"{len(rows)} topologies, {len(good)} with early exit across tiers "
          f"(every partition >= {args.min_share:.0%} of samples); best by speed-up:")  # fmt: skip
    print(f"{'R':>4} {'Mb/s':>5} {'ms':>4} {'drop':>5} {'T':>4} {'cuts':>12} {'shares':>12} "
          f"{'plan ms':>8} {'edge':>6} {'cloud':>6} {'NS':>6} {'x':>5}")  # fmt: skip
    for r in good[: args.top]:
        b = r["baselines_ms"]
        cuts = "/".join(f"{p[0]}-{p[1]}" for p in r["partitions"])
        shares = "/".join(f"{f:.2f}" for f in r["exit_fractions"])
        print(f"{r['slowdown']:4g} {r['bandwidth_mbps']:5g} {r['delay_ms']:4g} {r['drop']:5g} "
              f"{r['threshold']:4g} {cuts:>12} {shares:>12} {r['latency_ms']:8.2f} "
              f"{b['edge_only']:6.2f} {b['cloud_only']:6.2f} {b['neurosurgeon']:6.2f} "
              f"{r['speedup']:5.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
