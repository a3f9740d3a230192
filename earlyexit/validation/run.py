"""``validate``: export, deploy and measure configurations of a checkpoint, then compare.

:func:`validate` checks every argument, the test data and the profile against
the checkpoint (and notes what the reader should know about them) before
anything is written; the sweep over the configurations is
:func:`earlyexit.validation.sweep.deploy_configs`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from earlyexit._checks import check_output_dir, removed_on_failure
from earlyexit.formats import Profile, Topology, atomic_write_text
from earlyexit.validation.configs import resolve
from earlyexit.validation.hostcheck import check_host, drift_note, elsewhere_notes, host_checks
from earlyexit.validation.measurement import niceness_allowed, realtime_allowed
from earlyexit.validation.sweep import ValidationResult, deploy_configs

__all__ = [
    "ValidationResult",
    "validate",
    "MAX_CONFIGS",
    "MAX_SAMPLES",
    "MAX_ACCURACY_SAMPLES",
    "MAX_PASSES",
]

MAX_CONFIGS = 1000
"""The most configurations one validation deploys."""
MAX_SAMPLES = 100_000
"""The most test samples per configuration run one at a time over the emulated links."""
MAX_ACCURACY_SAMPLES = 1_000_000
"""The most test samples per configuration in the accuracy pass."""
MAX_PASSES = 20
"""The most passes the timed samples of one validation are split into."""


def _check_count(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value}")


_COLD_GAP_S = 0.02
"""The idle gap before each timed partition run that matches a one-at-a-time deployment.

