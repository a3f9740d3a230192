import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from earlyexit.runtime.wire import COMPACT_MAGIC, MAGIC, WireError, decode, encode, message_bits


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float16, np.int64, np.uint8, np.bool_]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    ),
    st.dictionaries(st.sampled_from(["ids", "kind", "exit"]), st.integers(0, 9)),
)
def test_round_trip(array, meta):
    out, header = decode(encode(array, **meta))
    assert out.dtype == array.dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)
    for k, v in meta.items():
        assert header[k] == v


def test_size_is_header_plus_payload():
    arr = np.zeros((1, 16, 32, 32), np.float32)
    msg = encode(arr, kind="features", note="not a field of the compact header")
    assert msg[:4] == MAGIC
    hlen = struct.unpack_from("<I", msg, 4)[0]
    assert len(msg) == 8 + hlen + arr.nbytes
    assert message_bits(arr, kind="features", note="x") == 8 * len(
        encode(arr, kind="features", note="x")
    )
    # the runtime's own messages take the compact form: a fixed header, no JSON
    msg = encode(arr, kind="features", ids=[7], ack="ipc:///tmp/w0-control.sock")
    assert msg[:4] == COMPACT_MAGIC and b"{" not in msg[:64]
    assert len(msg) == 32 + 8 * 4 + 8 + 32 + arr.nbytes  # 28+4 pad, shape, one id, ack padded
    assert message_bits(arr, kind="features", ids=[7], ack="ipc:///tmp/w0-control.sock") == 8 * len(
        msg
    )


_COMPACT_CASES = [
    ({"kind": "input", "ids": [0, 2**63 - 1, -5], "ack": "tcp://127.0.0.1:5"}, (3, 4)),
    ({"kind": "features", "ids": [3], "ack": "ipc:///tmp/é.sock"}, (1, 16, 2, 2)),
    (
        {
            "kind": "result",
            "ids": [1, 2],
            "partition": 2,
            "block": 7,
            "tier": None,
            "entropy": [0.25, float(np.float32(0.1))],
            "degraded": True,
        },
        (2, 10),
    ),  # fmt: skip
    (
        {
            "kind": "result",
            "ids": [1],
            "partition": 0,
            "block": None,
            "tier": 3,
            "entropy": [],
            "degraded": False,
        },
        (1, 0),
    ),  # fmt: skip
    ({"kind": "ack", "partition": 1, "ids": list(range(50))}, (0,)),
    ({"kind": "heartbeat", "partition": 4}, (0,)),
]


@pytest.mark.parametrize(("meta", "shape"), _COMPACT_CASES)
def test_compact_round_trip_gives_the_same_header(meta, shape):
    arr = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    msg = encode(arr, **meta)
    assert msg[:4] == COMPACT_MAGIC
    out, head = decode(msg)
    np.testing.assert_array_equal(out, arr)
    assert head == {"dtype": "float32", "shape": list(shape), **meta}
    assert out.ctypes.data % 8 == 0 or len(msg) % 8 == 0  # the payload starts 8-aligned


@pytest.mark.parametrize(
    "meta",
    [
        {"kind": "input", "ids": [2**80]},  # beyond int64
        {"kind": "input", "ids": [True]},  # a bool is no id
        {"kind": "result", "ids": [1], "entropy": [0.1]},  # 0.1 is not a float32
        {"kind": "result", "ids": [1], "entropy": [1], "partition": 0},  # an int entropy
        {"kind": "result", "ids": [1], "partition": 2**40},
        {"kind": "result", "ids": [1], "failed": True, "error": "x"},  # other fields
        {"kind": "bogus", "ids": [1]},
        {"kind": "input", "ids": [1], "ack": 7},
        {"kind": "input", "ids": [1], "degraded": "no"},
    ],
)
def test_what_the_compact_header_cannot_hold_exactly_takes_the_json_form(meta):
    msg = encode(np.zeros((1, 1), np.float32), **meta)
    assert msg[:4] == MAGIC
    assert decode(msg)[1] == {"dtype": "float32", "shape": [1, 1], **meta}


