"""The vocabulary of an alert rule: scope, ``per``, window, comparison and channels. Each
``clean_*`` returns the canonical form or raises a ValidationError keyed by the rule field, whose
message names the part to fix (``scope`` says which filter parameter, ``webhook_urls`` which URL).

- scope: the logs filter vocabulary (analytics.filters), one ``param=value`` per line or joined
  with ``&``: ``metadata.feature=chat``, ``metadata.environment__in=prod,staging``,
  ``model=gpt-4o``, ``api_key=12``. Values are taken literally (no URL decoding); the time
  window is the rule's own, so ``start``/``end`` are refused. Empty: the whole workspace.
- per: evaluate each value of a dimension on its own: ``_user``, ``metadata.<key>``, ``model``,
  ``provider`` or ``api_key``.
- window: rolling ``<n>m``, ``<n>h``, ``<n>d`` (1 minute to 90 days) ending now, or the calendar
  ``today`` / ``month`` so far (UTC).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from django.http import QueryDict
from yarl import URL

from analytics.filters import LogFilter
from analytics.reads.engine import Grouping, ReportError

SCOPE_MAX_LENGTH = 2000
MAX_WEBHOOKS = 5
MAX_EMAILS = 20
URL_MAX_LENGTH = 2000
PER_LIMIT_MAX = 1000
COOLDOWN_MAX_MINUTES = 7 * 24 * 60
COMPARISONS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_WINDOW = re.compile(r"^([1-9][0-9]{0,5})([mhd])$")
_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
_UNIT_NAMES = {"m": "minute", "h": "hour", "d": "day"}
MAX_WINDOW = timedelta(days=90)
CALENDAR_WINDOWS = {"today": "today so far (UTC)", "month": "this calendar month so far (UTC)"}
# Suggestions for forms; any <n>m/h/d in range is accepted.
WINDOW_CHOICES = ["5m", "15m", "1h", "6h", "24h", "7d", "30d", "today", "month"]
PER_CHOICES = ["_user", "metadata.<key>", "model", "provider", "api_key"]


# --- Scope -------------------------------------------------------------------------------


def scope_pairs(text: str) -> list[tuple[str, str]]:
    """(param, value) pairs of a scope text, in order."""
    pairs = []
    for line in text.splitlines():
        for part in line.split("&"):
            if part.strip():
                param, _, value = part.partition("=")
                pairs.append((param.strip(), value.strip()))
    return pairs


def scope_filter(text: str) -> LogFilter:
    """The scope as a validated LogFilter (``clean_scope`` says what is wrong with a bad one)."""
    data = QueryDict(mutable=True)
    for param, value in scope_pairs(text):
        data.appendlist(param, value)
    log_filter = LogFilter(data, extra_params=())
    if not log_filter.is_valid():
        raise ValidationError({"scope": [f"{p}: {' '.join(m)}" for p, m in log_filter.errors.items()]})
    return log_filter


def clean_scope(text: str) -> str:
    """The canonical scope (``param=value`` joined with ``&``), or a ValidationError on ``scope``."""
    text = text or ""
    if len(text) > SCOPE_MAX_LENGTH:
        raise ValidationError({"scope": f"At most {SCOPE_MAX_LENGTH} characters."})
    pairs = scope_pairs(text)
    problems = []
    for param, value in pairs:
        if not param:
            problems.append(f"'={value[:40]}': write each condition as param=value.")
        elif param in LogFilter.WINDOW_PARAMS:
            problems.append(f"{param}: the rule's window sets the time; leave {param} out of the scope.")
    if not problems:
        try:
            scope_filter(text)
        except ValidationError as exc:
            problems = exc.message_dict["scope"]
    if problems:
        raise ValidationError({"scope": problems})
    return "&".join(f"{param}={value}" for param, value in pairs)


# --- Per ---------------------------------------------------------------------------------


def clean_per(text: str) -> str:
    text = (text or "").strip()
    if not text:
        return ""
    grouping = parse_per(text)
    if grouping.kind == "user":
        return "_user"
    if grouping.kind == "metadata":
        return f"metadata.{grouping.key}"
    return grouping.kind


def parse_per(text: str) -> Grouping:
    if text in ("_user", "user"):
        return Grouping("user")
    try:
        return Grouping.parse(text, param="per")
    except ReportError:
        raise ValidationError(
            {"per": f"'{text[:60]}': use _user, metadata.<key>, model, provider or api_key."}
        ) from None


# --- Windows -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    code: str
    length: timedelta | None = None  # rolling windows
    calendar: str = ""  # "today" or "month"

    def bounds(self, now: datetime) -> tuple[datetime, datetime]:
        """[start, end) ending at ``now``."""
        now = now.astimezone(UTC)
        if self.length is not None:
            return now - self.length, now
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.calendar == "month":
            start = start.replace(day=1)
        return start, now

    @property
    def label(self) -> str:
        if self.calendar:
            return CALENDAR_WINDOWS[self.calendar]
        count, unit = int(self.code[:-1]), _UNIT_NAMES[self.code[-1]]
        return f"the last {unit}" if count == 1 else f"the last {count} {unit}s"


def parse_window(code: str) -> Window:
    code = (code or "").strip()
    if code in CALENDAR_WINDOWS:
        return Window(code, calendar=code)
    match = _WINDOW.match(code)
    if match is None:
        raise ValidationError({"window": f"'{code[:20]}': use 5m, 1h, 24h, 7d (<n>m, <n>h, <n>d), today or month."})
    length = int(match.group(1)) * _UNITS[match.group(2)]
    if length > MAX_WINDOW:
        raise ValidationError({"window": "At most 90 days (90d)."})
    return Window(code, length=length)


# --- Comparison --------------------------------------------------------------------------


def breaches(value: float | None, comparison: str, threshold: Decimal | float) -> bool:
    """True when ``value`` meets the condition; no value (no data) never does."""
    if value is None:
        return False
    limit = float(threshold)
    if comparison == "gt":
        return value > limit
    if comparison == "gte":
        return value >= limit
    if comparison == "lt":
        return value < limit
    return value <= limit


# --- Channels ----------------------------------------------------------------------------


def clean_webhook_urls(urls: object) -> list[str]:
    from workspaces.upstream.netguard import BlockedUpstreamError, check_url

    if not isinstance(urls, list) or not all(isinstance(url, str) for url in urls):
        raise ValidationError({"webhook_urls": "Give a list of URLs."})
    cleaned = list(dict.fromkeys(url.strip() for url in urls if url.strip()))
    if len(cleaned) > MAX_WEBHOOKS:
        raise ValidationError({"webhook_urls": f"At most {MAX_WEBHOOKS} webhook URLs."})
    problems = []
    for url in cleaned:
        shown = url[:80]
        if len(url) > URL_MAX_LENGTH or not url.isascii() or any(c <= " " for c in url):
            problems.append(f"{shown}: enter a URL of at most {URL_MAX_LENGTH} characters, without spaces.")
        elif not _is_plain_http_url(url):
            problems.append(f"{shown}: enter an http:// or https:// URL with a host and no user name or password.")
        else:
            try:
                check_url(url)
            except BlockedUpstreamError as exc:
                problems.append(f"{shown}: {exc}; allow the network with UPSTREAM_ALLOWED_NETWORKS if intended.")
    if problems:
        raise ValidationError({"webhook_urls": problems})
    return cleaned


def _is_plain_http_url(url: str) -> bool:
    try:
        parsed = URL(url)
    except (ValueError, UnicodeError):
        return False
    return (
        parsed.scheme in ("http", "https")
        and url.lower().startswith(parsed.scheme + "://")
        and bool(parsed.raw_host)
        and parsed.raw_user is None
        and parsed.raw_password is None
        and parsed.explicit_port != 0
    )


def clean_emails(addresses: object) -> list[str]:
    if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
        raise ValidationError({"emails": "Give a list of e-mail addresses."})
    cleaned = list(dict.fromkeys(a.strip() for a in addresses if a.strip()))
    if len(cleaned) > MAX_EMAILS:
        raise ValidationError({"emails": f"At most {MAX_EMAILS} e-mail addresses."})
    validate = EmailValidator()
    problems = []
    for address in cleaned:
        try:
            validate(address)
        except ValidationError:
            problems.append(f"{address[:80]}: not a valid e-mail address.")
    if problems:
        raise ValidationError({"emails": problems})
    return cleaned


def split_lines(text: str, *, commas: bool = False) -> list[str]:
    """Form input: one item per line (with ``commas``, commas separate items too)."""
    lines = (text or "").splitlines()
    items = [part for line in lines for part in (line.split(",") if commas else [line])]
    return [item.strip() for item in items if item.strip()]
