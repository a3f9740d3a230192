"""Build a tier's partition runner from a JSON-able spec (what worker processes receive)."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from earlyexit.runtime.chain import PartitionRunner

__all__ = ["make_runner"]


def make_runner(spec: dict[str, Any]) -> PartitionRunner:
    """Build a partition runner from a JSON-able spec (what worker processes receive).

    Args:
        spec: ``{"kind": "bundle", "path": DIR, "partition": k, "precision": "fp32",
            "providers": None, "intra_op_threads": 1, "engine": "onnx"}`` runs partition
            ``k`` (0-based) of a bundle with :class:`earlyexit.runtime.session.BundleSession`
            (``engine`` ``"torchscript"`` runs its TorchScript file instead, ``"auto"``
            falls back to it when ONNX Runtime or the ONNX files are missing);
            ``{"kind": "synthetic", "partition": k, **SyntheticModel kwargs}`` a numpy
            model for tests and demos; ``{"kind": "factory", "factory": "module:function",
            "kwargs": {...}}`` calls any factory that returns a runner.

    Returns:
        The runner.

    Raises:
        ValueError: an unknown kind or a malformed spec.

    Example:
        >>> run = make_runner({"kind": "synthetic", "partition": 0, "num_partitions": 2})
        >>> [a.shape for a in run(np.zeros((3, 32), np.float32)) if a is not None]
        [(3, 10), (3,), (3, 64)]
    """
    if not isinstance(spec, dict):
        raise TypeError(f"runner spec must be a mapping, got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind == "bundle" and spec.get("engine", "onnx") != "onnx":
        from earlyexit.runtime.torchscript import choose_engine, torchscript_runner

        if choose_engine(spec["path"], spec["engine"]) == "torchscript":
            return torchscript_runner(
                spec["path"], int(spec["partition"]), int(spec.get("intra_op_threads", 1))
            )
    if kind == "bundle":
        from earlyexit.runtime.session import BundleSession

        k = int(spec["partition"])
        session = BundleSession(
            spec["path"],
            precision=spec.get("precision", "fp32"),
            providers=spec.get("providers"),
            intra_op_threads=int(spec.get("intra_op_threads", 1)),
            partitions=[k],  # a tier reads, checks and loads only its own file
        )
        shape = session.manifest.partitions[k].input_shape
        if all(isinstance(s, int) for s in shape[1:]):
            # warm up before the first sample: ONNX Runtime allocates and picks
            # kernels on its first run, which would land on the first sample
            session.run_partition(k, np.zeros((1, *shape[1:]), np.float32))
        return lambda x: session.run_partition(k, x)
    if kind == "synthetic":
        from earlyexit.runtime.synthetic import SyntheticModel

        kwargs = {k: v for k, v in spec.items() if k not in ("kind", "partition")}
        return SyntheticModel(**kwargs).runner(int(spec["partition"]))
    if kind == "factory":
        module, _, name = str(spec.get("factory", "")).partition(":")
        if not module or not name:
            raise ValueError(f"factory must be 'module:function', got {spec.get('factory')!r}")
        return getattr(importlib.import_module(module), name)(**spec.get("kwargs", {}))
    raise ValueError(f"runner spec kind {kind!r} is not one of 'bundle', 'synthetic', 'factory'")
