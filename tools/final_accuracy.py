"""Accuracy of final models against the estimators (issue 13, item 5; EdgeSys'22 Fig. 3).

For several plans of the shipped checkpoint (different topologies, accuracy
targets and estimators, so different exit sets and thresholds):

1. predict the plan's accuracy with both estimators (``portend``, ``exact``)
   from a profile of the full-configuration checkpoint on its profiling split;
2. measure test accuracy with only the plan's exits: as selected from the
   checkpoint (its exits' outputs on the test set, replayed with the early-exit
   rule) and, the final model, after fine-tuning them (``recipes/finetune.yaml``,
   a short schedule) with real early exit (``MultiExitModel.predict``);
3. the correction: profile the fine-tuned model's exits on the same profiling
   split and predict again.

Writes ``OUT/final_accuracy.json`` and ``OUT/final_accuracy.png``; with
``--doc-figure`` also copies the plot to ``docs/img/final_accuracy.png``.
docs/final-accuracy.md reports what it printed.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python tools/final_accuracy.py --out runs/final_accuracy

A miniature (1 plan, a few batches) runs in the slow tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "checkpoints" / "resnet20_fashionmnist.pt"
DATA = "fashion-mnist:/usr/share/datasets/fashion-mnist"
ESTIMATORS = ("portend", "exact")
# (topology, accuracy drop, estimator): the planner's P_lat on each
SCENARIOS: tuple[tuple[str, float, str], ...] = tuple(
    (topo, drop, est)
    for topo in ("pi4-wifi", "portend-aws", "iot", "mobile")
    for drop in (0.0, 0.005, 0.01, 0.02, 0.04, 0.08)
    for est in ("exact", "portend")
)


def _topology(name: str, device: str):
    from earlyexit.planner import bind_devices, load_builtin_topology

    topo = load_builtin_topology(name)
    return bind_devices(topo, {t.device: device for t in topo.tiers})


def choose_plans(prof, count: int, max_drop: float = 0.05) -> list[dict[str, Any]]:
    """Distinct early-exit plans (>= 2 exits, T > 0), spread over thresholds.

    The candidates are the planner's P_lat optima of :data:`SCENARIOS` and the
    P_lat optima at fixed thresholds 0.1 .. 0.5, and the Pareto-optimal plans
    (both estimators) on the built-in topologies within
    ``max_drop`` of the final exit's profiled accuracy: what a user would deploy.

    Returns:
        Up to ``count`` dicts with ``cuts``, ``threshold`` and the scenario that found them.
    """
    from earlyexit.planner import pareto
    from earlyexit.planner import plan as make

    device = next(iter(prof.devices))
    final = float(prof.branch_accuracy[-1])
    found: dict[tuple[tuple[int, ...], float], dict[str, Any]] = {}

    def add(p, topo: str, how: str) -> None:
        cuts = tuple(int(c) for c in p.cut_points)
        if len(cuts) >= 2 and p.threshold > 0 and p.estimate.accuracy >= final - max_drop:
            found.setdefault((cuts, round(float(p.threshold), 6)), {
                "cuts": list(cuts), "threshold": float(p.threshold), "topology": topo, "found_by": how,
                "planned_accuracy": float(p.estimate.accuracy)})  # fmt: skip

    for topo, drop, est in SCENARIOS:
        try:
            add(make(prof, _topology(topo, device), min_accuracy=final - drop, estimator=est),
                topo, f"plan {est}, drop {drop:g}")  # fmt: skip
        except ValueError:
            continue
    for topo in dict.fromkeys(t for t, _, _ in SCENARIOS):
        for th in (0.1, 0.2, 0.3, 0.4, 0.5):  # P_lat at a fixed threshold: exits that share samples
            with contextlib.suppress(ValueError):
                add(make(prof, _topology(topo, device), min_accuracy=final - 0.02, estimator="exact",
                         thresholds=[th]), topo, f"plan exact, drop 0.02, T={th:g}")  # fmt: skip
        for est in ESTIMATORS:
            for p in pareto(prof, _topology(topo, device), estimator=est):
                add(p, topo, f"pareto {est}")
    plans = sorted(found.values(), key=lambda d: (d["threshold"], d["planned_accuracy"], d["cuts"]))
    if len(plans) <= count:
        return plans
    pick = np.unique(np.linspace(0, len(plans) - 1, count).round().astype(int))
    return [plans[i] for i in pick]


def predict(prof, cuts: list[int], threshold: float) -> dict[str, float]:
    """Both estimators' accuracy for exits ``cuts`` at ``threshold``."""
    from earlyexit.planner.estimators import exit_fractions

    return {e: float(exit_fractions(prof, threshold, cuts, e)[2]) for e in ESTIMATORS}


