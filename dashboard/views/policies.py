"""The Policies page: the workspace's budgets and rate limits with their current usage; owners
and admins create, edit and delete them (403 for the other roles, who can read the page, as in
Settings; outsiders get a 404 from workspace_view). Writes go through
``analytics.policies.services`` (validated, audited with ``via="dashboard"``).

The edit page shows the top scope values' usage against the limit, refreshed every 10 s by htmx
(a partial, no inline script), and the form's Preview button shows the same table for the
unsaved values being edited."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from analytics.policies import rules, selectors, services
from analytics.policies.models import Policy
from dashboard.forms import PolicyForm
from dashboard.views import fragments
from dashboard.views.fragments import page_for_navigation
from dashboard.views.workspace_settings import VIA, _apply_errors, _context, _require_edit
from workspaces.access import WorkspaceAccess, workspace_view


def _policy(access: WorkspaceAccess, policy_id: int) -> Policy:
    return get_object_or_404(Policy, workspace=access.workspace, pk=policy_id)


def _choices() -> dict:
    return {"window_choices": rules.WINDOW_CHOICES, "per_choices": ["_user", "metadata.<key>", "model", "api_key"]}


@workspace_view()
@require_http_methods(["GET", "POST"])
def policies(request: HttpRequest, access: WorkspaceAccess) -> HttpResponse:
    status = 200
    form = PolicyForm()
    if request.method == "POST":
        _require_edit(access)
        form = PolicyForm(request.POST)
        if form.is_valid():
            try:
                services.policy_create(workspace=access.workspace, actor=request.user, via=VIA, **form.policy_fields())
            except ValidationError as exc:
                _apply_errors(form, exc)
            else:
                return redirect("dashboard:policies", slug=access.workspace.slug)
        status = 400
    context = _context(
        request, access, "policies", form=form, policies=selectors.policies_of(access.workspace), **_choices()
    )
    return render(request, "dashboard/policies.html", context, status=status)


@workspace_view()
@require_http_methods(["GET", "POST"])
def policy_edit(request: HttpRequest, access: WorkspaceAccess, policy_id: int) -> HttpResponse:
    policy = _policy(access, policy_id)
    initial = PolicyForm.initial_for(policy)
    status = 200
    if request.method == "POST":
        _require_edit(access)
        form = PolicyForm(request.POST, initial=initial)
        if form.is_valid():
            try:
                services.policy_update(policy=policy, actor=request.user, via=VIA, **form.policy_fields())
            except ValidationError as exc:
                policy.refresh_from_db()
                _apply_errors(form, exc)
            else:
                return redirect("dashboard:policies", slug=access.workspace.slug)
        status = 400
    else:
        form = PolicyForm(initial=initial)
    context = _context(request, access, "policies", form=form, saved=policy, **_choices())
    context.update(_usage_context(policy))
    return render(request, "dashboard/policy_edit.html", context, status=status)


def _usage_context(policy: Policy) -> dict:
    try:
        rows = selectors.current_usage(policy)
    except ValidationError as exc:  # an unsaved preview with a bad field
        return {"usage_problem": " ".join(exc.messages), "policy": policy}
    return {"usage": rows, "policy": policy}


@workspace_view()
@require_GET
@page_for_navigation(fragments.policy_page)
def policy_usage(request: HttpRequest, access: WorkspaceAccess, policy_id: int) -> HttpResponse:
    """The usage table of a saved policy (the edit page refreshes it)."""
    policy = _policy(access, policy_id)
    return render(request, "dashboard/_policy_usage.html", _usage_context(policy))


@workspace_view()
@require_POST
def policy_preview(request: HttpRequest, access: WorkspaceAccess) -> HttpResponse:
    """The usage table for the form's unsaved values: what the policy would count right now.
    Reading only, so every member may preview."""
    form = PolicyForm(request.POST)
    if not form.is_valid():
        problems = [f"{form.fields[name].label or name}: {' '.join(errors)}" for name, errors in form.errors.items()]
        return render(request, "dashboard/_policy_usage.html", {"usage_problem": "; ".join(problems)})
    policy = Policy(workspace=access.workspace, **form.policy_fields())
    try:
        policy.scope = rules.clean_scope(policy.scope)
        policy.per = rules.clean_per(policy.per)
        rules.parse_window(policy.window)
    except ValidationError as exc:
        return render(request, "dashboard/_policy_usage.html", {"usage_problem": " ".join(exc.messages)})
    return render(request, "dashboard/_policy_usage.html", {**_usage_context(policy), "preview": True})


@workspace_view(edit=True)
@require_http_methods(["GET", "POST"])
def policy_delete(request: HttpRequest, access: WorkspaceAccess, policy_id: int) -> HttpResponse:
    """GET asks for confirmation; POST deletes."""
    policy = _policy(access, policy_id)
    if request.method == "GET":
        return render(request, "dashboard/policy_delete.html", _context(request, access, "policies", saved=policy))
    services.policy_delete(policy=policy, actor=request.user, via=VIA)
    return redirect("dashboard:policies", slug=access.workspace.slug)