def test_hostile_compact_headers_are_wire_errors():
    from earlyexit.runtime.wire import _COMPACT

    good = encode(np.zeros((2, 3), np.float32), kind="result", ids=[1, 2], partition=0,
                  block=1, tier=0, entropy=[0.5, 0.25], degraded=False)  # fmt: skip
    fields = list(_COMPACT.unpack_from(good))
    for i, bad in [(1, 0), (1, 9), (2, 0), (2, 99), (3, 33), (8, 10**6), (9, 7), (10, 60000),
                   (3, 3), (8, 3)]:  # fmt: skip
        f = list(fields)
        f[i] = bad
        msg = _COMPACT.pack(*f) + good[_COMPACT.size :]
        with pytest.raises(WireError):
            decode(msg)
    for cut in range(len(good)):
        with pytest.raises(WireError):
            decode(good[:cut])
    no_ids = list(fields)
    no_ids[4] &= ~1  # the flags say: no ids, yet it counts two
    with pytest.raises(WireError, match="does not carry"):
        decode(_COMPACT.pack(*no_ids) + good[_COMPACT.size :])
    bad_ack = encode(np.zeros(1, np.float32), kind="input", ids=[1], ack="tcp://a:1")
    at = bad_ack.index(b"tcp://")
    with pytest.raises(WireError, match="UTF-8"):
        decode(bad_ack[:at] + b"\xff" + bad_ack[at + 1 :])


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=200))
def test_random_compact_messages_are_wire_errors(data):
    """Any bytes after the compact magic: a valid array or a WireError, nothing else."""
    try:
        arr, head = decode(COMPACT_MAGIC + data)
    except WireError:
        return
    assert arr.nbytes <= len(data) and head["kind"] in (
        "input",
        "features",
        "result",
        "ack",
        "heartbeat",
    )


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"XXXX" + struct.pack("<I", 2) + b"{}",
        MAGIC + struct.pack("<I", 999) + b"{}",
        MAGIC + struct.pack("<I", 2) + b"[]",
        MAGIC + struct.pack("<I", 4) + b"{no}",
    ],
)
def test_malformed_messages_rejected(bad):
    with pytest.raises(WireError):
        decode(bad)


def test_payload_length_and_dtype_checked():
    msg = encode(np.ones(4, np.float32))
    with pytest.raises(WireError, match="payload"):
        decode(msg[:-1])
    header = json.dumps({"dtype": "object", "shape": [1]}).encode()
    with pytest.raises(WireError, match="dtype"):
        decode(MAGIC + struct.pack("<I", len(header)) + header + b"\0" * 8)
    with pytest.raises(WireError, match="exceeds"):
        decode(msg, max_bytes=10)
    with pytest.raises(WireError, match="reserved"):
        encode(np.ones(1), shape=[3])
    with pytest.raises(WireError, match="cannot be sent"):
        encode(np.array(["a"]))


def _message(header: object, payload: bytes = b"") -> bytes:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return MAGIC + struct.pack("<I", len(raw)) + raw + payload


@pytest.mark.parametrize(
    "shape",
    [
        [2**32, 2**32],
        [2**62, 4],
        [2**70],
        [2**63 - 1, 2**63 - 1, 2],
        [True, 1],
        [1.5],
        [-1],
        [1] * 40,
    ],
)
def test_absurd_shapes_are_wire_errors(shape):
    """Shapes whose byte count overflows int64 (or are not shapes) never escape as other errors."""
    with pytest.raises(WireError):
        decode(_message({"dtype": "float32", "shape": shape}, b"\0" * 16))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"dtype": "float32", "shape": [' + b"9" * 5000 + b"]}",  # int too long to parse
        b"[" * 20000 + b"]" * 20000,  # deep nesting
        b'{"dtype": ["float32"], "shape": [1]}',  # unhashable dtype
        b'{"dtype": "float32", "shape": {"a": 1}}',
        b"\xff\xfe{}",
    ],
)
def test_hostile_headers_are_wire_errors(raw):
    with pytest.raises(WireError):
        decode(_message(raw, b"\0" * 4))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    header=st.one_of(
        _json,
        st.fixed_dictionaries(
            {"dtype": st.sampled_from(["float32", "int8", "bool", "object", "<f4"]) | _json},
            optional={
                "shape": st.lists(st.integers(min_value=-(2**70), max_value=2**70), max_size=6)
                | _json
            },
        ),
    ),
    payload=st.binary(max_size=64),
)
def test_decode_raises_only_wire_errors(header, payload):
    """Any header and payload: a valid array or a WireError, nothing else, no huge allocation."""
    try:
        arr, _ = decode(_message(header, payload))
    except WireError:
        return
    assert arr.nbytes == len(payload)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_are_wire_errors(data):
    try:
        decode(data)
    except WireError:
        pass


