"""Starting a deployment's pieces on this host: settings, log folder, client, links, workers.

Shared by :func:`~earlyexit.runtime.deployment.deploy` and
:func:`~earlyexit.runtime.adaptive.deploy_switchable`: both check their
settings and topology, pick a folder for logs and Unix sockets, start the client
(:func:`start_client`), one relay process per emulated link and one worker process
per partition, wired along :func:`~earlyexit.runtime.deployment.route`; both
return a :class:`Running` deployment.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from earlyexit.formats import Topology
from earlyexit.formats.trace import LinkTrace
from earlyexit.runtime._procs import Proc, close_all, spawn
from earlyexit.runtime._routing import route
from earlyexit.runtime.client import Client
from earlyexit.runtime.options import WorkerOptions

__all__ = [
    "Running",
    "Starting",
    "binder",
    "check_settings",
    "fit_topology",
    "log_folder",
    "runner_specs",
    "start_client",
    "synthetic_size",
    "worker_template",
]

_LOOPBACK = "tcp://127.0.0.1:*"

_R = TypeVar("_R", bound="Running")


class Running:
    """What every running deployment shares: its client, log folder, demo inputs, and closing.

    Attributes:
        client: submits inputs and collects results.
        log_dir: where each process writes its log.
        input_shape: the shape of one input sample.
    """

    def __init__(
        self, client: Client, log_dir: Path, input_shape: tuple[int, ...],
        cleanup: Callable[[], Any],
    ) -> None:  # fmt: skip
        self.client = client
        self.log_dir = log_dir
        self.input_shape = input_shape
        self._cleanup = cleanup

    def inputs(self, n: int, seed: int = 1) -> np.ndarray:
        """``n`` random float32 inputs of the deployment's input shape (for demos)."""
        return (
            np.random.default_rng(seed).standard_normal((n, *self.input_shape)).astype(np.float32)
        )

    def close(self) -> None:
        """Close the client, stop every process (bounded time), remove a temporary log folder."""
        self._cleanup()

    def __enter__(self: _R) -> _R:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def worker_template(**settings: Any) -> WorkerOptions:
    """The settings every worker of a deployment shares, checked before any process starts.

    Args:
        **settings: :class:`~earlyexit.runtime.options.WorkerOptions` fields
            (``max_batch``, ``hwm``, ...); the others keep WorkerOptions' defaults.

    Returns:
        Options whose partition, threshold and routes are placeholders; each
        partition's are filled in with ``dataclasses.replace``.

    Raises:
        ValueError: a setting out of range (WorkerOptions says which).
    """
    return WorkerOptions(
        partition=0, num_partitions=1, threshold=0.5, result_route=("ipc://unset",), **settings
    )


def check_settings(start_timeout_s: Any, precision: Any, niceness: Any) -> None:
    """Refuse, before any process starts, the settings of the deployment itself."""
    ok = isinstance(start_timeout_s, (int, float)) and not isinstance(start_timeout_s, bool)
    if not ok or not math.isfinite(start_timeout_s) or start_timeout_s <= 0:
        raise ValueError(
            f"start_timeout_s must be a finite number of seconds > 0, got {start_timeout_s!r}"
        )
    if precision not in ("fp32", "int8", "fp16"):
        raise ValueError(f"precision must be fp32, int8 or fp16, got {precision!r}")
    n = niceness
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not -20 <= n <= 19):
        raise ValueError(f"niceness must be None or an integer in [-20, 19], got {n!r}")


