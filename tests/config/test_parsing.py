"""config.parsing: the one parser for integers, times and text taken from requests."""

from datetime import UTC, datetime

import pytest

from config.parsing import InvalidParameter, clean_text, parse_int, parse_int_list, parse_timestamp


@pytest.mark.parametrize("raw", ["²", "٣", "1" * 5000, "12a", "", " ", "1.5", "0x10", "9" * 20])
def test_it_refuses_what_is_not_an_ascii_integer(raw):
    with pytest.raises(InvalidParameter) as exc:
        parse_int(raw, param="limit")
    assert exc.value.param == "limit"
    assert "limit" in exc.value.message


def test_it_reads_integers_within_bounds():
    assert parse_int(" 42 ", param="x", minimum=1, maximum=100) == 42
    assert parse_int("-3", param="x") == -3
    with pytest.raises(InvalidParameter, match="from 1 to 100"):
        parse_int("101", param="x", minimum=1, maximum=100)
    assert parse_int_list("1, 2,,3", param="ids") == [1, 2, 3]
    with pytest.raises(InvalidParameter):
        parse_int_list("1,²", param="ids")


@pytest.mark.parametrize(
    "raw",
    [
        "0001-01-01T00:00:00+23:59",
        "9999-12-31T23:59:59-23:59",
        "1969-12-31T23:59:59Z",
        "9000-01-01",
        "x",
        "2" * 5000,
        "2025-01-01T00:00:00\x00junk",
    ],
)
def test_it_refuses_times_outside_the_range_without_overflowing(raw):
    with pytest.raises(InvalidParameter) as exc:
        parse_timestamp(raw, param="start")
    assert exc.value.param == "start"


def test_it_normalises_offsets_to_utc():
    assert parse_timestamp("2025-01-01T10:00:00+23:59", param="t") == datetime(2024, 12, 31, 10, 1, tzinfo=UTC)
    assert parse_timestamp("2025-01-01T10:00:00 02:00", param="t") == datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
    assert parse_timestamp("2025-01-01", param="t") == datetime(2025, 1, 1, tzinfo=UTC)


def test_it_refuses_nul_in_text():
    with pytest.raises(InvalidParameter, match="actor"):
        clean_text("a\x00b", param="actor")
    assert clean_text(" ok ", param="actor") == "ok"


def test_it_can_keep_the_spaces_around_text():
    assert clean_text(" v ", param="metadata.env", strip=False) == " v "
    with pytest.raises(InvalidParameter) as exc:
        clean_text("x" * 11, param="q", max_length=10)
    assert exc.value.reason == "at most 10 characters."
