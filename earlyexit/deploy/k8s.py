"""Kubernetes manifests for a plan: a Deployment and a Service per tier, the bundle's files, a kustomization.

Each tier's Deployment runs exactly one ``earlyexit serve`` (one replica:
workers are a chain, each acknowledging to the one before it), reachable as
a Service of the same name. The partition files reach the pod as a ConfigMap
when they fit in one (Kubernetes refuses a ConfigMap over 1 MiB of data, the
etcd object limit), else as an image layer: ``Containerfile.bundle`` adds the
bundle to the runtime image, and the Deployments run that image instead.
Client-side ``kubectl apply`` keeps a copy of each object in an annotation
limited to 256 KiB, so apply with ``--server-side`` (docs/deployment.md).
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from earlyexit.deploy.tiers import (
    CONTROL_PORT,
    INPUT_PORT,
    RESULTS_PORT,
    TierWorker,
    bundle_digest,
    dump_yaml,
    named_argv,
)
from earlyexit.formats import atomic_write_text

__all__ = [
    "KUBERNETES_VERSION",
    "CONFIGMAP_MAX_BYTES",
    "DEFAULT_IMAGE",
    "BUNDLE_PATH",
    "FILE_MODES",
    "k8s_objects",
    "write_k8s",
    "configmap_bytes",
]

KUBERNETES_VERSION = "1.33"
"""The Kubernetes version the manifests are checked against (schema validation in the tests)."""
CONFIGMAP_MAX_BYTES = 1024 * 1024
"""Kubernetes refuses a ConfigMap whose data (the decoded binaryData included) exceeds 1 MiB."""
DEFAULT_IMAGE = "ghcr.io/earlyexit/earlyexit-runtime:0.1.0"
"""The light runtime image (build it from docker/Containerfile, push it, pass ``--image``)."""
BUNDLE_PATH = "/bundle"
"""Where a worker container finds its bundle files."""
FILE_MODES = ("auto", "configmap", "image")
"""How partition files reach the pods: ConfigMaps, an image layer, or by size."""
_PART_OF = "app.kubernetes.io/part-of"
_TIER = "earlyexit/tier"
_ROLE = "earlyexit/role"


def configmap_bytes(bundle: str | os.PathLike[str], worker: TierWorker) -> int:
    """The data size Kubernetes counts for a worker's ConfigMap (its files, raw)."""
    return sum((Path(bundle) / f).stat().st_size for f in worker.files)


def _labels(prefix: str, worker: TierWorker | None = None, role: str = "tier") -> dict[str, str]:
    out = {_PART_OF: prefix, _ROLE: role}
    if worker is not None:
        out[_TIER] = worker.name
    return out


def _quantity_cpu(cores: float) -> str:
    return f"{max(1, round(cores * 1000))}m"


def _configmap(bundle: Path, worker: TierWorker, prefix: str) -> dict[str, Any]:
    data, binary = {}, {}
    for f in worker.files:
        raw = (bundle / f).read_bytes()
        if f.endswith(".json"):
            data[f] = raw.decode("utf-8")
        else:
            binary[f] = base64.b64encode(raw).decode("ascii")
    digest = bundle_digest(bundle, worker.files)[:10]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{worker.name}-bundle-{digest}", "labels": _labels(prefix, worker),
                     "annotations": {"earlyexit/files": ",".join(worker.files)}},
        "immutable": True,
        "data": data,
        "binaryData": binary,
    }  # fmt: skip


def _deployment(
    worker: TierWorker,
    argv: list[str],
    image: str,
    prefix: str,
    configmap: str | None,
    results: str,
) -> dict[str, Any]:
    labels = _labels(prefix, worker)
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if configmap is not None:
        volumes.append({"name": "bundle", "configMap": {"name": configmap}})
        mounts.append({"name": "bundle", "mountPath": BUNDLE_PATH, "readOnly": True})
    container = {
        "name": "serve",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": argv,
        "ports": [
            {"name": "input", "containerPort": INPUT_PORT, "protocol": "TCP"},
            {"name": "control", "containerPort": CONTROL_PORT, "protocol": "TCP"},
        ],
        # `serve` binds its input only after checking its files, so an open port is ready
        "readinessProbe": {"tcpSocket": {"port": "input"}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": "control"}, "initialDelaySeconds": 15,
                          "periodSeconds": 10, "failureThreshold": 3},
        "resources": {
            "requests": {"cpu": _quantity_cpu(worker.cores), "memory": f"{worker.memory_mib}Mi"},
            "limits": {"memory": f"{2 * worker.memory_mib}Mi"},
        },
        "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
        "volumeMounts": mounts,
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
    }  # fmt: skip
    pod: dict[str, Any] = {"containers": [container], "volumes": volumes,
                           "terminationGracePeriodSeconds": 10}  # fmt: skip
    if worker.node_selector:
        pod["nodeSelector"] = dict(worker.node_selector)
    first, last = worker.blocks
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": worker.name,
            "labels": labels,
            "annotations": {
                "earlyexit/partition": str(worker.partition),
                "earlyexit/blocks": f"{first}-{last}",
                "earlyexit/tier-index": str(worker.tier),
                "earlyexit/cpu-ms-per-input-sample": f"{worker.cpu_s * 1e3:.6g}",
                "earlyexit/results": results,
            },
        },
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def _service(name: str, labels: dict[str, str], ports: Sequence[tuple[str, int]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": labels,
            "ports": [{"name": n, "port": p, "targetPort": p, "protocol": "TCP"} for n, p in ports],
        },
    }


