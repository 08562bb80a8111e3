"""The logs and analytics REST API (DRF), plus Portkey's custom log and feedback inserts.

Views are thin: resolve the workspace (analytics.authentication), validate the parameters
(LogFilter and a few view-specific ones), call a selector, report or service.

Errors, everywhere in this API, have one shape (as the gateway's, Portkey's and OpenAI's):
``{"error": {"message", "type", "param", "code"}}`` where ``param`` names the query parameter
or body field to fix (``start``, ``metadata.env__in``, ``[2].response.status``) or is null.
"""

from __future__ import annotations

import orjson
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import exceptions, status
from rest_framework.decorators import (
    api_view,
    authentication_classes,
    content_negotiation_class,
    parser_classes,
    permission_classes,
)
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from analytics import reports, selectors, services
from analytics import serializers as s
from analytics.authentication import (
    WORKSPACE_PARAM,
    ApiKeyAuthentication,
    CanReadLogs,
    CanWriteLogs,
    request_api_key,
    request_workspace,
)
from analytics.filters import BooleanFilter, FloatFilter, IntegerFilter, LogFilter, WindowFilter
from analytics.models import RequestLog
from config.parsing import InvalidParameter, parse_int
from workspaces.models import Workspace

# --- Errors ------------------------------------------------------------------------------

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def _flatten(detail: object, path: str = "") -> list[tuple[str | None, str, str | None]]:
    """(param path, message, code) for each message of a (nested) DRF error detail."""
    if isinstance(detail, dict):
        found = []
        for key, value in detail.items():
            if isinstance(key, int):  # a ListSerializer's errors, keyed by item index
                found += _flatten(value, f"{path}[{key}]")
                continue
            name = "" if key in ("non_field_errors", "detail") else str(key)
            found += _flatten(value, f"{path}.{name}" if path and name else path or name)
        return found
    if isinstance(detail, list):
        if all(isinstance(item, str) for item in detail):
            return [(path or None, str(item), getattr(item, "code", None)) for item in detail]
        found = []
        for index, value in enumerate(detail):
            found += _flatten(value, f"{path}[{index}]")
        return found
    return [(path or None, str(detail), getattr(detail, "code", None))]


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler, answering in the one error shape of this API."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    problems = _flatten(response.data) or [(None, "Request failed.", None)]
    if isinstance(exc, exceptions.ValidationError):
        message = "; ".join(f"{param}: {text}" if param else text for param, text, _ in problems[:5])
        code = problems[0][2] or "invalid"
    else:
        message = problems[0][1]
        code = exc.get_codes() if isinstance(exc, exceptions.APIException) else None
        code = code if isinstance(code, str) else None
    response.data = {
        "error": {
            "message": message,
            "type": _ERROR_TYPES.get(response.status_code, "invalid_request_error"),
            "param": problems[0][0],
            "code": code,
        }
    }
    return response


def _invalid(param: str, message: str) -> exceptions.ValidationError:
    return exceptions.ValidationError({param: [message]})


class OrjsonParser(JSONParser):
    """JSON bodies parsed by orjson: strict (no NaN, no lone surrogates, which no database
    column could store) and fast."""

    def parse(self, stream, media_type=None, parser_context=None) -> object:
        try:
            return orjson.loads(stream.read())
        except orjson.JSONDecodeError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None


class PayloadTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "The request body is too large."
    default_code = "body_too_large"


