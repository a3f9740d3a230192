"""Coverage: earlyexit on every torchvision classifier and the smallest model of every timm family.

Issue 11 (deliverable 6). Each model is tried as a new user would, with random
weights and no hand-picked cut points, in five stages:

``create``     build it (``torchvision.models.get_model(name, weights=None,
               num_classes=10)`` / ``timm.create_model(name, num_classes=10)``)
               and run a batch of 2 in eval mode; the smallest input size that
               works is used (64, then 128, then the size the model declares;
               timm models that take ``img_size=`` are built for it);
``decompose``  ``earlyexit.decompose(model, input_shape=...)`` with the defaults;
``heads``      ``earlyexit.MultiExitModel(blocks, num_classes=10)`` (default exits);
``predict``    the last exit equals the model's output (``assert_close``, rtol
               and atol 1e-4), and ``predict`` does real early exit on the batch
               of 2 (threshold between the two samples' first-exit entropies:
               each sample leaves at the first exit below it, with that exit's
               class);
``export``     a 2-partition plan (cut at the middle exit, threshold between the
               two samples' entropies there) sliced and exported to ONNX with
               ``export_bundle(..., formats="onnx")`` (``--exporter``; when the
               legacy exporter fails, dynamo, the default, is tried); the torch-free runtime's
               chain (``BundleSession.predict``) gives the same exits and classes
               as ``predict``.

Every model runs in its own subprocess with a timeout, so one crash or hang
costs one row. The timm families are the modules that define the models
(``timm.models._registry._model_to_module``); the smallest model of a family is
found by building the most likely candidates (by name: tiny, small, ...) on the
meta device and counting parameters (cached per timm version).

Usage::

    python benchmarks/bench_coverage.py                      # everything (long)
    python benchmarks/bench_coverage.py --filter resnet --jobs 2 --timeout 300
    python benchmarks/bench_coverage.py --filter tv: --json coverage.json
    python benchmarks/bench_coverage.py --models tv:resnet18,timm:convnext_atto
    python benchmarks/bench_coverage.py --one timm:vit_tiny_patch16_224   # one model, in process

Prints a table (one row per model: each stage ok / FAIL / -, the failure's
one-line reason), the totals per stage, and with ``--json`` writes every row.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "STAGES",
    "check_model",
    "main",
    "run_all",
    "timm_families",
    "torchvision_models",
]

STAGES: tuple[str, ...] = ("create", "decompose", "heads", "predict", "export")
NUM_CLASSES = 10
SIZES: tuple[int, ...] = (64, 128)
"""Input sizes tried before the model's declared one (small is fast)."""
RTOL = ATOL = 1e-4
_TIE = 1e-5
"""Samples whose entropy lies this close to the threshold may exit either way."""
_MARK = "BENCH_COVERAGE_RESULT "
_STAGE_MARK = "BENCH_COVERAGE_STAGE "

# --------------------------------------------------------------------------- model lists


def torchvision_models() -> list[str]:
    """Every torchvision classification model, as ``tv:<name>``."""
    import torchvision

    return [f"tv:{n}" for n in sorted(torchvision.models.list_models(module=torchvision.models))]


_SIZE_WORDS = [
    "atto", "zepto", "femto", "pico", "nano", "micro", "xxtiny", "xtiny", "tiny", "xxs",
    "xs", "mini", "small", "lite0", "b0", "s0", "t0", "t", "xsmall", "s", "m", "medium",
    "base", "b", "l", "large", "xl", "xxl", "huge", "h", "giant", "g", "gigantic",
]  # fmt: skip
_RANK = {w: i for i, w in enumerate(_SIZE_WORDS)}
_EXCLUDE = ["test_*"]
"""timm's own test fixtures (tiny configurations no user trains) are not a family's smallest."""


def _name_score(name: str) -> tuple[int, int, int]:
    """Smaller looks smaller: size words first, then the largest number, then the length."""
    toks = re.split(r"[_\-.]", name)
    rank = min((_RANK[t] for t in toks if t in _RANK), default=_RANK["m"])
    nums = [int(n) for n in re.findall(r"\d+", name)]
    return rank, max(nums, default=0), len(name)


def _param_count_meta(name: str) -> int | None:
    import timm
    import torch

    try:
        with torch.device("meta"):
            m = timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES)
        return sum(p.numel() for p in m.parameters())
    except Exception:  # noqa: BLE001 - a model that cannot be built on meta is not chosen
        return None


