"""The logs and analytics REST API (DRF), plus Portkey's custom log and feedback inserts.

Views are thin: resolve the workspace (analytics.authentication), validate the parameters
(LogFilter and a few view-specific ones), call a selector, report or service.

Errors have one shape, built by analytics.rest's exception handler (with the schema helpers and
parameter parsing the views share).
"""

from __future__ import annotations

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from django.utils import timezone
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
from rest_framework.request import Request
from rest_framework.response import Response

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
from analytics.rest import (
    FILTER_PARAMETERS,
    READ_ERRORS,
    WORKSPACE_PARAMETER,
    WRITE_ERRORS,
    IgnoreClientContentNegotiation,
    OrjsonParser,
    PayloadTooLarge,
    bounded_int,
    int_param,
    invalid,
    log_filter_of,
    param,
)

# --- Logs --------------------------------------------------------------------------------


@extend_schema(
    operation_id="logs_list",
    summary="List logs, newest first",
    description="Keyset pagination: pass next_cursor back as ?cursor=, with the same filters. No total count.",
    parameters=[
        *FILTER_PARAMETERS,
        param("cursor", str, "Opaque cursor from the previous page's next_cursor."),
        param("limit", bounded_int(1, 500), "Page size, 1 to 500 (default 50).", default=selectors.DEFAULT_PAGE_SIZE),
        WORKSPACE_PARAMETER,
    ],
    responses={200: s.LogListSerializer, **READ_ERRORS},
)
@api_view(["GET"])
@permission_classes([CanReadLogs])
def log_list(request: Request) -> Response:
    workspace = request_workspace(request)
    log_filter = log_filter_of(request, workspace, {"cursor", "limit"})
    limit = int_param(request, "limit", selectors.DEFAULT_PAGE_SIZE, 1, selectors.MAX_PAGE_SIZE)
    try:
        rows, next_cursor = selectors.log_page(log_filter.qs, cursor=request.query_params.get("cursor"), limit=limit)
    except selectors.InvalidCursor as exc:
        raise invalid("cursor", str(exc)) from None
    for row in rows:
        row["workspace"] = workspace.slug
    return Response({"object": "list", "data": rows, "next_cursor": next_cursor, "has_more": next_cursor is not None})


@extend_schema(
    operation_id="logs_retrieve",
    summary="One log with its bodies, metadata, trace and feedback",
    parameters=[
        param("log_id", OpenApiTypes.UUID, "The log id.", location=OpenApiParameter.PATH),
        WORKSPACE_PARAMETER,
    ],
    responses={200: s.LogDetailSerializer, **READ_ERRORS},
)
@api_view(["GET"])
@permission_classes([CanReadLogs])
def log_detail(request: Request, log_id: str) -> Response:
    workspace = request_workspace(request)
    return Response(selectors.log_detail(workspace=workspace, log_id=log_id))


EXPORT_FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}


@extend_schema(
    operation_id="logs_export",
    summary="Export filtered logs as CSV or JSONL (streamed)",
    description="Same filters as the list. Columns: " + ", ".join(selectors.EXPORT_COLUMNS) + ".",
    parameters=[
        *FILTER_PARAMETERS,
        param("format", str, "csv (default) or jsonl.", enum=list(EXPORT_FORMATS), default="csv"),
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
    log_filter = log_filter_of(request, workspace, {"format"})
    export_format = request.query_params.get("format", "csv")
    if export_format not in EXPORT_FORMATS:
        raise invalid("format", "Use csv or jsonl.")
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
        param("metric", str, "The metric.", location=OpenApiParameter.PATH, enum=list(reports.GRAPH_METRICS)),
        *FILTER_PARAMETERS,
        param("interval", str, "hour (default for windows up to 3 days) or day.", enum=list(reports.INTERVALS)),
        param("group_by", str, "metadata.<key>, user, model, provider or api_key: top 10 series + (other)."),
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
    log_filter = log_filter_of(request, workspace, {"interval", "group_by"})
    interval = request.query_params.get("interval") or None
    if interval is not None and interval not in reports.INTERVALS:
        raise invalid("interval", "Use hour or day.")
    try:
        result = reports.graph(
            workspace=workspace,
            log_filter=log_filter,
            metric=metric,
            interval=interval,
            group_by=request.query_params.get("group_by") or None,
        )
    except reports.ReportError as exc:
        raise invalid(exc.param, str(exc)) from None
    return Response(result)


GROUP_PARAMETERS = [
    *FILTER_PARAMETERS,
    param(
        "ordering",
        str,
        "A column, - prefix for descending (default -requests).",
        enum=[f"{sign}{name}" for name in reports.GROUP_ORDERING for sign in ("", "-")],
    ),
    param("page", bounded_int(1, 1_000_000), "1-based page (default 1)."),
    param("current_page", bounded_int(0, 999_999), "Portkey's 0-based page; used when page is absent."),
    param("page_size", bounded_int(1, 500), "Rows per page, 1 to 500 (default 50)."),
    WORKSPACE_PARAMETER,
]


def _groups(request: Request, grouping_text: str) -> Response:
    workspace = request_workspace(request)
    log_filter = log_filter_of(request, workspace, {"ordering", "page", "current_page", "page_size"})
    page_size = int_param(request, "page_size", 50, 1, 500)
    if "page" in request.query_params or "current_page" not in request.query_params:
        page = int_param(request, "page", 1, 1, 1_000_000)
    else:
        page = int_param(request, "current_page", 0, 0, 999_999) + 1
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
        raise invalid(exc.param, str(exc)) from None
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
    parameters=[param("key", str, "The metadata key.", location=OpenApiParameter.PATH), *GROUP_PARAMETERS],
    responses={200: s.GroupListSerializer, **READ_ERRORS},
)
@api_view(["GET"])
@permission_classes([CanReadLogs])
def groups_metadata(request: Request, key: str) -> Response:
    return _groups(request, f"metadata.{key}")


@extend_schema(
    operation_id="analytics_metadata_keys",
    summary="The workspace's metadata keys with their top values",
    parameters=[param("top", bounded_int(1, 100), "Top values per key, 1 to 100 (default 10)."), WORKSPACE_PARAMETER],
    responses={200: s.MetadataKeyListSerializer, **READ_ERRORS},
)
@api_view(["GET"])
@permission_classes([CanReadLogs])
def metadata_keys(request: Request) -> Response:
    workspace = request_workspace(request)
    unknown = set(request.query_params) - {"top", WORKSPACE_PARAM}
    if unknown:
        raise invalid(sorted(unknown)[0][:200], "Unknown parameter.")
    rows = selectors.metadata_keys(workspace=workspace, top=int_param(request, "top", 10, 1, 100))
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
        raise invalid(exc.param, str(exc)) from None
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