def corrected_profile(prof, model, cuts: list[int], batches):
    """``prof`` with the columns of exits ``cuts`` replaced by ``model``'s (its exits = cuts).

    The estimators read only the used exits' columns, so the result predicts
    the fine-tuned model's plan from its own exits on the same profiling samples.
    """
    from earlyexit.formats import Profile
    from earlyexit.profiling import collect_exit_outputs, exit_statistics

    stats = exit_statistics(collect_exit_outputs(model, batches), prof.thresholds)
    data = prof.to_dict()
    acc = np.asarray(data["branch_accuracy"], dtype=float)
    rate = np.asarray(data["exit_rate"], dtype=float)
    ent = np.asarray(data["samples"]["entropy"], dtype=float)
    cor = np.asarray(data["samples"]["correct"], dtype=bool)
    if ent.shape[1] != stats.entropy.shape[1]:
        raise ValueError("the profile and the fine-tuned model saw different profiling samples")
    for slot, c in enumerate(cuts):
        acc[c - 1] = stats.branch_accuracy[slot]
        rate[:, c - 1] = stats.exit_rate[:, slot]
        ent[c - 1] = stats.entropy[slot]
        cor[c - 1] = stats.correct[slot]
    data["branch_accuracy"], data["exit_rate"] = acc.tolist(), rate.tolist()
    data["samples"] = {**data["samples"], "entropy": ent.tolist(), "correct": cor.tolist()}
    return Profile.from_dict(data)


def profile_from_stats(prof, stats):
    """``prof`` with every exit's accuracy, exit rates and per-sample record taken from ``stats``."""
    from earlyexit.formats import Profile

    data = prof.to_dict()
    data["branch_accuracy"] = np.asarray(stats.branch_accuracy, dtype=float).tolist()
    data["exit_rate"] = np.asarray(stats.exit_rate, dtype=float).tolist()
    data["samples"] = {**data["samples"], "entropy": stats.entropy.tolist(),
                       "correct": stats.correct.tolist()}  # fmt: skip
    data["profiling_samples"] = int(stats.entropy.shape[1])
    return Profile.from_dict(data)


def split_half(result: dict[str, Any], prof, data: str) -> None:
    """Profile on the even half of the test set, measure on the odd half (the checkpoint's exits).

    When the profile comes from the distribution the model serves, is the bias gone?
    Adds ``split_half`` to every record and ``split_half.*`` rows to the summary.
    """
    import earlyexit
    from earlyexit.data import EarlyExitDataModule
    from earlyexit.profiling import collect_exit_outputs, exit_statistics
    from earlyexit.profiling.exits import ExitOutputs

    base = earlyexit.load(CHECKPOINT)
    dm = EarlyExitDataModule.for_model(data, base, batch_size=256)
    dm.setup()
    outs = collect_exit_outputs(base, dm.dataloader("test", shuffle=False))
    half = {k: ExitOutputs([lg[k::2] for lg in outs.logits], outs.labels[k::2]) for k in (0, 1)}
    even = profile_from_stats(prof, exit_statistics(half[0], prof.thresholds))
    odd = exit_statistics(half[1], [0.0])
    for r in result["plans"]:
        r["split_half"] = {"predicted": predict(even, r["cuts"], r["threshold"]),
                           "measured": replay(odd.entropy, odd.correct, r["cuts"], r["threshold"])}  # fmt: skip
    meas = np.array([r["split_half"]["measured"] for r in result["plans"]])
    for e in ESTIMATORS:
        err = 100 * (np.array([r["split_half"]["predicted"][e] for r in result["plans"]]) - meas)
        result["summary"][f"split_half.{e} vs selected (odd test half)"] = {
            "bias_points": float(err.mean()), "mae_points": float(np.abs(err).mean()),
            "max_abs_points": float(np.abs(err).max())}  # fmt: skip


