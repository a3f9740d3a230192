"""Compute time of every partition [a..b], measured as a whole partition.

A partition is blocks a..b, exit branch b and the entropy test, run as one
piece on real features: summing separately timed layers or blocks
underestimates it (PORTEND Fig. 5), which :func:`compare_granularity` shows.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from earlyexit.surgery.multi_exit import MultiExitModel, normalized_entropy

__all__ = [
    "ENGINES",
    "PartitionModule",
    "time_partitions",
    "time_onnx_partitions",
    "time_network",
    "compare_granularity",
    "inconsistent_partitions",
    "torch_threads",
]

ENGINES: tuple[str, ...] = ("torch", "onnx")
"""What runs a timed partition: eager PyTorch, or ONNX Runtime as the tier workers run it."""


class PartitionModule(nn.Module):
    """Blocks ``first..last`` (1-based), exit branch ``last`` and the entropy test."""

    def __init__(
        self, model: MultiExitModel, first: int, last: int, threshold: float = 0.5
    ) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*model.blocks[first - 1 : last])
        self.head = model.heads[str(last)]
        self.temperature = float(model.temperatures[model.exits.index(last)])
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.blocks(x)
        logits = self.head(h)
        entropy = normalized_entropy(logits, self.temperature)
        return logits, entropy, entropy < self.threshold


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Temporarily limit PyTorch's intra-op threads (``None`` leaves them alone).

    Raises:
        ValueError: for a thread count below 1.
    """
    if threads is None:
        yield
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _measure(
    fn: Callable[[], object],
    warmup: int,
    reps: int,
    budget_s: float,
    percentile: float,
    gap_s: float = 0.0,
) -> float:
    """The first of :func:`_measure_pair`: the percentile of the timed runs."""
    return _measure_pair(fn, warmup, reps, budget_s, percentile, gap_s)[0]


def _measure_pair(
    fn: Callable[[], object],
    warmup: int,
    reps: int,
    budget_s: float,
    percentile: float,
    gap_s: float = 0.0,
) -> tuple[float, float]:
    """Time ``fn``: warm up, then up to ``reps`` runs within ``budget_s``; the percentiles.

    With ``gap_s > 0`` the thread sleeps that long before each timed run, so that
    every run starts as a lone sample does in a deployment: with caches and
    branch predictors cooled by whatever ran meanwhile (back to back, a small
    partition runs much faster than it does on one sample at a time). Each such
    run is then timed once more at once, as a busy tier runs the next sample.

    Returns:
        (the percentile of the runs after the gap, of the runs right after
        another); without a gap both are the back-to-back runs'.
    """
    for _ in range(warmup):
        fn()
    times: list[float] = []
    busy: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < reps:
        if gap_s > 0:
            time.sleep(gap_s)
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        times.append(t1 - t0)
        if gap_s > 0:
            fn()
            busy.append(time.perf_counter() - t1)
        if len(times) >= 3 and time.perf_counter() > deadline:
            break
    cold = float(np.percentile(times, percentile))
    return cold, (float(np.percentile(busy, percentile)) if busy else cold)


IDLE_GAPS_S: tuple[float, ...] = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
"""The idle gaps of a profile's ``idle_curve``."""


def _idle_curve(
    fn: Callable[[], object], reps: int, percentile: float, gaps: Sequence[float] = IDLE_GAPS_S
) -> dict[str, list[float]]:
    """``fn``'s time after each idle gap over its time back to back (at least 1 and
    non-decreasing in the gap, as :func:`~earlyexit.profiling.overhead.measure_idle_curve`'s).

    Each round runs ``fn`` twice back to back (the second timed), then once after
    every gap; the gaps' order rotates between rounds, so that a slow spell of the
    machine does not fall on one gap.
    """
    fn()
    busy: list[float] = []
    after: dict[float, list[float]] = {g: [] for g in gaps}
    for r in range(reps):
        fn()
        t0 = time.perf_counter()
        fn()
        busy.append(time.perf_counter() - t0)
        i = r % len(gaps)
        for g in [*gaps[i:], *gaps[:i]]:
            time.sleep(g)
            t0 = time.perf_counter()
            fn()
            after[g].append(time.perf_counter() - t0)
    b = float(np.percentile(busy, percentile))
    ratio = [max(1.0, float(np.percentile(after[g], percentile)) / b) for g in gaps]
    return {  # a longer idle never makes a run faster: noise only slows one down
        "gap_s": [float(g) for g in gaps],
        "factor": np.maximum.accumulate(ratio).tolist(),
    }


