"""The TorchScript fallback runner, for tiers that have libtorch but no ONNX Runtime.

This is the only runtime module that uses PyTorch, and it imports it only when
a TorchScript runner is built; the ONNX path never loads it.

Example:
    ```python
    run = torchscript_runner("bundle/", 0)
    logits, entropy, features = run(x)
    ```
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from earlyexit.formats import Manifest

__all__ = ["torchscript_runner", "choose_engine", "ENGINES"]

ENGINES = ("auto", "onnx", "torchscript")

Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray | None]]


def choose_engine(bundle: str | os.PathLike[str], engine: str = "auto") -> str:
    """Resolve ``"auto"``: ONNX Runtime when it is installed and the bundle has ONNX files,
    else TorchScript.

    Raises:
        ValueError: for an unknown engine, or one whose files or library are missing.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    manifest = Manifest.load(bundle)
    has = {fmt for p in manifest.partitions for fmt in p.files}
    have_ort = importlib.util.find_spec("onnxruntime") is not None
    have_torch = importlib.util.find_spec("torch") is not None
    if engine == "auto":
        if "onnx" in has and have_ort:
            return "onnx"
        if "torchscript" in has and have_torch:
            return "torchscript"
        raise ValueError(
            f"bundle {bundle} cannot run here: it has {sorted(has)} files; ONNX needs onnxruntime, "
            "TorchScript needs torch"
        )
    fmt = "onnx" if engine == "onnx" else "torchscript"
    if fmt not in has:
        raise ValueError(f"bundle {bundle} has no {fmt} files (it has {sorted(has)})")
    return engine


def torchscript_runner(bundle: str | os.PathLike[str], partition: int, threads: int = 1) -> Runner:
    """Run partition ``partition`` (0-based) of a bundle from its TorchScript file.

    Args:
        bundle: the bundle directory.
        partition: 0-based partition index.
        threads: PyTorch intra-op threads.

    Returns:
        ``run(x) -> (logits, entropy, features or None)`` on numpy arrays, as
        :meth:`earlyexit.runtime.session.BundleSession.run_partition` returns.

    Raises:
        ValueError: for a partition out of range, a bundle without TorchScript files,
            a file whose size or SHA-256 differs from the manifest's (checked before
            it is loaded), or one that TorchScript cannot load.
    """
    import torch

    from earlyexit.runtime._files import check_file

    manifest = Manifest.load(bundle)
    if not 0 <= partition < len(manifest.partitions):
        raise ValueError(f"partition {partition} out of range 0..{len(manifest.partitions) - 1}")
    entry = manifest.partitions[partition]
    if "torchscript" not in entry.files:
        raise ValueError(f"partition {partition} of {bundle} has no TorchScript file")
    check_file(bundle, entry, "torchscript")  # an altered file is never loaded
    torch.set_num_threads(threads)
    path = Path(bundle) / entry.files["torchscript"]
    try:
        module = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as err:  # foreign bytes make torch.jit.load raise almost any type
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(
            f"TorchScript cannot load {str(path)!r} ({type(err).__name__}: {first[:300]})"
        ) from err

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not x.flags.writeable:  # a view of a received frame: torch wants its own memory
            x = x.copy()
        with torch.inference_mode():
            out = module(torch.from_numpy(x))
        logits, entropy = out[0].numpy(), out[1].numpy()
        features = out[2].numpy() if len(out) > 2 else None
        return logits, entropy, features

    return run
