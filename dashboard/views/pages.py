"""Dashboard pages: overview, logs, summary, users, errors and metadata keys.

Thin function views: ``workspace_view`` resolves the workspace (404 for outsiders), the query
string says everything a page shows (window, filters, grouping, sort), selectors do the reads.
A page asked for by htmx with ``HX-Target: results`` gets only its ``_*.html`` partial, the
same template the full page includes, so filters refresh in place and the URL is pushed.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, QueryDict, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET

from analytics import dashboard_selectors as ds
from analytics import selectors
from analytics.forms import GROUP_DIMENSIONS, parse_group, parse_window
from analytics.models import MetadataKey, RequestLog
from analytics.reads.export import export_group_rows
from analytics.reads.metrics import sort_column
from analytics.reads.window import PRESETS, Window
from config.parsing import InvalidParameter, clean_text
from dashboard.templatetags.dashboard import logs_query
from dashboard.views import fragments
from dashboard.views.filters import (
    added_metadata_redirect,
    filter_chips,
    known_keys_of,
    page_filter,
    request_log_filter,
)
from dashboard.views.fragments import page_for_navigation
from workspaces.access import WorkspaceAccess, user_memberships, workspace_view
from workspaces.models import ApiKey

LOG_PAGE_SIZE = 50
TABLE_COLUMNS = [
    ("value", "Value", False),
    ("requests", "Requests", True),
    ("share", "Share", True),
    ("cost", "Cost", True),
    ("avg_tokens", "Avg tokens", True),
    ("avg_latency_ms", "Avg latency", True),
    ("p95_latency_ms", "p95 latency", True),
    ("success_rate", "Success", True),
    ("last_seen", "Last seen", True),
]
USER_COLUMNS = [
    ("value", "User", False),
    ("requests", "Requests", True),
    ("cost", "Cost", True),
    ("total_tokens", "Tokens", True),
    ("avg_latency_ms", "Avg latency", True),
    ("success_rate", "Success", True),
    ("last_seen", "Last seen", True),
]
EXPORT_LIMIT = 50_000
SUMMARY_TOTALS = (
    "unpriced_requests",
    "cached_prompt_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "audio_prompt_tokens",
    "audio_completion_tokens",
)


def _is_partial(request: HttpRequest, target: str = "results") -> bool:
    return (
        request.headers.get("HX-Request") == "true"
        and request.headers.get("HX-Target") == target
        and not request.headers.get("HX-History-Restore-Request")
    )


def _render(request: HttpRequest, page: str, partial: str, context: dict, target: str = "results") -> HttpResponse:
    template = partial if _is_partial(request, target) else page
    # A query string with errors still gets its page (the errors shown, defaults used), but as
    # a 400 so a client or a monitor can tell. base.html has htmx swap 400s in as well.
    status = 400 if context.get("window_errors") or context.get("filter_errors") else 200
    response = render(request, template, context, status=status)
    # The same URL answers with a page or a fragment: caches must keep them apart.
    patch_vary_headers(response, ["HX-Request", "HX-Target"])
    return response


def _base_context(request: HttpRequest, access: WorkspaceAccess, page: str, window: Window | None = None) -> dict:
    return {
        "access": access,
        "workspace": access.workspace,
        "page": page,
        "window": window,
        "presets": PRESETS,
        "memberships": user_memberships(request.user),
    }


# --- Login and home ----------------------------------------------------------------------


class LoginView(auth_views.LoginView):
    """Django's login page, plus the demo account hint only where that account exists: the
    demo (make run) creates admin/admin with DEBUG on; a production login page must not
    advertise a password."""

    redirect_authenticated_user = True

    def get_context_data(self, **kwargs: object) -> dict:
        return {**super().get_context_data(**kwargs), "demo_login_hint": settings.DEBUG}


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """One workspace: its overview. Several: a chooser. None: how to get access."""
    memberships = user_memberships(request.user)
    if len(memberships) == 1:
        return redirect("dashboard:overview", slug=memberships[0].workspace.slug)
    # The workspace switcher without JavaScript submits ?ws=<the workspace's overview URL>;
    # only the caller's own workspaces are followed (never an arbitrary URL: no open redirect).
    if chosen := request.GET.get("ws"):
        for m in memberships:
            if chosen in (m.workspace.slug, reverse("dashboard:overview", args=[m.workspace.slug])):
                return redirect("dashboard:overview", slug=m.workspace.slug)
    return render(request, "dashboard/home.html", {"memberships": memberships})


# --- Overview ----------------------------------------------------------------------------


@workspace_view()
@require_GET
def overview(request: HttpRequest, access: WorkspaceAccess) -> HttpResponse:
    if "add_key" in request.GET:
        return added_metadata_redirect(request)
    window, errors = parse_window(request.GET)
    log_filter, filter_context = page_filter(request, access, window)
    kpis = ds.kpis(access.workspace, window, log_filter)
    context = {
        **_base_context(request, access, "overview", window),
        **filter_context,
        "kpis": kpis,
        "window_errors": errors,
    }
    hours, previous_hours = kpis.pop("hours")
    if kpis["current"]["requests"] or kpis["previous"]["requests"] or (log_filter is not None and context["chips"]):
        context["series"] = ds.timeseries(access.workspace, window, hours=hours)
        context["previous_series"] = ds.timeseries(access.workspace, window.previous(), hours=previous_hours, p95=False)
    else:
        context.update(_empty_state(request, access))
    return _render(request, "dashboard/overview.html", "dashboard/_overview.html", context)


def _empty_state(request: HttpRequest, access: WorkspaceAccess) -> dict:
    """What a new workspace needs to see: how to send a first request with its key."""
    has_logs = RequestLog.objects.filter(workspace=access.workspace).exists()
    key = ApiKey.objects.filter(workspace=access.workspace, is_active=True).order_by("-created_at").first()
    provider = access.workspace.providers.filter(is_active=True).order_by("slug").first()
    return {
        "empty": {
            "has_logs": has_logs,
            "api_key": key,
            "provider": provider,
            "gateway_url": request.build_absolute_uri("/v1"),
        }
    }


# --- Logs --------------------------------------------------------------------------------


@workspace_view()
@require_GET
def logs(request: HttpRequest, access: WorkspaceAccess) -> HttpResponse:
    if "add_key" in request.GET:
        return added_metadata_redirect(request)
    window, errors = parse_window(request.GET)
    log_filter = request_log_filter(request, window)
    rows, cursor = [], None
    if log_filter.is_valid():
        qs = log_filter.qs.filter(workspace=access.workspace)
        rows, cursor = selectors.log_page(qs, limit=LOG_PAGE_SIZE)
    else:
        errors += [f"{name}: {' '.join(msgs)}" for name, msgs in log_filter.errors.items()]
    api_keys = ds.api_key_names(access.workspace)
    configs = ds.saved_configs(access.workspace)
    context = {
        **_base_context(request, access, "logs", window),
        "rows": rows,
        "next_cursor": cursor,
        "filter_errors": errors,
        "chips": filter_chips(request.GET, api_keys, configs),
        "api_keys": api_keys,
        "configs": configs,
        "known_keys": known_keys_of(access),
        "dimension_values": ds.models_and_providers(
            access.workspace, Window(window.end - timedelta(days=30), window.end, "")
        ),
    }
    if request.GET.get("log") and not _is_partial(request):
        try:
            context["detail"] = selectors.log_detail(workspace=access.workspace, log_id=request.GET["log"])
        except Http404:
            context["filter_errors"].append("That log does not exist in this workspace.")
    return _render(request, "dashboard/logs.html", "dashboard/_logs_results.html", context)


@workspace_view()
@require_GET
@page_for_navigation(fragments.logs_page)
def log_rows(request: HttpRequest, access: WorkspaceAccess) -> HttpResponse:
    """The next page of the log table ("load more"), as table rows."""
    window, errors = parse_window(request.GET)
    log_filter = request_log_filter(request, window)
    errors += [f"{name}: {' '.join(msgs)}" for name, msgs in log_filter.errors.items()]
    if errors:
        return HttpResponse(
            "Invalid filters: " + " ".join(errors), status=400, content_type="text/plain; charset=utf-8"
        )
    try:
        rows, cursor = selectors.log_page(
            log_filter.qs.filter(workspace=access.workspace), cursor=request.GET.get("cursor"), limit=LOG_PAGE_SIZE
        )
    except selectors.InvalidCursor as exc:
        return HttpResponse(str(exc), status=400)
    context = {"workspace": access.workspace, "rows": rows, "next_cursor": cursor, "api_keys": {}}
    context["api_keys"] = ds.api_key_names(access.workspace)
    return render(request, "dashboard/_log_rows.html", context)


@workspace_view()
@require_GET
def log_detail(request: HttpRequest, access: WorkspaceAccess, log_id: str) -> HttpResponse:
    detail = selectors.log_detail(workspace=access.workspace, log_id=log_id)
    context = {
        "workspace": access.workspace,
        "detail": detail,
        "api_keys": ds.api_key_names(access.workspace),
        "configs": ds.saved_configs(access.workspace),
    }
    if request.headers.get("HX-Request"):
        return render(request, "dashboard/_log_detail.html", context)
    params = QueryDict(mutable=True)
    params["log"] = str(detail["id"])
    params["range"] = "30d"
    return redirect(f"{reverse('dashboard:logs', args=[access.workspace.slug])}?{params.urlencode()}")


@workspace_view()
@require_GET
def metadata_values(request: HttpRequest, access: WorkspaceAccess) -> HttpResponse:
    """Value suggestions (a datalist) for the metadata key chosen in the filter bar."""
    try:
        key = clean_text(request.GET.get("add_key", ""), param="add_key", strip=False)
    except InvalidParameter as exc:
        return HttpResponse(exc.message, status=400, content_type="text/plain; charset=utf-8")
    row = MetadataKey.objects.filter(workspace=access.workspace, key=key).values("top_values").first()
    values = sorted((row or {}).get("top_values", {}).items(), key=lambda item: (-item[1], item[0]))[:50]
    return render(request, "dashboard/_value_options.html", {"values": [value for value, _ in values]})


@workspace_view()
@require_GET
def log_export(request: HttpRequest, access: WorkspaceAccess) -> HttpResponse:
    """The filtered logs as CSV or JSONL (same filters as the table; at most 50,000 rows)."""
    window, errors = parse_window(request.GET)
    log_filter = request_log_filter(request, window)
    if errors or not log_filter.is_valid():
        return HttpResponse("Invalid filters: fix them on the logs page first.", status=400)
    fmt = "jsonl" if request.GET.get("format") == "jsonl" else "csv"
    chunks = _at_most(selectors.export_chunks(log_filter.qs.filter(workspace=access.workspace)), EXPORT_LIMIT)
    lines = (selectors.jsonl_lines if fmt == "jsonl" else selectors.csv_lines)(
        chunks, workspace_slug=access.workspace.slug
    )
    response = StreamingHttpResponse(lines, content_type="application/x-ndjson" if fmt == "jsonl" else "text/csv")
    response["Content-Disposition"] = f'attachment; filename="{access.workspace.slug}-logs.{fmt}"'
    return response


def _at_most(chunks: Iterator[list[tuple]], limit: int) -> Iterator[list[tuple]]:
    for chunk in chunks:
        if limit <= 0:
            return
        yield chunk[:limit]
        limit -= len(chunk)


# --- Summary, users, errors --------------------------------------------------------------


def _sort(request: HttpRequest) -> tuple[str, bool]:
    # One vocabulary with the REST groups' ``ordering`` (older spellings are aliases).
    sort = sort_column(request.GET.get("sort", "requests")) or "requests"
    return sort, request.GET.get("dir", "desc") != "asc"


def _default_group_keys(access: WorkspaceAccess) -> list[str]:
    """Metadata keys in the order the default grouping takes them: the key most requests carry
    first; with none seen yet, the workspace schema's first required key."""
    keys = MetadataKey.objects.filter(workspace=access.workspace).order_by("-requests", "key")
    seen = list(keys.values_list("key", flat=True))
    return seen or list((access.workspace.metadata_schema or {}).get("required") or [])


