"""AdaEE on a stream whose difficulty changes (issue 14, item 4): real model outputs, replayed.

The shipped ResNet-20 runs once over the Fashion-MNIST test images, clean and
with noise, and every exit's logits are kept. A stream of three phases
(clean, noisy, clean; images drawn at random from the test set) is then
replayed through :class:`earlyexit.runtime.policies.AdaEE` exactly as the
first tier's worker would call it: per sample ``choose_threshold()``, exit if
the first exit's normalized entropy is below it, and ``update(confidence gain,
extra time)`` for a sample that went on, ``update(0, 0)`` for one that left.
The extra time is the measured compute time of the blocks after the first
exit (median of timed runs at batch 1 on this machine).

Scoring uses the reward AdaEE optimizes with the confidence gain replaced by
the accuracy gain from the true labels: a sample that goes on scores
``correct(final) - correct(first) - cost_weight * extra_time``, one that
leaves scores 0. Every fixed threshold of the grid is scored the same way on
the same stream: the per-phase oracle is the best fixed threshold for that
phase, and the plan's threshold is the one the demo's plan would use.

Run:
    python tools/adaee_study.py -o docs/img/adaee         # writes adaee.json and adaee.png

Figures and tables in docs/load.md come from this script's JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "resnet20_fashionmnist.pt"
GRID = [round(x, 2) for x in np.linspace(0.0, 1.0, 21)]


def normalized_entropy(logits: np.ndarray) -> np.ndarray:
    """Entropy of softmax(logits) divided by log(C), per row (the runtime's exit rule)."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    h = -(p * np.log(np.clip(p, 1e-30, None))).sum(axis=1)
    return h / np.log(logits.shape[1])


def confidence(logits: np.ndarray) -> np.ndarray:
    """Max softmax probability per row."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p.max(axis=1) / p.sum(axis=1)


def scores(
    entropy: np.ndarray,
    correct_first: np.ndarray,
    gain: np.ndarray,
    extra_s: float,
    cost_weight: float,
    thresholds: np.ndarray,
) -> np.ndarray:
    """Score of every sample under every fixed threshold: ``[len(thresholds), S]``.

    A sample that leaves at the first exit scores whether that exit is right;
    one that goes on (first-exit entropy >= T) scores whether the final exit is
    right, minus ``cost_weight * extra_s``: accuracy from the true labels minus
    the time cost, the reward AdaEE optimizes with labels in place of confidences.
    """
    goes_on = entropy[None, :] >= thresholds[:, None]
    return correct_first[None, :] + np.where(goes_on, gain[None, :] - cost_weight * extra_s, 0.0)


def replay(
    entropy: np.ndarray,
    conf_gain: np.ndarray,
    acc_gain: np.ndarray,
    correct_first: np.ndarray,
    extra_s: float,
    *,
    cost_weight: float,
    exploration: float,
    discount: float,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Run AdaEE over the stream as the worker would; returns per-sample choices and scores."""
    from earlyexit.runtime.policies import AdaEE

    bandit = AdaEE(GRID, exploration=exploration, cost_weight=cost_weight, discount=discount,
                   num_exits=2, seed=seed)  # fmt: skip
    n = len(entropy)
    chosen = np.empty(n)
    went_on = np.empty(n, dtype=bool)
    for i in range(n):
        t = bandit.choose_threshold()
        chosen[i] = t
        leaves = bandit.should_exit(0, float(entropy[i]))
        went_on[i] = not leaves
        if leaves:
            bandit.update(0.0, 0.0, threshold=t)
        else:
            bandit.update(float(conf_gain[i]), extra_s, threshold=t)
    score = correct_first + np.where(went_on, acc_gain - cost_weight * extra_s, 0.0)
    return {"threshold": chosen, "went_on": went_on, "score": score}


def phase_table(
    score_adaee: np.ndarray,
    fixed: np.ndarray,
    phases: list[tuple[str, int, int]],
    plan_index: int,
    settle: int,
) -> list[dict[str, Any]]:
    """Per phase, after ``settle`` samples: AdaEE's mean score, the oracle's and the plan threshold's.

    ``gap`` is (oracle - AdaEE) / (oracle - worst fixed threshold): 0 is the oracle,
    1 the worst arm.
    """
    rows = []
    for name, a, b in phases:
        s = slice(a + settle, b)
        per_t = fixed[:, s].mean(axis=1)
        best, worst = int(np.argmax(per_t)), int(np.argmin(per_t))
        ada = float(score_adaee[s].mean())
        spread = float(per_t[best] - per_t[worst])
        rows.append({
            "phase": name, "start": a, "end": b,
            "adaee": ada, "oracle": float(per_t[best]), "oracle_threshold": GRID[best],
            "plan": float(per_t[plan_index]), "plan_threshold": GRID[plan_index],
            "worst": float(per_t[worst]),
            "gap": (float(per_t[best]) - ada) / spread if spread > 0 else 0.0,
            "ratio": ada / float(per_t[best]),
        })  # fmt: skip
    return rows


def _model_outputs(first_exit: int, noise: float, seed: int) -> dict[str, Any]:
    import torch

    import earlyexit
    from earlyexit.data import EarlyExitDataModule
    from earlyexit.profiling import collect_exit_outputs
    from earlyexit.profiling.timing import time_partitions

    model = earlyexit.load(CHECKPOINT).eval()
    dm = EarlyExitDataModule.for_model("fashion-mnist", model, batch_size=256)
    dm.setup()
    xs, ys = zip(*[(x, y) for x, y in dm.test_dataloader()], strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    g = torch.Generator().manual_seed(seed)
    noisy = x + noise * torch.randn(x.shape, generator=g)  # in normalized units
    n = model.num_blocks
    out = {}
    for name, data in (("clean", x), ("noisy", noisy)):
        eo = collect_exit_outputs(model, [(data[i : i + 512], y[i : i + 512]) for i in range(0, len(y), 512)])
        first = eo.logits[first_exit - 1].numpy().astype(np.float64)
        last = eo.logits[n - 1].numpy().astype(np.float64)
        lab = eo.labels.numpy()
        out[name] = {
            "entropy": normalized_entropy(first),
            "conf_gain": confidence(last) - confidence(first),
            "acc_gain": (last.argmax(1) == lab).astype(float) - (first.argmax(1) == lab).astype(float),
            "correct_first": (first.argmax(1) == lab).astype(float),
            "acc_first": float((first.argmax(1) == lab).mean()),
            "acc_final": float((last.argmax(1) == lab).mean()),
        }
    torch.set_num_threads(1)
    times = time_partitions(model, x[:1], warmup=5, reps=50)
    out["extra_s"] = float(times[first_exit, n - 1])  # blocks first_exit+1 .. N
    out["samples"] = len(y)
    return out


def _cached_outputs(args: argparse.Namespace) -> dict[str, Any]:
    key = f"{args.first_exit}-{args.noise}-{args.seed}"
    if args.cache is not None and args.cache.exists():
        with np.load(args.cache) as z:
            if str(z["key"]) == key:
                get = lambda k: z[k] if z[k].ndim else float(z[k])  # noqa: E731
                return {"clean": {k[6:]: get(k) for k in z.files if k.startswith("clean_")},
                        "noisy": {k[6:]: get(k) for k in z.files if k.startswith("noisy_")},
                        "extra_s": float(z["extra_s"]), "samples": int(z["samples"])}  # fmt: skip
    mo = _model_outputs(args.first_exit, args.noise, args.seed)
    if args.cache is not None:
        flat = {f"{nm}_{k}": v for nm in ("clean", "noisy") for k, v in mo[nm].items()}
        np.savez(args.cache, key=key, extra_s=mo["extra_s"], samples=mo["samples"], **flat)
    return mo


def _thin(x: np.ndarray, every: int = 10) -> list[float]:
    return [round(float(v), 4) for v in x[::every]]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole study; returns what adaee.json holds."""
    t0 = time.time()
    mo = _cached_outputs(args)
    args.cost_weight = args.cost / mo["extra_s"]
    rng = np.random.default_rng(args.seed)
    names = ["clean", "noisy", "clean"]
    idx = [rng.integers(0, mo["samples"], args.phase) for _ in names]
    cat = {k: np.concatenate([mo[nm][k][i] for nm, i in zip(names, idx, strict=True)])
           for k in ("entropy", "conf_gain", "acc_gain", "correct_first")}  # fmt: skip
    phases = [(nm, k * args.phase, (k + 1) * args.phase) for k, nm in enumerate(names)]
    rep = {
        label: replay(cat["entropy"], cat["conf_gain"], cat["acc_gain"], cat["correct_first"], mo["extra_s"],
                      cost_weight=args.cost_weight, exploration=args.exploration,
                      discount=discount, seed=args.seed)
        for label, discount in (("adaee", args.discount), ("ucb1", 1.0))
    }  # fmt: skip
    grid = np.array(GRID)
    if args.plan_threshold is None:  # what a plan made on clean data with this reward uses
        cl = mo["clean"]
        clean = scores(cl["entropy"], cl["correct_first"], cl["acc_gain"], mo["extra_s"], args.cost_weight, grid)
        args.plan_threshold = float(grid[int(np.argmax(clean.mean(axis=1)))])
    fixed = scores(cat["entropy"], cat["correct_first"], cat["acc_gain"], mo["extra_s"], args.cost_weight, grid)
    plan_index = int(np.argmin(np.abs(grid - args.plan_threshold)))
    oracle_per_sample = np.concatenate(
        [fixed[int(np.argmax(fixed[:, a:b].mean(axis=1))), a:b] for _, a, b in phases]
    )
    result = {
        "checkpoint": CHECKPOINT.name, "first_exit": args.first_exit, "noise": args.noise,
        "cost": args.cost, "cost_weight": args.cost_weight, "exploration": args.exploration, "discount": args.discount,
        "phase_samples": args.phase, "settle": args.settle, "extra_ms": 1e3 * mo["extra_s"],
        "accuracy": {nm: {"first": mo[nm]["acc_first"], "final": mo[nm]["acc_final"]} for nm in ("clean", "noisy")},
        "table": {label: phase_table(r["score"], fixed, phases, plan_index, args.settle)
                  for label, r in rep.items()},
        # every 10th sample, rounded: what the plot needs
        "regret": {**{label: _thin(np.cumsum(oracle_per_sample - r["score"])) for label, r in rep.items()},
                   "plan": _thin(np.cumsum(oracle_per_sample - fixed[plan_index]))},
        "chosen_threshold_mean100": _thin(np.convolve(rep["adaee"]["threshold"], np.ones(100) / 100, "same")),
        "seconds": time.time() - t0,
    }  # fmt: skip
    return result


def plot(result: dict[str, Any], path: Path) -> None:
    """Regret curves and AdaEE's chosen threshold over the stream, phase changes marked."""
    from earlyexit.plotting import pyplot

    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    x = np.arange(0, 3 * result["phase_samples"], 10)
    for label, curve in result["regret"].items():
        names = {"adaee": f"AdaEE (discount {result['discount']})", "ucb1": "UCB1 (no discount)",
                 "plan": f"the plan's fixed threshold (T={result['table']['adaee'][0]['plan_threshold']:.2f})"}
        ax1.plot(x[: len(curve)], curve, label=names[label])
    ax1.set_ylabel("cumulative regret vs per-phase oracle")
    ax1.legend()
    th = result["chosen_threshold_mean100"]
    ax2.plot(x[: len(th)], th, label="AdaEE threshold (100-sample mean)")
    for row in result["table"]["adaee"]:
        ax2.hlines(row["oracle_threshold"], row["start"], row["end"], colors="k", linestyles="dashed")
    ax2.set_ylabel("first-exit threshold")
    ax2.set_xlabel("sample")
    for ax in (ax1, ax2):
        for row in result["table"]["adaee"][1:]:
            ax.axvline(row["start"], color="grey", lw=0.8)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", type=Path, default=Path("docs/img/adaee"))
    p.add_argument("--first-exit", type=int, default=3, help="block of the first exit (1-based)")
    p.add_argument("--noise", type=float, default=0.15, help="Gaussian noise std in normalized units")
    p.add_argument("--phase", type=int, default=3000, help="samples per phase")
    p.add_argument("--settle", type=int, default=500, help="samples after a change before scoring")
    p.add_argument("--cost", type=float, default=0.02,
                   help="cost of sending a sample on, in accuracy units (cost_weight x extra time; "
                   "the cost weight is this over the measured extra time)")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "earlyexit-adaee.npz",
                   help="npz of the model outputs, reused when it matches (default: in the temp dir)")
    p.add_argument("--exploration", type=float, default=0.02)
    p.add_argument("--discount", type=float, default=0.995)
    p.add_argument("--plan-threshold", type=float, default=None,
                   help="the plan's fixed threshold (default: the best fixed one on the clean images)")
    p.add_argument("--sweep", action="store_true",
                   help="also run noise 0.1/0.15/0.2 x cost 0.02/0.03/0.05/0.08 and report each")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    result = run(argparse.Namespace(**vars(args)))
    if args.sweep:
        result["sweep"] = []
        for noise in (0.1, 0.15, 0.2):
            for cost in (0.02, 0.03, 0.05, 0.08):
                cache = None if args.cache is None else args.cache.with_name(f"{args.cache.stem}-{noise}.npz")
                r = run(argparse.Namespace(**{**vars(args), "noise": noise, "cost": cost, "cache": cache,
                                              "plan_threshold": None}))  # fmt: skip
                noisy = r["table"]["adaee"][1]
                result["sweep"].append({
                    "noise": noise, "cost": cost, "ratios": [row["ratio"] for row in r["table"]["adaee"]],
                    "noisy_adaee": noisy["adaee"], "noisy_plan": noisy["plan"], "noisy_oracle": noisy["oracle"],
                    "plan_threshold": noisy["plan_threshold"], "noisy_oracle_threshold": noisy["oracle_threshold"],
                })  # fmt: skip
                print(f"sweep noise {noise} cost {cost}: ratios "
                      f"{', '.join(f'{x:.3f}' for x in result['sweep'][-1]['ratios'])}; noisy phase AdaEE "
                      f"{noisy['adaee']:.3f}, plan (T={noisy['plan_threshold']:.2f}) {noisy['plan']:.3f}, "
                      f"oracle (T={noisy['oracle_threshold']:.2f}) {noisy['oracle']:.3f}")  # fmt: skip
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "adaee.json").write_text(json.dumps(result))
    plot(result, args.output / "adaee.png")
    for label, rows in result["table"].items():
        print(f"{label}:")
        for r in rows:
            print(f"  {r['phase']:6s} {r['start']:5d}-{r['end']:5d}: score {r['adaee']:+.4f}, oracle "
                  f"{r['oracle']:+.4f} (T={r['oracle_threshold']:.2f}), plan {r['plan']:+.4f} "
                  f"(T={r['plan_threshold']:.2f}), worst {r['worst']:+.4f}, ratio {r['ratio']:.3f}, gap {r['gap']:.3f}")  # fmt: skip
    print(f"extra time {result['extra_ms']:.2f} ms; accuracy {result['accuracy']}; {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
