"""Run an exported bundle with ONNX Runtime, with per-sample early exit. No torch.

A :class:`BundleSession` opens one ONNX Runtime session per partition of a
bundle written by ``earlyexit export`` (docs/spec.md, *Bundle*). Partition ``k``
(0-based here; the manifest numbers them from 1) takes the incoming tensor and
returns ``(logits, entropy, features)``; the last partition returns no
features. :meth:`BundleSession.predict` chains them in one process: after each
partition the samples whose entropy is below the threshold leave, and only the
others go on, exactly as ``MultiExitModel.predict`` does (the rule is
:mod:`earlyexit.runtime.chain`'s, shared with the tier workers and the export's checks).

This module imports only the standard library, numpy, onnxruntime and
``earlyexit.formats`` / ``earlyexit.runtime.wire``, so a bundle runs on a board
without PyTorch. Threading is explicit (``intra_op_num_threads``, no
spin-waiting, sequential execution, one inter-op thread), so that the sessions
of one process, or several workers on one machine, do not fight over cores.

Example:
    ```python
    sess = BundleSession("bundle/")
    out = sess.predict(images)
    out.prediction, out.exit_block
    ```
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from earlyexit.formats import Manifest
from earlyexit.runtime._files import check_file
from earlyexit.runtime.chain import ChainResult, check_threshold, run_chain

__all__ = [
    "PRECISIONS",
    "BundleSession",
    "check_file",
    "check_files",
    "precision_file_key",
    "session_options",
]

PRECISIONS: tuple[str, ...] = ("fp32", "int8", "fp16")
_FILE_KEYS = {"fp32": "onnx", "int8": "onnx_int8", "fp16": "onnx_fp16"}


def precision_file_key(precision: str) -> str:
    """The manifest ``files`` key of a precision: ``onnx``, ``onnx_int8`` or ``onnx_fp16``.

    Raises:
        ValueError: for an unknown precision.

    Example:
        >>> precision_file_key("int8")
        'onnx_int8'
    """
    if precision not in _FILE_KEYS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return _FILE_KEYS[precision]


def session_options(intra_op_threads: int = 1) -> ort.SessionOptions:
    """ONNX Runtime options that let several sessions share a process politely.

    ``intra_op_threads`` threads per operator, one inter-op thread, sequential
    execution, no spin-waiting of idle pool threads (a spinning pool would steal
    the core from the next partition's session), all graph optimizations.

    Args:
        intra_op_threads: threads per operator (>= 1); 0 lets ONNX Runtime pick.

    Returns:
        The options.

    Raises:
        ValueError: for a negative thread count.

    Example:
        >>> session_options(2).intra_op_num_threads
        2
    """
    if isinstance(intra_op_threads, bool) or not isinstance(intra_op_threads, int):
        raise TypeError(f"intra_op_threads must be an int, got {intra_op_threads!r}")
    if intra_op_threads < 0:
        raise ValueError(f"intra_op_threads must be >= 0, got {intra_op_threads}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


def check_files(bundle_dir: str | os.PathLike[str], manifest: Manifest | None = None) -> int:
    """Check every partition file of a bundle against the sizes and SHA-256 in its manifest.

    Useful after copying a bundle to a device: a truncated or altered file is
    found before a session loads it.

    Args:
        bundle_dir: the bundle directory.
        manifest: the manifest (default: ``bundle_dir/manifest.json``).

    Returns:
        The number of files checked (files without a recorded hash are skipped).

    Raises:
        FileNotFoundError: if a file is missing.
        ValueError: if a file's size or hash differs from the manifest's.

    Example:
        ```python
        check_files("bundle/")  # 6
        ```
    """
    bundle_dir = Path(bundle_dir)
    manifest = Manifest.load(bundle_dir) if manifest is None else manifest
    return sum(
        check_file(bundle_dir, part, fmt) for part in manifest.partitions for fmt in part.files
    )


class BundleSession:
    """ONNX Runtime sessions for every partition of a bundle, with early exit.

    Args:
        bundle_dir: the bundle directory (holding ``manifest.json``).
        precision: ``"fp32"``, ``"int8"`` (``--target arm`` bundles) or ``"fp16"``
            (``--target gpu`` bundles).
        providers: ONNX Runtime execution providers in order of preference;
            ``None`` takes the manifest's preferred providers that this
            onnxruntime build has, then the CPU. Unavailable ones are skipped.
        intra_op_threads: threads per operator in each session (see
            :func:`session_options`).
        manifest: use this manifest instead of reading ``manifest.json`` (the
            exporter verifies a bundle before it writes its manifest).
        partitions: load only these partitions (0-based; default all): a tier
            needs, and checks, only its own file, so a host can hold just that one.

    Raises:
        FileNotFoundError: if the manifest or a partition file is missing.
        ValueError: for an unknown precision, a bundle without ONNX files
            of that precision, a file whose size or SHA-256 differs from the
            manifest's (checked before it is loaded), or one ONNX Runtime cannot load.

    Example:
        ```python
        sess = BundleSession("bundle/", precision="int8")
        logits, entropy, features = sess.run_partition(0, x)
        ```
    """

    def __init__(
        self,
        bundle_dir: str | os.PathLike[str],
        precision: str = "fp32",
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 1,
        *,
        manifest: Manifest | None = None,
        partitions: Sequence[int] | None = None,
    ) -> None:
        self.bundle_dir = Path(bundle_dir)
        if manifest is None:
            manifest = Manifest.load(self.bundle_dir)
        elif not isinstance(manifest, Manifest):
            raise TypeError(f"manifest must be an earlyexit.formats.Manifest, got {manifest!r}")
        self.manifest = manifest
        self.precision = precision
        key = precision_file_key(precision)
        self.providers = self._pick_providers(providers)
        opts = session_options(intra_op_threads)
        n = len(manifest.partitions)
        wanted = set(range(n)) if partitions is None else set(partitions)
        if not wanted or not all(type(k) is int and 0 <= k < n for k in wanted):
            raise ValueError(
                f"partitions must be indices in 0..{n - 1} (this bundle's), got {partitions!r}"
            )
        self._sessions: list[ort.InferenceSession | None] = []
        self._input_names: list[str] = []
        self._input_shapes: list[tuple[int | None, ...]] = []
        self._has_features: list[bool] = []
        for k, part in enumerate(manifest.partitions):
            shape = tuple(part.input_shape) or tuple(manifest.input_shape)
            self._input_shapes.append(tuple(None if s is None else int(s) for s in shape))
            if k not in wanted:  # another tier's partition: not read, not needed here
                self._sessions.append(None)
                self._input_names.append("")
                self._has_features.append(k < n - 1)
                continue
            name = part.files.get(key)
            if name is None:
                have = sorted(p for p, f in _FILE_KEYS.items() if f in part.files)
                raise ValueError(
                    f"partition {k} of the bundle in {str(self.bundle_dir)!r} has no {precision} "
                    f"ONNX file; precisions in this bundle: {have or 'none'} (int8 comes with "
                    "--target arm, fp16 with --target gpu)"
                )
            path = self.bundle_dir / name
            if not path.is_file():
                raise FileNotFoundError(f"partition {k}: file {str(path)!r} does not exist")
            check_file(self.bundle_dir, part, key)  # an altered file is never parsed
            try:
                sess = ort.InferenceSession(str(path), opts, providers=self.providers)
            except Exception as err:  # onnxruntime raises its own types for a bad model
                first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                raise ValueError(
                    f"partition {k}: ONNX Runtime cannot load {str(path)!r} "
                    f"({type(err).__name__}: {first[:300]})"
                ) from err
            self._sessions.append(sess)
            self._input_names.append(sess.get_inputs()[0].name)
            self._has_features.append(len(sess.get_outputs()) >= 3)
        self._exit_blocks = np.array([p.last_block for p in manifest.plan.partitions], np.int64)
        # the per-sample shape of each partition's input when every side is known (else None)
        self._fixed_shapes = [
            s[1:] if all(d is not None for d in s[1:]) else None for s in self._input_shapes
        ]

    # ------------------------------------------------------------------ metadata

    def _pick_providers(self, providers: Sequence[str] | None) -> list[str]:
        available = ort.get_available_providers()
        if providers is None:
            preferred = list(self.manifest.extra.get("providers", {}).get(self.precision, []))
        else:
            if isinstance(providers, str):
                providers = [providers]
            preferred = list(providers)
        chosen = [p for p in preferred if p in available]
        if providers is not None and not chosen:
            raise ValueError(
                f"none of the providers {preferred} is available; this onnxruntime has {available}"
            )
        if "CPUExecutionProvider" not in chosen:
            chosen.append("CPUExecutionProvider")
        return chosen

    @property
    def num_partitions(self) -> int:
        """Number of partitions L."""
        return len(self._sessions)

    @property
    def threshold(self) -> float:
        """The manifest's exit threshold."""
        return float(self.manifest.threshold)

    @property
    def exit_blocks(self) -> tuple[int, ...]:
        """1-based block of each partition's exit branch."""
        return tuple(int(b) for b in self._exit_blocks)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the classes, by class index."""
        return tuple(self.manifest.class_names)

    def __repr__(self) -> str:
        return (
            f"BundleSession({str(self.bundle_dir)!r}, precision={self.precision!r}, "
            f"partitions={self.num_partitions}, exits={list(self.exit_blocks)})"
        )

    # ------------------------------------------------------------------ compute

    def _check(self, k: int, x: Any) -> np.ndarray:
        if (  # the common case, checked in a few operations (a worker asks once per message)
            type(k) is int
            and 0 <= k < len(self._sessions)
            and type(x) is np.ndarray
            and x.dtype == np.float32
            and x.ndim >= 1
            and x.shape[1:] == self._fixed_shapes[k]
            and self._sessions[k] is not None
            and x.flags.c_contiguous
        ):
            return x
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"partition index must be an int, got {k!r}")
        if not 0 <= k < self.num_partitions:
            raise ValueError(
                f"partition index {k} is out of range; this bundle has partitions "
                f"0..{self.num_partitions - 1}"
            )
        if self._sessions[k] is None:
            loaded = [i for i, sess in enumerate(self._sessions) if sess is not None]
            raise ValueError(f"partition {k} was not loaded (partitions={loaded})")
        if not isinstance(x, np.ndarray):
            if type(x).__module__.startswith("torch"):
                raise TypeError("expected a numpy array; convert a torch tensor with .numpy()")
            x = np.asarray(x)
        if x.dtype != np.float32:
            if x.dtype.kind not in "fiu":
                raise TypeError(f"expected a float32 array, got dtype {x.dtype}")
            x = x.astype(np.float32)
        shape = self._input_shapes[k]
        if x.ndim != len(shape) or any(
            s is not None and s != d for s, d in zip(shape[1:], x.shape[1:], strict=True)
        ):
            want = ", ".join("B" if s is None else str(s) for s in shape)
            raise ValueError(
                f"partition {k} expects an input of shape [{want}], got {list(x.shape)}"
            )
        return np.ascontiguousarray(x)

    def run_partition(
        self, k: int, x: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Run partition ``k`` (0-based) on a batch.

        Args:
            k: the partition, ``0 .. num_partitions - 1``.
            x: ``[B, ...]`` float32: the (normalized) model input for partition 0,
                the previous partition's features otherwise.

        Returns:
            ``(logits [B, C], entropy [B], features)``, float32; ``features`` is
            ``None`` for the last partition.

        Raises:
            TypeError, ValueError: for a bad index, dtype or shape.
        """
        return self._run(k, self._check(k, x))

    def _run(self, k: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """:meth:`run_partition` without the checks (``x`` is already float32, contiguous)."""
        outs = self._sessions[k].run(None, {self._input_names[k]: x})
        return outs[0], outs[1], (outs[2] if self._has_features[k] else None)

    def predict(self, x: np.ndarray, threshold: float | None = None) -> ChainResult:
        """Classify a batch with per-sample early exit (:func:`earlyexit.runtime.chain.run_chain`).

        A sample leaves after the first partition whose entropy is below
        ``threshold``; the last partition takes every sample that reaches it.
        Only the samples that stay are passed to the next partition.

        Args:
            x: ``[B, *input_shape]`` float32, normalized as the manifest says.
            threshold: in [0, 1]; ``None`` uses the manifest's.

        Returns:
            A :class:`~earlyexit.runtime.chain.ChainResult`, one row per sample:
            ``logits`` [B, C], ``prediction`` [B], ``exit_partition`` [B]
            (0-based), ``exit_block`` [B] (1-based block of the exit taken) and
            ``entropy`` [B]; ``out["prediction"]`` works too.

        Raises:
            TypeError, ValueError: for a bad input or threshold.
        """
        missing = [k for k, sess in enumerate(self._sessions) if sess is None]
        if missing:
            raise ValueError(
                f"predict chains every partition; this session did not load {missing} "
                "(open it without partitions=)"
            )
        threshold = check_threshold(self.threshold if threshold is None else threshold)
        runners = [functools.partial(self._run, k) for k in range(self.num_partitions)]
        return run_chain(runners, self._check(0, x), threshold, self._exit_blocks)
