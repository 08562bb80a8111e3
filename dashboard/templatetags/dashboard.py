"""Template helpers for the dashboard: query-string edits (every view state lives in the URL)
and number formatting for tiles and tables."""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal

from django import template
from django.http import QueryDict
from django.utils.html import format_html
from django.utils.safestring import mark_safe

register = template.Library()

NONE = "\u2013"  # an en dash where there is no value

# Changing a filter starts the list again and closes an open log.
_RESET = ("cursor", "log", "before")


def _encode(params: QueryDict) -> str:
    encoded = params.urlencode()
    return f"?{encoded}" if encoded else "?"


def _base(params: QueryDict) -> str:
    """``params`` without the reset parameters, encoded; memoised on the QueryDict because a
    log table builds a few hundred links from the same one."""
    cached = getattr(params, "_portico_base", None)
    if cached is None:
        copy = params.copy()
        for name in _RESET:
            copy.pop(name, None)
        cached = copy.urlencode()
        with contextlib.suppress(AttributeError):  # a stand-in without attributes
            params._portico_base = cached
    return cached


def _append(params: QueryDict, name: str, value: object) -> str:
    extra = QueryDict(mutable=True)
    extra[name] = str(value)
    base = _base(params)
    return f"?{base}&{extra.urlencode()}" if base else f"?{extra.urlencode()}"


@register.simple_tag
def qs(params: QueryDict, **changes: object) -> str:
    """The current query string with ``changes`` applied (None or "" removes a parameter)."""
    if len(changes) == 1:
        [(name, value)] = changes.items()
        if name in _RESET and value not in (None, ""):
            return _append(params, name, value)  # the common case: log=<id>, cursor=<c>
    params = params.copy()
    for name in _RESET:
        params.pop(name, None)
    for name, value in changes.items():
        params.pop(name, None)
        if value not in (None, ""):
            params[name] = str(value)
    return _encode(params)


@register.simple_tag
def qs_add(params: QueryDict, name: str, value: object) -> str:
    """The current query string plus ``name=value`` (kept once)."""
    if str(value) not in params.getlist(name):
        return _append(params, name, value)
    params = params.copy()
    for reset in _RESET:
        params.pop(reset, None)
    if str(value) not in params.getlist(name):
        params.appendlist(name, str(value))
    return _encode(params)


@register.simple_tag
def qs_remove(params: QueryDict, name: str, value: object) -> str:
    """The current query string without ``name=value``."""
    params = params.copy()
    for reset in _RESET:
        params.pop(reset, None)
    params.setlist(name, [v for v in params.getlist(name) if v != str(value)])
    return _encode(params)


@register.simple_tag
def sort_link(params: QueryDict, column: str, current: str, desc: bool) -> str:
    """Link for a sortable header: a new column sorts descending, the same one flips."""
    direction = "asc" if column == current and desc else "desc"
    if column == "value" and column != current:
        direction = "asc"
    return qs(params, sort=column, dir=direction)


@register.filter
def compact(value: object) -> str:
    """1234 -> 1.2k, 2500000 -> 2.5M."""
    if value is None:
        return NONE
    number = float(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= limit:
            return f"{number / limit:.1f}{suffix}".replace(".0" + suffix, suffix)
    return f"{number:,.0f}" if number == int(number) else f"{number:,.1f}"


@register.filter
def money(value: object) -> str:
    if value is None:
        return NONE
    number = float(value) if isinstance(value, Decimal | int | float | str) else 0.0
    if number == 0:
        return "$0"
    if abs(number) < 0.01:
        text = f"{number:.6f}".rstrip("0").rstrip(".")
        return "<$0.000001" if text in ("0", "-0") else f"${text}"
    if abs(number) < 100:
        return f"${number:,.2f}"
    return f"${number:,.0f}"


@register.filter
def ms(value: object) -> str:
    if value is None:
        return NONE
    number = float(value)
    if number >= 10_000:
        return f"{number / 1000:.1f} s"
    return f"{number:,.0f} ms"


@register.filter
def pct(value: object, digits: int = 1) -> str:
    if value is None:
        return NONE
    return f"{float(value) * 100:.{digits}f}%"


@register.filter
def delta(change: float | None, good: str = "up") -> str:
    """A change against the previous window, coloured by whether up is good for this metric."""
    if change is None:
        return mark_safe('<span class="delta muted">no previous data</span>')
    if abs(change) < 0.0005:
        return mark_safe('<span class="delta muted">±0% vs previous</span>')
    up = change > 0
    tone = "good" if up == (good == "up") else "bad"
    arrow = "▲" if up else "▼"
    return format_html(
        '<span class="delta {}"><span aria-hidden="true">{}</span> {}% vs previous</span>',
        tone,
        arrow,
        f"{abs(change) * 100:.1f}",
    )


@register.filter
def pretty_json(value: object) -> str:
    """A body or JSON value indented for reading; non-JSON text is returned as is."""
    if value in (None, ""):
        return ""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


@register.filter
def sorted_items(value: dict | None) -> list[tuple]:
    return sorted((value or {}).items())


@register.filter
def status_tone(status: int | None) -> str:
    if status is None:
        return "muted"
    if status < 400:
        return "ok"
    return "warn" if status < 500 else "bad"


@register.filter
def normalize(value: object) -> object:
    """A Decimal rate without trailing zeros (2.500000 -> 2.5); None stays None (for ``default``)."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return value


@register.filter
def get_item(mapping: dict, key: object) -> object:
    return (mapping or {}).get(key)


@register.filter
def jsonvalue(value: object) -> str:
    """An audit value as compact JSON (strings unquoted)."""
    if value is None:
        return NONE
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


@register.simple_tag
def logs_query(params: QueryDict, name: str, value: object) -> str:
    """A logs-page query for the same window filtered by ``name=value`` (drill-down links)."""
    query = QueryDict(mutable=True)
    for keep in ("range", "start", "end"):
        if keep in params:
            query.setlist(keep, params.getlist(keep))
    query[name] = str(value)
    return _encode(query)
