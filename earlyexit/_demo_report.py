"""The demo's report: its figures as text, ``report.md``, and the speed-ups they state.

:func:`earlyexit._demo.run_demo` gathers the figures into a dict (``report.json``);
this module turns them into the text the demo prints and the markdown it writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from earlyexit.formats import atomic_write_text

if TYPE_CHECKING:
    from earlyexit.formats import Plan

__all__ = ["speedups", "speedup_text", "plan_text", "validation_text", "markdown", "write_report"]


def speedups(report: dict[str, Any]) -> dict[str, Any]:
    """The plan's speed-up over each baseline, measured and estimated, and over the best one.

    Args:
        report: the report with ``validation`` and ``baselines`` filled in.

    Returns:
        ``{measured: {name: x}, estimated: {name: x}, best_baseline, measured_over_best,
        estimated_over_best}``; x = baseline latency / plan latency.
    """
    plan_meas = report["validation"]["measured"]["mean_latency_s"]
    plan_est = report["plan"]["estimate"]["latency_s"]
    meas = {k: b["measured"]["mean_latency_s"] / plan_meas for k, b in report["baselines"].items()}
    est = {k: b["latency_s"] / plan_est for k, b in report["baselines"].items()}
    best = min(meas, key=meas.__getitem__)
    return {"measured": meas, "estimated": est, "best_baseline": best,
            "measured_over_best": meas[best], "estimated_over_best": min(est.values())}  # fmt: skip


def speedup_text(report: dict[str, Any]) -> str:
    """The measured latency and accuracy of the plan and each baseline, and the speed-ups.

    Args:
        report: the report with ``speedup`` filled in (:func:`speedups`).

    Returns:
        The lines, joined.
    """
    s = report["speedup"]
    v = report["validation"]["measured"]
    passes = report["validation"].get("passes", 1)
    side = f", side by side in {passes} interleaved passes" if passes > 1 else ""
    lines = [f"measured over the same samples{side} (mean latency, accuracy):",
             f"  {'plan':>12}: {1e3 * v['mean_latency_s']:7.2f} ms, {100 * v['accuracy']:.2f}%"]  # fmt: skip
    for name, b in report["baselines"].items():
        m = b["measured"]
        lines.append(f"  {name:>12}: {1e3 * m['mean_latency_s']:7.2f} ms, {100 * m['accuracy']:.2f}% "
                     f"-> plan {s['measured'][name]:.2f}x faster")  # fmt: skip
    lines.append(f"  measured speed-up over the best baseline ({s['best_baseline']}): "
                 f"{s['measured_over_best']:.2f}x (estimated {s['estimated_over_best']:.2f}x)")  # fmt: skip
    return "\n".join(lines)


def plan_text(best: Plan, base: Mapping[str, Plan]) -> str:
    """The plan's partitions and exit fractions, and its estimated speed-up over each baseline.

    Args:
        best: the plan.
        base: the baselines' plans, by name.

    Returns:
        The lines, joined.
    """
    lines = [f"plan: threshold {best.threshold:.1f}, estimated {1e3 * best.estimate.latency_s:.1f} ms, "
             f"accuracy {100 * best.estimate.accuracy:.2f}%"]  # fmt: skip
    for part, frac in zip(best.partitions, best.estimate.exit_fractions, strict=True):
        lines.append(
            f"  {part.tier_name:>12}: blocks {part.first_block:>2}-{part.last_block:<2}  exits {100 * frac:5.1f}%"
        )
    for name, p in base.items():
        speedup = p.estimate.latency_s / best.estimate.latency_s
        lines.append(
            f"  vs {name:>12}: {1e3 * p.estimate.latency_s:7.1f} ms, {100 * p.estimate.accuracy:.2f}% "
            f"-> {speedup:.2f}x faster (estimated)"
        )
    return "\n".join(lines)


def validation_text(v: dict[str, Any]) -> str:
    """The deployment's measured latency, accuracy and exit fractions against each estimator.

    Args:
        v: the report's ``validation`` entry.

    Returns:
        The lines, joined.
    """
    m = v["measured"]
    lines = [
        f"deployment of the plan, {v['samples']} test samples one at a time (measured vs estimated):",
        f"  {'':>10} {'latency ms':>11} {'accuracy':>9}  exit fractions",
        f"  {'measured':>10} {1e3 * m['mean_latency_s']:11.2f} {100 * m['accuracy']:8.2f}%  "
        + " ".join(f"{100 * f:5.1f}%" for f in m["exit_fractions"]),
    ]
    for name, e in v["estimated"].items():
        lines.append(
            f"  {name:>10} {1e3 * e['latency_s']:11.2f} {100 * e['accuracy']:8.2f}%  "
            + " ".join(f"{100 * f:5.1f}%" for f in e["exit_fractions"])
        )
    lines.append(
        f"  p50 {1e3 * m['p50_latency_s']:.2f} ms, p99 {1e3 * m['p99_latency_s']:.2f} ms, degraded {m['degraded']}"
    )
    return "\n".join(lines)


def _cpu_text(cpu: Mapping[str, Any] | None) -> str:
    """How the emulated tiers ran on this host's CPUs, as a paragraph (empty if unknown)."""
    if not cpu:
        return ""
    if not cpu.get("tuned"):
        return "\nThe emulated tiers ran with the runtime's defaults (`--untuned`).\n"
    held = ("held" if cpu.get("held")
            else f"not held ({cpu.get('reason', '')}), so idle CPUs slept")  # fmt: skip
    rt, nice = cpu.get("realtime"), cpu.get("niceness")
    prios = []
    if rt is not None:
        prios.append(f"real-time (SCHED_FIFO {rt})")
    if nice is not None:
        prios.append(f"at niceness {nice}")
    prio = " and ".join(prios) or "at normal priority (real-time and niceness need CAP_SYS_NICE)"
    return (
        "\nThe tiers emulated on this host ran as separate devices would: each worker "
        "pinned to its own core in turn, and a CPU latency request of 0 us "
        f"(idle CPUs poll) {held} while profiling and deploying (docs/deployment.md, "
        f'"Fast hops"; `--untuned` runs without these); the deployments ran {prio}, '
        "as `earlyexit validate` measures.\n"
    )


