"""The vocabulary of a policy and its compiled, request-time form.

- scope: the logs filter vocabulary (analytics.filters, as for alert rules), limited to what is
  known before a request is forwarded: ``metadata.<key>[__in|__ne|__exists]``, ``metadata={..}``,
  ``user``, ``model``, ``provider`` and ``api_key``. Empty: every request of the workspace.
- per: one counter per value of ``_user``, ``metadata.<key>``, ``model``, ``provider`` or
  ``api_key``; a request without a value for it is not counted by that policy.
- window: fixed ``minute``, ``hour``, ``day``, calendar ``month`` (day and month in the
  workspace's time zone), or rolling ``<n>m``, ``<n>h``, ``<n>d`` (a sliding-window counter: the
  previous bucket weighted by how much of it is still inside the window, as the ``limits``
  package's sliding window counter does).

``CompiledScope.matches`` runs on every request: precompiled sets, no database, no FilterSet.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError

from analytics.alerts import rules as alert_rules
from analytics.filters import METADATA_PREFIX, parse_metadata_json, parse_metadata_param

LIMIT_KINDS = {"requests": "requests", "tokens": "tokens", "cost": "USD"}
FIXED_WINDOWS = {"minute": 60, "hour": 3600, "day": 86400, "month": 31 * 86400}
WINDOW_LABELS = {"minute": "per minute", "hour": "per hour", "day": "per day", "month": "per calendar month"}
WINDOW_CHOICES = ["minute", "hour", "day", "month", "1h", "24h", "7d", "30d"]
# Scope parameters whose value is known before forwarding; the rest (status, cost, latency) are not.
REQUEST_PARAMS = {"user", "model", "provider", "api_key", "api_key_ids", "metadata"}
_ROLLING = re.compile(r"^([1-9][0-9]{0,4})([mhd])$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}
MAX_ROLLING_SECONDS = 90 * 86400


# --- Scope -------------------------------------------------------------------------------


def clean_scope(text: str) -> str:
    """The canonical scope, or a ValidationError on ``scope`` naming the parameter to fix."""
    canonical = alert_rules.clean_scope(text)
    refused = [
        param
        for param, _ in alert_rules.scope_pairs(canonical)
        if param not in REQUEST_PARAMS and not param.startswith(METADATA_PREFIX)
    ]
    if refused:
        raise ValidationError(
            {
                "scope": [
                    f"{param}: not known before the request is forwarded; a policy scope uses "
                    "metadata.<key>, user, model, provider or api_key."
                    for param in refused
                ]
            }
        )
    return canonical


@dataclass(frozen=True, slots=True)
class MetadataTest:
    key: str
    op: str  # eq/in, ne, exists
    values: frozenset[str]
    exists: bool = True

    def passes(self, metadata: dict[str, str]) -> bool:
        value = metadata.get(self.key)
        if self.op == "exists":
            return (value is not None) == self.exists
        if self.op == "ne":
            return value is None or value not in self.values
        return value is not None and value in self.values


@dataclass(frozen=True, slots=True)
class CompiledScope:
    """A scope as sets over what the gateway has resolved; every part must hold."""

    metadata: tuple[MetadataTest, ...] = ()
    users: frozenset[str] | None = None
    models: frozenset[str] | None = None
    providers: frozenset[str] | None = None
    api_keys: frozenset[int] | None = None

    def matches(self, metadata: dict[str, str], model: str, provider: str, api_key_id: int | None) -> bool:
        if self.models is not None and model not in self.models:
            return False
        if self.providers is not None and provider not in self.providers:
            return False
        if self.api_keys is not None and api_key_id not in self.api_keys:
            return False
        if self.users is not None and metadata.get("_user") not in self.users:
            return False
        return all(test.passes(metadata) for test in self.metadata)


def _list(value: str) -> frozenset[str]:
    return frozenset(item.strip() for item in value.split(",") if item.strip())


def compile_scope(text: str) -> CompiledScope:
    """The request-time form of a clean scope (``clean_scope`` has accepted it)."""
    tests: list[MetadataTest] = []
    sets: dict[str, frozenset] = {}
    for param, value in alert_rules.scope_pairs(text):
        if param.startswith(METADATA_PREFIX):
            conditions = parse_metadata_param(param, [value])
        elif param == "metadata":
            conditions = parse_metadata_json(value)
        else:
            name = {"user": "users", "model": "models", "provider": "providers"}.get(param, "api_keys")
            items = _list(value)
            if name == "api_keys":
                items = frozenset(int(item) for item in items)
            # Repeated parameters narrow (AND), like the FilterSet's last-value-wins would not:
            # the intersection is the strictest reading and never widens a scope.
            sets[name] = sets[name] & items if name in sets else items
            continue
        tests += [
            MetadataTest(c.key, "in" if c.op in ("eq", "in") else c.op, frozenset(c.values), c.exists)
            for c in conditions
        ]
    return CompiledScope(metadata=tuple(tests), **sets)


# --- Per ---------------------------------------------------------------------------------


def clean_per(text: str) -> str:
    return alert_rules.clean_per(text)


def per_reader(per: str) -> tuple[str, str]:
    """(kind, metadata key) of a clean ``per``: kind is "", user, metadata, model, provider, api_key."""
    if not per:
        return "", ""
    if per == "_user":
        return "user", "_user"
    if per.startswith(METADATA_PREFIX):
        return "metadata", per[len(METADATA_PREFIX) :]
    return per, ""


def per_filter_param(per: str, value: str) -> tuple[str, str]:
    """The scope condition selecting one value of ``per`` (for usage reads and rebuilds)."""
    kind, key = per_reader(per)
    if kind in ("user", "metadata"):
        return f"metadata.{key}", value  # exact value: no comma splitting
    return kind, value


# --- Windows -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyWindow:
    code: str
    rolling_seconds: int = 0  # 0: a fixed window

    @property
    def label(self) -> str:
        if self.rolling_seconds:
            count, unit = int(self.code[:-1]), {"m": "minute", "h": "hour", "d": "day"}[self.code[-1]]
            return f"per rolling {count} {unit}{'s' if count > 1 else ''}"
        return WINDOW_LABELS[self.code]

    @property
    def rebuilt(self) -> bool:
        """Counters lost by Redis are rebuilt from the logs for every window but the minute
        (a lost minute forgives at most one minute of requests; rebuilding it would cost a
        query per value and minute)."""
        return self.code != "minute"

    def bucket(self, now: float, tz_name: str) -> tuple[int, float, float]:
        """(bucket start as the counter's id, start, end) of the bucket holding ``now``."""
        if self.rolling_seconds:
            length = self.rolling_seconds
            start = now // length * length
            return int(start), start, start + length
        if self.code == "minute":
            start = now // 60 * 60
            return int(start), start, start + 60
        start, end = _calendar_bucket(self.code, tz_name, int(now))
        return int(start), start, end


@functools.lru_cache(maxsize=256)
def _calendar_bucket(code: str, tz_name: str, second: int) -> tuple[float, float]:
    # Memoised per second: the hot path asks this for every matching policy.
    tz = ZoneInfo(tz_name)
    local = datetime.fromtimestamp(second, tz)
    if code == "hour":
        start = local.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=1)
    elif code == "day":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)  # wall-clock arithmetic: the next local midnight
    else:
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=32)).replace(day=1)
    return start.timestamp(), end.timestamp()


def parse_window(code: str) -> PolicyWindow:
    code = (code or "").strip()
    if code in FIXED_WINDOWS:
        return PolicyWindow(code)
    match = _ROLLING.match(code)
    if match is None:
        raise ValidationError(
            {"window": f"'{code[:20]}': use minute, hour, day, month, or a rolling <n>m, <n>h, <n>d (e.g. 24h)."}
        )
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > MAX_ROLLING_SECONDS:
        raise ValidationError({"window": "A rolling window spans at most 90 days (90d)."})
    return PolicyWindow(code, rolling_seconds=seconds)


def retry_after(window: PolicyWindow, now: float, tz_name: str) -> int:
    """Seconds until the bucket holding ``now`` ends (a rolling window frees up earlier)."""
    _, _, end = window.bucket(now, tz_name)
    return max(1, math.ceil(end - now))