def _choose_files(bundle: Path, workers: Sequence[TierWorker], files: str, limit: int) -> str:
    if files not in FILE_MODES:
        raise ValueError(f"files must be one of {', '.join(FILE_MODES)}, got {files!r}")
    biggest = max(workers, key=lambda w: configmap_bytes(bundle, w))
    size = configmap_bytes(bundle, biggest)
    if files == "configmap" and size > limit:
        raise ValueError(
            f"partition {biggest.partition}'s files take {size} bytes, over the ConfigMap limit of "
            f"{limit} bytes (1 MiB in etcd); use --files image (or auto)"
        )
    if files == "auto":
        return "configmap" if size <= limit else "image"
    return files


def k8s_objects(
    bundle: str | os.PathLike[str],
    workers: Sequence[TierWorker],
    *,
    image: str = DEFAULT_IMAGE,
    prefix: str = "earlyexit",
    results: str | None = None,
    files: str = "auto",
    bundle_image: str | None = None,
    threads: int = 1,
    configmap_limit: int = CONFIGMAP_MAX_BYTES,
) -> tuple[list[dict[str, Any]], str]:
    """The Kubernetes objects of a deployment.

    Args:
        bundle: the bundle directory.
        workers: from :func:`~earlyexit.deploy.tiers.plan_workers`.
        image: the light runtime image.
        prefix: the ``app.kubernetes.io/part-of`` label of every object.
        results: the destination's results address; None: a Service
            ``PREFIX-results`` that selects the application's pod (labels
            ``app.kubernetes.io/part-of: PREFIX`` and ``earlyexit/role: client``).
        files: ``configmap``, ``image`` or ``auto`` (ConfigMaps when every
            partition's files fit in ``configmap_limit`` bytes).
        bundle_image: the image with the bundle added (image mode); default the
            runtime image's name with ``-bundle`` and the bundle's digest as tag.
        threads: ONNX Runtime threads per worker.
        configmap_limit: the largest ConfigMap data, bytes.

    Returns:
        ``(objects, mode)``: the objects in apply order, and the files mode used.

    Raises:
        ValueError: an unknown files mode, or files that do not fit the mode.
    """
    bundle = Path(bundle)
    mode = _choose_files(bundle, workers, files, configmap_limit)
    if mode == "image" and bundle_image is None:
        repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
        every = [f for w in workers for f in w.files]
        bundle_image = f"{repo}-bundle:{bundle_digest(bundle, list(dict.fromkeys(every)))[:12]}"
    objects: list[dict[str, Any]] = []
    if results is None:
        results = f"tcp://{prefix}-results:{RESULTS_PORT}"
        objects.append(_service(f"{prefix}-results", _labels(prefix, role="client"),
                                [("results", RESULTS_PORT)]))  # fmt: skip
    for k, w in enumerate(workers):
        argv = named_argv(workers, k, bundle=BUNDLE_PATH, results=results, threads=threads)
        cm = _configmap(bundle, w, prefix) if mode == "configmap" else None
        if cm is not None:
            objects.append(cm)
        objects.append(
            _service(w.name, _labels(prefix, w), [("input", INPUT_PORT), ("control", CONTROL_PORT)])
        )
        objects.append(_deployment(w, argv, image if cm else str(bundle_image), prefix,
                                   cm["metadata"]["name"] if cm else None, results))  # fmt: skip
    return objects, mode


def _file_name(obj: dict[str, Any]) -> str:
    return f"{obj['metadata']['name']}.{obj['kind'].lower()}.yaml"


def write_k8s(
    bundle: str | os.PathLike[str],
    workers: Sequence[TierWorker],
    out: str | os.PathLike[str],
    *,
    namespace: str | None = None,
    **options: Any,
) -> list[Path]:
    """Write the manifests, one object per file, and a ``kustomization.yaml`` that lists them.

    In image mode it also writes ``bundle/`` (the files the workers need) and
    ``Containerfile.bundle`` (``FROM`` the runtime image, ``COPY bundle/``).

    Args:
        bundle: the bundle directory.
        workers: from :func:`~earlyexit.deploy.tiers.plan_workers`.
        out: the output directory (created).
        namespace: the kustomization's ``namespace`` (None: the kubectl context's).
        **options: passed to :func:`k8s_objects`.

    Returns:
        The files written.

    Raises:
        ValueError: as :func:`k8s_objects`; an output directory that holds other files.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    objects, mode = k8s_objects(bundle, workers, **options)
    written = []
    names = []
    for obj in objects:
        path = out / _file_name(obj)
        atomic_write_text(path, dump_yaml(obj))
        written.append(path)
        names.append(path.name)
    kust: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "labels": [{"pairs": {"app.kubernetes.io/managed-by": "earlyexit"}}],
        "resources": names,
    }
    if namespace:
        kust["namespace"] = namespace
    atomic_write_text(out / "kustomization.yaml", dump_yaml(kust))
    written.append(out / "kustomization.yaml")
    if mode == "image":
        image = next(o for o in objects if o["kind"] == "Deployment")
        runtime = options.get("image", DEFAULT_IMAGE)
        target = out / "bundle"
        target.mkdir(exist_ok=True)
        for f in dict.fromkeys(f for w in workers for f in w.files):
            shutil.copyfile(Path(bundle) / f, target / f)
            written.append(target / f)
        tag = image["spec"]["template"]["spec"]["containers"][0]["image"]
        atomic_write_text(
            out / "Containerfile.bundle",
            "# The runtime image with this bundle added (its partitions exceed a ConfigMap's 1 MiB).\n"
            f"# docker buildx build --platform linux/amd64,linux/arm64 -f Containerfile.bundle -t {tag} --push .\n"
            f"ARG RUNTIME_IMAGE={runtime}\nFROM ${{RUNTIME_IMAGE}}\nCOPY bundle/ {BUNDLE_PATH}/\n",
        )
        written.append(out / "Containerfile.bundle")
    return written