@pytest.mark.parametrize("ack", [None, "ipc:///tmp/w0-control.sock"])
@pytest.mark.parametrize("ids", [[0], [3, 2**63 - 1], [2**64], []])
def test_the_runtime_fast_encoders_make_the_same_bytes_as_encode(ack, ids):
    from earlyexit.runtime.wire import encode_batch, encode_result

    x = np.arange(len(ids) * 6, dtype=np.float32).reshape(len(ids), 2, 3)
    meta = {} if ack is None else {"ack": ack}
    assert encode_batch(x, "features", ids, ack) == encode(x, kind="features", ids=ids, **meta)
    logits = np.arange(len(ids) * 4, dtype=np.float32).reshape(len(ids), 4)
    ent = np.linspace(0, 1, len(ids), dtype=np.float32)
    for block, tier, degraded in ((3, 0, False), (None, None, True)):
        got = encode_result(logits, ids, 1, block, tier, ent, degraded)
        want = encode(logits, kind="result", ids=ids, partition=1, block=block, tier=tier,
                      entropy=ent.tolist(), degraded=degraded)  # fmt: skip
        assert got == want
        assert decode(got)[1]["entropy"] == ent.tolist()


def _agrees_with_decode(msg: bytes, max_bytes: int = 1 << 20) -> None:
    """decode_batch reads what decode reads as a numeric batch, and gives up on the rest."""
    from earlyexit.runtime.wire import decode_batch

    fast = decode_batch(msg, max_bytes)
    try:
        arr, head = decode(msg, max_bytes)
    except WireError:
        assert fast is None
        return
    batch = (
        head["kind"] in ("input", "features")
        and set(head) <= {"dtype", "shape", "kind", "ids", "ack"}
        and "ids" in head
        and arr.ndim >= 1
        and len(head["ids"]) == arr.shape[0]
        and arr.dtype.kind in "fiu"
        and msg[:4] == COMPACT_MAGIC
    )
    if not batch:
        assert fast is None
        return
    assert fast is not None
    f_arr, kind, ids, ack = fast
    assert (kind, ids, ack) == (head["kind"], head["ids"], head.get("ack"))
    assert f_arr.dtype == arr.dtype and f_arr.shape == arr.shape
    np.testing.assert_array_equal(f_arr, arr)


@settings(max_examples=150, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float16, np.int64, np.uint8, np.bool_]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4),
    ),
    st.sampled_from(["input", "features", "result", "ack"]),
    st.none() | st.sampled_from(["ipc:///tmp/w0-control", "tcp://127.0.0.1:5"]),
    st.data(),
)
def test_decode_batch_reads_batches_as_decode_does(array, kind, ack, data):
    n = array.shape[0] if array.ndim else 1
    ids = data.draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n))
    meta = {"ids": ids} if ack is None else {"ids": ids, "ack": ack}
    msg = encode(array, kind=kind, **meta)
    _agrees_with_decode(msg)
    # a cut, a flipped byte or a lower size limit: still the same verdict as decode
    cut = data.draw(st.integers(0, len(msg)))
    _agrees_with_decode(msg[:cut])
    at = data.draw(st.integers(0, len(msg) - 1))
    _agrees_with_decode(msg[:at] + bytes([msg[at] ^ 0xFF]) + msg[at + 1 :])
    _agrees_with_decode(msg, max_bytes=max(len(msg) - 1, 0))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=200))
def test_decode_batch_on_random_compact_bytes(data):
    _agrees_with_decode(COMPACT_MAGIC + data)
