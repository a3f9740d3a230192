"""(De)serialization times and sizes of every tensor that can cross a link.

It times the runtime's own wire format (:mod:`earlyexit.runtime.wire`), so the
sizes it reports are exactly the bytes the runtime sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from earlyexit.profiling.timing import _measure
from earlyexit.runtime.wire import decode, encode

__all__ = ["SerializationCosts", "time_serialization"]


@dataclass
class SerializationCosts:
    """Per-message costs: index 0 is the input, index i the output of block i."""

    serialize_s: np.ndarray
    deserialize_s: np.ndarray
    bits: np.ndarray
    result_serialize_s: float
    result_deserialize_s: float
    result_bits: int


def _costs(array: np.ndarray, kind: str, reps: int, percentile: float) -> tuple[float, float, int]:
    meta = {"kind": kind, "ids": list(range(array.shape[0]))}
    message = encode(array, **meta)
    ser = _measure(lambda: encode(array, **meta), 3, reps, 0.2, percentile)
    # a worker reads the array in place (a read-only view of the frame): no copy is timed
    de = _measure(lambda: decode(message)[0], 3, reps, 0.2, percentile)
    return ser, de, 8 * len(message)


def time_serialization(
    tensors: Sequence[np.ndarray], result: np.ndarray, reps: int = 50, percentile: float = 50.0
) -> SerializationCosts:
    """Time encoding and decoding of each message, as a tier worker does them (no copy on receive).

    Args:
        tensors: the input and then every block's output, for one sample each.
        result: what an exiting sample sends to the destination (its logits).
        reps: timed runs per message.
        percentile: the stored statistic.

    Returns:
        Times in seconds and sizes in bits.

    Example:
        >>> import numpy as np
        >>> c = time_serialization([np.zeros((1, 4), np.float32)], np.zeros((1, 2), np.float32), reps=3)
        >>> int(c.bits[0]) > 4 * 32
        True
    """
    ser, de, bits = zip(
        *(
            _costs(np.asarray(t), "input" if i == 0 else "features", reps, percentile)
            for i, t in enumerate(tensors)
        ),
        strict=True,
    )
    rs, rd, rbits = _costs(np.asarray(result), "result", reps, percentile)
    return SerializationCosts(
        np.array(ser), np.array(de), np.array(bits, dtype=np.int64), rs, rd, rbits
    )
