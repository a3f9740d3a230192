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
