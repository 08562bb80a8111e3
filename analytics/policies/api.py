"""REST API for policies under /api/v1/policies/: CRUD and the current usage per scope value.

Who may call it: a workspace API key with the ``admin`` scope, or a dashboard session of a
member of the workspace (``?workspace=<slug>`` when the user has several): every member reads,
owners and admins write (403 for the others). Another tenant's policy is a 404. Writes go
through analytics.policies.services (validated, audited with ``via=api``)."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.decorators import api_view, parser_classes, permission_classes
from rest_framework.request import Request
from rest_framework.response import Response

from analytics.alerts.api import CanAdministerAlerts, _as_api_error, _check_params, _query_int
from analytics.authentication import request_api_key, request_workspace
from analytics.policies import selectors, services
from analytics.policies import serializers as s
from analytics.policies.models import Policy
from analytics.rest import WORKSPACE_PARAMETER, OrjsonParser, error_response
from config.parsing import InvalidParameter, parse_int
from workspaces.models import AuditEvent, Membership, Workspace

ERRORS = {
    400: error_response("Invalid body or parameter; error.param names the field."),
    401: error_response("No credentials, or an unknown, revoked or expired API key."),
    403: error_response("The API key lacks the admin scope, or the user may not change the workspace's policies."),
    404: error_response("No such workspace or policy for these credentials."),
}
POLICY_ID = OpenApiParameter("policy_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The policy's id.")
ID_MAX = 2**63 - 1


def _workspace(request: Request, *, write: bool) -> Workspace:
    workspace = request_workspace(request)
    if request_api_key(request) is None:
        membership = Membership.objects.filter(user=request.user, workspace=workspace).first()
        if membership is None:
            raise exceptions.NotFound("No such workspace.")
        if write and not membership.can_edit:
            raise exceptions.PermissionDenied("Only owners and admins of the workspace change its policies.")
    return workspace


def _policy(workspace: Workspace, policy_id: str) -> Policy:
    try:
        pk = parse_int(policy_id, param="policy_id", minimum=1, maximum=ID_MAX)
    except InvalidParameter:
        pk = None
    policy = selectors.policy_of(workspace, pk) if pk else None
    if policy is None:
        raise exceptions.NotFound("No such policy.")
    return policy


def _body(request: Request, *, partial: bool) -> dict:
    if not isinstance(request.data, dict):
        raise exceptions.ValidationError("Send a JSON object.")
    serializer = s.PolicyInputSerializer(data=request.data, partial=partial)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _actor(request: Request):
    return None if request_api_key(request) is not None else request.user


@extend_schema(
    methods=["GET"],
    operation_id="policies_list",
    summary="The workspace's policies",
    parameters=[WORKSPACE_PARAMETER],
    responses={200: s.PolicyListSerializer, **ERRORS},
)
@extend_schema(
    methods=["POST"],
    operation_id="policies_create",
    summary="Create a policy (a budget or rate limit over a scope)",
    parameters=[WORKSPACE_PARAMETER],
    request=s.PolicyInputSerializer,
    responses={201: s.PolicySerializer, **ERRORS},
)
@api_view(["GET", "POST"])
@permission_classes([CanAdministerAlerts])
@parser_classes([OrjsonParser])
def policies(request: Request) -> Response:
    workspace = _workspace(request, write=request.method == "POST")
    _check_params(request, set())
    if request.method == "GET":
        return Response({"object": "list", "data": [s.policy_data(p) for p in selectors.policies_of(workspace)]})
    data = _body(request, partial=False)
    try:
        policy = services.policy_create(workspace=workspace, actor=_actor(request), via=AuditEvent.Via.API, **data)
    except DjangoValidationError as exc:
        raise _as_api_error(exc) from None
    return Response(s.policy_data(policy), status=status.HTTP_201_CREATED)


@extend_schema(
    methods=["GET"],
    operation_id="policies_retrieve",
    summary="One policy",
    parameters=[POLICY_ID, WORKSPACE_PARAMETER],
    responses={200: s.PolicySerializer, **ERRORS},
)
@extend_schema(
    methods=["PUT", "PATCH"],
    summary="Change a policy (PATCH: only the fields sent); gateways apply it within the auth cache TTL",
    parameters=[POLICY_ID, WORKSPACE_PARAMETER],
    request=s.PolicyInputSerializer,
    responses={200: s.PolicySerializer, **ERRORS},
)
@extend_schema(
    methods=["DELETE"],
    operation_id="policies_destroy",
    summary="Delete a policy",
    parameters=[POLICY_ID, WORKSPACE_PARAMETER],
    responses={204: None, **ERRORS},
)
@api_view(["GET", "PUT", "PATCH", "DELETE"])
@permission_classes([CanAdministerAlerts])
@parser_classes([OrjsonParser])
def policy_detail(request: Request, policy_id: str) -> Response:
    workspace = _workspace(request, write=request.method != "GET")
    _check_params(request, set())
    policy = _policy(workspace, policy_id)
    if request.method == "GET":
        return Response(s.policy_data(policy))
    if request.method == "DELETE":
        services.policy_delete(policy=policy, actor=_actor(request), via=AuditEvent.Via.API)
        return Response(status=status.HTTP_204_NO_CONTENT)
    data = _body(request, partial=request.method == "PATCH")
    try:
        services.policy_update(policy=policy, actor=_actor(request), via=AuditEvent.Via.API, **data)
    except DjangoValidationError as exc:
        raise _as_api_error(exc) from None
    return Response(s.policy_data(selectors.policy_of(workspace, policy.pk)))


@extend_schema(
    operation_id="policies_usage",
    summary="Usage in the current window per scope value, highest first",
    description="From the rollups (raw logs at the window's edges), as the gateway rebuilds its counters.",
    parameters=[
        POLICY_ID,
        OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, description="Default 20."),
        WORKSPACE_PARAMETER,
    ],
    responses={200: s.UsageSerializer, **ERRORS},
)
@api_view(["GET"])
@permission_classes([CanAdministerAlerts])
def policy_usage(request: Request, policy_id: str) -> Response:
    workspace = _workspace(request, write=False)
    _check_params(request, {"limit"})
    policy = _policy(workspace, policy_id)
    top = _query_int(request, "limit", selectors.PREVIEW_ROWS, 1, 1000)
    rows = selectors.current_usage(policy, top=top)
    return Response({"object": "list", "policy": policy.pk, "data": [s.usage_data(row) for row in rows]})
