"""The workers of a plan, one per tier, and the ``earlyexit serve`` command line of each.

Every generator of this package (Kubernetes, compose, network namespaces)
starts from :func:`plan_workers`, which reads the bundle's manifest (and,
when given, the plan, the topology and the profile, checked against it), and
from :func:`serve_argv`, which writes the one command a tier runs. Only the
addresses differ between the targets: Service names on Kubernetes, service
names on compose, 10.x addresses in network namespaces, 127.0.0.1 on loopback.

Example:
    >>> serve_argv(TierWorker(0, 0, "edge", "earlyexit-edge", ("manifest.json",), 0, 0.0, 1.0),
    ...            bundle="/bundle", bind="tcp://*:5555", control_bind="tcp://*:5556",
    ...            next_address="tcp://earlyexit-cloud:5555", results="tcp://app:5558")[:6]
    ['earlyexit', 'serve', '--bundle', '/bundle', '--tier', '0']
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from earlyexit.formats import Manifest, Plan, Profile, Topology

__all__ = [
    "INPUT_PORT",
    "CONTROL_PORT",
    "RESULTS_PORT",
    "BASE_MEMORY_MIB",
    "TierWorker",
    "plan_workers",
    "serve_argv",
    "named_argv",
    "bundle_digest",
    "dump_yaml",
]

INPUT_PORT = 5555
"""Where every tier's worker takes its inputs (``--bind``)."""
CONTROL_PORT = 5556
"""Where every tier's worker takes acks and heartbeats (``--control-bind``)."""
RESULTS_PORT = 5558
"""Where the application (the destination) takes results."""
BASE_MEMORY_MIB = 128
"""Memory requested for ``earlyexit serve`` besides its model: Python, numpy, ONNX Runtime and
ZeroMQ (an idle worker of the shipped ResNet-20's last partition measured 69 MiB RSS on x86-64),
with room for ONNX Runtime's buffers under micro-batches."""
_NAME = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class TierWorker:
    """One tier's worker: which partition it serves and what it needs.

    Attributes:
        partition: the partition it serves (0-based).
        tier: the tier index of the plan (``earlyexit serve --tier``).
        tier_name: the tier's name in the plan.
        name: a DNS-1035 label naming its Service / container (``prefix-tier``).
        files: the bundle files it needs: ``manifest.json`` and its partition's files.
        file_bytes: their total size.
        cpu_s: measured CPU seconds per *input* sample (its compute and
            (de)serialization times the fraction of samples that reach it,
            scaled by the tier's slowdown); 0.0 without a profile.
        cores: the CPU request in cores (see :func:`plan_workers`).
        memory_mib: the memory request.
        node_selector: node labels the tier must run on.
        blocks: ``(first_block, last_block)``, 1-based.
    """

    partition: int
    tier: int
    tier_name: str
    name: str
    files: tuple[str, ...]
    file_bytes: int
    cpu_s: float
    cores: float
    memory_mib: int = BASE_MEMORY_MIB
    node_selector: Mapping[str, str] = field(default_factory=dict)
    blocks: tuple[int, int] = (0, 0)