def timm_families(candidates: int = 4, cache: Path | None = None) -> dict[str, str]:
    """The smallest model of every timm family (the module defining it), as ``timm:<name>``.

    Args:
        candidates: per family, how many names (ranked by :func:`_name_score`)
            are built on the meta device to count parameters.
        cache: JSON file remembering the choice per timm version (``None``: none).

    Returns:
        ``{family: "timm:<model>"}``, sorted by family.
    """
    import timm
    from timm.models import _registry

    if cache is not None and cache.is_file():
        data = json.loads(cache.read_text())
        if data.get("key") == [timm.__version__, candidates, _EXCLUDE]:
            return data["families"]
    families: dict[str, list[str]] = {}
    for name in timm.list_models(exclude_filters=_EXCLUDE):
        families.setdefault(_registry._model_to_module.get(name, "?"), []).append(name)
    chosen: dict[str, str] = {}
    for fam in sorted(families):
        ranked = sorted(families[fam], key=_name_score)[:candidates]
        counted = [(n, _param_count_meta(n)) for n in ranked] if len(ranked) > 1 else []
        counted = [(n, c) for n, c in counted if c is not None]
        best = min(counted, key=lambda nc: nc[1])[0] if counted else ranked[0]
        chosen[fam] = f"timm:{best}"
    if cache is not None:
        cache.write_text(
            json.dumps({"key": [timm.__version__, candidates, _EXCLUDE], "families": chosen})
        )
    return chosen


def param_counts(specs: list[str], cache: Path | None = None) -> dict[str, int]:
    """Parameters of each model (torchvision: its weights' metadata; timm: a meta-device build).

    Used to check the small models first, so that a deadline leaves out the largest.
    """
    import torchvision

    known: dict[str, int] = {}
    if cache is not None and cache.is_file():
        known = json.loads(cache.read_text())
    for spec in specs:
        if spec in known:
            continue
        source, _, name = spec.partition(":")
        count = None
        if source == "tv":
            try:
                enum = torchvision.models.get_model_weights(name)
                count = int(next(iter(enum)).meta["num_params"])
            except Exception:  # noqa: BLE001 - no weights metadata: unknown size
                count = None
        elif source == "timm":
            count = _param_count_meta(name)
        known[spec] = count if count is not None else 10**12
    if cache is not None:
        cache.write_text(json.dumps(known))
    return {s: known[s] for s in specs}


# --------------------------------------------------------------------------- one model


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split()) or "(no message)"
    return f"{type(err).__name__}: {text}"[:300]


def _build(spec: str, size: int | None) -> Any:
    """Build ``spec`` for ``size`` x ``size`` inputs (``None``: as declared)."""
    source, _, name = spec.partition(":")
    if source == "tv":
        import torchvision

        kw: dict[str, Any] = {"weights": None, "num_classes": NUM_CLASSES}
        if size is not None and (name.startswith("vit_") or name.startswith("maxvit")):
            kw["image_size" if name.startswith("vit_") else "input_size"] = (
                size if name.startswith("vit_") else (size, size)
            )
        if name in ("googlenet", "inception_v3"):
            kw["aux_logits"] = False
            kw["init_weights"] = True
        return torchvision.models.get_model(name, **kw)
    if source == "timm":
        import timm

        if size is not None:
            try:
                return timm.create_model(
                    name, pretrained=False, num_classes=NUM_CLASSES, img_size=size
                )
            except TypeError:  # no img_size argument: the model takes any size or none
                pass
        return timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES)
    raise ValueError(f"unknown model source {source!r} in {spec!r}; use tv:<name> or timm:<name>")


def _declared_size(model: Any, spec: str) -> int:
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    if size:
        return int(size[-1])
    return 299 if spec == "tv:inception_v3" else 224


def _create(spec: str) -> tuple[Any, tuple[int, int, int], Any, Any]:
    """The model (eval), its input shape, a batch of 2 and the model's output on it."""
    import torch

    errors = []
    declared = None
    for size in (*SIZES, None):
        torch.manual_seed(0)
        try:
            model = _build(spec, size).eval()
        except Exception as err:  # noqa: BLE001
            errors.append(f"{size or 'declared'}: {_reason(err)}")
            continue
        if size is None:
            declared = _declared_size(model, spec)
        s = size or declared
        x = _inputs(s)
        try:
            with torch.no_grad():
                y = model(x)
        except Exception as err:  # noqa: BLE001
            errors.append(f"{s}: {_reason(err)}")
            continue
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != (2, NUM_CLASSES):
            errors.append(f"{s}: output is not [2, {NUM_CLASSES}] logits")
            continue
        return model, (3, s, s), x, y
    raise RuntimeError("; ".join(errors))


