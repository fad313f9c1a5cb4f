"""The tensor format: round trips, canonical bytes, and untrusted input."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from p2pcompute.errors import WireError
from p2pcompute.ops import tensor_format as tf

DTYPES = st.sampled_from(sorted(tf.DTYPE_CODES)).map(np.dtype)
ARRAYS = DTYPES.flatmap(lambda d: hnp.arrays(d, hnp.array_shapes(min_dims=0, max_dims=5, min_side=0,
                                                                 max_side=5)))


@settings(max_examples=200, deadline=None)
@given(array=ARRAYS, big_endian=st.booleans())
def test_roundtrip_is_exact_and_canonical(array, big_endian):
    data = tf.encode(array)
    back = tf.decode(data)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes()
    swapped = array.astype(array.dtype.newbyteorder(">"))
    assert tf.encode(swapped) == data  # same tensor, same bytes, whatever the byte order
    if big_endian:  # a big-endian encoding (another producer) decodes to the same values
        header = bytearray(data[:8 + 8 * array.ndim])
        header[6] = 1
        other = tf.decode(bytes(header) + swapped.tobytes())
        assert other.tobytes() == array.tobytes() and other.dtype.isnative


@settings(max_examples=300, deadline=None)
@given(array=ARRAYS, pos=st.integers(0, 400), byte=st.integers(0, 255), cut=st.integers(0, 400))
def test_mutated_or_truncated_input_raises_only_wire_error(array, pos, byte, cut):
    data = bytearray(tf.encode(array))
    if data:
        data[pos % len(data)] = byte
    for blob in (bytes(data), bytes(data[:cut])):
        try:
            out = tf.decode(blob, max_bytes=1 << 20)
        except WireError:
            continue
        assert out.nbytes <= 1 << 20


@pytest.mark.parametrize("blob, expected", [
    (b"", "too short"),
    (b"NOPE\x01\x0b\x00\x00", "bad magic"),
    (b"P2PT\x02\x0b\x00\x00", "version 2"),
    (b"P2PT\x01\x63\x00\x00", "unknown dtype code 99"),
    (b"P2PT\x01\x0b\x07\x00", "byte order"),
    (b"P2PT\x01\x0b\x00\x21", "33 dimensions"),
    (b"P2PT\x01\x0b\x00\x02" + struct.pack("<Q", 3), "truncated shape"),
    (b"P2PT\x01\x0b\x00\x01" + struct.pack("<Q", 3) + b"\x00" * 11, "needs 12 data bytes, got 11"),
    (b"P2PT\x01\x0c\x00\x02" + struct.pack("<QQ", 2**40, 2**40), "exceeds"),
    (b"P2PT\x01\x01\x00\x01" + struct.pack("<Q", 2) + b"\x00\x02", "bool data"),
])
def test_bad_headers_say_what_is_wrong(blob, expected):
    with pytest.raises(WireError, match=expected):
        tf.decode(blob)


def test_unsupported_dtype_and_file_cap(tmp_path):
    with pytest.raises(WireError, match="complex64 is not supported"):
        tf.encode(np.zeros(2, np.complex64))
    path = tmp_path / "x.tensor"
    tf.write_file(path, np.arange(1000, dtype=np.int64))
    assert tf.read_file(path).sum() == 499500
    with pytest.raises(WireError, match="exceeds"):
        tf.read_file(path, max_bytes=100)


def test_empty_tensor_with_huge_other_dimensions_is_refused_cleanly():
    blob = b"P2PT\x01\x01\x00\x02" + struct.pack("<QQ", 0, 2**62)
    with pytest.raises(WireError, match="exceeds"):
        tf.decode(blob)