@workspace_view()
@require_GET
def summary(request: HttpRequest, access: WorkspaceAccess) -> HttpResponse:
    if "add_key" in request.GET:
        return added_metadata_redirect(request)
    window, errors = parse_window(request.GET)
    group_keys = _default_group_keys(access)
    log_filter, filter_context = page_filter(request, access, window, group_keys)
    try:
        group = parse_group(request.GET.get("group"), group_keys)
    except InvalidParameter as exc:
        errors.append(exc.message)
        group = parse_group(None, group_keys)
    sort, desc = _sort(request)
    report = ds.group_report(access.workspace, window, group, sort=sort, desc=desc, log_filter=log_filter)
    rows = report["rows"]
    top = [row["raw"] for row in sorted(rows, key=lambda r: -r["requests"])[:5]]
    labels = {row["raw"]: row["value"] for row in rows}
    series = ds.group_series(access.workspace, window, group, top, log_filter) if top else None
    if series:
        series["series"] = [[labels[raw], values] for raw, values in series["series"]]
    total = report["total"]
    context = {
        **_base_context(request, access, "summary", window),
        **filter_context,
        "group": group,
        "group_label": GROUP_DIMENSIONS.get(group) or group.removeprefix("metadata."),
        "group_choices": [*GROUP_DIMENSIONS.items()],
        "rows": _drill_down(request, access, rows, group),
        "extra_rows": report["extra"],
        "total": total,
        "sort": sort,
        "desc": desc,
        "columns": TABLE_COLUMNS,
        "logs_param": group,
        "series": series,
        "totals": {name: total[name] for name in SUMMARY_TOTALS},
        "window_errors": errors,
    }
    return _render(request, "dashboard/summary.html", "dashboard/_summary.html", context)


