"""The one place where a value from a request (query string, header, form, cursor) becomes an
integer, a time or a piece of text. Every caller names the parameter, so the error it turns
into (a 400 for the REST API and the gateway, a form error on a page) says what to fix.

Why not ``int()`` / ``str.isdigit()`` / ``datetime.fromisoformat`` at each call site: ``"²"``
passes ``isdigit`` and then fails ``int``; 5,000 digits pass both and overflow Python's
int-from-str limit (ValueError) or the database's bigint (DataError); ``+23:59`` offsets near
year 1 or 9999 overflow on conversion to UTC (OverflowError) or reach Postgres unnormalised;
NUL bytes in text are refused by Postgres as a DataError. Each of those was a 500.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

# ASCII digits only (``\d`` and str.isdigit accept other scripts' digits and superscripts),
# an optional sign, and no more digits than a 64-bit integer can hold.
_INT = re.compile(r"[+-]?[0-9]{1,19}")
BIGINT_MAX = 2**63 - 1
BIGINT_MIN = -(2**63)

# The range of times Portico stores and queries; anything outside is an input error.
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(9000, 1, 1, tzinfo=UTC)
# "2024-05-01T10:00:00 02:00": a '+' in an unencoded query string arrives as a space.
_SPACE_FOR_PLUS = re.compile(r"(T\d\d:\d\d(?::\d\d(?:\.\d+)?)?) (\d\d(?::?\d\d)?)$")
_MAX_TIME_CHARS = 64


class InvalidParameter(ValueError):
    """A request value that cannot be used; ``param`` names it, ``message`` says what to send."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message

    @property
    def reason(self) -> str:
        """The message without its leading ``param:``, for callers that name the parameter
        themselves (a form field's error list, DRF's ``{param: [reason]}``)."""
        return self.message.removeprefix(f"{self.param}: ")


def parse_int(raw: object, *, param: str, minimum: int = BIGINT_MIN, maximum: int = BIGINT_MAX) -> int:
    """A whole number written in ASCII digits within [minimum, maximum]."""
    text = raw.strip() if isinstance(raw, str) else str(raw)
    if not _INT.fullmatch(text) or not minimum <= (value := int(text)) <= maximum:
        raise InvalidParameter(param, _int_message(param, minimum, maximum))
    return value


def _int_message(param: str, minimum: int, maximum: int) -> str:
    if minimum == BIGINT_MIN and maximum == BIGINT_MAX:
        return f"{param}: enter a whole number."
    if maximum == BIGINT_MAX:
        return f"{param}: enter a whole number of at least {minimum}."
    return f"{param}: enter a whole number from {minimum} to {maximum}."


def parse_int_list(raw: str, *, param: str, minimum: int = BIGINT_MIN, maximum: int = BIGINT_MAX) -> list[int]:
    """A comma-separated list of whole numbers; empty items are dropped."""
    return [parse_int(item, param=param, minimum=minimum, maximum=maximum) for item in raw.split(",") if item.strip()]


def parse_timestamp(raw: object, *, param: str) -> datetime:
    """An ISO 8601 date or date-time as an aware UTC datetime within [1970, 9000).
    Naive values are UTC; any offset Python accepts (up to +/-23:59) is normalised to UTC."""
    if isinstance(raw, datetime):
        parsed = raw
    else:
        text = str(raw).strip()
        # fromisoformat stops reading at a NUL ("2025-01-01\x00junk" parses): refuse it here.
        if len(text) > _MAX_TIME_CHARS or "\x00" in text:
            raise _bad_time(param)
        text = _SPACE_FOR_PLUS.sub(r"\1+\2", text)
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise _bad_time(param) from None
    try:
        parsed = parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except OverflowError:  # 0001-01-01T00:00:00+23:59 is before year 1 in UTC
        raise _out_of_range(param) from None
    if not MIN_TIME <= parsed < MAX_TIME:
        raise _out_of_range(param)
    return parsed


def _bad_time(param: str) -> InvalidParameter:
    return InvalidParameter(param, f"{param}: enter an ISO 8601 date-time, e.g. 2025-01-31T12:00:00Z.")


def _out_of_range(param: str) -> InvalidParameter:
    return InvalidParameter(param, f"{param}: enter a date-time between 1970 and 9000.")


def clean_text(raw: object, *, param: str, max_length: int = 1000, strip: bool = True) -> str:
    """Text from a request: stripped (unless ``strip=False``: metadata values compare exactly),
    at most ``max_length`` characters, no NUL byte (Postgres refuses NUL in text; it is never
    part of a real value)."""
    text = str(raw).strip() if strip else str(raw)
    if "\x00" in text:
        raise InvalidParameter(param, f"{param}: must not contain NUL characters.")
    if len(text) > max_length:
        raise InvalidParameter(param, f"{param}: at most {max_length} characters.")
    return text
