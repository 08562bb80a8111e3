"""REST API for alert rules (CRUD and test-send) and their events and delivery attempts
(read-only), under /api/v1/.

Who may call it: a workspace API key with the ``admin`` scope, or a dashboard session of an
owner or admin of the workspace (``?workspace=<slug>`` when the user has several). Another
tenant's rule is a 404, as for the rest of the API; a member without the edit role gets 403.
Writes go through analytics.alerts.services (validated, audited with ``via=api``)."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.decorators import api_view, parser_classes, permission_classes
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from analytics.alerts import selectors, services
from analytics.alerts import serializers as s
from analytics.authentication import WORKSPACE_PARAM, request_api_key, request_workspace
from analytics.rest import WORKSPACE_PARAMETER, OrjsonParser, error_response
from config.parsing import InvalidParameter, parse_int
from workspaces.models import ApiKey, AuditEvent, Membership, Workspace

ERRORS = {
    400: error_response("Invalid body or parameter; error.param names the field."),
    401: error_response("No credentials, or an unknown, revoked or expired API key."),
    403: error_response("The API key lacks the admin scope, or the user is not an owner or admin of the workspace."),
    404: error_response("No such workspace or alert rule for these credentials."),
}
RULE_ID = OpenApiParameter("rule_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The alert rule's id.")
ID_MAX = 2**63 - 1


class CanAdministerAlerts(BasePermission):
    """A key with the admin scope, or a logged-in user (whose role is checked per workspace)."""

    message = "This API key does not have the admin scope."

    def has_permission(self, request: Request, view: object) -> bool:
        api_key = request_api_key(request)
        if api_key is not None:
            return api_key.has_scope(ApiKey.Scope.ADMIN)
        return bool(request.user and request.user.is_authenticated)


def _workspace(request: Request) -> Workspace:
    workspace = request_workspace(request)
    if request_api_key(request) is None:
        membership = Membership.objects.filter(user=request.user, workspace=workspace).first()
        if membership is None or not membership.can_edit:
            raise exceptions.PermissionDenied("Only owners and admins of the workspace manage alert rules.")
    return workspace


def _rule(workspace: Workspace, rule_id: str):
    try:
        pk = parse_int(rule_id, param="rule_id", minimum=1, maximum=ID_MAX)
    except InvalidParameter:
        pk = None
    rule = selectors.rule_of(workspace, pk) if pk else None
    if rule is None:
        raise exceptions.NotFound("No such alert rule.")
    return rule


def _query_int(request: Request, name: str, default: int | None, minimum: int, maximum: int) -> int | None:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse_int(raw, param=name, minimum=minimum, maximum=maximum)
    except InvalidParameter as exc:
        raise exceptions.ValidationError({exc.param: [exc.reason]}) from None


def _check_params(request: Request, allowed: set[str]) -> None:
    unknown = sorted(set(request.query_params) - allowed - {WORKSPACE_PARAM})
    if unknown:
        raise exceptions.ValidationError({unknown[0][:200]: ["Unknown parameter."]})


def _as_api_error(exc: DjangoValidationError) -> exceptions.ValidationError:
    if hasattr(exc, "error_dict"):
        return exceptions.ValidationError({field: list(messages) for field, messages in exc.message_dict.items()})
    return exceptions.ValidationError(exc.messages)


def _body(request: Request, *, partial: bool) -> dict:
    if not isinstance(request.data, dict):
        raise exceptions.ValidationError("Send a JSON object.")
    serializer = s.AlertRuleInputSerializer(data=request.data, partial=partial)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


# --- Rules -------------------------------------------------------------------------------


@extend_schema(
    methods=["GET"],
    operation_id="alert_rules_list",
    summary="The workspace's alert rules",
    parameters=[WORKSPACE_PARAMETER],
    responses={200: s.AlertRuleListSerializer, **ERRORS},
)
@extend_schema(
    methods=["POST"],
    operation_id="alert_rules_create",
    summary="Create an alert rule",
    description="The answer carries webhook_secret once when it was generated (no webhook_secret sent).",
    parameters=[WORKSPACE_PARAMETER],
    request=s.AlertRuleInputSerializer,
    responses={201: s.AlertRuleSerializer, **ERRORS},
)
@api_view(["GET", "POST"])
@permission_classes([CanAdministerAlerts])
@parser_classes([OrjsonParser])
def alert_rules(request: Request) -> Response:
    workspace = _workspace(request)
    _check_params(request, set())
    if request.method == "GET":
        return Response({"object": "list", "data": [s.rule_data(rule) for rule in selectors.rules_of(workspace)]})
    data = _body(request, partial=False)
    given_secret = data.pop("webhook_secret", None)
    try:
        rule, secret = services.alert_rule_create(
            workspace=workspace, webhook_secret=given_secret, actor=_actor(request), via=AuditEvent.Via.API, **data
        )
    except DjangoValidationError as exc:
        raise _as_api_error(exc) from None
    answer = s.rule_data(rule)
    if given_secret is None:
        answer["webhook_secret"] = secret
    return Response(answer, status=status.HTTP_201_CREATED)


@extend_schema(
    methods=["GET"],
    operation_id="alert_rules_retrieve",
    summary="One alert rule",
    parameters=[RULE_ID, WORKSPACE_PARAMETER],
    responses={200: s.AlertRuleSerializer, **ERRORS},
)
@extend_schema(
    methods=["PUT", "PATCH"],
    summary="Change an alert rule (PATCH: only the fields sent)",
    description="webhook_secret replaces the stored secret; omitted, the stored one is kept.",
    parameters=[RULE_ID, WORKSPACE_PARAMETER],
    request=s.AlertRuleInputSerializer,
    responses={200: s.AlertRuleSerializer, **ERRORS},
)
@extend_schema(
    methods=["DELETE"],
    operation_id="alert_rules_destroy",
    summary="Delete an alert rule with its history",
    parameters=[RULE_ID, WORKSPACE_PARAMETER],
    responses={204: None, **ERRORS},
)
@api_view(["GET", "PUT", "PATCH", "DELETE"])
@permission_classes([CanAdministerAlerts])
@parser_classes([OrjsonParser])
def alert_rule_detail(request: Request, rule_id: str) -> Response:
    workspace = _workspace(request)
    _check_params(request, set())
    rule = _rule(workspace, rule_id)
    if request.method == "GET":
        return Response(s.rule_data(rule))
    if request.method == "DELETE":
        services.alert_rule_delete(rule=rule, actor=_actor(request), via=AuditEvent.Via.API)
        return Response(status=status.HTTP_204_NO_CONTENT)
    data = _body(request, partial=request.method == "PATCH")
    secret = data.pop("webhook_secret", None)
    try:
        services.alert_rule_update(
            rule=rule, webhook_secret=secret, actor=_actor(request), via=AuditEvent.Via.API, **data
        )
    except DjangoValidationError as exc:
        raise _as_api_error(exc) from None
    return Response(s.rule_data(selectors.rule_of(workspace, rule.pk)))


@extend_schema(
    operation_id="alert_rules_test",
    summary="Send a test event to every channel of the rule now",
    description="One attempt per webhook URL and e-mail address, no retries; the attempts are also listed "
    "in alert-deliveries. The payload carries the rule's current value.",
    parameters=[RULE_ID, WORKSPACE_PARAMETER],
    request=None,
    responses={200: s.TestSendResultSerializer, **ERRORS},
)
@api_view(["POST"])
@permission_classes([CanAdministerAlerts])
def alert_rule_test(request: Request, rule_id: str) -> Response:
    workspace = _workspace(request)
    _check_params(request, set())
    rule = _rule(workspace, rule_id)
    try:
        attempts = services.alert_rule_test_send(rule=rule, actor=_actor(request), via=AuditEvent.Via.API)
    except DjangoValidationError as exc:
        raise _as_api_error(exc) from None
    return Response({"object": "list", "data": [s.delivery_data(made) for made in attempts]})


def _actor(request: Request):
    return None if request_api_key(request) is not None else request.user


# --- History -----------------------------------------------------------------------------

HISTORY_PARAMETERS = [
    OpenApiParameter("rule", OpenApiTypes.INT, description="Only this rule's."),
    OpenApiParameter("cursor", OpenApiTypes.INT, description="next_cursor of the previous page."),
    OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": 500}, description="1 to 500 (default 50)."),
    WORKSPACE_PARAMETER,
]


def _history(request: Request) -> tuple[Workspace, dict]:
    workspace = _workspace(request)
    _check_params(request, {"rule", "cursor", "limit"})
    return workspace, {
        "rule_id": _query_int(request, "rule", None, 1, ID_MAX),
        "cursor": _query_int(request, "cursor", None, 1, ID_MAX),
        "limit": _query_int(request, "limit", selectors.DEFAULT_PAGE_SIZE, 1, selectors.MAX_PAGE_SIZE),
    }


def _listing(rows: list, next_cursor: int | None, shape) -> Response:
    return Response(
        {
            "object": "list",
            "data": [shape(row) for row in rows],
            "next_cursor": str(next_cursor) if next_cursor else None,
            "has_more": next_cursor is not None,
        }
    )


@extend_schema(
    operation_id="alert_events_list",
    summary="Alert events (fired, resolved, test), newest first",
    parameters=HISTORY_PARAMETERS,
    responses={200: s.AlertEventListSerializer, **ERRORS},
)
@api_view(["GET"])
@permission_classes([CanAdministerAlerts])
def alert_events(request: Request) -> Response:
    workspace, params = _history(request)
    return _listing(*selectors.events_page(workspace, **params), s.event_data)


@extend_schema(
    operation_id="alert_deliveries_list",
    summary="Alert delivery attempts (webhooks and e-mails), newest first",
    parameters=HISTORY_PARAMETERS,
    responses={200: s.AlertDeliveryListSerializer, **ERRORS},
)
@api_view(["GET"])
@permission_classes([CanAdministerAlerts])
def alert_deliveries(request: Request) -> Response:
    workspace, params = _history(request)
    return _listing(*selectors.deliveries_page(workspace, **params), s.delivery_data)