def _drill_down(request: HttpRequest, access: WorkspaceAccess, rows: list[dict], param: str) -> list[dict]:
    """Give each table row the link to its logs (same window, filtered by the row's value):
    built here once per row, not by two template tags per row (a 200-row table spent a third of
    its render time on them)."""
    base = reverse("dashboard:logs", args=[access.workspace.slug])
    for row in rows:
        row["href"] = base + logs_query(request.GET, param, row["raw"])
    return rows


@workspace_view()
@require_GET
def summary_export(request: HttpRequest, access: WorkspaceAccess) -> HttpResponse:
    """The summary table as shown (same window, grouping and sort) as CSV or JSONL."""
    window, errors = parse_window(request.GET)
    log_filter, filter_context = page_filter(request, access, window)
    errors += filter_context["filter_errors"]
    try:
        group = parse_group(request.GET.get("group"), _default_group_keys(access))
    except InvalidParameter as exc:
        errors.append(exc.message)
    if errors:
        return HttpResponse("Invalid query: " + " ".join(errors), status=400, content_type="text/plain; charset=utf-8")
    sort, desc = _sort(request)
    rows = ds.group_table(access.workspace, window, group, sort=sort, desc=desc, log_filter=log_filter)
    fmt = "jsonl" if request.GET.get("format") == "jsonl" else "csv"
    body = export_group_rows(rows, fmt, group=group, window=window)
    response = HttpResponse(body, content_type="application/x-ndjson" if fmt == "jsonl" else "text/csv")
    name = group.replace(".", "-").replace("/", "-")
    response["Content-Disposition"] = f'attachment; filename="{access.workspace.slug}-summary-{name}.{fmt}"'
    return response