def block_inputs(model: MultiExitModel, sample: torch.Tensor) -> list[torch.Tensor]:
    """The input of every block and the last block's output: ``[x, f_1, ..., f_N]``.

    Entry ``a`` is what partition ``[a+1..b]`` receives. Run it under
    ``torch.inference_mode()`` in eval mode.
    """
    features = [sample]
    for block in model.blocks:
        features.append(block(features[-1]))
    return features


def _check_timing_args(model: MultiExitModel, percentile: float) -> None:
    """Partition timing needs the full configuration and a percentile in (0, 100]."""
    n = model.num_blocks
    if model.exits != tuple(range(1, n + 1)):
        raise ValueError(
            f"partition timing needs an exit after every block (the full configuration); "
            f"this model has exits {list(model.exits)}"
        )
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")


_RETIME_PASSES = 2
_CONTAINED_TOLERANCE = 0.15


def inconsistent_partitions(
    times: np.ndarray, tol: float = _CONTAINED_TOLERANCE
) -> list[tuple[int, int]]:
    """Partitions ``(a, b)`` (0-based) timed more than ``1 + tol`` times a partition containing them.

    Adding a block to a partition cannot make it faster, so ``[a..b]`` slower than
    ``[a..b+1]`` or ``[a-1..b]`` by more than noise was timed during a burst of
    other work. Worst first.

    Example:
        >>> t = np.array([[1.0, 2.0, 3.0], [np.nan, 1.0, 5.0], [np.nan, np.nan, 1.0]])
        >>> inconsistent_partitions(t)   # [2..3] is slower than [1..3]
        [(1, 2)]
    """
    n = times.shape[0]
    out = []
    for a in range(n):
        for b in range(a, n):
            containers = [times[a, b + 1]] if b + 1 < n else []
            if a > 0:
                containers.append(times[a - 1, b])
            if containers:
                ratio = times[a, b] / min(containers)
                if ratio > 1 + tol:
                    out.append((ratio, a, b))
    return [(a, b) for _, a, b in sorted(out, reverse=True)]