def _dns_name(text: str, what: str) -> str:
    name = _NAME.sub("-", text.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"t-{name}".rstrip("-")
    if len(name) > 63:
        raise ValueError(
            f"{what}: {text!r} makes a name longer than 63 characters; use a shorter one"
        )
    return name


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:
        return True


def dump_yaml(data: object) -> str:
    """YAML text of plain data, keys in insertion order, without anchors and aliases."""
    return yaml.dump(data, Dumper=_NoAliases, sort_keys=False, width=1000)


def bundle_digest(bundle: str | os.PathLike[str], files: Sequence[str]) -> str:
    """The SHA-256 (hex) of the named bundle files, in order (names and contents).

    Args:
        bundle: the bundle directory.
        files: file names inside it.

    Returns:
        64 hex digits; any change to a file changes it.
    """
    h = hashlib.sha256()
    for name in files:
        h.update(name.encode() + b"\0")
        h.update((Path(bundle) / name).read_bytes())
    return h.hexdigest()


def _check_plan(manifest: Manifest, plan: Plan | None) -> Plan:
    if plan is None:
        return manifest.plan
    if plan.to_dict() != manifest.plan.to_dict():
        raise ValueError(
            "the plan is not the bundle's: export it (earlyexit export --plan) or pass the plan the "
            f"bundle was made from (bundle cut points {list(manifest.plan.cut_points)}, tiers "
            f"{list(manifest.plan.tier_indices)}; given {list(plan.cut_points)}, {list(plan.tier_indices)})"
        )
    return plan


def _check_topology(plan: Plan, topology: Topology | None) -> None:
    if topology is None:
        return
    if plan.topology_digest and plan.topology_digest != topology.digest():
        # the digest covers labels too, so labels added after planning are allowed:
        bare = Topology.from_dict(
            {
                **topology.to_dict(),
                "tiers": [
                    {k: v for k, v in t.items() if k != "labels"}
                    for t in topology.to_dict()["tiers"]
                ],
            }
        )
        if plan.topology_digest != bare.digest():
            raise ValueError(
                "the topology is not the plan's (its digest differs from plan.topology_digest); "
                "pass the topology the plan was made for"
            )
    for p in plan.partitions:
        if p.tier >= topology.num_tiers:
            raise ValueError(
                f"the plan places partition on tier {p.tier} but the topology has "
                f"{topology.num_tiers} tiers"
            )
        if p.tier_name and topology.tiers[p.tier].name != p.tier_name:
            raise ValueError(
                f"the plan's tier {p.tier} is {p.tier_name!r}, the topology's is "
                f"{topology.tiers[p.tier].name!r}; pass the plan's topology"
            )


def _cpu_seconds(plan: Plan, topology: Topology, profile: Profile, k: int) -> float:
    p = plan.partitions[k]
    tier = topology.tiers[p.tier]
    if tier.device not in profile.devices:
        raise ValueError(
            f"tier {tier.name!r} runs device {tier.device!r}, which the profile lacks; "
            f"profiled devices: {sorted(profile.devices)}"
        )
    dev = profile.devices[tier.device]
    a, b = p.first_block - 1, p.last_block - 1
    t = float(dev.partition_time_s[a, b]) + float(dev.deserialize_s[a])
    t += float(dev.serialize_s[b + 1]) if k < len(plan.partitions) - 1 else 0.0
    t += float(dev.result_serialize_s)
    reach = 1.0 - sum(plan.estimate.exit_fractions[:k])
    return max(reach, 0.0) * t * tier.slowdown


def plan_workers(
    bundle: str | os.PathLike[str],
    plan: Plan | None = None,
    topology: Topology | None = None,
    profile: Profile | None = None,
    *,
    prefix: str = "earlyexit",
    rate: float | None = None,
    threads: int = 1,
    min_cores: float = 0.05,
) -> list[TierWorker]:
    """The workers that run a bundle's plan, one per partition, in chain order.

    CPU requests come from the profile's measured times on each tier's device
    (docs/spec.md#profile): the partition's compute (its blocks, exit and
    entropy test), deserializing its input and serializing what it sends, times
    the fraction of samples that reach it (the plan's exit fractions), times the
    tier's slowdown. With ``rate`` (samples/s) a request is that many CPU
    seconds per second; without it the busiest worker gets ``threads`` cores
    and the others their share of it. Memory: :data:`BASE_MEMORY_MIB` plus
    three times the partition's files.

    Args:
        bundle: the bundle directory (``manifest.json``).
        plan: the plan (default: the bundle's own); must equal the bundle's.
        topology: the plan's topology (for tier labels and slowdowns).
        profile: the plan's profile (for CPU requests); needs ``topology``.
        prefix: the first part of every name (a DNS label).
        rate: expected input samples per second, > 0.
        threads: ONNX Runtime threads per worker (the most cores it can use).
        min_cores: the smallest CPU request.

    Returns:
        One :class:`TierWorker` per partition.

    Raises:
        FileNotFoundError: no manifest, or a partition file missing.
        ValueError: a plan, topology or profile that is not the bundle's; a bad
            prefix, rate or thread count; a rate one worker cannot keep up with.
    """
    bundle = Path(bundle)
    if not (bundle / "manifest.json").is_file():
        raise FileNotFoundError(
            f"{str(bundle)!r} has no manifest.json; expected a bundle directory"
        )
    if rate is not None and not (isinstance(rate, (int, float)) and 0 < rate < math.inf):
        raise ValueError(f"rate must be a number of samples per second > 0, got {rate!r}")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    if profile is not None and topology is None:
        raise ValueError("a profile needs its topology (which device each tier runs, its slowdown)")
    manifest = Manifest.load(bundle)
    plan = _check_plan(manifest, plan)
    _check_topology(plan, topology)
    if profile is not None and plan.profile_digest and plan.profile_digest != profile.digest():
        raise ValueError(
            "the profile is not the plan's (its digest differs from plan.profile_digest)"
        )
    prefix = _dns_name(prefix, "prefix")
    cpu = [
        _cpu_seconds(plan, topology, profile, k) if profile is not None and topology else 0.0
        for k in range(len(plan.partitions))
    ]
    if rate is not None and profile is not None:
        cores = [rate * c for c in cpu]
        k = max(range(len(cores)), key=cores.__getitem__)
        if cores[k] > threads:
            raise ValueError(
                f"at {rate:g} samples/s partition {k} needs {cores[k]:.2f} cores but a worker uses "
                f"{threads} thread(s); lower --rate (at most {rate * threads / cores[k]:.3g}) or "
                "raise --threads"
            )
    elif profile is not None and max(cpu) > 0:
        cores = [threads * c / max(cpu) for c in cpu]
    else:
        cores = [float(threads)] * len(cpu)
    workers, names = [], set()
    for k, (part, mp) in enumerate(zip(plan.partitions, manifest.partitions, strict=True)):
        label = part.tier_name or (
            topology.tiers[part.tier].name if topology else f"tier{part.tier}"
        )
        name = _dns_name(f"{prefix}-{label}", f"tier {label!r}")
        if name in names:
            name = _dns_name(f"{name}-{k}", f"tier {label!r}")
        names.add(name)
        files = ("manifest.json", *dict.fromkeys(mp.files.values()))
        missing = [f for f in files if not (bundle / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"partition {k}: bundle files {missing} are missing in {str(bundle)!r}"
            )
        size = sum((bundle / f).stat().st_size for f in files)
        model = sum((bundle / f).stat().st_size for f in files[1:])
        selector = dict(topology.tiers[part.tier].labels) if topology else {}
        workers.append(
            TierWorker(
                partition=k,
                tier=part.tier,
                tier_name=label,
                name=name,
                files=files,
                file_bytes=size,
                cpu_s=cpu[k],
                cores=max(min_cores, cores[k]),
                memory_mib=BASE_MEMORY_MIB + math.ceil(3 * model / 2**20),
                node_selector=selector,
                blocks=(part.first_block, part.last_block),
            )
        )
    return workers


def serve_argv(
    worker: TierWorker,
    *,
    bundle: str,
    bind: str,
    control_bind: str,
    results: str,
    next_address: str | None = None,
    advertise: str | None = None,
    threads: int = 1,
    program: Sequence[str] = ("earlyexit",),
) -> list[str]:
    """The ``earlyexit serve`` command line of one tier's worker.

    Args:
        worker: the tier's worker.
        bundle: the bundle directory as the worker sees it.
        bind: its input address to bind.
        control_bind: its control address to bind.
        results: the destination's results address.
        next_address: the next worker's input address (None for the last partition).
        advertise: its control address as the next worker reaches it (when binding ``*``).
        threads: ONNX Runtime intra-op threads.
        program: the command that runs ``earlyexit``.

    Returns:
        The argument vector.
    """
    argv = [*program, "serve", "--bundle", bundle, "--tier", str(worker.tier), "--bind", bind,
            "--control-bind", control_bind]  # fmt: skip
    if advertise:
        argv += ["--advertise", advertise]
    if next_address:
        argv += ["--next", next_address]
    return [*argv, "--results", results, "--threads", str(threads)]


def named_argv(
    workers: Sequence[TierWorker], k: int, *, bundle: str, results: str, threads: int = 1
) -> list[str]:
    """Worker ``k``'s command where every tier is a host named after it (a Service, a compose service).

    Each worker binds every interface on :data:`INPUT_PORT` and :data:`CONTROL_PORT`,
    advertises its control address under its name, and sends on to the next tier's name.

    Args:
        workers: the chain, from :func:`plan_workers`.
        k: which worker.
        bundle: the bundle directory inside the container.
        results: the destination's results address.
        threads: ONNX Runtime threads.

    Returns:
        The argument vector.
    """
    w = workers[k]
    nxt = workers[k + 1] if k + 1 < len(workers) else None
    return serve_argv(
        w,
        bundle=bundle,
        bind=f"tcp://*:{INPUT_PORT}",
        control_bind=f"tcp://*:{CONTROL_PORT}",
        advertise=f"tcp://{w.name}:{CONTROL_PORT}",
        next_address=f"tcp://{nxt.name}:{INPUT_PORT}" if nxt else None,
        results=results,
        threads=threads,
    )
