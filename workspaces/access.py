"""The one access helper for dashboard pages: every view that takes a workspace slug (and so
every object id under it) goes through ``workspace_view``. Someone who is not a member gets a
404, exactly like for a workspace that does not exist, so slugs cannot be probed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse

from workspaces.models import Membership, Workspace

EDIT_ROLES = (Membership.Role.OWNER, Membership.Role.ADMIN)


@dataclass(frozen=True)
class WorkspaceAccess:
    workspace: Workspace
    membership: Membership

    @property
    def role(self) -> str:
        return self.membership.role

    @property
    def can_edit(self) -> bool:
        return self.membership.role in EDIT_ROLES


def get_access(request: HttpRequest, slug: str) -> WorkspaceAccess:
    """The workspace ``slug`` and the user's membership in it; 404 for non-members."""
    if not request.user.is_authenticated:
        raise Http404("No such workspace.")
    membership = Membership.objects.select_related("workspace").filter(user=request.user, workspace__slug=slug).first()
    if membership is None:
        raise Http404("No such workspace.")
    return WorkspaceAccess(workspace=membership.workspace, membership=membership)


def user_memberships(user: object) -> list[Membership]:
    """The user's workspaces for the switcher, by name."""
    return list(Membership.objects.select_related("workspace").filter(user=user).order_by("workspace__name"))


def workspace_view(*, edit: bool = False) -> Callable:
    """Decorator for views taking ``slug``: logs in, resolves membership (404 otherwise) and,
    with ``edit=True``, requires an owner/admin role (403 otherwise). The view receives the
    ``WorkspaceAccess`` in place of the slug; ``request.access`` holds it too (for templates)."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @login_required
        @wraps(view)
        def wrapped(request: HttpRequest, slug: str, *args: object, **kwargs: object) -> HttpResponse:
            access = get_access(request, slug)
            if edit and not access.can_edit:
                raise PermissionDenied("Only workspace owners and admins can change settings.")
            request.access = access
            return view(request, access, *args, **kwargs)

        return wrapped

    return decorate