Measured with ResNet-20 on pi4-wifi (docs/deployment.md#on-the-demos-topology):
back-to-back runs timed partitions 6-26% faster than the workers ran them."""


def _profile_notes(prof: Profile, topo: Topology, gap_s: float) -> list[str]:
    """What the reader should know about how each tier's device was profiled.

    An engine other than ONNX Runtime (also warned: the estimates then miss the
    deployment), another gap between timed runs than the latency pass's, no
    measured hand-off cost.

    Args:
        prof: the profile.
        topo: the topology (its tiers' devices are looked at).
        gap_s: the latency pass's idle time before each sample.

    Returns:
        The notes, device by device.
    """
    notes: list[str] = []
    for dev in sorted({t.device for t in topo.tiers}):
        engine = prof.devices[dev].meta.get("engine", "torch")
        if engine != "onnxruntime":
            notes.append(
                f"device {dev!r} was profiled with engine {engine!r}, but the tier workers run "
                "ONNX Runtime (several times faster on small partitions): profile with "
                "engine='onnx' (earlyexit profile --engine onnx) to predict this deployment"
            )
            warnings.warn(notes[-1], stacklevel=3)
        prof_gap = float(prof.devices[dev].meta.get("gap_s", 0.0) or 0.0)
        if prof_gap < max(gap_s, _COLD_GAP_S) - 1e-9:
            notes.append(
                f"device {dev!r} timed its partitions {prof_gap * 1e3:g} ms apart, but one at a "
                "time a worker runs each sample after waiting (for the client, the other tiers "
                f"and its own emulated slowdown; the latency pass adds {gap_s * 1e3:g} ms), with "
                "colder caches: profile with an idle gap of at least "
                f"{max(gap_s, _COLD_GAP_S) * 1e3:g} ms (--gap-ms; docs/deployment.md#on-the-demos-topology)"
            )
        if prof.devices[dev].hop_s is None:
            notes.append(
                f"device {dev!r} has no hop_s: the runtime's own cost per hand-off is not "
                "estimated (profile with measure_hops=True, earlyexit profile --measure-hops)"
            )
    return notes


def validate(
    checkpoint: str | os.PathLike[str],
    profile: Profile | str | os.PathLike[str],
    topology: Topology | str | os.PathLike[str],
    data: Any = None,
    *,
    configs: int = 30,
    samples: int = 100,
    accuracy_samples: int = 2000,
    out_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    devices: Mapping[str, str] | None = None,
    emulate_links: bool = True,
    progress: Callable[[str], None] | None = None,
    exporter: str = "torchscript",
    accuracy_drop: float | None = 0.01,
    niceness: int | None = -15,
    force: bool = False,
    keep_logs: bool = False,
    split: bool = False,
    rounds: int = 3,
    min_per_exit: int = 10,
    realtime: int | None = 10,
    gap_s: float = 0.0,
    cpu_latency_us: int | None = None,
    cpu_affinity: str | None = None,
    passes: int = 1,
) -> ValidationResult:
    """Deploy ``configs`` configurations of a checkpoint and compare them with the estimates.

    Every argument is checked, and the checkpoint compared with the profile,
    before anything is written; if the run fails, what it wrote is removed.
    Right before and right after the measurements the whole network is timed
    again as the profile timed it, for every device profiled on this host
    (:mod:`~earlyexit.validation.hostcheck`): a drift of the host beyond 10% is noted.

    Args:
        checkpoint: the trained multi-exit model (``earlyexit.load``).
        profile: its profile (JSON path or Profile).
        topology: the topology to emulate (built-in name, YAML path or Topology).
        data: the held-out data (a data spec; default: the model's dataset), test split.
        configs: K, the number of configurations (1 .. :data:`MAX_CONFIGS`).
        samples: S, test samples per configuration, one at a time over the
            emulated links: the latency pass (1 .. :data:`MAX_SAMPLES`).
        accuracy_samples: test samples per configuration for accuracy and exit
            fractions (``samples`` .. :data:`MAX_ACCURACY_SAMPLES`): when more than
            ``samples``, the bundle's partition files are run chained in this
            process with the workers' exit rule (links and placement do not change
            which exit a sample takes); the deployed pass must agree on the samples
            they share. A few hundred samples measure an accuracy only to a few points.
        out_dir: where bundles, plots and ``validation.json`` go.
        seed: for the random configurations.
        devices: rebind tiers to profile devices (``{tier name or device: device}``).
        emulate_links: emulate the topology's links (else loopback only).
        progress: called with a line of text after each configuration.
        exporter: the ONNX exporter of the bundles (``"torchscript"`` exports in a
            fraction of the time of ``"dynamo"``; ONNX Runtime runs both the same).
        accuracy_drop: the first configuration is the plan a user would deploy,
            P_lat with accuracy at least the final exit's minus this (as the demo
            plans); its latency CDF is plotted. None: only :func:`choose_configs`.
        niceness: scheduling niceness of the deployment's processes and of the
            client during the latency pass (None: unchanged). The emulated tiers
            stand for dedicated machines; on a shared machine their wake-ups
            otherwise wait behind other processes. Needs ``CAP_SYS_NICE``
            (root); without it the run goes on and says so in ``notes``.
        force: go on with a profile made from other weights than the checkpoint's
            (its ``model_digest`` differs), with a warning in ``notes``; refused otherwise.
        keep_logs: keep every process's log under ``out_dir/logs/``.
        split: also deploy each configuration without emulated links, and without
            links or slowdowns, on the same samples, and record the three mean
            latencies (``measured.split_s``): where measured and estimated part.
        rounds: times each timed sample goes through the deployment; its latency
            is the median of them (a burst of other work on a shared machine must
            hit the same sample in most rounds to count; 1 .. 99).
        passes: split every configuration's timed samples into this many passes
            (1 .. 20) and run pass 1 of every configuration, then pass 2 in the
            reverse order, and so on, each on a fresh deployment: a slow spell of
            a shared host then hits every configuration alike instead of those
            measured during it, and a steady drift cancels out of the means.
        realtime: run each deployment and the client under ``SCHED_FIFO`` at this
            priority (1 .. 99) during the latency pass, so that the emulated
            dedicated devices never wait behind other work (on the shared 2-core
            development machine at load 8, per-sample tails vanished: mean within
            2 % of the median, against 50 % at niceness −15 alone). Needs
            ``CAP_SYS_NICE``; without it the run goes on and says so in
            ``notes``. None: not real-time (``niceness`` only).
        gap_s: idle seconds before each timed sample (0 .. 1), so that each meets
            an idle deployment. 0 (back to back) is what the hand-off cost
            ``hop_s`` is measured in; on the 2-core development machine, with
            20 ms, the fast demo configurations measured 1.4 to 1.9 times their
            estimate (every hand-off and every sleep of the slowdown emulation
            then wakes an idle process), with 0 within 0 to 26 %.
        min_per_exit: with an accuracy pass, the latency pass times at least this
            many samples (``samples`` at most) of every exit the test data takes (on top of the first
            ``samples``), and the measured mean weights each exit's mean by that
            exit's fraction over the accuracy pass: a rare exit over a slow link
            otherwise swings the mean with how often it happens to be timed.
            The plain mean is kept in ``measured.latency_pass.mean_latency_s``.
        cpu_latency_us: the CPU wake-up latency the deployments' workers
            request while serving (``deploy(cpu_latency_us=)``; 0: idle CPUs
            poll). Where it cannot be held, the run goes on and says so in
            ``notes``. Profile with the same request held (``earlyexit
            profile --cpu-latency-us``) so that the estimates and the
            measurements see the same machine. None: no request.
        cpu_affinity: ``"spread"`` gives the slowest tiers' workers a core each,
            the rest of the deployment the cores left (``deploy(cpu_affinity=)``);
            None pins nothing.

    Returns:
        The :class:`ValidationResult` (also written as ``out_dir/validation.json``).

    Raises:
        ValueError: a topology device missing from the profile, counts out of
            range, a profile of another model (block or class count, or weights
            without ``force``), too little test data, an output directory that is a file.
        TypeError: a count that is not an integer.
    """
    import torch

    import earlyexit
    from earlyexit.export.bundle import resolve_data
    from earlyexit.planner.latency import CostModel
    from earlyexit.planner.topology import bind_devices
    from earlyexit.runtime.cpus import check_cpu_latency_us, hold_cpu_latency
    from earlyexit.surgery.digest import model_digest

    _check_count("configs", configs, 1, MAX_CONFIGS)
    _check_count("samples", samples, 1, MAX_SAMPLES)
    _check_count("accuracy_samples", accuracy_samples, samples, MAX_ACCURACY_SAMPLES)
    _check_count("rounds", rounds, 1, 99)
    _check_count("passes", passes, 1, MAX_PASSES)
    if realtime is not None:
        _check_count("realtime", realtime, 1, 99)
    _check_count("min_per_exit", min_per_exit, 0, MAX_SAMPLES)
    if niceness is not None:
        _check_count("niceness", niceness, -20, 19)
    if out_dir is not None:
        check_output_dir(out_dir, "out_dir")
    prof, topo = resolve(profile, topology)
    if devices:
        topo = bind_devices(topo, devices)
    cm = CostModel(prof, topo)  # checks that every tier's device is profiled
    t_start = time.perf_counter()
    notes = []
    model = earlyexit.load(checkpoint)
    if prof.num_blocks != model.num_blocks or prof.num_classes != model.num_classes:
        raise ValueError(
            f"the profile is of another model: {prof.num_blocks} blocks and {prof.num_classes} "
            f"classes, the checkpoint {checkpoint} has {model.num_blocks} blocks and "
            f"{model.num_classes} classes; profile this checkpoint (earlyexit profile)"
        )
    want = prof.extra.get("model_digest")
    if want is not None and want != model_digest(model):
        text = (
            f"the profile was made with other weights than {checkpoint} (its model_digest "
            "differs): its exit rates and accuracies do not describe this model"
        )
        if not force:
            raise ValueError(text + "; profile this checkpoint, or pass --force (force=True)")
        notes.append(text)
        warnings.warn(text, stacklevel=2)
    got = resolve_data(data, "test", model, limit=max(samples, accuracy_samples))
    if got is None:
        raise ValueError("no test data: give data= (a data spec) or a checkpoint that records one")
    if len(got[0]) < samples:
        raise ValueError(
            f"samples: the test data holds {len(got[0])} samples, fewer than the {samples} asked"
        )
    if len(got[0]) < accuracy_samples:
        notes.append(
            f"accuracy pass over {len(got[0])} samples, all the test data "
            f"({accuracy_samples} asked)"
        )
    if niceness is not None and not niceness_allowed(niceness):
        notes.append(
            f"could not run the deployment at niceness {niceness} (needs CAP_SYS_NICE): "
            "latencies include waiting behind this machine's other processes"
        )
        niceness = None
    if realtime is not None and not realtime_allowed(realtime):
        notes.append(
            f"could not run the deployment real-time (SCHED_FIFO {realtime}, needs "
            "CAP_SYS_NICE): latencies include waiting behind this machine's other processes"
        )
        realtime = None
    if not (isinstance(gap_s, (int, float)) and not isinstance(gap_s, bool) and 0 <= gap_s <= 1):
        raise ValueError(f"gap_s must be a number of seconds in [0, 1], got {gap_s!r}")
    notes += _profile_notes(prof, topo, gap_s)
    cpu_latency_us = check_cpu_latency_us(cpu_latency_us)
    if cpu_affinity not in (None, "spread"):
        raise ValueError(f"cpu_affinity must be None or 'spread', got {cpu_affinity!r}")
    if cpu_latency_us is not None:
        with hold_cpu_latency(cpu_latency_us, quiet=True) as req:  # said in the notes
            if not req.active:
                notes.append(
                    f"could not hold the CPU latency request of {cpu_latency_us} us "
                    f"({req.reason}): the workers serve without it"
                )
    run = dict(
        samples=samples, seed=seed, configs=configs, emulate_links=emulate_links,
        progress=progress, exporter=exporter, accuracy_drop=accuracy_drop,
        niceness=niceness, keep_logs=keep_logs, split=split, rounds=rounds, passes=passes, realtime=realtime, gap_s=gap_s,
        min_per_exit=min_per_exit, cpu_latency_us=cpu_latency_us, cpu_affinity=cpu_affinity,
    )  # fmt: skip

    used = sorted({t.device for t in topo.tiers})
    notes += elsewhere_notes(prof, used)
    x_check = torch.as_tensor(got[0])  # each device's profiled batch size is sliced from it

    def into(out: Path) -> ValidationResult:
        before = check_host(model, prof, used, x_check)
        result = deploy_configs(out, model, prof, topo, cm, got, notes, **run)
        result.host_check = host_checks(prof, [before, check_host(model, prof, used, x_check)])
        drift = drift_note(result.host_check)
        if drift is not None:
            result.notes.append(drift)
        result.wall_time_s = time.perf_counter() - t_start
        atomic_write_text(
            out / "validation.json", json.dumps(result.to_dict(), indent=2, default=float)
        )
        return result

    if out_dir is not None:
        with removed_on_failure(out_dir) as out:
            return into(out)
    out = Path(tempfile.mkdtemp(prefix="earlyexit-validate-"))
    try:
        return into(out)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
