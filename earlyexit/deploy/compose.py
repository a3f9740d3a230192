"""A compose file for a plan on one host: one service per tier, the bundle mounted read-only.

The services run the same ``earlyexit serve`` command lines as the
Kubernetes Deployments (:mod:`earlyexit.deploy.k8s`), with the compose
service names as hosts. The first tier's input is published on the host's
loopback, and results go to the application on the host
(``host.docker.internal``, mapped to the host's gateway).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from earlyexit.deploy.k8s import BUNDLE_PATH, DEFAULT_IMAGE
from earlyexit.deploy.tiers import (
    INPUT_PORT,
    RESULTS_PORT,
    TierWorker,
    dump_yaml,
    named_argv,
)
from earlyexit.formats import atomic_write_text

__all__ = ["compose_spec", "write_compose"]


def compose_spec(
    workers: Sequence[TierWorker],
    *,
    image: str = DEFAULT_IMAGE,
    project: str = "earlyexit",
    results: str | None = None,
    publish: int = INPUT_PORT,
    threads: int = 1,
) -> dict[str, Any]:
    """The compose file's mapping.

    Args:
        workers: from :func:`~earlyexit.deploy.tiers.plan_workers`.
        image: the light runtime image.
        project: the compose project name.
        results: the destination's results address (default: port
            :data:`~earlyexit.deploy.tiers.RESULTS_PORT` on the host).
        publish: the host port (on 127.0.0.1) of the first tier's input.
        threads: ONNX Runtime threads per worker.

    Returns:
        The mapping (``name``, ``services``).

    Raises:
        ValueError: a port out of range.
    """
    if not isinstance(publish, int) or not 1 <= publish <= 65535:
        raise ValueError(f"publish must be a port in 1..65535, got {publish!r}")
    results = results or f"tcp://host.docker.internal:{RESULTS_PORT}"
    services: dict[str, Any] = {}
    for k, w in enumerate(workers):
        nxt = workers[k + 1] if k + 1 < len(workers) else None
        service: dict[str, Any] = {
            "image": image,
            "command": named_argv(workers, k, bundle=BUNDLE_PATH, results=results, threads=threads),
            "volumes": [f"./bundle:{BUNDLE_PATH}:ro"],
            "environment": {"OMP_NUM_THREADS": "1"},
            "extra_hosts": ["host.docker.internal:host-gateway"],
            "cpus": round(max(w.cores, 0.01), 3),
            "mem_limit": f"{2 * w.memory_mib}m",
            "read_only": True,
            "tmpfs": ["/tmp"],
            "restart": "unless-stopped",
            "healthcheck": {
                "test": ["CMD", "python", "-c", "import socket; socket.create_connection("
                         f"('127.0.0.1', {INPUT_PORT}), 2)"],
                "interval": "5s",
            },
        }  # fmt: skip
        if k == 0:
            service["ports"] = [f"127.0.0.1:{publish}:{INPUT_PORT}"]
        if nxt is not None:
            service["depends_on"] = {nxt.name: {"condition": "service_healthy"}}
        services[w.name] = service
    return {"name": project, "services": services}


def write_compose(
    bundle: str | os.PathLike[str],
    workers: Sequence[TierWorker],
    out: str | os.PathLike[str],
    **options: Any,
) -> list[Path]:
    """Write ``compose.yaml`` and ``bundle/`` (the files the workers need) into ``out``.

    Args:
        bundle: the bundle directory.
        workers: from :func:`~earlyexit.deploy.tiers.plan_workers`.
        out: the output directory (created).
        **options: passed to :func:`compose_spec`.

    Returns:
        The files written.
    """
    out = Path(out)
    (out / "bundle").mkdir(parents=True, exist_ok=True)
    written = []
    for f in dict.fromkeys(f for w in workers for f in w.files):
        shutil.copyfile(Path(bundle) / f, out / "bundle" / f)
        written.append(out / "bundle" / f)
    spec = compose_spec(workers, **options)
    atomic_write_text(out / "compose.yaml", dump_yaml(spec))
    return [out / "compose.yaml", *written]