def finetune(cuts: list[int], out: Path, train_batches: int, data: str) -> Path:
    """Fine-tune exits ``cuts`` of the checkpoint with recipes/finetune.yaml, one short epoch."""
    from earlyexit.training.cli import train_main

    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "finetuned.pt"
    argv = [
        "--config", str(ROOT / "recipes" / "finetune.yaml"),
        "--model.init_from", str(CHECKPOINT),
        "--model.exits", json.dumps(cuts),
        "--data", data,
        "--trainer.max_epochs=1", f"--trainer.limit_train_batches={train_batches}",
        "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={out}",
        "--output", str(ckpt),
    ]  # fmt: skip
    if train_main(argv) != 0:
        raise RuntimeError(f"fine-tuning exits {cuts} failed")
    return ckpt


def replay(entropy: np.ndarray, correct: np.ndarray, cuts: list[int], threshold: float) -> float:
    """Accuracy of early exit at exits ``cuts`` from every exit's recorded entropy and correctness.

    A sample leaves at the first of ``cuts`` whose entropy is below ``threshold``
    (the last one otherwise): :meth:`MultiExitModel.predict`'s rule, replayed
    on the checkpoint's own exits (``[N, S]`` arrays, one row per block).
    """
    idx = np.asarray(cuts) - 1
    leave = entropy[idx] < threshold
    leave[-1] = True
    first = leave.argmax(axis=0)
    return float(correct[idx][first, np.arange(correct.shape[1])].mean())