# --- Schema helpers ----------------------------------------------------------------------


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "analytics.authentication.ApiKeyAuthentication"
    name = ["portkeyApiKey", "bearerApiKey"]

    def get_security_requirement(self, auto_schema) -> list[dict]:
        return [{"portkeyApiKey": []}, {"bearerApiKey": []}]

    def get_security_definition(self, auto_schema) -> list[dict]:
        return [
            {"type": "apiKey", "in": "header", "name": "x-portkey-api-key", "description": "A workspace API key."},
            {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer pk-... (a workspace API key)."},
        ]


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(s.ErrorSerializer, description=description)


READ_ERRORS = {
    400: _error("A parameter is malformed or unknown; error.param names it."),
    401: _error("No credentials, or an unknown, revoked or expired API key."),
    403: _error("The API key lacks the logs.read scope."),
    404: _error("No such workspace (or log) for these credentials."),
}
WRITE_ERRORS = {
    400: _error("Invalid body; error.param names the field."),
    401: _error("No API key, or an unknown, revoked or expired one."),
    403: _error("The API key lacks the inference and logs.read scopes."),
    413: _error("The request body is too large."),
}
WORKSPACE_PARAMETER = OpenApiParameter(
    WORKSPACE_PARAM, str, description="Workspace slug; needed by dashboard users who belong to several."
)


_ID_LIST = r"^\s*[1-9][0-9]{0,17}\s*(,\s*[1-9][0-9]{0,17}\s*)*$"
# Parameters whose values are more constrained than "a string" (bounds as the filter checks them).
_FILTER_SCHEMAS = {
    "status_code": {"type": "string", "pattern": r"^\s*[1-5][0-9]{2}\s*(,\s*[1-5][0-9]{2}\s*)*$"},
    "api_key": {"type": "string", "pattern": _ID_LIST},
    "api_key_ids": {"type": "string", "pattern": _ID_LIST},
    "cost_min": {"type": "number", "minimum": -1e12, "maximum": 1e12},
    "cost_max": {"type": "number", "minimum": -1e12, "maximum": 1e12},
}


def _filter_type(name: str, flt: object) -> object:
    if name in _FILTER_SCHEMAS:
        return _FILTER_SCHEMAS[name]
    if isinstance(flt, WindowFilter):
        return {"type": "string", "format": "date-time"}
    if isinstance(flt, BooleanFilter):
        return OpenApiTypes.BOOL
    if isinstance(flt, IntegerFilter):
        return {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
    if isinstance(flt, FloatFilter):
        return {"type": "number", "minimum": 0}
    return OpenApiTypes.STR


def _bounded_int(minimum: int, maximum: int) -> dict:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


FILTER_PARAMETERS = [
    OpenApiParameter(
        name,
        _filter_type(name, flt),
        description=str(flt.label or name)
        + (
            " Also metadata.<key>=v, metadata.<key>__ne=v, metadata.<key>__in=a,b, metadata.<key>__exists=true|false."
            if name == "metadata"
            else ""
        ),
    )
    for name, flt in LogFilter.base_filters.items()
]


def _param(name: str, kind: object, description: str, **kwargs) -> OpenApiParameter:
    return OpenApiParameter(name, kind, description=description, **kwargs)


def _int_param(request: Request, name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse_int(raw, param=name, minimum=minimum, maximum=maximum)
    except InvalidParameter as exc:
        raise _invalid(exc.param, exc.reason) from None


def _log_filter(request: Request, workspace: Workspace, extra: set[str]) -> LogFilter:
    log_filter = LogFilter(
        request.query_params,
        queryset=RequestLog.objects.filter(workspace=workspace),
        request=request,
        extra_params={WORKSPACE_PARAM, *extra},
    )
    if not log_filter.is_valid():
        raise exceptions.ValidationError({param: list(messages) for param, messages in log_filter.errors.items()})
    return log_filter


# --- Logs --------------------------------------------------------------------------------


@extend_schema(
    operation_id="logs_list",
    summary="List logs, newest first",
    description="Keyset pagination: pass next_cursor back as ?cursor=, with the same filters. No total count.",
    parameters=[
        *FILTER_PARAMETERS,
        _param("cursor", str, "Opaque cursor from the previous page's next_cursor."),
        _param("limit", _bounded_int(1, 500), "Page size, 1 to 500 (default 50).", default=selectors.DEFAULT_PAGE_SIZE),
        WORKSPACE_PARAMETER,
    ],
    responses={200: s.LogListSerializer, **READ_ERRORS},
)
@api_view(["GET"])
@permission_classes([CanReadLogs])
def log_list(request: Request) -> Response:
    workspace = request_workspace(request)
    log_filter = _log_filter(request, workspace, {"cursor", "limit"})
    limit = _int_param(request, "limit", selectors.DEFAULT_PAGE_SIZE, 1, selectors.MAX_PAGE_SIZE)
    try:
        rows, next_cursor = selectors.log_page(log_filter.qs, cursor=request.query_params.get("cursor"), limit=limit)
    except selectors.InvalidCursor as exc:
        raise _invalid("cursor", str(exc)) from None
    for row in rows:
        row["workspace"] = workspace.slug
    return Response({"object": "list", "data": rows, "next_cursor": next_cursor, "has_more": next_cursor is not None})


@extend_schema(
    operation_id="logs_retrieve",
    summary="One log with its bodies, metadata, trace and feedback",
    parameters=[
        _param("log_id", OpenApiTypes.UUID, "The log id.", location=OpenApiParameter.PATH),
        WORKSPACE_PARAMETER,
    ],
    responses={200: s.LogDetailSerializer, **READ_ERRORS},
)
@api_view(["GET"])
@permission_classes([CanReadLogs])
def log_detail(request: Request, log_id: str) -> Response:
    workspace = request_workspace(request)
    return Response(selectors.log_detail(workspace=workspace, log_id=log_id))


class IgnoreClientContentNegotiation(BaseContentNegotiation):
    """The export answers CSV/JSONL whatever Accept says; errors stay JSON."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


EXPORT_FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}


@extend_schema(
    operation_id="logs_export",
    summary="Export filtered logs as CSV or JSONL (streamed)",
    description="Same filters as the list. Columns: " + ", ".join(selectors.EXPORT_COLUMNS) + ".",
    parameters=[
        *FILTER_PARAMETERS,
        _param("format", str, "csv (default) or jsonl.", enum=list(EXPORT_FORMATS), default="csv"),
        WORKSPACE_PARAMETER,
    ],
    responses={
        (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV with a header line."),
        (200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.STR, description="One JSON object per line."),
        **READ_ERRORS,
    },
)
@api_view(["GET"])
@permission_classes([CanReadLogs])
@content_negotiation_class(IgnoreClientContentNegotiation)
def log_export(request: Request) -> StreamingHttpResponse:
    workspace = request_workspace(request)
    log_filter = _log_filter(request, workspace, {"format"})
    export_format = request.query_params.get("format", "csv")
    if export_format not in EXPORT_FORMATS:
        raise _invalid("format", "Use csv or jsonl.")
    lines = selectors.export_lines(log_filter.qs, export_format=export_format, workspace_slug=workspace.slug)
    if isinstance(request._request, ASGIRequest):
        lines = selectors.aiterate(lines)
    response = StreamingHttpResponse(lines, content_type=EXPORT_FORMATS[export_format])
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="portico-logs-{workspace.slug}-{stamp}.{export_format}"'
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"  # let reverse proxies stream it too
    return response


# --- Analytics ---------------------------------------------------------------------------


@extend_schema(
    operation_id="analytics_graph",
    summary="A metric per hour or day",
    description=(
        "Read from the hourly rollups when they can answer the filters (window, provider, model, api_key, "
        "success, or one metadata equality); otherwise aggregated from raw logs (source: logs)."
    ),
    parameters=[
        _param("metric", str, "The metric.", location=OpenApiParameter.PATH, enum=list(reports.GRAPH_METRICS)),
        *FILTER_PARAMETERS,
        _param("interval", str, "hour (default for windows up to 3 days) or day.", enum=list(reports.INTERVALS)),
        _param("group_by", str, "metadata.<key>, user, model, provider or api_key: top 10 series + (other)."),
        WORKSPACE_PARAMETER,
    ],
    responses={200: s.GraphSerializer, **READ_ERRORS},
)
@api_view(["GET"])
@permission_classes([CanReadLogs])
def analytics_graph(request: Request, metric: str) -> Response:
    workspace = request_workspace(request)
    if metric not in reports.GRAPH_METRICS:
        raise exceptions.NotFound(f"Unknown metric: use one of {', '.join(reports.GRAPH_METRICS)}.")
    log_filter = _log_filter(request, workspace, {"interval", "group_by"})
    interval = request.query_params.get("interval") or None
    if interval is not None and interval not in reports.INTERVALS:
        raise _invalid("interval", "Use hour or day.")
    try:
        result = reports.graph(
            workspace=workspace,
            log_filter=log_filter,
            metric=metric,
            interval=interval,
            group_by=request.query_params.get("group_by") or None,
        )
    except reports.ReportError as exc:
        raise _invalid(exc.param, str(exc)) from None
    return Response(result)


GROUP_PARAMETERS = [
    *FILTER_PARAMETERS,
    _param(
        "ordering",
        str,
        "A column, - prefix for descending (default -requests).",
        enum=[f"{sign}{name}" for name in reports.GROUP_ORDERING for sign in ("", "-")],
    ),
    _param("page", _bounded_int(1, 1_000_000), "1-based page (default 1)."),
    _param("current_page", _bounded_int(0, 999_999), "Portkey's 0-based page; used when page is absent."),
    _param("page_size", _bounded_int(1, 500), "Rows per page, 1 to 500 (default 50)."),
    WORKSPACE_PARAMETER,
]


def _groups(request: Request, grouping_text: str) -> Response:
    workspace = request_workspace(request)
    log_filter = _log_filter(request, workspace, {"ordering", "page", "current_page", "page_size"})
    page_size = _int_param(request, "page_size", 50, 1, 500)
    if "page" in request.query_params or "current_page" not in request.query_params:
        page = _int_param(request, "page", 1, 1, 1_000_000)
    else:
        page = _int_param(request, "current_page", 0, 0, 999_999) + 1
    try:
        result = reports.groups(
            workspace=workspace,
            log_filter=log_filter,
            grouping=reports.Grouping.parse(grouping_text, param="key"),
            ordering=request.query_params.get("ordering") or "-requests",
            page=page,
            page_size=page_size,
        )
    except reports.ReportError as exc:
        raise _invalid(exc.param, str(exc)) from None
    return Response(result)


def _group_view(name: str, grouping_text: str, summary: str):
    @extend_schema(
        operation_id=f"analytics_groups_{name}",
        summary=summary,
        parameters=GROUP_PARAMETERS,
        responses={200: s.GroupListSerializer, **READ_ERRORS},
    )
    @api_view(["GET"])
    @permission_classes([CanReadLogs])
    def view(request: Request) -> Response:
        return _groups(request, grouping_text)

    view.cls.__name__ = f"Groups{name.title()}View"
    return view


groups_users = _group_view("users", "user", "Totals per user (metadata _user)")
groups_models = _group_view("models", "model", "Totals per model")
groups_providers = _group_view("providers", "provider", "Totals per provider")
groups_api_keys = _group_view("api_keys", "api_key", "Totals per API key")


@extend_schema(
    operation_id="analytics_groups_metadata",
    summary="Totals per value of a metadata key",
    description="Logs without the key are not counted; values past the rollups' per-hour cap appear as (other).",
    parameters=[_param("key", str, "The metadata key.", location=OpenApiParameter.PATH), *GROUP_PARAMETERS],
    responses={200: s.GroupListSerializer, **READ_ERRORS},
)
@api_view(["GET"])
@permission_classes([CanReadLogs])
def groups_metadata(request: Request, key: str) -> Response:
    return _groups(request, f"metadata.{key}")


@extend_schema(
    operation_id="analytics_metadata_keys",
    summary="The workspace's metadata keys with their top values",
    parameters=[_param("top", _bounded_int(1, 100), "Top values per key, 1 to 100 (default 10)."), WORKSPACE_PARAMETER],
    responses={200: s.MetadataKeyListSerializer, **READ_ERRORS},
)
@api_view(["GET"])
@permission_classes([CanReadLogs])
def metadata_keys(request: Request) -> Response:
    workspace = request_workspace(request)
    unknown = set(request.query_params) - {"top", WORKSPACE_PARAM}
    if unknown:
        raise _invalid(sorted(unknown)[0][:200], "Unknown parameter.")
    rows = selectors.metadata_keys(workspace=workspace, top=_int_param(request, "top", 10, 1, 100))
    return Response({"object": "list", "total": len(rows), "data": rows})


# --- Portkey-compatible inserts (POST /v1/logs, POST /v1/feedback) ------------------------


def _check_size(request: Request) -> None:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > settings.GATEWAY_MAX_BODY_BYTES:
        raise PayloadTooLarge()


@extend_schema(
    operation_id="custom_logs_create",
    summary="Insert custom logs (Portkey's POST /v1/logs)",
    description=(
        "One log object or an array of up to 1000. Metadata goes through the workspace's metadata rules "
        "(defaults, schemas, validation) as gateway requests do; tokens come from response.body.usage, "
        "the model from request.body.model, cost from the price table. All or nothing."
    ),
    request=PolymorphicProxySerializer(
        component_name="CustomLogInput",
        serializers=[
            s.CustomLogSerializer,
            s.CustomLogSerializer(many=True, min_length=1, max_length=s.MAX_CUSTOM_LOGS),
        ],
        resource_type_field_name=None,
        many=False,
    ),
    responses={200: s.CustomLogResultSerializer, **WRITE_ERRORS},
)
@api_view(["POST"])
@authentication_classes([ApiKeyAuthentication])
@permission_classes([CanWriteLogs])
@parser_classes([OrjsonParser])
def custom_logs_create(request: Request) -> Response:
    _check_size(request)
    data = request.data
    many = isinstance(data, list)
    if not isinstance(data, dict | list):
        raise exceptions.ValidationError("Send a log object or an array of log objects.")
    if many:
        serializer = s.CustomLogSerializer(data=data, many=True, min_length=1, max_length=s.MAX_CUSTOM_LOGS)
    else:
        serializer = s.CustomLogSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    items = serializer.validated_data if many else [serializer.validated_data]
    try:
        ids = services.custom_logs_insert(api_key=request_api_key(request), items=items, prefix_index=many)
    except services.CustomLogError as exc:
        raise _invalid(exc.param, str(exc)) from None
    noun = "log" if len(ids) == 1 else "logs"
    return Response({"status": "success", "message": f"{len(ids)} {noun} inserted.", "log_ids": ids})


@extend_schema(
    operation_id="feedback_create",
    summary="Attach feedback to a trace (Portkey's POST /v1/feedback)",
    request=s.FeedbackCreateSerializer,
    responses={200: s.FeedbackResultSerializer, **WRITE_ERRORS},
)
@api_view(["POST"])
@authentication_classes([ApiKeyAuthentication])
@permission_classes([CanWriteLogs])
@parser_classes([OrjsonParser])
def feedback_create(request: Request) -> Response:
    _check_size(request)
    if not isinstance(request.data, dict):
        raise exceptions.ValidationError("Send a JSON object.")
    serializer = s.FeedbackCreateSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    feedback = services.feedback_create(workspace=request_api_key(request).workspace, **serializer.validated_data)
    return Response(
        {"status": "success", "message": "Feedback created successfully.", "feedback_ids": [str(feedback.id)]},
        status=status.HTTP_200_OK,
    )
