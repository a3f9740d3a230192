import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from earlyexit.runtime.wire import MAGIC, WireError, decode, encode, message_bits


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
    msg = encode(arr, kind="features")
    hlen = struct.unpack_from("<I", msg, 4)[0]
    assert len(msg) == 8 + hlen + arr.nbytes
    assert message_bits(arr, kind="features") == 8 * len(msg)


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
    [[2**32, 2**32], [2**62, 4], [2**70], [2**63 - 1, 2**63 - 1, 2], [True, 1], [1.5], [-1], [1] * 40],
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
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    header=st.one_of(
        _json,
        st.fixed_dictionaries(
            {"dtype": st.sampled_from(["float32", "int8", "bool", "object", "<f4"]) | _json},
            optional={"shape": st.lists(st.integers(min_value=-(2**70), max_value=2**70), max_size=6) | _json},
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
