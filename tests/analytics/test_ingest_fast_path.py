"""The ingest fast path (coerce_fast) must build exactly the row the reference coercion
(coerce_log) builds, or step aside (None) so the reference handles the record."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from analytics import log_rows
from tests.analytics.records import log_record


class _Workspace:
    id = 7


def _base() -> dict:
    return log_record(_Workspace())


awkward = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=300),
    st.sampled_from(["0.5", "1e3", "-0.00000001", "12345678901.5", "2026-01-02T03:04:05", "NaN", "1" * 20]),
    st.sampled_from([str(uuid.uuid4()), str(uuid.uuid4()).upper(), uuid.uuid4().hex]),
    st.dictionaries(st.text(max_size=5), st.one_of(st.text(max_size=5), st.integers()), max_size=3),
    st.lists(st.integers(), max_size=3),
)
fields = st.sampled_from([attname for attname, *_ in log_rows.LOG_FIELDS])


@settings(max_examples=600, deadline=None)
@given(changes=st.dictionaries(fields, awkward, max_size=4))
def test_the_fast_path_agrees_with_the_reference(changes):
    record = {**_base(), **changes}
    fast = log_rows.coerce_fast(record)
    try:
        reference = log_rows.coerce_log(record)
    except log_rows.MalformedRecord:
        assert fast is None
        return
    if fast is not None:
        assert fast == reference
        assert {k: type(v) for k, v in fast.items()} == {k: type(v) for k, v in reference.items()}


def test_a_gateway_record_takes_the_fast_path():
    record = _base()
    assert log_rows.coerce_fast(record) == log_rows.coerce_log(record)
