"""Dashboard query-string parsing: the time window every page shares (a preset like ``24h`` or a
custom ``start``/``end``) and the per-page choices (group-by dimension, sort). Everything a page
shows comes from the URL, so a view can be shared by link and back/forward work.

Log filters themselves are ``analytics.filters.LogFilter`` (the one vocabulary shared with the
REST API); this module only parses the window (its rule, presets included, is analytics.reads.window's)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS
from django.http import QueryDict
from django.utils import timezone

from analytics.filters import IsoDateTimeField
from analytics.reads.window import DEFAULT_PRESET, PRESETS, Window
from config.parsing import clean_text

# Longest custom window a page will aggregate (rollups keep 400 days at most anyway).
MAX_WINDOW = timedelta(days=400)
# Parameters that are the dashboard's own, not LogFilter's.
DASHBOARD_PARAMS = frozenset({"range", "cursor", "group", "sort", "dir", "q", "log", "format", "key", "page"})


class WindowForm(forms.Form):
    range = forms.ChoiceField(choices=[(k, v[0]) for k, v in PRESETS.items()], required=False)
    start = IsoDateTimeField(required=False)
    end = IsoDateTimeField(required=False)

    def clean(self) -> dict:
        cleaned = super().clean()
        start, end = cleaned.get("start"), cleaned.get("end")
        if start and end:
            if start >= end:
                raise forms.ValidationError("The window start must be before its end.")
            if end - start > MAX_WINDOW:
                raise forms.ValidationError("Choose a window of at most 400 days.")
        return cleaned


def parse_window(params: QueryDict, *, now: datetime | None = None) -> tuple[Window, list[str]]:
    """The window the query string asks for, and errors to show (then the default is used).

    ``start``/``end`` (custom) win over ``range``; a custom window without an end ends now."""
    now = now or timezone.now()
    form = WindowForm(params)
    errors: list[str] = []
    if not form.is_valid():
        errors = [
            msg if name == NON_FIELD_ERRORS else f"{name}: {msg}"
            for name, messages in form.errors.items()
            for msg in messages
        ]
        data = {}
    else:
        data = form.cleaned_data
    if data.get("start"):
        return Window.custom(data["start"], data.get("end") or now), errors
    return Window.of_preset(data.get("range") or DEFAULT_PRESET, now), errors


def log_filter_data(params: QueryDict, window: Window) -> QueryDict:
    """The query string LogFilter should see: the dashboard's own parameters removed and the
    window spelled as start/end (the log list shows raw logs, so it uses the exact window)."""
    data = params.copy()
    for name in DASHBOARD_PARAMS:
        data.pop(name, None)
    data["start"] = window.start.isoformat()
    data["end"] = (window.end - timedelta(microseconds=1)).isoformat()
    return data


GROUP_DIMENSIONS = {
    "model": "Model",
    "provider": "Provider",
    "api_key": "API key",
    "user": "User",
}


def parse_group(value: str | None, known_keys: list[str]) -> str:
    """``model``/``provider``/``api_key``/``user`` or ``metadata.<key>``; defaults to the first
    metadata key other than ``_user``, else ``model``. Raises InvalidParameter for text no
    metadata key can hold (NUL), which the page reports instead of grouping by a default."""
    value = clean_text(value, param="group", max_length=137) if value else ""
    if value in GROUP_DIMENSIONS:
        return value
    if value.startswith("metadata.") and len(value) > len("metadata."):
        return value
    for key in known_keys:
        if key != "_user":
            return f"metadata.{key}"
    return "model"
