"""The wire format: how tensors cross process and tier boundaries. No pickle.

A message is one byte string, in one of two forms (docs/spec.md,
*Wire messages and results*). The runtime's own messages (``input``,
``features``, ``result``, ``ack``, ``heartbeat`` with their usual fields) use
the compact form, a fixed binary header with no JSON to write or parse::

    b"EEW2" | fixed header (28 bytes) | shape (int64 each) | ids (int64 each)
            | entropy (float32 each) | ack address (UTF-8) | zero padding to 8 | payload

Any other metadata (other field names or values that the fixed header cannot
hold, such as an id beyond int64) takes the general form::

    b"EEW1" | uint32 LE header length | header (UTF-8 JSON) | payload

Both carry ``dtype`` (from a short allow-list) and ``shape``; the payload is the
array's bytes, C-contiguous and little-endian. :func:`encode` picks the form,
:func:`decode` reads both and returns the same header dict. ``decode`` checks
every length, so a malformed or oversized message raises :class:`WireError`
instead of being half-read. The profiler times exactly these functions, and
``output_bits`` in a profile are the sizes they produce.

The module is kept whole (about 500 lines, half of them checks and comments):
both header forms share one set of dtype tables and size limits, and every
function that reads bytes from a peer applies them; split, the checks that
keep a hostile message from being half-read would live in two places.

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

__all__ = [
    "COMPACT_MAGIC",
    "MAGIC",
    "MAX_MESSAGE_BYTES",
    "WireError",
    "encode",
    "encode_batch",
    "encode_result",
    "decode",
    "decode_batch",
    "encode_feedback",
    "feedback_fields",
    "message_bits",
]

MAGIC = b"EEW1"
COMPACT_MAGIC = b"EEW2"
_PREFIX = struct.Struct("<4sI")
# magic, kind, dtype, ndim, flags, partition, block, tier, ids, entropies, ack length
_COMPACT = struct.Struct("<4sBBBBiiiIIH2x")
_KINDS = ("input", "features", "result", "ack", "heartbeat")
_KIND_CODE = {k: i + 1 for i, k in enumerate(_KINDS)}
_DTYPE_ORDER = ("float32", "float16", "float64", "int64", "int32", "uint8", "int8", "bool")
# which optional fields a compact header carries (flags bits)
_F_IDS, _F_ACK, _F_PART, _F_BLOCK, _F_TIER, _F_ENT, _F_DEGRADED = 1, 2, 4, 8, 16, 32, 64
_F_DEGRADED_TRUE = 128
_FIELD_FLAGS = {"ids": _F_IDS, "ack": _F_ACK, "partition": _F_PART, "block": _F_BLOCK,
                "tier": _F_TIER, "entropy": _F_ENT, "degraded": _F_DEGRADED}  # fmt: skip
_NONE = -(2**31)  # block or tier "null"
_I32 = (-(2**31) + 1, 2**31 - 1)
_NULLABLE = (-(2**31), 2**31 - 1)  # the lowest value stands for None
_ZEROS = bytes(8)
_F32 = np.dtype("float32")
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
_DTYPE_CODE = {name: i + 1 for i, name in enumerate(_DTYPE_ORDER)}
assert set(_DTYPE_ORDER) == _DTYPES  # internal: one code per allowed dtype


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
    head = _compact_header(dtype, arr.shape, meta)
    if head is not None:
        return b"".join((head, arr.reshape(-1).view(np.uint8)))
    try:
        header = _JSON.encode({"dtype": dtype, "shape": list(arr.shape), **meta})
    except TypeError as err:
        raise WireError(f"metadata is not JSON-serializable: {err}") from None
    hbytes = header.encode()
    # one copy of the payload, straight into the message (no intermediate ``tobytes``)
    return b"".join((_PREFIX.pack(MAGIC, len(hbytes)), hbytes, arr.reshape(-1).view(np.uint8)))


def encode_batch(array: np.ndarray, kind: str, ids: list[int], ack: str | None = None) -> bytes:
    """``encode(array, kind=kind, ids=ids[, ack=ack])``, the same bytes, made faster.

    The runtime's ``input`` and ``features`` messages, once per message on the
    hot path: a float32 C-contiguous array and int ids skip the generic checks
    (anything else takes :func:`encode`).
    """
    if type(array) is not np.ndarray or array.dtype != _F32 or not array.flags.c_contiguous:
        return _encode_fallback(array, kind, ids, ack)
    shape = array.shape
    ack_b = b"" if ack is None else ack.encode()
    n = len(ids)
    try:
        body = struct.pack(f"<{len(shape)}q{n}q", *shape, *ids)
    except struct.error:  # an id beyond int64, or not an int
        return _encode_fallback(array, kind, ids, ack)
    if len(shape) > _MAX_NDIM or len(ack_b) > 0xFFFF or not all(type(i) is int for i in ids):
        return _encode_fallback(array, kind, ids, ack)
    flags = _F_IDS if ack is None else _F_IDS | _F_ACK
    head = _COMPACT.pack(COMPACT_MAGIC, _KIND_CODE[kind], 1, len(shape), flags, 0, 0, 0, n, 0,
                         len(ack_b))  # fmt: skip
    size = _COMPACT.size + len(body) + len(ack_b)
    return b"".join((head, body, ack_b, _ZEROS[: -size % 8], array.reshape(-1).view(np.uint8)))


def _encode_fallback(array: Any, kind: str, ids: list[int], ack: str | None) -> bytes:
    return (
        encode(array, kind=kind, ids=ids)
        if ack is None
        else encode(array, kind=kind, ids=ids, ack=ack)
    )


def encode_result(
    logits: np.ndarray,
    ids: list[int],
    partition: int,
    block: int | None,
    tier: int | None,
    entropy: np.ndarray,
    degraded: bool,
) -> bytes:
    """A ``result`` message, the bytes :func:`encode` makes with these fields, made faster.

    Args:
        logits: ``[n, C]`` (sent as float32).
        ids: the n sample ids.
        partition, block, tier: where the exit is.
        entropy: ``[n]`` normalized entropies (sent as float32).
        degraded: whether the samples finished early because a tier failed.
    """
    logits = np.ascontiguousarray(logits, _F32)
    ent = np.ascontiguousarray(entropy, _F32).reshape(-1)
    n = len(ids)
    plain = (
        logits.ndim == 2
        and len(ent) == n
        and all(type(i) is int for i in ids)
        and _int_in(partition, _I32)
        and (block is None or _int_in(block, _I32))
        and (tier is None or _int_in(tier, _I32))
        and np.isfinite(ent).all()
    )
    try:
        body = struct.pack(f"<2q{n}q", *logits.shape, *ids) if plain else b""
    except struct.error:
        plain = False
    if not plain:
        return encode(logits, kind="result", ids=ids, partition=partition, block=block, tier=tier,
                      entropy=ent.tolist(), degraded=bool(degraded))  # fmt: skip
    flags = _F_IDS | _F_PART | _F_BLOCK | _F_TIER | _F_ENT | _F_DEGRADED
    if degraded:
        flags |= _F_DEGRADED_TRUE
    head = _COMPACT.pack(COMPACT_MAGIC, 3, 1, 2, flags, partition,
                         _NONE if block is None else block, _NONE if tier is None else tier,
                         n, n, 0)  # fmt: skip
    ent_b = ent.astype("<f4", copy=False).tobytes()
    size = _COMPACT.size + len(body) + len(ent_b)
    return b"".join((head, body, ent_b, _ZEROS[: -size % 8], logits.reshape(-1).view(np.uint8)))


def _int_in(v: Any, lo_hi: tuple[int, int]) -> bool:
    return type(v) is int and lo_hi[0] <= v <= lo_hi[1]


def _compact_header(dtype: str, shape: tuple[int, ...], meta: dict[str, Any]) -> bytes | None:
    """The compact header for these fields, or None if it cannot hold them exactly."""
    kind = _KIND_CODE.get(meta.get("kind"))  # type: ignore[arg-type]
    if kind is None or len(shape) > _MAX_NDIM:
        return None
    flags = 0
    for key in meta:
        bit = _FIELD_FLAGS.get(key)
        if bit is None:
            if key != "kind":
                return None
        else:
            flags |= bit
    parts = [b"", struct.pack(f"<{len(shape)}q", *shape)]
    n_ids = n_ent = 0
    if flags & _F_IDS:
        ids = meta["ids"]
        if type(ids) is not list or not all(type(i) is int for i in ids):
            return None
        n_ids = len(ids)
        try:
            parts.append(struct.pack(f"<{n_ids}q", *ids))
        except struct.error:  # beyond int64
            return None
    if flags & _F_ENT:
        ent = meta["entropy"]
        if type(ent) is not list or not all(type(e) is float for e in ent):
            return None
        n_ent = len(ent)
        packed = struct.pack(f"<{n_ent}f", *ent)
        if list(struct.unpack(f"<{n_ent}f", packed)) != ent:
            return None  # float32 would not hold them exactly
        parts.append(packed)
    ack = b""
    if flags & _F_ACK:
        if type(meta["ack"]) is not str:
            return None
        ack = meta["ack"].encode()
        if len(ack) > 0xFFFF:
            return None
        parts.append(ack)
    part, block, tier = meta.get("partition", 0), meta.get("block", 0), meta.get("tier", 0)
    if block is None:
        block = _NONE
    if tier is None:
        tier = _NONE
    if not (_int_in(part, _I32) and _int_in(block, _NULLABLE) and _int_in(tier, _NULLABLE)):
        return None
    deg = meta.get("degraded", False)
    if deg is True:
        flags |= _F_DEGRADED_TRUE
    elif deg is not False:
        return None
    parts[0] = _COMPACT.pack(COMPACT_MAGIC, kind, _DTYPE_CODE[dtype], len(shape), flags,
                             part, block, tier, n_ids, n_ent, len(ack))  # fmt: skip
    size = _COMPACT.size + 8 * len(shape) + 8 * n_ids + 4 * n_ent + len(ack)
    parts.append(_ZEROS[: -size % 8])
    return b"".join(parts)


def _decode_compact(view: memoryview) -> tuple[dict[str, Any], int]:
    """Header dict and payload offset of a compact message (lengths checked)."""
    if len(view) < _COMPACT.size:
        raise WireError(f"message of {len(view)} bytes is shorter than the compact header")
    _, kind, dcode, ndim, flags, part, block, tier, n_ids, n_ent, n_ack = _COMPACT.unpack_from(view)
    if not 1 <= kind <= len(_KINDS):
        raise WireError(f"compact header: unknown kind code {kind}")
    if not 1 <= dcode <= len(_DTYPE_ORDER):
        raise WireError(f"compact header: dtype code {dcode} is not one of 1..{len(_DTYPE_ORDER)}")
    if ndim > _MAX_NDIM:
        raise WireError(f"compact header: {ndim} dimensions, at most {_MAX_NDIM}")
    if not flags & _F_ENT and n_ent or not flags & _F_IDS and n_ids or not flags & _F_ACK and n_ack:
        raise WireError("compact header: lengths given for fields it does not carry")
    end = _COMPACT.size + 8 * ndim + 8 * n_ids + 4 * n_ent + n_ack
    end += -end % 8
    if end > len(view):
        raise WireError(f"compact header of {end} bytes does not fit the message of {len(view)}")
    off = _COMPACT.size
    shape = list(struct.unpack_from(f"<{ndim}q", view, off))
    off += 8 * ndim
    head: dict[str, Any] = {
        "dtype": _DTYPE_ORDER[dcode - 1],
        "shape": shape,
        "kind": _KINDS[kind - 1],
    }
    if flags & _F_IDS:
        head["ids"] = list(struct.unpack_from(f"<{n_ids}q", view, off))
    off += 8 * n_ids
    if flags & _F_ENT:
        head["entropy"] = list(struct.unpack_from(f"<{n_ent}f", view, off))
    off += 4 * n_ent
    if flags & _F_ACK:
        try:
            head["ack"] = bytes(view[off : off + n_ack]).decode()
        except UnicodeDecodeError:
            raise WireError("compact header: the ack address is not UTF-8") from None
    if flags & _F_PART:
        head["partition"] = part
    if flags & _F_BLOCK:
        head["block"] = None if block == _NONE else block
    if flags & _F_TIER:
        head["tier"] = None if tier == _NONE else tier
    if flags & _F_DEGRADED:
        head["degraded"] = bool(flags & _F_DEGRADED_TRUE)
    return head, end


_BATCH_KINDS = (None, "input", "features")
_NUMERIC = {name: _LE_DTYPE[name] for name in _DTYPE_ORDER if _LE_DTYPE[name].kind in "fiu"}
_DTYPE_BY_CODE = (None, *(_NUMERIC.get(name) for name in _DTYPE_ORDER))
_BATCH_FLAGS = (_F_IDS, _F_IDS | _F_ACK)


def decode_batch(
    message: bytes | bytearray | memoryview, max_bytes: int = MAX_MESSAGE_BYTES
) -> tuple[np.ndarray, str, list[int], str | None] | None:
    """The runtime's hot path of :func:`decode`: a compact ``input`` or ``features`` batch.

    A tier worker reads one such message per hop; this reads it with fewer
    steps than :func:`decode` and no header dict.

    Args:
        message: the bytes received.
        max_bytes: the largest message accepted.

    Returns:
        ``(array, kind, ids, ack)`` for a well-formed compact batch of a numeric
        dtype whose ids match its first axis (``ack`` None when absent); None
        for anything else, valid or not (:func:`decode` then reads it, or says
        what is wrong with it).

    Example:
        >>> msg = encode_batch(np.ones((2, 3), np.float32), "input", [4, 5], "ipc:///x")
        >>> arr, kind, ids, ack = decode_batch(msg)
        >>> arr.shape, kind, ids, ack
        ((2, 3), 'input', [4, 5], 'ipc:///x')
    """
    view = memoryview(message).cast("B")
    size = len(view)
    if size > max_bytes or size < _COMPACT.size:
        return None
    magic, kind, dcode, ndim, flags, _, _, _, n_ids, n_ent, n_ack = _COMPACT.unpack_from(view)
    if (
        magic != COMPACT_MAGIC
        or not 1 <= kind <= 2
        or not 1 <= ndim <= _MAX_NDIM
        or flags not in _BATCH_FLAGS
        or n_ent
        or not 1 <= dcode <= len(_DTYPE_ORDER)
        or (n_ack and not flags & _F_ACK)
    ):
        return None
    dtype = _DTYPE_BY_CODE[dcode]
    off = _COMPACT.size + 8 * ndim
    start = off + 8 * n_ids + n_ack
    start += -start % 8
    if dtype is None or start > size:
        return None
    shape = struct.unpack_from(f"<{ndim}q", view, _COMPACT.size)
    if shape[0] != n_ids or min(shape) < 0 or math.prod(shape) * dtype.itemsize != size - start:
        return None
    ids = list(struct.unpack_from(f"<{n_ids}q", view, off))
    ack = None
    if flags & _F_ACK:
        off += 8 * n_ids
        try:
            ack = bytes(view[off : off + n_ack]).decode()
        except UnicodeDecodeError:
            return None
    try:
        array = np.frombuffer(view[start:], dtype).reshape(shape)
    except ValueError:  # an empty shape whose other sides exceed numpy's limits
        return None
    return array, _BATCH_KINDS[kind], ids, ack


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
    if magic == COMPACT_MAGIC:
        header, start = _decode_compact(view)
    elif magic != MAGIC:
        raise WireError(f"bad magic {bytes(magic)!r}; expected {MAGIC!r} or {COMPACT_MAGIC!r}")
    else:
        if hlen > _MAX_HEADER_BYTES or _PREFIX.size + hlen > len(view):
            raise WireError(f"header length {hlen} does not fit the message")
        try:
            header = json.loads(bytes(view[_PREFIX.size : _PREFIX.size + hlen]))
        except (ValueError, RecursionError) as err:  # bad UTF-8 or JSON, 5000-digit ints
            raise WireError(f"header is not JSON: {str(err)[:80]}") from None
        if not isinstance(header, dict):
            raise WireError("header must be a JSON object")
        start = _PREFIX.size + hlen
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
    payload = view[start:]
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


_NO_PAYLOAD = np.empty(0, np.uint8)
MAX_FEEDBACK = 1024
"""The most samples one ``feedback`` message answers for (its JSON header stays under 64 KiB)."""


def encode_feedback(ids: list[int], confidence: list[float]) -> bytes:
    """A ``feedback`` message (general form, no payload): each sample's final-exit confidence.

    The destination sends it to the first tier's control address for the
    samples that went on past the first exit, so that an online policy there
    (AdaEE) learns without labels (docs/spec.md, *Wire messages and results*).

    Example:
        >>> feedback_fields(decode(encode_feedback([7], [0.875]))[1])
        ([7], [0.875])
    """
    return encode(_NO_PAYLOAD, kind="feedback", ids=list(ids), confidence=list(confidence))


def feedback_fields(head: dict[str, Any]) -> tuple[list[int], list[float]]:
    """The ids and confidences of a decoded ``feedback`` header, checked (it came from outside).

    Raises:
        WireError: not a feedback header, ids that are not integers, confidences
            that are not numbers in [0, 1], or lists of different lengths.
    """
    ids, conf = head.get("ids"), head.get("confidence")
    if head.get("kind") != "feedback":
        raise WireError(f"kind {str(head.get('kind'))[:40]!r} is not 'feedback'")
    if not isinstance(ids, list) or not isinstance(conf, list) or len(ids) != len(conf):
        raise WireError("feedback needs 'ids' and 'confidence', two lists of one length")
    if len(ids) > MAX_FEEDBACK:
        raise WireError(f"feedback for {len(ids)} samples; at most {MAX_FEEDBACK}")
    if not all(type(i) is int for i in ids):
        raise WireError(f"feedback ids must be integers, got {str(ids)[:80]}")
    ok = all(type(c) in (int, float) and 0.0 <= c <= 1.0 for c in conf)  # NaN fails too
    if not ok:
        raise WireError(f"feedback confidences must be numbers in [0, 1], got {str(conf)[:80]}")
    return ids, [float(c) for c in conf]


def message_bits(array: Any, **meta: Any) -> int:
    """Size in bits of the message that :func:`encode` makes for ``array``."""
    return 8 * len(encode(array, **meta))
