"""Regenerate the figures that README.md quotes, from a real run, so they cannot drift.

The README's paragraphs between ``<!-- figures:demo -->`` / ``<!-- figures:validation -->``
and ``<!-- /figures -->`` are rendered from two committed JSON files:

- ``docs/img/demo_report.json``: the ``report.json`` of an ``earlyexit demo`` run
  (its plots are copied beside it as ``demo_pareto.png`` and ``demo_validation.png``);
- ``docs/img/validation/validation_summary.json``: what ``earlyexit validate
  --out docs/img/validation`` writes.

``tests/test_readme.py`` renders them again and fails if README.md differs, so
a figure in the README is always the one of the committed run.

Usage::

    python tools/update_figures.py --run-demo        # run the demo, copy its outputs, rewrite README
    python tools/update_figures.py --demo-dir DIR    # take an existing demo output folder
    python tools/update_figures.py                   # only re-render README from the committed JSON
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"
DEMO_REPORT = IMG / "demo_report.json"
VALIDATION_SUMMARY = IMG / "validation" / "validation_summary.json"
README = ROOT / "README.md"
REGION = re.compile(r"(<!-- figures:(?P<name>\w+) -->\n)(?P<body>.*?)(<!-- /figures -->)", re.S)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def _blocks(plan: dict[str, Any]) -> str:
    parts = plan["partitions"]
    return "; ".join(
        f"blocks {p['first_block']}-{p['last_block']} on the {p.get('tier_name') or p['tier']}"
        for p in parts
    )


def demo_text(report: dict[str, Any]) -> str:
    """The README paragraph on the demo, from its ``report.json``."""
    plan, base, val = report["plan"], report["baselines"], report["validation"]
    est = plan["estimate"]
    measured = val["measured"]
    final = report["profile"]["final_exit_accuracy"]
    others = ", ".join(
        f"{name.replace('_', '-')} {_ms(b['latency_s'])}" for name, b in sorted(base.items())
    )
    early = "no early exit" if plan["threshold"] == 0 else f"exit threshold {plan['threshold']:g}"
    fractions = est.get("exit_fractions") or []
    if plan["threshold"] != 0 and fractions:
        parts = plan["partitions"]
        leave = ", ".join(f"{f * 100:.0f}% after block {q['last_block']}"
                          for f, q in zip(fractions, parts, strict=False))  # fmt: skip
        early += f": estimated {leave}"
    topo = report.get("topology", {}).get("name")
    where = f"the `{topo}` topology" if topo else "the PORTEND AWS topology"
    text = (
        f"On the shipped ResNet-20 (an exit after each of its {plan.get('num_blocks', '?')} "
        f"blocks) and {where}, the demo's plan ({_blocks(plan)}; {early}) "
        f"has an estimated accuracy of {est['accuracy'] * 100:.1f}% (the full network's is "
        f"{final * 100:.1f}% on its held-out profiling images) and an estimated latency of "
        f"{_ms(est['latency_s'])}; over the emulated deployment, {val['samples']} test samples "
        f"one at a time took {_ms(measured['mean_latency_s'])} on average (p50 "
        f"{_ms(measured['p50_latency_s'])}). The baselines, estimated: {others}."
    )
    speedup = report.get("speedup")
    if speedup:
        best = speedup["best_baseline"]
        passes = val.get("passes", 1)
        side = f", side by side with the plan in {passes} interleaved passes," if passes > 1 else ""
        text += (
            f" Measured the same way{side} the best baseline ({best.replace('_', '-')}) took "
            f"{_ms(base[best]['measured']['mean_latency_s'])}: the plan is "
            f"{speedup['measured_over_best']:.2f}x faster (estimated "
            f"{speedup['estimated_over_best']:.2f}x)."
        )
    cpu = report.get("cpu")
    if cpu and cpu.get("tuned"):
        held = "held" if cpu.get("held") else "not allowed, so not held"
        text += (
            " The emulated tiers ran tuned: each worker on its own core, and a CPU latency "
            f"request of 0 µs {held} (docs/deployment.md, \"Fast hops\")"
        )
        if cpu.get("realtime") is not None:
            text += f"; the deployments ran real-time (SCHED_FIFO {cpu['realtime']})"
        text += "."
    return text + f" The whole demo took {report['wall_time_s']:.0f} s on this 2-core machine.\n"


def validation_text(summary: dict[str, Any]) -> str:
    """The README paragraph on ``earlyexit validate``, from its summary JSON."""
    lat, er, acc = summary["latency"], summary["exit_rate"], summary["accuracy"]
    err = summary["latency_error"]
    return (
        f"Does the performance model predict what a real deployment does? Over {lat['n']} "
        "configurations deployed with one process per tier and emulated links (the demo's "
        "profile and topology), the median relative latency error is "
        f"{100 * err['median_abs_relative_error']:.1f}% and the largest "
        f"{100 * err['max_abs_relative_error']:.1f}%; estimated "
        f"against measured latency has slope {lat['beta']:.2f} and R² {lat['r2']:.3f} ("
        + ", ".join(f"{name} {c['beta']:.2f}" for name, c in err["clusters"].items())
        + f" inside each cluster), exit rates R² {er['r2']:.5f}, and the exact estimator's accuracy is within "
        f"{acc['mean_abs_error'] * 100:.2f} points on average (`earlyexit validate`; plots in "
        "[docs/img/validation](docs/img/validation)).\n"
    )


RENDERERS = {"demo": (DEMO_REPORT, demo_text), "validation": (VALIDATION_SUMMARY, validation_text)}


def render(readme: str) -> str:
    """README text with every figures region rendered from the committed JSON.

    Raises:
        ValueError: for a region with an unknown name, or none at all.
    """
    found = []

    def sub(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in RENDERERS:
            raise ValueError(f"unknown figures region {name!r}; known: {sorted(RENDERERS)}")
        found.append(name)
        path, fn = RENDERERS[name]
        return m.group(1) + fn(json.loads(path.read_text())) + m.group(4)

    out = REGION.sub(sub, readme)
    if not found:
        raise ValueError("README.md has no <!-- figures:NAME --> ... <!-- /figures --> region")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--run-demo", action="store_true", help="run `earlyexit demo` first")
    src.add_argument("--demo-dir", type=Path, help="an existing `earlyexit demo --out` folder")
    args = parser.parse_args(argv)
    demo_dir = args.demo_dir
    if args.run_demo:
        demo_dir = Path(tempfile.mkdtemp(prefix="earlyexit-figures-")) / "demo"
        exe = Path(sys.executable).with_name("earlyexit")
        subprocess.run([str(exe), "demo", "--out", str(demo_dir)], check=True, cwd=ROOT)
    if demo_dir is not None:
        shutil.copyfile(demo_dir / "report.json", DEMO_REPORT)
        shutil.copyfile(demo_dir / "pareto.png", IMG / "demo_pareto.png")
        shutil.copyfile(demo_dir / "validation.png", IMG / "demo_validation.png")
    README.write_text(render(README.read_text()))
    print(f"README.md figures rendered from {DEMO_REPORT.name} and {VALIDATION_SUMMARY.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