def _time_each_partition(
    model: MultiExitModel,
    sample: torch.Tensor,
    run_of: Callable[[int, int, list[torch.Tensor]], Callable[[], object]],
    desc: str,
    warmup: int,
    reps: int,
    percentile: float,
    budget_s: float,
    progress: bool,
    gap_s: float,
    busy_out: np.ndarray | None = None,
    curve_out: dict | None = None,
) -> np.ndarray:
    """Time ``run_of(a, b, inputs)()`` for every partition [a..b] (0-based): both engines' loop.

    Checks the arguments, computes every block's input once (``inputs``, see
    :func:`block_inputs`), builds each partition's run outside inference mode
    (slicing and export need it off) and times it with :func:`_measure_pair`
    inside it, in a shuffled order; the model is in eval mode meanwhile and gets its
    mode back after. A partition timed slower than one that contains it
    (:func:`inconsistent_partitions`) is built and timed again, at most
    ``2 N`` of them in each of two passes, and the lower time kept.

    Returns:
        ``N x N`` seconds; NaN below the diagonal. ``busy_out`` (N x N), if given,
        receives the times right after another run (:func:`_measure_pair`);
        ``curve_out``, if given, the whole network's idle curve (:func:`_idle_curve`).
    """
    from tqdm.auto import tqdm

    n = model.num_blocks
    _check_timing_args(model, percentile)
    was_training = model.training
    model.eval()
    times = np.full((n, n), np.nan)
    bar = tqdm(total=n * (n + 1) // 2, desc=desc, disable=not progress, leave=False)
    try:
        with torch.inference_mode():
            inputs = block_inputs(model, sample)
        # in a shuffled order: a burst of other work then slows scattered partitions, each
        # with unhurt ones containing it (which the check below compares), not a whole row
        order = [(a, b) for a in range(n) for b in range(a, n)]
        np.random.default_rng(0).shuffle(order)
        for a, b in order:
            run = run_of(a, b, inputs)
            with torch.inference_mode():
                times[a, b], busy = _measure_pair(run, warmup, reps, budget_s, percentile, gap_s)
            if busy_out is not None:
                busy_out[a, b] = busy
            bar.update()
        # noise only slows a run down: a partition timed slower than one that contains it
        # (a burst of other work during its runs) is timed again, and the lower kept
        for _ in range(_RETIME_PASSES):
            suspects = inconsistent_partitions(times)[: 2 * n]
            if not suspects:
                break
            for a, b in suspects:
                run = run_of(a, b, inputs)
                with torch.inference_mode():
                    again, busy = _measure_pair(run, warmup, reps, budget_s, percentile, gap_s)
                if again < times[a, b]:
                    times[a, b] = again
                    if busy_out is not None:
                        busy_out[a, b] = busy
        if curve_out is not None:
            run = run_of(0, n - 1, inputs)
            with torch.inference_mode():
                curve_out.update(_idle_curve(run, max(3, min(reps, 10)), percentile))
    finally:
        bar.close()
        model.train(was_training)
    return times


def time_partitions(
    model: MultiExitModel,
    sample: torch.Tensor,
    warmup: int = 2,
    reps: int = 15,
    percentile: float = 50.0,
    budget_s: float = 0.25,
    progress: bool = False,
    gap_s: float = 0.0,
    busy_out: np.ndarray | None = None,
    curve_out: dict | None = None,
) -> np.ndarray:
    """Measure every partition [a..b] of a full-configuration model.

    Args:
        model: a model with an exit after every block.
        sample: a real input batch (batch 1 by default in the profiler); the
            features entering block a are computed from it.
        warmup: untimed runs per partition.
        reps: timed runs per partition (fewer when a partition exceeds ``budget_s``).
        percentile: the stored statistic (50 is the median).
        budget_s: time budget per partition for the timed runs.
        progress: show a progress bar.
        gap_s: idle time before each timed run (see :func:`_measure`); 0 times
            runs back to back.
        busy_out: an N x N array that receives, with ``gap_s > 0``, each
            partition's time when run again right after (a tier that is never
            idle; the profile's ``partition_time_busy_s``).
        curve_out: a dict that receives the whole network's time after each of
            :data:`IDLE_GAPS_S` over its time back to back (the profile's
            ``idle_curve``).

    Returns:
        ``N x N`` seconds; ``[a, b]`` (0-based) for blocks a+1..b+1, NaN below the diagonal.

    Raises:
        ValueError: if the model lacks an exit after some block.
    """

    return _time_each_partition(model, sample, _torch_run_of(model), "partitions", warmup, reps,
                                percentile, budget_s, progress, gap_s, busy_out, curve_out)  # fmt: skip


def time_onnx_partitions(
    model: MultiExitModel,
    sample: torch.Tensor,
    warmup: int = 2,
    reps: int = 15,
    percentile: float = 50.0,
    budget_s: float = 0.25,
    progress: bool = False,
    *,
    exporter: str = "torchscript",
    intra_op_threads: int = 1,
    gap_s: float = 0.0,
    busy_out: np.ndarray | None = None,
    curve_out: dict | None = None,
) -> np.ndarray:
    """Measure every partition [a..b] as the runtime runs it: an ONNX file in ONNX Runtime.

    Each partition is cut with :func:`earlyexit.slice` (as the last partition of
    a plan: it returns no features) and written with the
    exporter's own writer (:func:`earlyexit.export.writers.write_onnx`), then
    timed in an ONNX Runtime session with the tier workers' session options
    (:func:`earlyexit.runtime.session.session_options`: ``intra_op_threads``
    threads, no spinning). Eager PyTorch is several times slower than ONNX
    Runtime on small partitions (Python and dispatch overhead per module), so a
    profile meant to predict a deployment of ONNX bundles must time this engine.

    Args:
        model: a model with an exit after every block.
        sample: a real input batch; the features entering block a are computed from it.
        warmup, reps, percentile, budget_s, progress: as for :func:`time_partitions`.
        exporter: the ONNX exporter (``"torchscript"``: fast, the legacy one;
            ``"dynamo"``: what ``export_bundle`` uses by default; both give the same
            operators to ONNX Runtime after its graph optimizations).
        intra_op_threads: ONNX Runtime threads per operator, as in the workers.
        gap_s: idle time before each timed run (see :func:`time_partitions`).
        busy_out, curve_out: as for :func:`time_partitions`.

    Returns:
        ``N x N`` seconds; ``[a, b]`` (0-based) for blocks a+1..b+1, NaN below the diagonal.

    Raises:
        ValueError: if the model lacks an exit after some block, or a bad percentile.
    """
    with _onnx_run_of(model, exporter, intra_op_threads) as run_of:
        return _time_each_partition(model, sample, run_of, "onnx partitions", warmup, reps,
                                    percentile, budget_s, progress, gap_s, busy_out,
                                    curve_out)  # fmt: skip


_RunOf = Callable[[int, int, list[torch.Tensor]], Callable[[], object]]
"""``run_of(a, b, inputs)``: partition [a..b] (0-based) built, as a call on ``inputs[a]``."""


def _torch_run_of(model: MultiExitModel) -> _RunOf:
    """Partitions run in eager PyTorch (:class:`PartitionModule`)."""

    def run_of(a: int, b: int, inputs: list[torch.Tensor]) -> Callable[[], object]:
        part, x = PartitionModule(model, a + 1, b + 1), inputs[a]
        return lambda: part(x)

    return run_of


@contextlib.contextmanager
def _onnx_run_of(model: MultiExitModel, exporter: str, intra_op_threads: int) -> Iterator[_RunOf]:
    """Partitions run as the tier workers run them: ONNX files (in a temporary
    folder, removed on exit) in ONNX Runtime sessions with the workers' options."""
    import tempfile

    import onnxruntime as ort

    from earlyexit.export.writers import write_onnx
    from earlyexit.runtime.session import session_options
    from earlyexit.surgery.slicing import slice as slice_model

    opts = session_options(intra_op_threads)
    with tempfile.TemporaryDirectory(prefix="earlyexit-profile-onnx-") as tmp:

        def run_of(a: int, b: int, inputs: list[torch.Tensor]) -> Callable[[], object]:
            x = np.ascontiguousarray(inputs[a].numpy(), np.float32)
            example = inputs[a].repeat(2, *([1] * (inputs[a].dim() - 1)))  # batch >= 2
            ranges = [(1, a), (a + 1, b + 1)] if a else [(1, b + 1)]
            part = slice_model(model, ranges)[-1].eval()
            path = f"{tmp}/p{a + 1}_{b + 1}.onnx"
            write_onnx(part, path, example, exporter=exporter)
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            feed = {sess.get_inputs()[0].name: x}
            return lambda: sess.run(None, feed)

        yield run_of


def time_network(
    model: MultiExitModel,
    sample: torch.Tensor,
    *,
    engine: str = "torch",
    warmup: int = 2,
    reps: int = 15,
    percentile: float = 50.0,
    budget_s: float = 0.25,
    gap_s: float = 0.0,
    exporter: str = "torchscript",
    intra_op_threads: int = 1,
) -> tuple[float, float]:
    """Time the whole network (blocks 1..N and the last exit) as a profile times partition [1..N].

    A profile's entry ``[0, N-1]`` of ``partition_time_s`` (and of
    ``partition_time_busy_s``) measured again, with the same engine and
    settings: set side by side with the stored one, it says whether this
    machine still runs as it did when the profile was made.

    Args:
        model: a model with an exit after every block.
        sample: a real input batch.
        engine: one of :data:`ENGINES` (a profile's ``meta.engine`` ``"onnxruntime"`` is ``"onnx"``).
        warmup, reps, percentile, budget_s, gap_s: as for :func:`time_partitions`.
        exporter, intra_op_threads: as for :func:`time_onnx_partitions` (ONNX only).

    Returns:
        (the time after the idle gap, the time right after another run); without
        a gap both are the back-to-back time.

    Raises:
        ValueError: an unknown engine, a model without an exit after every block, a bad percentile.

    Example:
        >>> import torch
        >>> from earlyexit import MultiExitModel, backbones, decompose
        >>> m = MultiExitModel(decompose(backbones.create("resnet20", in_chans=1)))
        >>> cold, busy = time_network(m, torch.randn(1, 1, 28, 28), reps=3)
        >>> cold > 0 and busy > 0
        True
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    _check_timing_args(model, percentile)
    n = model.num_blocks
    was_training = model.training
    model.eval()
    try:
        with contextlib.ExitStack() as stack:
            if engine == "onnx":
                run_of = stack.enter_context(_onnx_run_of(model, exporter, intra_op_threads))
            else:
                run_of = _torch_run_of(model)
            run = run_of(0, n - 1, [sample])
            with torch.inference_mode():
                return _measure_pair(run, warmup, reps, budget_s, percentile, gap_s)
    finally:
        model.train(was_training)


def compare_granularity(
    model: MultiExitModel, sample: torch.Tensor, reps: int = 20, percentile: float = 50.0
) -> dict:
    """PORTEND Fig. 5: layer-wise and block-wise sums against whole-partition times.

    For every prefix partition [1..b], the layer-wise sum adds up each leaf
    module timed alone on its recorded input; the block-wise sum adds up each
    block and the exit branch timed alone; the partition-wise figure times the
    partition as one piece.

    Args:
        model: a full-configuration model.
        sample: a real input batch.
        reps: timed runs per measurement.
        percentile: the statistic.

    Returns:
        ``{"last_block": [...], "layer_wise_s": [...], "block_wise_s": [...],
        "partition_wise_s": [...]}``.
    """
    model.eval()
    n = model.num_blocks
    out: dict[str, list] = {
        "last_block": [],
        "layer_wise_s": [],
        "block_wise_s": [],
        "partition_wise_s": [],
    }
    with torch.inference_mode():
        feats = block_inputs(model, sample)

        def leaf_times(module: nn.Module, x: torch.Tensor) -> float:
            recorded: list[tuple[nn.Module, tuple]] = []
            hooks = [
                m.register_forward_pre_hook(lambda m, inp: recorded.append((m, inp)))
                for m in module.modules()
                if not list(m.children())
            ]
            try:
                module(x)
            finally:
                for h in hooks:
                    h.remove()
            return sum(
                _measure(lambda m=m, i=i: m(*i), 2, reps, 1.0, percentile) for m, i in recorded
            )

        block_layer = [leaf_times(b, feats[i]) for i, b in enumerate(model.blocks)]
        block_whole = [
            _measure(lambda b=b, x=feats[i]: b(x), 2, reps, 1.0, percentile)
            for i, b in enumerate(model.blocks)
        ]
        for b in range(1, n + 1):
            head = model.heads[str(b)]
            head_layer = leaf_times(head, feats[b])
            head_whole = _measure(lambda h=head, x=feats[b]: h(x), 2, reps, 1.0, percentile)
            part = PartitionModule(model, 1, b)
            out["last_block"].append(b)
            out["layer_wise_s"].append(sum(block_layer[:b]) + head_layer)
            out["block_wise_s"].append(sum(block_whole[:b]) + head_whole)
            out["partition_wise_s"].append(
                _measure(lambda p=part: p(sample), 2, reps, 1.0, percentile)
            )
    out["median_ratio_partition_to_layer"] = statistics.median(
        p / lw for p, lw in zip(out["partition_wise_s"], out["layer_wise_s"], strict=True)
    )
    out["median_ratio_partition_to_block"] = statistics.median(
        p / bw for p, bw in zip(out["partition_wise_s"], out["block_wise_s"], strict=True)
    )
    return out
