"""Who may call the logs and analytics API, and which workspace a request reads.

- A workspace API key in ``x-portkey-api-key`` or ``Authorization: Bearer pk-...`` (the Portkey
  SDK also sends ``Authorization: Bearer <provider key>``: a bearer token that is not a Portico
  key is ignored, never taken as a credential). Reading needs the ``logs.read`` scope.
- A logged-in dashboard session (DRF's SessionAuthentication: CSRF checked on unsafe methods).

Every read is scoped to one workspace: a key's own, or for a session one of the user's
memberships, named with ``?workspace=<slug>`` when the user has several. Another tenant's
workspace or object is a 404, never a 403, so ids and slugs cannot be probed.
"""

from __future__ import annotations

from django.http import HttpRequest
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from workspaces import keys, services
from workspaces.models import ApiKey, Workspace

WORKSPACE_PARAM = "workspace"


class ApiKeyUser:
    """``request.user`` for key-authenticated requests; ``request.auth`` is the ApiKey."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = id = None

    def __init__(self, api_key: ApiKey) -> None:
        self.api_key = api_key
        self.username = f"api-key:{api_key.prefix}"

    def __str__(self) -> str:
        return self.username


def key_from_headers(request: HttpRequest) -> str | None:
    """The Portico key a request carries, if any."""
    key = request.META.get("HTTP_X_PORTKEY_API_KEY", "").strip()
    if key:
        return key
    auth = request.META.get("HTTP_AUTHORIZATION", "")
    if auth[:7].lower() == "bearer ":
        token = auth[7:].strip()
        if token.startswith(keys.KEY_PREFIX):
            return token
    return None


class ApiKeyAuthentication(BaseAuthentication):
    """A workspace API key. A key that is sent but unknown, revoked or expired is a 401, even
    when a session cookie is present: the explicit credential wins."""

    def authenticate(self, request: Request) -> tuple[ApiKeyUser, ApiKey] | None:
        full_key = key_from_headers(request)
        if full_key is None:
            return None
        api_key = services.api_key_authenticate(full_key)
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid API key: it is unknown, revoked or expired.")
        return ApiKeyUser(api_key), api_key

    def authenticate_header(self, request: Request) -> str:
        # Makes unauthenticated requests a 401 with WWW-Authenticate rather than a 403.
        return 'Bearer realm="portico"'


def request_api_key(request: Request) -> ApiKey | None:
    return request.auth if isinstance(request.auth, ApiKey) else None


class CanReadLogs(BasePermission):
    """A key with the logs.read scope, or a logged-in user (scoped to their memberships)."""

    message = "This API key does not have the logs.read scope."

    def has_permission(self, request: Request, view: object) -> bool:
        api_key = request_api_key(request)
        if api_key is not None:
            return api_key.has_scope(ApiKey.Scope.LOGS_READ)
        return bool(request.user and request.user.is_authenticated)


class CanWriteLogs(BasePermission):
    """Custom logs and feedback: a key with the inference or the logs.read scope."""

    message = "This API key needs the inference or the logs.read scope."

    def has_permission(self, request: Request, view: object) -> bool:
        api_key = request_api_key(request)
        return api_key is not None and (
            api_key.has_scope(ApiKey.Scope.INFERENCE) or api_key.has_scope(ApiKey.Scope.LOGS_READ)
        )


def request_workspace(request: Request) -> Workspace:
    """The one workspace this request may read; 404 for any other tenant's."""
    slug = request.query_params.get(WORKSPACE_PARAM, "").strip()
    if "\x00" in slug or len(slug) > 63:
        raise exceptions.NotFound("No such workspace.")
    api_key = request_api_key(request)
    if api_key is not None:
        if slug and slug != api_key.workspace.slug:
            raise exceptions.NotFound("No such workspace.")
        return api_key.workspace
    workspaces = Workspace.objects.filter(memberships__user=request.user)
    if slug:
        workspace = workspaces.filter(slug=slug).first()
        if workspace is None:
            raise exceptions.NotFound("No such workspace.")
        return workspace
    candidates = list(workspaces.order_by("slug")[:2])
    if not candidates:
        raise exceptions.NotFound("You are not a member of any workspace.")
    if len(candidates) > 1:
        raise exceptions.ValidationError(
            {WORKSPACE_PARAM: ["You belong to several workspaces: name one with ?workspace=<slug>."]}
        )
    return candidates[0]
