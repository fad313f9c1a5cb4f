"""runner.py's pure helpers: the suffix a fetched input gets from its bytes, the inline scalar of an output."""

import io

import numpy as np

from p2pcompute.ops import tensor_format
from p2pcompute.scheduler.runner import _scalar, suffix_of


def test_a_fetched_input_is_named_by_what_its_bytes_are():
    buf = io.BytesIO()
    np.save(buf, np.ones(3))
    assert suffix_of(buf.getvalue()[:8]) == ".npy"
    assert suffix_of(tensor_format.encode(np.ones(3))[:8]) == ".tensor"
    assert suffix_of(b"II*\x00rest") == suffix_of(b"MM\x00*rest") == ".tif"
    assert suffix_of(b"garbage!") == ".bin"


def test_only_a_finite_one_element_value_is_carried_inline():
    assert _scalar(2.5) == 2.5 and _scalar([[3]]) == 3.0 and _scalar(True) == 1.0
    assert _scalar([1.0, 2.0]) is None and _scalar(float("nan")) is None and _scalar(None) is None
    assert _scalar("1") is None
