"""job.yaml's verification key: every form parses to its strategy, a canonical text, clear errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jobspec_helpers import pipeline, workspace

from p2pcompute.scheduler import spec
from p2pcompute.scheduler.verification.compare import Close, Exact
from p2pcompute.scheduler.verification.policy import canonical, parse
from p2pcompute.scheduler.verification.strategies import (Adaptive, Check, NoVerification, Replicate, SpotCheck,
                                                          Tolerance)


@pytest.mark.parametrize("text, expected", [
    ("none", NoVerification()),
    ("replicate", Replicate(2, 2)),
    ("replicate(3)", Replicate(3, 2)),
    (" replicate( 5 , agree = 3 ) ", Replicate(5, 3)),
    ("replicate(n=4, agree=4, rtol=1e-6)", Replicate(4, 4, Close(1e-6, 0.0))),
    ("replicate(2, anchor=1)", Replicate(2, 2, Exact(), True)),
    ("replicate(3, agree=2, anchor=0)", Replicate(3, 2)),
    ("adaptive", Adaptive(100, 0.1)),
    ("adaptive(threshold=20, rate=0.05)", Adaptive(20, 0.05)),
    ("spot-check", SpotCheck(0.05)),
    ("spot-check(0.25, atol=1e-9)", SpotCheck(0.25, Close(0.0, 1e-9))),
    ("check", Check()),
    ("tolerance", Tolerance()),
    ("tolerance(1e-5, 1e-8)", Tolerance(1e-5, 1e-8)),
    ("tolerance(rtol=1e-5, n=3)", Tolerance(1e-5, 0.0, 3)),
])
def test_every_form_parses_to_its_strategy_and_back(text, expected):
    got = parse(text)
    assert got == expected
    assert parse(got.canonical()) == got and canonical(got.canonical()) == got.canonical()
    assert isinstance(got.compare, (Exact, Close))


@pytest.mark.parametrize("text, message", [
    ("majority", "'majority' is not a strategy"),
    ("replicate(1)", "replicate: n is a whole number between 2 and 16, not 1"),
    ("replicate(2.5)", "replicate: n is a whole number between 2 and 16, not 2.5"),
    ("replicate(3, agree=0)", "replicate: agree is between 1 and n (3)"),
    ("replicate(3, n=3)", "replicate: n is given twice"),
    ("replicate(3, anchor=2)", "replicate: anchor is 0 (agreement is enough) or 1"),
    ("replicate(agree=2, 3)", "replicate: positional '3' after named ones"),
    ("replicate(1, 2, 3, 4, 5, 6)", "too many"),
    ("adaptive(rate=1.5)", "adaptive: rate is a number between 0 and 1, not 1.5"),
    ("adaptive(rate=nan)", "adaptive: rate is a number between 0 and 1, not nan"),
    ("spot-check(0)", "spot-check: rate is a share of tasks above 0"),
    ("check(3)", "check takes no arguments"),
    ("tolerance(rtol=-1)", "tolerance: rtol is a number between 0 and 1, not -1"),
    ("tolerance(speed=1)", "tolerance: unknown argument 'speed' (it takes rtol, atol, n)"),
    ("tolerance(rtol=1e-3", "is not a strategy"),
    ("x" * 300, "longer than 200 characters"),
    (3, "3 is not a strategy"),
])
def test_mistakes_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=None) as exc:
        parse(text)
    assert message in str(exc.value)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_any_text_parses_or_raises_value_error(text):
    try:
        got = parse(text)
    except ValueError as exc:
        assert str(exc)
    else:
        assert parse(got.canonical()) == got


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 16), st.data(), st.floats(0, 1), st.floats(0, 1e3))
def test_canonical_text_round_trips(n, data, rtol, atol):
    k = data.draw(st.integers(1, n))
    for s in (Replicate(n, k), Replicate(n, k, Close(rtol, atol)), Tolerance(rtol, atol, n), SpotCheck(max(rtol, 1e-9)),
              Adaptive(n, rtol, Close(rtol, atol))):
        assert parse(s.canonical()) == s


def test_the_job_spec_carries_the_canonical_text(tmp_path):
    ws = workspace(tmp_path)
    doc = pipeline()
    doc["verification"] = "replicate( 3 )"
    got, problems = spec.check(doc, ws)
    assert not problems and got.verification == "replicate(3, agree=2)"
    doc["verification"] = "tolerance(rtol=2)"
    got, problems = spec.check(doc, ws)
    assert [str(p) for p in problems] == ["verification: tolerance: rtol is a number between 0 and 1, not 2"]
    del doc["verification"]
    assert spec.check(doc, ws)[0].verification == "none"
