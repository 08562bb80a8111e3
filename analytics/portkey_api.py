"""Portkey's own analytics and log export paths, so scripts written against
``https://api.portkey.ai/v1`` run unchanged against Portico's ``/v1`` (README, "Portkey API
compatibility").

These are aliases, not a second engine: graphs and groups call ``analytics.reports`` (the one
read engine behind ``/api/v1/analytics`` and the dashboard) and reshape its answer into
Portkey's field names and units (money in cents, error rate in percent); export jobs walk the
streamed export's keyset chunks (analytics.log_exports). Filters go through LogFilter via
analytics.portkey. Callers authenticate like Portkey's API: a workspace key in
``x-portkey-api-key`` (or ``Authorization: Bearer pk-...``) with the ``logs.read`` scope. Errors
have the API's one shape, ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

from django.core.handlers.asgi import ASGIRequest
from django.http import QueryDict, StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.decorators import (
    api_view,
    authentication_classes,
    content_negotiation_class,
    parser_classes,
    permission_classes,
)
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from analytics import log_exports, portkey, reports, selectors
from analytics.authentication import ApiKeyAuthentication, CanReadLogs, request_api_key
from analytics.filters import LogFilter
from analytics.models import LogExport
from analytics.reads.cache import Question, read, source_name
from analytics.reads.engine import Grouping, ReportError
from analytics.reads.window import align_to_hours
from analytics.rest import IgnoreClientContentNegotiation, OrjsonParser, invalid
from config.parsing import InvalidParameter, parse_int
from workspaces.models import Workspace

# Portkey graph path -> Portico metric.
GRAPHS = {
    "requests": "requests",
    "cost": "cost",
    "latency": "latency",
    "tokens": "tokens",
    "users": "users",
    "errors": "errors",
    "errors/rate": "error-rate",
}
GROUP_PARAMS = {"current_page", "page_size", "order_by", "order_by_type"}
# Portkey's order_by names (and Portico's own group columns) -> reports.groups ordering.
ORDER_BY = {"metadata_value": "value", "user": "value", "ai_model": "value", **{c: c for c in reports.GROUP_ORDERING}}
EXPORT_BODY = {"filters", "requested_data", "description", "workspace_id"}


def _bad(exc: InvalidParameter) -> exceptions.ValidationError:
    # config.parsing messages start with the parameter; the error handler adds it again.
    prefix = f"{exc.param}: "
    return invalid(exc.param, exc.message.removeprefix(prefix))


def _workspace(request: Request) -> Workspace:
    return request_api_key(request).workspace


def log_filter_of(request: Request, workspace: Workspace, extra: set[str], data: QueryDict | None = None) -> LogFilter:
    try:
        return portkey.log_filter(
            request.query_params if data is None else data, workspace=workspace, extra_params=extra
        )
    except InvalidParameter as exc:
        raise _bad(exc) from None


def _read(methods: list[str]):
    """Portkey paths: a workspace key only (no session), with the logs.read scope."""

    def wrap(view):
        return api_view(methods)(
            authentication_classes([ApiKeyAuthentication])(permission_classes([CanReadLogs])(view))
        )

    return wrap


# --- Graphs ------------------------------------------------------------------------------


def _portkey_values(metric: str, values: dict) -> dict:
    if metric == "cost":
        return {"total": portkey.cents(values["total"]), "avg": portkey.cents(values["avg"])}
    if metric == "error-rate":
        rate = values["rate"]
        return {"rate": None if rate is None else round(rate * 100, 4), "errors": values["errors"]}
    return values


def _graph(request: Request, metric: str) -> Response:
    workspace = _workspace(request)
    log_filter = log_filter_of(request, workspace, {"interval"})
    interval = request.query_params.get("interval") or None
    if interval is not None and interval not in reports.INTERVALS:
        raise invalid("interval", "Use hour or day.")
    try:
        result = reports.graph(workspace=workspace, log_filter=log_filter, metric=metric, interval=interval)
    except ReportError as exc:
        raise invalid(exc.param, str(exc)) from None
    points = [
        {"timestamp": point.pop("timestamp"), **_portkey_values(metric, point)} for point in result["data_points"]
    ]
    return Response(
        {
            "object": "analytics-graph",
            "summary": _portkey_values(metric, result["summary"]),
            "data_points": points,
            "interval": result["interval"],
            "start": result["start"],
            "end": result["end"],
            "source": result["source"],
        }
    )


def _graph_view(metric: str):
    @extend_schema(exclude=True)
    @_read(["GET"])
    def view(request: Request) -> Response:
        return _graph(request, metric)

    view.cls.__name__ = f"PortkeyGraph{metric.title().replace('-', '')}View"
    return view


graph_views = {path: _graph_view(metric) for path, metric in GRAPHS.items()}


@extend_schema(exclude=True)
@_read(["GET"])
def graph_status_codes(request: Request) -> Response:
    """Errors per HTTP status code over the window (Portkey's errors/status-codes)."""
    workspace = _workspace(request)
    data = request.query_params.copy()
    data["success"] = "false"
    log_filter = log_filter_of(request, workspace, set(), data=data)
    window = align_to_hours(*log_filter.window)
    # Through the closed-period cache; grouped "by model" as the Errors page's breakdowns are,
    # so that a metadata filter is read from the logs (the rollups do not carry it with codes).
    question = Question(("status_code",), "model")
    cells = read(workspace, *window, question, log_filter)
    points = sorted(
        ({"status_code": code, "count": totals.requests} for (code,), totals in cells.items()),
        key=lambda p: (-p["count"], p["status_code"]),
    )
    return Response(
        {
            "object": "analytics-graph",
            "summary": {"total_errors": sum(p["count"] for p in points), "unique_error_codes": len(points)},
            "data_points": points,
            "start": window[0],
            "end": window[1],
            "source": source_name(workspace, *window, question, log_filter),
        }
    )


@extend_schema(exclude=True)
@_read(["GET", "POST", "PUT"])
def unsupported(request: Request, rest: str) -> Response:
    graphs = ", ".join([*GRAPHS, "errors/status-codes"])
    raise exceptions.NotFound(
        f"Portico does not serve /v1/analytics/{rest[:100]}. Graphs: {graphs}; "
        "groups: users, ai-models, metadata/<key>."
    )


# --- Groups ------------------------------------------------------------------------------


def _ordering(query: QueryDict) -> str:
    name = query.get("order_by") or "requests"
    if name not in ORDER_BY:
        raise invalid("order_by", f"Order by one of: {', '.join(ORDER_BY)}.")
    direction = query.get("order_by_type") or "desc"
    if direction not in ("asc", "desc"):
        raise invalid("order_by_type", "Use asc or desc.")
    return f"{'-' if direction == 'desc' else ''}{ORDER_BY[name]}"


def _groups(request: Request, grouping: Grouping) -> tuple[dict, LogFilter]:
    workspace = _workspace(request)
    query = request.query_params
    log_filter = log_filter_of(request, workspace, GROUP_PARAMS)
    try:
        page = parse_int(query.get("current_page", "0"), param="current_page", minimum=0, maximum=999_999) + 1
        page_size = parse_int(query.get("page_size", "50"), param="page_size", minimum=1, maximum=500)
    except InvalidParameter as exc:
        raise _bad(exc) from None
    try:
        result = reports.groups(
            workspace=workspace,
            log_filter=log_filter,
            grouping=grouping,
            ordering=_ordering(query),
            page=page,
            page_size=page_size,
        )
    except ReportError as exc:
        raise invalid(exc.param, str(exc)) from None
    return result, log_filter


def _list(result: dict, rows: list[dict]) -> Response:
    return Response({"object": "list", "total": result["total"], "data": rows})


def _named_groups(request: Request, dimension: str, field: str) -> Response:
    """Portkey's users / ai-models groups: the value under ``field``, requests and cost (cents)."""
    result, _ = _groups(request, Grouping(dimension))
    rows = [
        {
            field: row["value"],
            "requests": row["requests"],
            "cost": portkey.cents(row["cost"]),
            "object": "analytics-group",
        }
        for row in result["data"]
    ]
    return _list(result, rows)


@extend_schema(exclude=True)
@_read(["GET"])
def groups_users(request: Request) -> Response:
    return _named_groups(request, "user", "user")


@extend_schema(exclude=True)
@_read(["GET"])
def groups_ai_models(request: Request) -> Response:
    return _named_groups(request, "model", "ai_model")


@extend_schema(exclude=True)
@_read(["GET"])
def groups_metadata(request: Request, key: str) -> Response:
    try:
        grouping = Grouping.parse(f"metadata.{key}", param="metadataKey")
    except ReportError as exc:
        raise invalid(exc.param, str(exc)) from None
    result, log_filter = _groups(request, grouping)
    feedback = portkey.feedback_by_value(
        workspace=_workspace(request),
        log_filter=log_filter,
        grouping=grouping,
        values=[row["value"] for row in result["data"]],
        window=(result["start"], result["end"]),
    )
    rows = []
    for row in result["data"]:
        with_feedback, average = feedback.get(row["value"], (0, None))
        rows.append(
            {
                "metadata_value": row["value"],
                "requests": row["requests"],
                "cost": portkey.cents(row["cost"]),
                "avg_tokens": row["avg_tokens"],
                "avg_weighted_feedback": None if average is None else round(average, 4),
                "requests_with_feedback": with_feedback,
                "last_seen": row["last_seen"],
                "object": "analytics-group",
            }
        )
    return _list(result, rows)


# --- Log export jobs ---------------------------------------------------------------------


def _body(request: Request) -> dict:
    if not isinstance(request.data, dict):
        raise exceptions.ValidationError("Send a JSON object.")
    unknown = sorted(set(request.data) - EXPORT_BODY)
    if unknown:
        raise invalid(str(unknown[0])[:200], "Unknown field.")
    portkey.check_workspace(_workspace(request), request.data.get("workspace_id"))
    return request.data


def _export(request: Request, export_id: str) -> LogExport:
    """The caller's workspace's export; any other id (or another tenant's) is a 404."""
    try:
        parsed = uuid.UUID(export_id)
    except ValueError:
        parsed = None
    export = LogExport.objects.filter(workspace=_workspace(request), pk=parsed).first() if parsed else None
    if export is None:
        raise exceptions.NotFound("No such export.")
    return export


def _export_item(export: LogExport) -> dict:
    return {
        "id": str(export.pk),
        "organisation_id": None,
        "workspace_id": export.workspace.slug,
        "filters": export.filters,
        "requested_data": export.requested_data,
        "status": export.status,
        "description": export.description,
        "total_records": export.total_records,
        "error_message": export.error_message or None,
        "created_at": export.created_at,
        "last_updated_at": export.last_updated_at,
        "created_by": str(export.created_by_id) if export.created_by_id else None,
        "object": "export",
    }


class ExportConflict(exceptions.APIException):
    status_code = 409
    default_code = "export_state"


def _state(call, **kwargs) -> LogExport:
    try:
        return call(**kwargs)
    except log_exports.ExportStateError as exc:
        raise ExportConflict(str(exc)) from None
    except InvalidParameter as exc:
        raise _bad(exc) from None


@extend_schema(exclude=True)
@_read(["GET", "POST"])
@parser_classes([OrjsonParser])
def exports(request: Request) -> Response:
    """GET: the workspace's export jobs, newest first. POST: a new draft job."""
    if request.method == "POST":
        body = _body(request)
        export = _state(
            log_exports.export_create,
            api_key=request_api_key(request),
            filters=body.get("filters"),
            requested_data=body.get("requested_data"),
            description=body.get("description"),
        )
        return Response({"id": str(export.pk), "total": export.total_records, "object": "export"})
    unknown = sorted(set(request.query_params) - {"workspace_id"})
    if unknown:
        raise invalid(unknown[0][:200], "Unknown parameter.")
    workspace = _workspace(request)
    portkey.check_workspace(workspace, request.query_params.get("workspace_id"))
    # A workspace's jobs are few (each is made by hand); the newest 500 are listed.
    jobs = list(LogExport.objects.filter(workspace=workspace).select_related("workspace")[:500])
    return Response({"object": "list", "total": len(jobs), "data": [_export_item(job) for job in jobs]})


@extend_schema(exclude=True)
@_read(["GET", "PUT"])
@parser_classes([OrjsonParser])
def export_detail(request: Request, export_id: str) -> Response:
    export = _export(request, export_id)
    if request.method == "PUT":
        body = _body(request)
        if "description" in body:
            raise invalid("description", "The description cannot be changed.")
        export = _state(
            log_exports.export_update,
            export=export,
            filters=body.get("filters"),
            requested_data=body.get("requested_data"),
        )
        return Response({"id": str(export.pk), "total": export.total_records, "object": "export"})
    return Response(_export_item(export))


@extend_schema(exclude=True)
@_read(["POST"])
def export_start(request: Request, export_id: str) -> Response:
    export = _state(log_exports.export_start, export=_export(request, export_id))
    if export.status == LogExport.Status.FAILED:
        return Response({"message": f"Export failed: {export.error_message}", "object": "export"})
    return Response({"message": f"Export {export.status}: {export.total_records} logs.", "object": "export"})


@extend_schema(exclude=True)
@_read(["POST"])
def export_cancel(request: Request, export_id: str) -> Response:
    _state(log_exports.export_cancel, export=_export(request, export_id))
    return Response({"message": "Export cancelled.", "object": "export"})


@extend_schema(exclude=True)
@_read(["GET"])
def export_download(request: Request, export_id: str) -> Response:
    export = _export(request, export_id)
    try:
        token = log_exports.download_token(export)
    except log_exports.ExportStateError as exc:
        raise ExportConflict(str(exc)) from None
    path = reverse("analytics:portkey-export-file", args=[export.pk])
    return Response({"signed_url": request.build_absolute_uri(path) + "?" + urlencode({"token": token})})


@extend_schema(exclude=True)
@api_view(["GET"])
@authentication_classes([])
@permission_classes([AllowAny])
@content_negotiation_class(IgnoreClientContentNegotiation)
def export_file(request: Request, export_id: str) -> StreamingHttpResponse:
    """The signed link ``download`` hands out: the JSONL itself, no API key needed (like a
    pre-signed storage URL), valid for an hour."""
    export = log_exports.export_for_token(export_id, request.query_params.get("token", ""))
    if export is None:
        raise exceptions.NotFound("No such export, or the link has expired: ask /download for a new one.")
    lines = log_exports.file_lines(export)
    if isinstance(request._request, ASGIRequest):
        lines = selectors.aiterate(lines)
    response = StreamingHttpResponse(lines, content_type="application/x-ndjson")
    response["Content-Disposition"] = f'attachment; filename="portico-export-{export.pk}.jsonl"'
    response["Cache-Control"] = "no-store"
    return response
