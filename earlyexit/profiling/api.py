"""``earlyexit.profile``: one call from a checkpoint and data to a profile (docs/spec.md)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import platform
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from earlyexit.formats import DeviceProfile, Profile, ProfileSamples
from earlyexit.profiling.exits import collect_exit_outputs, exit_statistics, fit_temperatures
from earlyexit.profiling.serialization import time_serialization
from earlyexit.profiling.timing import (
    ENGINES,
    block_inputs,
    compare_granularity,
    time_onnx_partitions,
    time_partitions,
    torch_threads,
)
from earlyexit.runtime.cpus import check_cpu_latency_us, hold_cpu_latency
from earlyexit.surgery.digest import model_digest
from earlyexit.surgery.multi_exit import MultiExitModel

__all__ = ["profile", "merge_profiles", "DEFAULT_THRESHOLDS", "model_digest"]

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _resolve_data(data: Any, model: MultiExitModel) -> tuple[Iterable, str]:
    """Return (profiling batches, dataset name)."""
    if isinstance(data, (str, os.PathLike)):
        from earlyexit.data import EarlyExitDataModule

        dm = EarlyExitDataModule(
            str(data),
            batch_size=256,
            augment=False,
            normalization=getattr(model, "normalization", None),
        )
        dm.setup()
        return dm.profile_dataloader(), dm.name
    if hasattr(data, "profile_dataloader"):
        data.setup()
        return data.profile_dataloader(), str(getattr(data, "name", type(data).__name__))
    if isinstance(data, Iterable):
        return data, "custom"
    raise TypeError(
        f"data must be a --data spec string, an EarlyExitDataModule or an iterable of "
        f"(inputs, labels) batches, got {type(data).__name__}"
    )


def profile(
    model: MultiExitModel | str | os.PathLike[str],
    data: Any = "fashion-mnist",
    device_name: str | None = None,
    *,
    threads: int | None = None,
    batch_size: int = 1,
    thresholds: Sequence[float] | None = None,
    calibrate: bool = False,
    warmup: int = 2,
    reps: int = 15,
    percentile: float = 50.0,
    budget_s: float = 0.25,
    granularity: bool = False,
    progress: bool = True,
    engine: str = "torch",
    gap_s: float = 0.0,
    dataset_name: str | None = None,
    measure_hops: bool = False,
    worker_idle_curve: bool = False,
    link_idle_curve: bool = False,
    idle_slowdown: float = 1.01,
    cpu_affinity: str | None = None,
    cpu_latency_us: int | None = None,
) -> Profile:
    """Profile a full-configuration model on this device.

    Records accuracy and exit rate of every exit over the thresholds, the
    per-sample record, optional temperatures, the time of every partition
    [a..b] and the (de)serialization cost of every tensor that can cross a link.

    Args:
        model: a multi-exit model with an exit after every block, or a checkpoint path.
        data: a ``--data`` spec (its profiling split is used), a DataModule, or
            an iterable of ``(inputs, labels)`` batches.
        device_name: the key of this device in ``profile.devices`` (default: host name).
        threads: PyTorch intra-op threads while timing (stands in for a weaker device).
        batch_size: batch of the timed runs.
        thresholds: entropy thresholds (default 0.0, 0.1, ..., 1.0).
        calibrate: fit a temperature per exit before computing entropies.
        warmup: untimed runs per partition (see :func:`time_partitions`).
        reps: timed runs per partition (fewer when a partition exceeds ``budget_s``).
        percentile: the statistic of the timed runs stored (50 is the median).
        budget_s: time budget per partition for the timed runs.
        granularity: also compare layer-, block- and partition-wise times (Fig. 5),
            stored in ``devices[name].extra["granularity"]``.
        progress: show progress bars.
        dataset_name: the profile's ``dataset`` (default: the data spec's name).
        engine: what runs the timed partitions: ``"torch"`` (eager PyTorch) or
            ``"onnx"`` (each partition exported to ONNX and run in ONNX Runtime with
            the tier workers' session options and ``threads`` intra-op threads, as a
            deployed bundle runs; see :func:`~earlyexit.profiling.timing.time_onnx_partitions`).
            A profile that predicts a deployment must time the engine the deployment runs.
        gap_s: idle time before each timed partition run, so that each run starts
            cold as a lone sample does when inputs come one at a time (0: back to
            back, warm caches; on this kind of CPU a small partition then runs up
            to twice as fast as one sample at a time). With a gap the profile also
            records each partition's time right after a run (``partition_time_busy_s``)
            and the whole network's slowdown after idle gaps of 2 to 200 ms
            (``idle_curve``), for the model under load (docs/spec.md#load).
        measure_hops: also measure the runtime's own cost per hop on this device
            (samples through a real worker with empty partitions; see
            :func:`~earlyexit.profiling.overhead.measure_hop_overhead`), stored as
            the device's ``hop_s``, and the runtime's CPU per partition run that a
            slower tier stretches (:func:`~earlyexit.profiling.overhead.measure_hop_cpu`,
            ``hop_cpu_s``), and what a hand-off that crosses an emulated link
            adds (:func:`~earlyexit.profiling.overhead.measure_link_hop`, ``link_hop_s``).
        worker_idle_curve: with an idle gap (``gap_s`` > 0, ``--gap-ms``), measure the ``idle_curve`` in a
            real tier worker instead of one process, the whole network exported
            to ONNX as one partition
            (:func:`~earlyexit.profiling.overhead.measure_idle_curve`, with the
            wake-up times ``wake_s``; about 25 s more); the one-process curve is
            kept in the device's ``idle_curve_in_process``.
        link_idle_curve: with an idle gap, also measure the ``link_idle_curve``:
            the worker's idle curve when the idle is its sample's time on an
            emulated link, as a far tier idles (``measure_idle_curve(through_links=True)``,
            with block 1 alone as its ``small`` partition for the cold CPU ``cold_s``;
            about 40 s more; docs/spec.md#idle-between-samples), and with it
            the client's own CPU against its wait, ``client_curve``
            (docs/spec.md#the-client).
        idle_slowdown: with ``worker_idle_curve`` or ``link_idle_curve``, the slowdown (> 1) its worker
            emulates: that of the tier the curve is for (10 for the demo's Pi),
            whose back-to-back runs already include the cooling of the
            emulator's own sleeps; 1.01 measures the host's own cooling.
        cpu_affinity: with ``worker_idle_curve``, ``link_idle_curve`` or ``measure_hops``, ``"spread"``
            pins their workers and the rest of their deployments as
            ``deploy(cpu_affinity="spread")`` does; None pins nothing.
        cpu_latency_us: hold a CPU wake-up latency request of this many
            microseconds while timing (0: idle CPUs poll; see
            :mod:`earlyexit.runtime.cpus`), as deployments made with the same
            request serve (``deploy(cpu_latency_us=)``). The device's ``meta``
            records it (None where it could not be held). None: no request.

    Returns:
        A validated :class:`earlyexit.formats.Profile`.

    Raises:
        ValueError, TypeError: for a model without every exit, bad thresholds or data.

    Example:
        ```python
        import earlyexit
        p = earlyexit.profile("checkpoints/resnet20_fashionmnist.pt", "fashion-mnist")
        p.exit_rate.shape  # (11, 10)
        ```
    """
    if not isinstance(model, MultiExitModel):
        from earlyexit.checkpoint import load

        model = load(model)
    n = model.num_blocks
    if model.exits != tuple(range(1, n + 1)):
        raise ValueError(
            f"profiling needs the full configuration (an exit after every block); exits are {list(model.exits)}"
        )
    if not gap_s >= 0:
        raise ValueError(f"gap_s must be >= 0, got {gap_s!r}")
    if not isinstance(measure_hops, bool):
        raise TypeError(f"measure_hops must be True or False, got {measure_hops!r}")
    if not isinstance(worker_idle_curve, bool):
        raise TypeError(f"worker_idle_curve must be True or False, got {worker_idle_curve!r}")
    if worker_idle_curve and not gap_s > 0:
        raise ValueError("worker_idle_curve needs an idle gap (gap_s > 0): the curve goes with it")
    if not isinstance(link_idle_curve, bool):
        raise TypeError(f"link_idle_curve must be True or False, got {link_idle_curve!r}")
    if link_idle_curve and not gap_s > 0:
        raise ValueError("link_idle_curve needs an idle gap (gap_s > 0): the curve goes with it")
    bad = isinstance(idle_slowdown, bool) or not isinstance(idle_slowdown, (int, float))
    if bad or not 1.0 < idle_slowdown < float("inf"):
        raise ValueError(f"idle_slowdown must be a number > 1, got {idle_slowdown!r}")
    if cpu_affinity not in (None, "spread"):
        raise ValueError(f"cpu_affinity must be None or 'spread', got {cpu_affinity!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    th = np.asarray(DEFAULT_THRESHOLDS if thresholds is None else thresholds, dtype=np.float64)
    if th.ndim != 1 or th.size == 0 or (th < 0).any() or (th > 1).any():
        raise ValueError(
            f"thresholds must be a non-empty list of numbers in [0, 1], got {list(th)}"
        )
    th = np.unique(th)
    batches, dataset = _resolve_data(data, model)
    dataset = dataset_name or dataset
    model.eval()
    # the request, if any, held while timing and measuring hops (released before returning)
    with hold_cpu_latency(check_cpu_latency_us(cpu_latency_us)) as qos:
        with torch_threads(threads):
            outputs = collect_exit_outputs(model, batches, progress=progress)
            temps = fit_temperatures(outputs) if calibrate else None
            stats = exit_statistics(outputs, th, temps)
            sample = _first_inputs(batches, batch_size)
            timer = time_partitions
            busy = np.full((n, n), np.nan) if gap_s > 0 else None
            curve: dict[str, list[float]] | None = {} if gap_s > 0 else None
            extra_kw: dict[str, Any] = {}
            if engine == "onnx":
                timer = time_onnx_partitions
                extra_kw = {"intra_op_threads": threads or 1}
            times = timer(
                model,
                sample,
                warmup=warmup,
                reps=reps,
                percentile=percentile,
                budget_s=budget_s,
                progress=progress,
                gap_s=gap_s,
                busy_out=busy,
                curve_out=curve,
                **extra_kw,
            )
            with torch.inference_mode():
                feats = block_inputs(model, sample)
                result = model.heads[str(n)](feats[-1])
            one = [f[:1].numpy() for f in feats]
            costs = time_serialization(one, result[:1].float().numpy(), percentile=percentile)
            device_extra: dict[str, Any] = {}
            if granularity:
                device_extra["granularity"] = compare_granularity(
                    model, sample, percentile=percentile
                )
        hop_s = hop_cpu_s = link_hop_s = None
        if measure_hops:
            from earlyexit.profiling.overhead import (
                measure_hop_cpu,
                measure_hop_overhead,
                measure_link_hop,
            )

            hops = measure_hop_overhead()
            hop_s = hops.hop_s
            cpu = measure_hop_cpu(cpu_affinity=cpu_affinity)  # the part a slower tier stretches
            hop_cpu_s = cpu["cpu_hop_s"]
            link = measure_link_hop(cpu_affinity=cpu_affinity)  # what crossing a link adds
            link_hop_s = link["link_hop_s"]
            device_extra["hop"] = {**hops.to_dict(), "cpu": cpu, "link": link}
    if temps is not None:
        model.set_temperatures(temps)
    device_name = device_name or socket.gethostname()
    meta = {
        "host": socket.gethostname(),
        "cpu": _cpu_name(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "torch": torch.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "percentile": percentile,
        "batch_size": batch_size,
        "warmup": warmup,
        "reps": reps,
        "engine": "onnxruntime" if engine == "onnx" else "torch",
        "gap_s": gap_s,
        "cpu_latency_us": qos.requested_us if qos.active else None,
    }
    device = DeviceProfile(
        times, costs.serialize_s, costs.deserialize_s, costs.result_serialize_s, costs.result_deserialize_s,
        meta, device_extra, hop_s, hop_cpu_s, busy, curve or None, link_hop_s,
    )  # fmt: skip
    prof = Profile(
        model=str(model.config.get("backbone") or "custom"),
        dataset=dataset,
        num_blocks=n,
        num_classes=model.num_classes,
        input_bits=int(costs.bits[0]),
        output_bits=costs.bits[1:],
        result_bits=int(costs.result_bits),
        thresholds=th,
        branch_accuracy=stats.branch_accuracy,
        exit_rate=stats.exit_rate,
        devices={device_name: device},
        temperatures=stats.temperatures,
        samples=ProfileSamples(stats.entropy, stats.correct),
        extra={
            "model_digest": model_digest(model),
            "profiling_samples": int(stats.entropy.shape[1]),
        },
    )
    # the idle curve as a real worker cools, and as one whose sample is on a link
    for wanted, field, key, links in ((worker_idle_curve, "idle_curve", "idle", False),
                                      (link_idle_curve, "link_idle_curve", "link_idle", True)):  # fmt: skip
        if not wanted:
            continue
        measured = _worker_idle_curve(model, prof, sample[:1], cpu_latency_us, through_links=links,
                                      slowdown=float(idle_slowdown), cpu_affinity=cpu_affinity)  # fmt: skip
        dev = prof.devices[device_name]
        how = {k: measured[k] for k in ("cpu_s", "cpu_small_s", "round_trip_s", "method")
               if k in measured}  # fmt: skip
        extra = {**dev.extra, key: {**how, "slowdown": float(idle_slowdown),
                                    "cpu_affinity": cpu_affinity}}  # fmt: skip
        if field == "idle_curve":  # the one-process curve it replaces, kept
            extra["idle_curve_in_process"] = dev.idle_curve
        curve = {k: measured[k] for k in ("gap_s", "factor", "wake_s", "cold_s") if k in measured}
        fields = {field: curve}
        if "client_curve" in measured:  # the client's CPU, measured in the same deployments
            fields["client_curve"] = measured["client_curve"]
        prof.devices[device_name] = dataclasses.replace(dev, extra=extra, **fields)
    return prof


def _worker_idle_curve(
    model: MultiExitModel, prof: Profile, sample: torch.Tensor, cpu_latency_us: int | None,
    **how: Any,
) -> dict[str, Any]:
    """:func:`~earlyexit.profiling.overhead.measure_idle_curve` of the whole network,
    exported to ONNX as a one-partition bundle in a temporary directory."""
    import tempfile

    from earlyexit.export import export_bundle
    from earlyexit.formats import Tier, Topology
    from earlyexit.planner import make_plan
    from earlyexit.planner.latency import CostModel
    from earlyexit.profiling.overhead import measure_idle_curve

    device = next(iter(prof.devices))
    topo = Topology((Tier("device", device, 1.0),), ())
    cm = CostModel(prof, topo)
    with tempfile.TemporaryDirectory(prefix="earlyexit-idle-") as tmp:
        paths = []
        # through a link, block 1 alone too: the cold CPU every message pays (cold_s)
        ends = [prof.num_blocks, *([1] if how.get("through_links") and prof.num_blocks > 1 else [])]
        for end in ends:
            paths.append(os.path.join(tmp, f"blocks-1-{end}"))
            export_bundle(model, make_plan(cm, 0.0, [end], [0]), paths[-1], formats="onnx",
                          verify_data=sample)  # fmt: skip
        small = paths[1] if len(paths) > 1 else None
        return measure_idle_curve(paths[0], cpu_latency_us=cpu_latency_us, small=small, **how)


def _first_inputs(batches: Iterable, batch_size: int) -> torch.Tensor:
    chunks, have = [], 0
    for x, _ in batches:
        chunks.append(torch.as_tensor(x))
        have += chunks[-1].shape[0]
        if have >= batch_size:
            break
    x = torch.cat(chunks)[:batch_size]
    if x.shape[0] < batch_size:
        raise ValueError(f"batch_size {batch_size} exceeds the {x.shape[0]} profiling samples")
    return x.float().contiguous()


def merge_profiles(profiles: Sequence[Profile | str | os.PathLike[str]]) -> Profile:
    """Combine the devices of profiles of one model and dataset made on different machines.

    Args:
        profiles: profiles or paths; the first supplies accuracy and exit rates.

    Returns:
        A new profile with every device.

    Raises:
        ValueError: if the profiles describe different models, datasets, weights or
            thresholds, or two share a device name.

    Example:
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> a = synthetic_profile(num_blocks=3, devices=("edge",))
        >>> b = synthetic_profile(num_blocks=3, devices=("cloud",))
        >>> sorted(merge_profiles([a, b]).devices)
        ['cloud', 'edge']
    """
    loaded = [p if isinstance(p, Profile) else Profile.load(p) for p in profiles]
    if not loaded:
        raise ValueError("merge needs at least one profile")
    first = loaded[0]
    devices = dict(first.devices)
    for k, other in enumerate(loaded[1:], 2):
        for field in ("model", "dataset", "num_blocks", "num_classes"):
            if getattr(other, field) != getattr(first, field):
                raise ValueError(
                    f"profile {k} has {field}={getattr(other, field)!r} but profile 1 has "
                    f"{getattr(first, field)!r}: only profiles of one model and dataset merge"
                )
        if other.extra.get("model_digest") != first.extra.get("model_digest"):
            raise ValueError(f"profile {k} was made with different weights (model_digest differs)")
        if not np.array_equal(other.thresholds, first.thresholds):
            raise ValueError(
                f"profile {k} uses thresholds {other.thresholds.tolist()}, profile 1 {first.thresholds.tolist()}"
            )
        for name, dev in other.devices.items():
            if name in devices:
                raise ValueError(
                    f"device {name!r} appears in more than one profile; rename one with --device-name"
                )
            devices[name] = dev
    data = first.to_dict()
    merged = Profile.from_dict(data)
    merged.devices = devices
    merged.validate()
    return merged