def log_folder(
    log_dir: str | os.PathLike[str] | None, keep_logs: bool, prefix: str
) -> tuple[Path, Path | None]:
    """The folder of the process logs and sockets, and the one to remove on close (or None)."""
    if log_dir:
        path = Path(log_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path, None
    path = Path(tempfile.mkdtemp(prefix=prefix))
    return path, None if keep_logs else path


def binder(log_path: Path, transport: str) -> Callable[[str], str]:
    """``name -> bind address``: a Unix socket in ``log_path`` for ``ipc``, else loopback TCP."""

    def bind(name: str) -> str:  # Unix socket paths are limited to about 100 bytes
        path = f"{log_path.resolve()}/{name}.sock"
        return f"ipc://{path}" if transport == "ipc" and len(path) < 100 else _LOOPBACK

    return bind


def fit_topology(
    topology: Topology | str | os.PathLike[str] | None, tier_lists: Sequence[Sequence[int]]
) -> Topology | None:
    """The topology (None if none is given), checked to hold every tier of ``tier_lists``.

    Raises:
        ValueError: a tier beyond the topology's.
    """
    if topology is None:
        return None
    from earlyexit.planner.topology import resolve_topology

    topo = resolve_topology(topology)
    for tiers in tier_lists:
        if max(tiers) >= topo.num_tiers:
            raise ValueError(
                f"tiers {list(tiers)} do not fit the topology's {topo.num_tiers} tiers"
            )
    return topo


def synthetic_size(synthetic: Mapping[str, Any]) -> tuple[int, tuple[int, ...]]:
    """A synthetic model's number of partitions and input shape (SyntheticModel's defaults)."""
    return int(synthetic.get("num_partitions", 3)), (int(synthetic.get("in_dim", 32)),)


def runner_specs(
    bundle: str | os.PathLike[str] | None, synthetic: Mapping[str, Any] | None, n: int,
    precision: str,
) -> list[dict[str, Any]]:  # fmt: skip
    """The runner of each of ``n`` partitions: the bundle's (path resolved), else the synthetic model's."""
    if bundle is not None:
        path = str(Path(bundle).resolve())
        return [
            {"kind": "bundle", "path": path, "partition": k, "precision": precision}
            for k in range(n)
        ]
    return [{"kind": "synthetic", **dict(synthetic or {}), "partition": k} for k in range(n)]


@dataclass
class Starting:
    """A deployment being started: its topology, folder, addresses, client and processes so far.

    ``cleanup`` closes the client, stops ``procs`` and removes a temporary folder;
    it also runs when the interpreter exits. ``up``/``down`` are the addresses of
    the emulated links once :meth:`start_links` has run (empty: direct routes).
    """

    topo: Topology | None
    source: int
    destination: int
    log_path: Path
    bind: Callable[[str], str]
    slow: Callable[[int], float]
    client: Client
    procs: list[Proc]
    cleanup: weakref.finalize
    start_timeout_s: float
    niceness: int | None
    up: list[str] = field(default_factory=list)
    down: list[str] = field(default_factory=list)

    def spawn(self, role: str, module: str, args: list[str]) -> Proc:
        """Start a process of this deployment (see :func:`~earlyexit.runtime._procs.spawn`)."""
        return spawn(role, module, args, self.log_path, self.procs, self.start_timeout_s,
                     self.niceness)  # fmt: skip

    def start_links(self, trace: LinkTrace | None = None, epoch: float | None = None) -> None:
        """Start one process per link of the topology (both directions), setting ``up``/``down``.

        ``trace`` makes its link follow it from ``epoch`` (``time.monotonic()``).
        """
        assert self.topo is not None  # internal: callers check
        topo = self.topo
        for j, lk in enumerate(topo.links):
            traced = trace is not None and trace.link == j
            spec = [
                {
                    "bind": self.bind(f"link{j}-{d}"),
                    "bandwidth_mbps": lk.bandwidth_mbps,
                    "propagation_ms": lk.propagation_ms,
                    "mtu_bytes": topo.mtu_bytes,
                    "name": f"link{j}-{d}",
                    **({"trace": trace.to_dict(), "epoch": epoch} if traced else {}),
                }
                for d in ("up", "down")
            ]
            p = self.spawn(f"link{j}", "earlyexit.runtime.link", ["--spec", json.dumps(spec)])
            self.up.append(p.info["addresses"][0])
            self.down.append(p.info["addresses"][1])

    def start_chain(
        self, specs: Sequence[dict[str, Any]], tiers: Sequence[int],
        blocks: Sequence[int | None], threshold: float, template: WorkerOptions,
        prefix: str = "", measure_links: bool = False,
        affinity: Mapping[int, tuple[int, ...]] | None = None,
    ) -> tuple[list[Proc], list[str]]:  # fmt: skip
        """Start one plan's workers, last partition first.

        Each worker's routes go over the emulated links (if started), its results
        to the client on the destination tier; ``prefix`` names its sockets and
        logs apart from another chain's. With ``measure_links`` each worker knows
        its next partition's tier, so that it probes that link and reports its
        estimate (adaptive deployments; a plain deployment sends no probes).
        ``affinity`` pins each tier's worker to its CPUs (tier -> CPUs; a tier
        not named is not pinned).

        Returns:
            The workers, and the route from the source to the first one's input.
        """
        n = len(specs)
        up, down = self.up, self.down
        results = self.client.results_address
        workers: list[Proc] = []
        next_input: str | None = None
        for k in range(n - 1, -1, -1):
            options = dataclasses.replace(
                template,
                partition=k,
                num_partitions=n,
                threshold=threshold,
                tier=tiers[k],
                next_tier=None if k == n - 1 or not measure_links else tiers[k + 1],
                last_block=blocks[k],
                result_route=tuple(route(tiers[k], self.destination, results, up, down)),
                next_route=()
                if next_input is None
                else tuple(route(tiers[k], tiers[k + 1], next_input, up, down)),
                bind=self.bind(f"{prefix}worker{k}"),
                control_bind=self.bind(f"{prefix}worker{k}-control"),
                slowdown=self.slow(tiers[k]),
                cpu_affinity=tuple((affinity or {}).get(tiers[k], ())),
            )
            config = {"runner": specs[k], "options": options.to_dict()}
            p = self.spawn(f"{prefix}worker{k}", "earlyexit.runtime.worker",
                           ["--config", json.dumps(config)])  # fmt: skip
            workers.insert(0, p)
            next_input = p.info["input"]
        assert next_input is not None  # internal: at least one partition
        return workers, route(self.source, tiers[0], next_input, up, down)


def start_client(
    topo: Topology | None, *, apply_slowdown: bool, log_dir: str | os.PathLike[str] | None,
    keep_logs: bool, prefix: str, start_timeout_s: float, niceness: int | None,
    transport: str = "ipc", hwm: int = 64, dead_after_s: float = 2.0,
) -> Starting:  # fmt: skip
    """The log folder, the socket addresses and the client of a deployment about to start.

    The client plays the source and destination tiers of ``topo`` (tier 0 without
    one), with their slowdowns if ``apply_slowdown``. ``start_timeout_s`` and
    ``niceness`` apply to every process started later.
    """
    source = topo.source if topo else 0
    destination = topo.destination if topo else 0
    log_path, remove_dir = log_folder(log_dir, keep_logs, prefix)
    bind = binder(log_path, transport)
    slow = (lambda t: topo.tiers[t].slowdown) if (topo and apply_slowdown) else (lambda t: 1.0)
    try:
        client = Client(
            results_bind=bind("results"),
            control_bind=bind("client-control"),
            hwm=hwm,
            dead_after_s=dead_after_s,
            source_slowdown=slow(source),
            destination_slowdown=slow(destination),
        )
    except BaseException:
        if remove_dir is not None:
            shutil.rmtree(remove_dir, ignore_errors=True)
        raise
    procs: list[Proc] = []
    cleanup = weakref.finalize(client, close_all, client, procs, remove_dir)
    return Starting(topo, source, destination, log_path, bind, slow, client, procs, cleanup,
                    start_timeout_s, niceness)  # fmt: skip