def _inputs(size: int) -> Any:
    """Two unlike samples: white noise, and a smooth brighter image (their features differ)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(1)
    noise = torch.randn(1, 3, size, size, generator=g)
    coarse = torch.randn(1, 3, max(1, size // 16), max(1, size // 16), generator=g)
    smooth = 2 * F.interpolate(coarse, size=(size, size), mode="bilinear") + 1
    return torch.cat([noise, smooth])


def _spread_temperatures(mem: Any, x: Any) -> list[Any]:
    """Set each exit's temperature so that its logits on ``x`` reach 4: entropies then spread.

    Random-weight logits are tiny, so every entropy is about 1 and two samples'
    differ by float rounding; calibrated temperatures (a part of the model that
    the bundle carries) make early exit decisions well apart from the threshold.
    """
    import torch

    with torch.no_grad():
        outs = mem(x)
    mem.set_temperatures([max(float(o.abs().max()) / 4, 1e-6) for o in outs])
    return outs


def _between(a: float, b: float) -> float:
    """A threshold strictly between two entropies (just above both if they are equal)."""
    lo, hi = sorted((a, b))
    return (lo + hi) / 2 if hi > lo else min(1.0, hi + 1e-6)


def _check_predict(mem: Any, x: Any, y: Any) -> dict[str, Any]:
    import torch

    from earlyexit import normalized_entropy

    outs = _spread_temperatures(mem, x)
    with torch.no_grad():
        torch.testing.assert_close(
            outs[-1],
            y,
            rtol=RTOL,
            atol=ATOL,
            msg=lambda m: "last exit != model output: " + " ".join(m.split()),
        )
        ents = [normalized_entropy(o, t) for o, t in zip(outs, mem.temperatures, strict=True)]
        t = _between(float(ents[0][0]), float(ents[0][1]))
        r = mem.predict(x, t)
    exits = list(mem.exits)
    for i in range(2):  # each sample at the first exit below t (the last otherwise), its class
        slot = next((k for k in range(len(exits) - 1) if float(ents[k][i]) < t), len(exits) - 1)
        if any(abs(float(ents[k][i]) - t) <= _TIE for k in range(slot + 1)):
            continue  # float rounding may send a sample this close to t either way
        if int(r.exit_block[i]) != exits[slot]:
            raise AssertionError(
                f"sample {i} left at block {int(r.exit_block[i])}, expected {exits[slot]}"
            )
        if int(r.prediction[i]) != int(outs[slot][i].argmax()):
            raise AssertionError(f"sample {i}: predict's class differs from exit {exits[slot]}'s")
    return {"threshold": t, "exit_blocks": [int(e) for e in r.exit_block]}


def _check_export(mem: Any, x: Any, exporter: str, workdir: Path) -> dict[str, Any]:
    import torch

    from earlyexit import normalized_entropy
    from earlyexit.export import ExportVerificationError, export_bundle
    from earlyexit.formats import Estimate, PartitionPlan, Plan
    from earlyexit.runtime.session import BundleSession

    exits = list(mem.exits)
    if len(exits) < 2:
        raise ValueError(f"one exit only ({exits}): nothing to cut")
    n = exits[-1]
    k = exits[(len(exits) - 1) // 2] if len(exits) > 2 else exits[0]
    two = mem.select_exits([k, n]).eval()
    with torch.no_grad():
        logits = two(x)[0]
    e = normalized_entropy(logits, two.temperatures[0])
    t = _between(float(e[0]), float(e[1]))
    zero = dict.fromkeys(("compute", "serialize", "transmit", "propagate"), 0.0)
    plan = Plan(
        t,
        (PartitionPlan(1, k, 0, "edge"), PartitionPlan(k + 1, n, 1, "cloud")),
        Estimate(0.0, 0.0, (0.5, 0.5), zero),
    )
    out = workdir / "bundle"
    retried = None
    try:
        manifest = export_bundle(mem, plan, out, formats="onnx", verify_data=x, exporter=exporter)
    except Exception as err:  # the legacy exporter's limits: what the default (dynamo) does
        if exporter != "torchscript" or isinstance(err, ExportVerificationError):
            raise
        retried = _reason(err)
        manifest = export_bundle(mem, plan, out, formats="onnx", verify_data=x, exporter="dynamo")
    got = BundleSession(out, "fp32", ["CPUExecutionProvider"]).predict(x.numpy())
    want = two.predict(x, t)
    same = (got["exit_block"] == want.exit_block.numpy()) & (
        got["prediction"] == want.prediction.numpy()
    )
    if not all(same[i] or abs(float(e[i]) - t) <= _TIE for i in range(len(same))):
        raise AssertionError(
            f"runtime chain exits {got['exit_block'].tolist()} classes "
            f"{got['prediction'].tolist()}, predict {want.exit_block.tolist()} "
            f"{want.prediction.tolist()}"
        )
    diffs = [max(d.values()) for p in manifest.partitions for d in p.extra["max_abs_diff"].values()]
    return {
        "cut": k,
        "exit_blocks": got["exit_block"].tolist(),
        "onnx_exporter": manifest.extra["export"]["onnx_exporter"],
        "legacy_exporter_failed": retried,
        "max_abs_diff": max(diffs),
    }


def check_model(
    spec: str,
    exporter: str = "dynamo",
    stages: tuple[str, ...] = STAGES,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the stages on one model, in this process; stop at the first failure.

    Args:
        spec: ``tv:<torchvision name>`` or ``timm:<timm name>``.
        exporter: the ONNX exporter for the export stage.
        stages: the stages to run (a prefix of :data:`STAGES`).
        progress: called with each stage's name as it starts.

    Returns:
        ``{"model", "status": {stage: "ok" | "fail" | "-"}, "reason", "failed_stage",
        "input_shape", "blocks", "exits", "seconds": {stage: s}, "details"}``.
    """
    import warnings

    import earlyexit

    warnings.filterwarnings("ignore")
    status = dict.fromkeys(STAGES, "-")
    row: dict[str, Any] = {"model": spec, "status": status, "reason": "", "failed_stage": None,
                           "seconds": {}, "details": {}}  # fmt: skip
    state: dict[str, Any] = {}

    def create() -> None:
        state["model"], row["input_shape"], state["x"], state["y"] = _create(spec)
        row["params"] = sum(p.numel() for p in state["model"].parameters())

    def decompose() -> None:
        state["blocks"] = earlyexit.decompose(state["model"], input_shape=row["input_shape"])
        row["blocks"] = len(state["blocks"])

    def heads() -> None:
        state["mem"] = earlyexit.MultiExitModel(state["blocks"], num_classes=NUM_CLASSES).eval()
        row["exits"] = len(state["mem"].exits)

    def predict() -> None:
        row["details"]["predict"] = _check_predict(state["mem"], state["x"], state["y"])

    def export() -> None:
        with tempfile.TemporaryDirectory(prefix="bench-coverage-") as d:
            row["details"]["export"] = _check_export(state["mem"], state["x"], exporter, Path(d))

    steps = {"create": create, "decompose": decompose, "heads": heads, "predict": predict,
             "export": export}  # fmt: skip
    for stage in stages:
        if progress:
            progress(stage)
        t0 = time.perf_counter()
        try:
            steps[stage]()
        except Exception as err:  # noqa: BLE001 - the row records any failure
            status[stage] = "fail"
            row["failed_stage"] = stage
            row["reason"] = _reason(err)
            row["traceback"] = traceback.format_exc(limit=-3)
            row["seconds"][stage] = round(time.perf_counter() - t0, 2)
            break
        status[stage] = "ok"
        row["seconds"][stage] = round(time.perf_counter() - t0, 2)
    return row