def run(out: Path, plans: int, train_batches: int, limit: int | None, data: str) -> dict[str, Any]:
    """The study; returns (and writes, after every plan) the per-plan records and the summary."""
    import torch

    import earlyexit
    from earlyexit.data import EarlyExitDataModule
    from earlyexit.formats import Profile
    from earlyexit.profiling import collect_exit_outputs, exit_statistics
    from earlyexit.training.evaluation import evaluate

    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    base = earlyexit.load(CHECKPOINT)
    dm = EarlyExitDataModule.for_model(data, base, batch_size=256)
    dm.setup()
    prof_batches = list(dm.dataloader("profile", shuffle=False))
    t0 = time.perf_counter()
    if (out / "profile.json").is_file():  # a rerun into the same folder reuses the profile
        prof = Profile.load(out / "profile.json")
    else:
        prof = earlyexit.profile(
            base, prof_batches, "cpu-1thread", threads=1, reps=3, budget_s=0.02, progress=False,
            dataset_name="fashion-mnist (profiling split)",
        )  # fmt: skip
        prof.save(out / "profile.json")
    test_batches = list(dm.dataloader("test", shuffle=False))
    if limit is not None:
        test_batches = [(x[:limit], y[:limit]) for x, y in test_batches[: -(-limit // 256)]]
        test_batches[-1] = (test_batches[-1][0][: limit - 256 * (len(test_batches) - 1)],
                            test_batches[-1][1][: limit - 256 * (len(test_batches) - 1)])  # fmt: skip
    test = exit_statistics(collect_exit_outputs(base, test_batches), [0.0])
    chosen = choose_plans(prof, plans)
    print(f"profile: {prof.samples.entropy.shape[1]} samples; test: {test.entropy.shape[1]} samples; "
          f"{len(chosen)} plans ({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
    records: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    for i, pl in enumerate(chosen, 1):
        cuts, th = pl["cuts"], pl["threshold"]
        t0 = time.perf_counter()
        rec: dict[str, Any] = {**pl, "predicted": predict(prof, cuts, th)}
        rec["selected"] = {"accuracy": replay(test.entropy, test.correct, cuts, th)}
        ft_dir = out / f"plan-{i:02d}"
        tuned = earlyexit.load(finetune(cuts, ft_dir, train_batches, data))
        fin = evaluate(tuned, dm, "test", threshold=th, limit=limit)
        rec["finetuned"] = {"accuracy": fin.early_exit_accuracy, "exit_fractions": fin.exit_fractions,
                            "exit_accuracy": fin.exit_accuracy}  # fmt: skip
        rec["corrected"] = predict(corrected_profile(prof, tuned, cuts, prof_batches), cuts, th)
        rec["test_samples"] = fin.num_samples
        rec["seconds"] = time.perf_counter() - t0
        (ft_dir / "finetuned.pt").unlink(missing_ok=True)  # the records are what we keep
        records.append(rec)
        print(f"[{i}/{len(chosen)}] exits {cuts} T={th:g}: final {fin.early_exit_accuracy:.4f}, "
              f"selected {rec['selected']['accuracy']:.4f}; portend {rec['predicted']['portend']:.4f}, "
              f"exact {rec['predicted']['exact']:.4f}; corrected exact {rec['corrected']['exact']:.4f} "
              f"({rec['seconds']:.0f} s)", flush=True)  # fmt: skip
        result = {"checkpoint": str(CHECKPOINT.relative_to(ROOT)), "data": data,
                  "train_batches": train_batches, "plans": records, "summary": summarize(records)}  # fmt: skip
        (out / "final_accuracy.json").write_text(json.dumps(result, indent=2))
    from earlyexit.plotting import plot_final_accuracy

    plot_final_accuracy(records, out / "final_accuracy.png")
    return result


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Bias (mean of predicted - measured) and mean absolute error per estimator, in points."""
    out: dict[str, Any] = {"plans": len(records)}
    for target in ("finetuned", "selected"):
        meas = np.array([r[target]["accuracy"] for r in records])
        for source in ("predicted", "corrected"):
            for e in ESTIMATORS:
                err = 100 * (np.array([r[source][e] for r in records]) - meas)
                out[f"{source}.{e} vs {target}"] = {
                    "bias_points": float(err.mean()) if err.size else float("nan"),
                    "mae_points": float(np.abs(err).mean()) if err.size else float("nan"),
                    "max_abs_points": float(np.abs(err).max()) if err.size else float("nan"),
                }
    return out


def markdown(result: dict[str, Any]) -> str:
    """The per-plan table and the error summary of a result, as Markdown (docs/final-accuracy.md)."""
    lines = [
        "| # | exits | T | found by | portend | exact | selected | **final** | corrected portend | corrected exact |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(result["plans"], 1):
        p, c = r["predicted"], r["corrected"]
        lines.append(
            f"| {i} | {', '.join(map(str, r['cuts']))} | {r['threshold']:g} | {r['topology']}, {r['found_by']} "
            f"| {100 * p['portend']:.2f} | {100 * p['exact']:.2f} | {100 * r['selected']['accuracy']:.2f} "
            f"| **{100 * r['finetuned']['accuracy']:.2f}** | {100 * c['portend']:.2f} | {100 * c['exact']:.2f} |"
        )
    lines += [
        "",
        "| estimate | against | bias (points) | mean abs. error | max abs. error |",
        "|---|---|---|---|---|",
    ]
    for key, fig in result["summary"].items():
        if isinstance(fig, dict):
            est, target = key.split(" vs ")
            lines.append(f"| {est} | {target} | {fig['bias_points']:+.2f} | {fig['mae_points']:.2f} "
                         f"| {fig['max_abs_points']:.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "final_accuracy")
    ap.add_argument("--plans", type=int, default=12, help="plans to fine-tune (default 12)")
    ap.add_argument("--train-batches", type=int, default=120, help="fine-tuning steps per plan")
    ap.add_argument("--limit", type=int, default=None, help="test samples (default: all 10,000)")
    ap.add_argument("--data", default=DATA, help=f"data spec (default {DATA})")
    ap.add_argument("--doc-figure", action="store_true", help="copy the plot to docs/img/")
    ap.add_argument("--split-half", action="store_true",
                    help="also profile on the even half of the test set and measure on the odd half")  # fmt: skip
    ap.add_argument("--from-json", action="store_true",
                    help="no study: redraw the plot and print the tables from OUT/final_accuracy.json")  # fmt: skip
    args = ap.parse_args(argv)
    for name in ("plans", "train_batches", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.from_json:
        from earlyexit.plotting import plot_final_accuracy

        result = json.loads((args.out / "final_accuracy.json").read_text())
        plot_final_accuracy(result["plans"], args.out / "final_accuracy.png")
    else:
        result = run(args.out, args.plans, args.train_batches, args.limit, args.data)
    if args.split_half:
        from earlyexit.formats import Profile

        split_half(result, Profile.load(args.out / "profile.json"), args.data)
        (args.out / "final_accuracy.json").write_text(json.dumps(result, indent=2))
    print(markdown(result))
    if args.doc_figure:
        shutil.copy(args.out / "final_accuracy.png", ROOT / "docs" / "img" / "final_accuracy.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