def markdown(report: dict[str, Any], best: Plan, base: Mapping[str, Plan]) -> str:
    """``report.md``: the plan, the deployment against the estimates, links to the files and plots.

    Args:
        report: the complete report (``speedup`` and ``wall_time_s`` included).
        best: the plan.
        base: the baselines' plans, by name.

    Returns:
        The markdown text.
    """
    topo = report["topology"]
    return f"""# earlyexit demo report

ResNet-20 on Fashion-MNIST (`{report["checkpoint"]}`), planned for the
`{topo["name"]}` topology: {topo["description"]}. The plan may give up
{100 * report["accuracy_drop"]:g} point(s) of the final exit's profiled accuracy
for early exit and keeps the whole network for the samples that no earlier
exit is sure of; each of its partitions receives at least
{100 * report.get("min_share", 0.0):g}% of the samples (a plan whose last partition
receives none would be the network cut short, not early exit). The baselines
(edge-only, cloud-only, Neurosurgeon) run the whole network for every sample.
{_cpu_text(report.get("cpu"))}
## The plan

```
{plan_text(best, base)}
```

Files: [plan.json](plan.json), [profile.json](profile.json), [topology.yaml](topology.yaml).

## The deployment, measured against the estimates

The bundle ([bundle/](bundle/manifest.json)) ran with one process per tier,
ZeroMQ between them and emulated links (bandwidth, MTU fragments,
propagation), with the tiers' slowdowns emulated on top of real computation;
then each baseline ran the same samples the same way.

```
{validation_text(report["validation"])}
```

```
{speedup_text(report)}
```

![validation](validation.png)

## Pareto frontier

![Pareto frontier](pareto.png)

## Profile

![profile](profile.png)

Wall time of the demo: {report["wall_time_s"]:.0f} s.
"""


def write_report(
    out: Path, report: dict[str, Any], best: Plan, base: Mapping[str, Plan], echo: bool = True
) -> None:
    """Write ``report.json`` and ``report.md`` into ``out``; print the figures with ``echo``.

    Args:
        out: the demo's output directory.
        report: the figures, complete (``speedup`` and ``wall_time_s`` included).
        best: the plan deployed.
        base: the baselines' plans, by name.
        echo: also print the plan, the deployment and the speed-ups.
    """
    atomic_write_text(out / "report.json", json.dumps(report, indent=2))
    atomic_write_text(out / "report.md", markdown(report, best, base))
    if echo:
        print(plan_text(best, base))
        print(validation_text(report["validation"]))
        print(speedup_text(report))
        print(f"wrote {out}/report.md in {report['wall_time_s']:.0f} s")