# --------------------------------------------------------------------------- many models


def _failed_row(spec: str, stage: str, reason: str, t0: float) -> dict[str, Any]:
    status = dict.fromkeys(STAGES, "-")
    for s in STAGES[: STAGES.index(stage)]:
        status[s] = "ok"
    status[stage] = "fail"
    return {"model": spec, "status": status, "reason": reason[:300], "failed_stage": stage,
            "wall_s": round(time.perf_counter() - t0, 1)}  # fmt: skip


def _forked_child(spec: str, args: argparse.Namespace, conn: Any) -> None:
    import torch

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    torch.set_num_threads(args.threads)
    upto = STAGES[: STAGES.index(args.stages) + 1]
    row = check_model(spec, args.exporter, upto, progress=lambda s: conn.send(("stage", s)))
    conn.send(("row", row))
    conn.close()
    os._exit(0)


def _run_one_forked(spec: str, args: argparse.Namespace) -> dict[str, Any]:
    """Like :func:`_run_one_subprocess`, but forked from this process, whose imports are done."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    t0 = time.perf_counter()
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_forked_child, args=(spec, args, send), daemon=True)
    proc.start()
    send.close()
    stage, row, end = "create", None, time.perf_counter() + args.timeout
    while row is None and time.perf_counter() < end:
        if not recv.poll(min(1.0, max(0.0, end - time.perf_counter()))):
            if not proc.is_alive() and not recv.poll():
                break
            continue
        try:
            kind, value = recv.recv()
        except EOFError:
            break
        if kind == "stage":
            stage = value
        else:
            row = value
    if row is None:
        alive = proc.is_alive()
        proc.kill()
        proc.join(10)
        if alive:
            row = _failed_row(
                spec, stage, f"timeout: still in {stage} after {args.timeout:g} s", t0
            )
        else:
            row = _failed_row(spec, stage, f"crashed (exit code {proc.exitcode}) in {stage}", t0)
    else:
        proc.join(10)
        row["wall_s"] = round(time.perf_counter() - t0, 1)
    recv.close()
    return row


def _run_one_subprocess(spec: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", spec, "--exporter", args.exporter,
           "--threads", str(args.threads), "--stages", args.stages]  # fmt: skip

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    stage = "create"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
        out, err, code = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err, code = "", None
    for line in out.splitlines():
        if line.startswith(_MARK):
            row = json.loads(line[len(_MARK) :])
            row["wall_s"] = round(time.perf_counter() - t0, 1)
            return row
        if line.startswith(_STAGE_MARK):
            stage = line[len(_STAGE_MARK) :].strip()
    status = dict.fromkeys(STAGES, "-")
    for s in STAGES[: STAGES.index(stage)]:
        status[s] = "ok"
    status[stage] = "fail"
    if code is None:
        reason = f"timeout: still in {stage} after {args.timeout:g} s"
    else:
        last = [ln for ln in err.strip().splitlines() if ln.strip()][-1:] or [f"exit code {code}"]
        reason = f"crashed (exit code {code}) in {stage}: {last[0]}"[:300]
    return {"model": spec, "status": status, "reason": reason, "failed_stage": stage,
            "wall_s": round(time.perf_counter() - t0, 1)}  # fmt: skip


def _not_run(spec: str, why: str) -> dict[str, Any]:
    return {"model": spec, "status": dict.fromkeys(STAGES, "-"), "reason": why,
            "failed_stage": None, "not_run": True, "wall_s": 0.0}  # fmt: skip


def run_all(specs: list[str], args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """Check every model in a subprocess of its own, ``args.jobs`` at a time (rows as they end).

    A model not started before ``args.deadline`` (a ``time.time()``, or ``None``)
    is reported as not run.
    """

    def job(spec: str) -> dict[str, Any]:
        if args.deadline is not None and time.time() > args.deadline:
            return _not_run(spec, "not run: the sweep's deadline passed first")
        return (_run_one_forked if args.fork else _run_one_subprocess)(spec, args)

    with cf.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(job, s) for s in specs]
        for f in cf.as_completed(futures):
            yield f.result()


def _totals(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = {}
    for source in ("tv", "timm", "all"):
        sel = [r for r in rows if source == "all" or r["model"].startswith(source + ":")]
        totals[source] = {"models": len(sel)}
        totals[source]["not_run"] = sum(bool(r.get("not_run")) for r in sel)
        for s in STAGES:
            totals[source][s] = sum(r["status"].get(s) == "ok" for r in sel)
    return totals


def _table(rows: list[dict[str, Any]], families: dict[str, str]) -> str:
    fam_of = {v: k for k, v in families.items()}
    width = max([len(r["model"]) for r in rows] + [5])
    head = f"{'model':<{width}}  " + "  ".join(f"{s:<9}" for s in STAGES) + "  time  reason"
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: r["model"]):
        marks = "  ".join(
            f"{ {'ok': 'ok', 'fail': 'FAIL', '-': '-'}[r['status'][s]]:<9}" for s in STAGES
        )
        fam = f"[{fam_of[r['model']]}] " if r["model"] in fam_of else ""
        lines.append(
            f"{r['model']:<{width}}  {marks}  {r.get('wall_s', 0):>4.0f}  {fam}{r['reason']}"
        )
    tot = _totals(rows)
    lines.append("")
    lines.append("passing each stage (a model passes a stage only if it passed the ones before):")
    for source, t in tot.items():
        if t["models"]:
            lines.append(f"  {source:<5} {t['models']:>4} models: " + ", ".join(
                f"{s} {t[s]}/{t['models']}" for s in STAGES)
                + (f" ({t['not_run']} not run: deadline)" if t["not_run"] else ""))  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--filter", default=None, help="regex on 'tv:<name>' / 'timm:<name>' / timm family"
    )
    p.add_argument("--jobs", type=int, default=2, help="models checked at once (default 2)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per model (default 300)")
    p.add_argument("--json", default=None, metavar="PATH", help="write every row and the totals")
    p.add_argument("--exporter", default="dynamo", choices=("dynamo", "torchscript"))
    p.add_argument("--threads", type=int, default=1, help="torch threads per model (default 1)")
    p.add_argument("--candidates", type=int, default=4,
                   help="timm names per family built on the meta device to find the smallest")  # fmt: skip
    p.add_argument("--models", default=None, help="comma-separated specs instead of the lists")
    p.add_argument("--no-tv", action="store_true", help="skip torchvision")
    p.add_argument("--no-timm", action="store_true", help="skip timm")
    p.add_argument("--stages", default=STAGES[-1], choices=STAGES,
                   help="run the stages up to this one (default: all)")  # fmt: skip
    p.add_argument("--deadline", type=float, default=None, metavar="MINUTES",
                   help="start no model after this many minutes (the rest: not run)")  # fmt: skip
    p.add_argument("--no-fork", dest="fork", action="store_false",
                   help="start each model's process from scratch (default: fork this one, "
                   "whose torch/timm imports are done)")  # fmt: skip
    p.add_argument("--one", default=None, metavar="SPEC", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.jobs < 1 or args.timeout <= 0 or args.threads < 1:
        p.error("--jobs and --threads must be >= 1 and --timeout > 0")

    if args.one:  # the child: one model, result as a marked JSON line
        import torch

        torch.set_num_threads(args.threads)

        def progress(stage: str) -> None:
            print(_STAGE_MARK + stage, flush=True)

        upto = STAGES[: STAGES.index(args.stages) + 1]
        row = check_model(args.one, args.exporter, stages=upto, progress=progress)
        print(_MARK + json.dumps(row), flush=True)
        return 0

    specs: list[str] = []
    families: dict[str, str] = {}
    if args.models:
        specs = [m.strip() for m in args.models.split(",") if m.strip()]
    elif not args.no_tv:
        specs += torchvision_models()
    if not args.no_timm and not args.models:
        cache = Path(tempfile.gettempdir()) / "earlyexit-bench-coverage-timm.json"
        t0 = time.perf_counter()
        families = timm_families(args.candidates, cache)
        print(f"timm: {len(families)} families, smallest model of each chosen in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
        specs += list(families.values())
    if args.filter:
        rx = re.compile(args.filter)
        fam_of = {v: k for k, v in families.items()}
        specs = [s for s in specs if rx.search(s) or rx.search(fam_of.get(s, ""))]
    if not specs:
        p.error("no model matches --filter")
    sizes = param_counts(
        specs, Path(tempfile.gettempdir()) / "earlyexit-bench-coverage-params.json"
    )
    specs.sort(key=lambda s: sizes[s])  # small first: a deadline leaves out the largest
    if args.deadline is not None:
        args.deadline = time.time() + 60 * args.deadline
    if args.fork:  # import once here; every forked model process starts with them
        import onnxruntime  # noqa: F401
        import timm  # noqa: F401
        import torchvision  # noqa: F401

        import earlyexit.export.bundle  # noqa: F401
        import earlyexit.runtime.session  # noqa: F401
    print(f"checking {len(specs)} models, {args.jobs} at a time, timeout {args.timeout:g} s, "
          f"ONNX exporter {args.exporter}", flush=True)  # fmt: skip

    rows = []
    t0 = time.perf_counter()
    for row in run_all(specs, args):
        rows.append(row)
        last = next((s for s in reversed(STAGES) if row["status"][s] == "ok"), "none")
        print(f"[{len(rows)}/{len(specs)}] {row['model']}: up to {last}"
              + (f"; {row['reason'][:150]}" if row["reason"] else ""), flush=True)  # fmt: skip
    print()
    print(_table(rows, families))
    print(f"\nwall time {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"exporter": args.exporter, "totals": _totals(rows), "families": families, "rows": sorted(rows, key=lambda r: r["model"])},
            indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
