"""Fragment endpoints (htmx partials: more log rows, a policy's usage table) opened as a page.
The browser then shows a bare, unstyled piece of a page. When the browser says
the request is a top-level navigation (``Sec-Fetch-Dest: document``, sent by every current
browser on typing a URL, following a link or reloading) and htmx did not send it, the user is
redirected to the page the fragment belongs to, with the same filters. htmx requests and other
clients (scripts, tests, curl) get the fragment as before."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from workspaces.access import WorkspaceAccess


def opened_as_page(request: HttpRequest) -> bool:
    return request.headers.get("Sec-Fetch-Dest") == "document" and request.headers.get("HX-Request") != "true"


def page_for_navigation(page_url: Callable[..., str]):
    """Decorate a fragment view (inside ``workspace_view``, so outsiders still get 404): a
    navigation to it redirects to ``page_url(request, access, *args, **kwargs)``, called with the
    view's own arguments."""

    def decorate(view):
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if opened_as_page(request):
                return redirect(page_url(request, *args, **kwargs))
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


def logs_page(request: HttpRequest, access: WorkspaceAccess, *args, **kwargs) -> str:
    """The Logs page with the fragment's filters (without the "load more" cursor)."""
    query = request.GET.copy()
    query.pop("cursor", None)
    url = reverse("dashboard:logs", args=[access.workspace.slug])
    return f"{url}?{query.urlencode()}" if query else url


def policy_page(request: HttpRequest, access: WorkspaceAccess, policy_id: int, **kwargs) -> str:
    return reverse("dashboard:policy_edit", args=[access.workspace.slug, policy_id])