@workspace_view()
@require_GET
def users(request: HttpRequest, access: WorkspaceAccess) -> HttpResponse:
    if "add_key" in request.GET:
        return added_metadata_redirect(request)
    window, errors = parse_window(request.GET)
    log_filter, filter_context = page_filter(request, access, window)
    sort, desc = _sort(request)
    rows = ds.group_table(access.workspace, window, "user", sort=sort, desc=desc, p95=False, log_filter=log_filter)
    context = {
        **_base_context(request, access, "users", window),
        **filter_context,
        "rows": _drill_down(request, access, rows, "user"),
        "sort": sort,
        "desc": desc,
        "columns": USER_COLUMNS,
        "window_errors": errors,
    }
    return _render(request, "dashboard/users.html", "dashboard/_users.html", context)


@workspace_view()
@require_GET
def errors(request: HttpRequest, access: WorkspaceAccess) -> HttpResponse:
    if "add_key" in request.GET:
        return added_metadata_redirect(request)
    window, window_errors = parse_window(request.GET)
    log_filter, filter_context = page_filter(request, access, window)
    workspace = access.workspace
    hours = ds.hourly(workspace, window, hist=False, log_filter=log_filter)  # no latency on this page
    cells = ds.dimension_cells(workspace, window, log_filter)  # read once for the four dimension tables
    # Failing (key, value) pairs come from the metadata rollups, which a filter cannot narrow.
    failing_metadata = None if filter_context["chips"] and log_filter else ds.top_failing_metadata(workspace, window)
    context = {
        **_base_context(request, access, "errors", window),
        **filter_context,
        "totals": ds.totals(workspace, window, hours=hours, log_filter=log_filter),
        "series": ds.timeseries(workspace, window, hours=hours),
        "status_codes": ds.status_codes(cells),
        "failing_models": ds.top_failing(workspace, cells, "model"),
        "failing_providers": ds.top_failing(workspace, cells, "provider"),
        "failing_keys": ds.top_failing(workspace, cells, "api_key"),
        "failing_metadata": failing_metadata,
        "window_errors": window_errors,
    }
    return _render(request, "dashboard/errors.html", "dashboard/_errors.html", context)


@workspace_view()
@require_GET
def metadata_keys(request: HttpRequest, access: WorkspaceAccess) -> HttpResponse:
    window, errors = parse_window(request.GET)
    total = ds.request_total(access.workspace, window)
    report = ds.metadata_key_report(access.workspace, window, total)
    context = {
        **_base_context(request, access, "metadata_keys", window),
        "report": report,
        "total_requests": total,
        "window_errors": errors,
    }
    return _render(request, "dashboard/metadata_keys.html", "dashboard/_metadata_keys.html", context)
