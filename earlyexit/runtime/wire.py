"""The wire format: how tensors cross process and tier boundaries. No pickle.

A message is one byte string::

    b"EEW1" | uint32 LE header length | header (UTF-8 JSON) | payload

The header holds ``dtype`` (from a short allow-list), ``shape`` and any extra
JSON fields the sender adds (sample ids, partition, exit block...). The payload
is the array's bytes, C-contiguous and little-endian. ``decode`` checks every
length, so a malformed or oversized message raises :class:`WireError` instead
of being half-read. The profiler times exactly these functions, and
``output_bits`` in a profile are the sizes they produce.

Example:
    >>> import numpy as np
    >>> msg = encode(np.ones((2, 3), np.float32), kind="features", ids=[4, 5])
    >>> arr, meta = decode(msg)
    >>> arr.shape, meta["ids"]
    ((2, 3), [4, 5])
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

__all__ = ["MAGIC", "MAX_MESSAGE_BYTES", "WireError", "encode", "decode", "message_bits"]

MAGIC = b"EEW1"
_PREFIX = struct.Struct("<4sI")
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_MAX_HEADER_BYTES = 64 * 1024
_MAX_NDIM = 32  # numpy's own limit is 64
_DTYPES = {"float32", "float16", "float64", "int64", "int32", "uint8", "int8", "bool"}
# little-endian dtype -> name, and name -> little-endian dtype: dict lookups on the
# hot path instead of ``dtype.name`` and ``np.dtype(...)`` (each several microseconds)
_LE_DTYPE = {name: np.dtype(name).newbyteorder("<") for name in _DTYPES}
_NAME_OF = {dt: name for name, dt in _LE_DTYPE.items()}
_ITEMSIZE = {name: dt.itemsize for name, dt in _LE_DTYPE.items()}
_JSON = json.JSONEncoder(separators=(",", ":"))


class WireError(ValueError):
    """A message that does not follow the wire format."""


def encode(array: Any, **meta: Any) -> bytes:
    """Serialize an array (numpy, or anything ``np.asarray`` takes) and JSON metadata.

    Args:
        array: the tensor; a torch tensor must be on the CPU.
        **meta: JSON-able fields for the header (not ``dtype`` or ``shape``).

    Returns:
        The message bytes.

    Raises:
        WireError: for an unsupported dtype, reserved or non-JSON metadata.
    """
    arr = array if type(array) is np.ndarray else np.asarray(array)
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")
    dtype = _NAME_OF.get(arr.dtype)
    if dtype is None:  # not little-endian (or native ``=``) or not allowed
        dtype = arr.dtype.name
        if dtype not in _DTYPES:
            raise WireError(f"dtype {dtype} cannot be sent; allowed: {sorted(_DTYPES)}")
        arr = arr.astype(_LE_DTYPE[dtype])
    if "dtype" in meta or "shape" in meta:
        raise WireError("'dtype' and 'shape' are reserved header fields")
    try:
        header = _JSON.encode({"dtype": dtype, "shape": list(arr.shape), **meta})
    except TypeError as err:
        raise WireError(f"metadata is not JSON-serializable: {err}") from None
    hbytes = header.encode()
    # one copy of the payload, straight into the message (no intermediate ``tobytes``)
    return b"".join((_PREFIX.pack(MAGIC, len(hbytes)), hbytes, arr.reshape(-1).view(np.uint8)))


def decode(
    message: bytes | bytearray | memoryview, max_bytes: int = MAX_MESSAGE_BYTES
) -> tuple[np.ndarray, dict]:
    """Parse a message made by :func:`encode`.

    Args:
        message: the bytes received.
        max_bytes: reject larger messages.

    Returns:
        ``(array, header)``; the array is a read-only view of ``message`` where
        possible (copy it before writing).

    Raises:
        WireError: if the message is oversized, truncated, has a bad magic, header,
            dtype or shape, or a payload of the wrong length.
    """
    view = memoryview(message).cast("B")
    if len(view) > max_bytes:
        raise WireError(f"message of {len(view)} bytes exceeds the limit of {max_bytes}")
    if len(view) < _PREFIX.size:
        raise WireError(
            f"message of {len(view)} bytes is shorter than the {_PREFIX.size}-byte prefix"
        )
    magic, hlen = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise WireError(f"bad magic {bytes(magic)!r}; expected {MAGIC!r}")
    if hlen > _MAX_HEADER_BYTES or _PREFIX.size + hlen > len(view):
        raise WireError(f"header length {hlen} does not fit the message")
    try:
        header = json.loads(bytes(view[_PREFIX.size : _PREFIX.size + hlen]))
    except (ValueError, RecursionError) as err:  # bad UTF-8 or JSON, 5000-digit ints
        raise WireError(f"header is not JSON: {str(err)[:80]}") from None
    if not isinstance(header, dict):
        raise WireError("header must be a JSON object")
    dtype, shape = header.get("dtype"), header.get("shape")
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise WireError(f"header dtype {str(dtype)[:40]!r} is not one of {sorted(_DTYPES)}")
    if (
        not isinstance(shape, list)
        or len(shape) > _MAX_NDIM
        or not all(type(s) is int and s >= 0 for s in shape)
    ):
        raise WireError(
            f"header shape {str(shape)[:80]} must be a list of at most {_MAX_NDIM} "
            "non-negative ints"
        )
    payload = view[_PREFIX.size + hlen :]
    # Python ints do not overflow: a claimed shape such as [2**62, 4] is compared
    # with the bytes that arrived before anything is allocated.
    expected = math.prod(shape) * _ITEMSIZE[dtype]
    if len(payload) != expected:
        raise WireError(
            f"payload has {len(payload)} bytes; shape {str(shape)[:80]} of {dtype} "
            f"needs {expected if expected < 1 << 64 else 'more than 2**64'}"
        )
    try:
        array = np.frombuffer(payload, dtype=_LE_DTYPE[dtype]).reshape(shape)
    except ValueError as err:  # an empty shape whose other sides exceed numpy's limits
        raise WireError(f"shape {str(shape)[:80]} is no valid array shape: {err}") from None
    return array, header


def message_bits(array: Any, **meta: Any) -> int:
    """Size in bits of the message that :func:`encode` makes for ``array``."""
    return 8 * len(encode(array, **meta))
