"""The log filter on dashboard pages: the Logs page's vocabulary (analytics.filters.LogFilter)
read from the URL, shown as removable chips, and the filter bar's "add key = value" inputs
folded into a clean ``metadata.<key>`` URL. Shared by Logs, Overview, Summary, Users, Errors."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict

from analytics import dashboard_selectors as ds
from analytics.filters import LogFilter
from analytics.forms import DASHBOARD_PARAMS, log_filter_data
from analytics.models import MetadataKey, RequestLog
from analytics.reads.window import Window
from config.parsing import InvalidParameter, parse_int
from workspaces.access import WorkspaceAccess


def known_keys_of(access: WorkspaceAccess) -> list[str]:
    return list(MetadataKey.objects.filter(workspace=access.workspace).order_by("key").values_list("key", flat=True))


def request_log_filter(request: HttpRequest, window: Window) -> LogFilter:
    return LogFilter(log_filter_data(request.GET, window), queryset=RequestLog.objects.all())


def filter_chips(params: QueryDict, api_keys: dict[int, str], configs: dict | None = None) -> list[dict]:
    """The active filters as removable chips (label and the parameter to drop)."""
    chips = []
    for name in params:
        if name in ("range", "start", "end", "cursor", "log", "add_key", "add_value"):
            continue
        for value in params.getlist(name):
            if not value:
                continue
            label_value = value
            if name in ("api_key", "api_key_ids"):
                label_value = ", ".join(_api_key_label(v, api_keys) for v in value.split(","))
            elif name == "config" and configs:
                label_value = ", ".join(
                    f"{configs[v.strip()].slug} ({v.strip()})" if v.strip() in configs else v for v in value.split(",")
                )
            label = name.removeprefix("metadata.").replace("__", " ") if name.startswith("metadata.") else name
            chips.append({"name": name, "value": value, "label": label, "label_value": label_value})
    return chips


def _api_key_label(raw: str, api_keys: dict[int, str]) -> str:
    try:
        return api_keys.get(parse_int(raw, param="api_key"), raw)
    except InvalidParameter:
        return raw  # the filter reports it; the chip shows it as typed


def _with_added_metadata(request: HttpRequest) -> str | None:
    """The filter bar's "add key = value" inputs folded into a ``metadata.<key>`` parameter."""
    key = request.GET.get("add_key", "").strip()
    params = request.GET.copy()
    params.pop("add_key", None)
    value = params.pop("add_value", [""])[-1].strip()
    params.pop("cursor", None)
    if key and value:
        params.appendlist(f"metadata.{key}", value)
    return f"{request.path}?{params.urlencode()}"


def added_metadata_redirect(request: HttpRequest) -> HttpResponse:
    """The filter bar's key/value inputs submitted: go to the clean URL with the filter."""
    url = _with_added_metadata(request)
    if request.headers.get("HX-Request"):
        # Re-run as the clean URL and push that one into the history.
        response = HttpResponse(status=204)
        response["HX-Location"] = json.dumps({"path": url, "target": "#results"})
        return response
    return HttpResponseRedirect(url)


def page_filter(
    request: HttpRequest, access: WorkspaceAccess, window: Window, known_keys: list[str] | None = None
) -> tuple[LogFilter | None, dict]:
    """The log filter an analytics page applies (the Logs page's vocabulary, from the URL) and
    what the page shows of it: chips, errors, the URL without filters. An invalid filter is
    reported and the page answers unfiltered, as a 400."""
    log_filter = request_log_filter(request, window)
    kept = {name: request.GET.getlist(name) for name in ("range", "start", "end", "group", "sort", "dir")}
    clear = QueryDict(mutable=True)
    for name, values in kept.items():
        clear.setlist(name, values)
    has_filter = any(name not in DASHBOARD_PARAMS and name not in ("start", "end") for name in request.GET)
    context = {
        "chips": [
            chip
            for chip in (filter_chips(request.GET, ds.api_key_names(access.workspace)) if has_filter else [])
            if chip["name"] not in DASHBOARD_PARAMS
        ],
        "clear_url": f"?{clear.urlencode()}",
        "filter_errors": [],
        "known_keys": known_keys_of(access) if known_keys is None else sorted(known_keys),
    }
    if not log_filter.is_valid():
        context["filter_errors"] = [f"{name}: {' '.join(msgs)}" for name, msgs in log_filter.errors.items()]
        return None, context
    return log_filter, context
