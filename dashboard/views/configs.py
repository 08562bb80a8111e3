"""Settings > Configs: the workspace's saved Portkey configs. Every member can read them;
owners and admins create, edit and delete them (403 for the others). Writes go through
``workspaces.services`` (validated by the gateway's config parser, audited with
``via="dashboard"``). Delete asks on a page of its own, so no script is needed (CSP)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from dashboard.forms import RoutingConfigForm
from dashboard.views.workspace_settings import VIA, _apply_errors, _context, _require_edit
from workspaces import services
from workspaces.access import WorkspaceAccess, workspace_view
from workspaces.models import RoutingConfig


def _config(access: WorkspaceAccess, config_id: int) -> RoutingConfig:
    return get_object_or_404(RoutingConfig, workspace=access.workspace, pk=config_id)


@workspace_view()
@require_http_methods(["GET", "POST"])
def settings_configs(request: HttpRequest, access: WorkspaceAccess) -> HttpResponse:
    """The list, and the form that adds a config."""
    status = 200
    if request.method == "POST":
        _require_edit(access)
        form = RoutingConfigForm(request.POST)
        if form.is_valid():
            try:
                services.config_create(workspace=access.workspace, actor=request.user, via=VIA, **form.cleaned_data)
            except ValidationError as exc:
                _apply_errors(form, exc)
            else:
                return redirect("dashboard:settings_configs", slug=access.workspace.slug)
        status = 400
    else:
        form = RoutingConfigForm()
    configs = RoutingConfig.objects.filter(workspace=access.workspace).order_by("slug")
    context = _context(request, access, "settings", section="configs", form=form, configs=configs)
    return render(request, "dashboard/settings_configs.html", context, status=status)


@workspace_view()
@require_http_methods(["GET", "POST"])
def settings_config_edit(request: HttpRequest, access: WorkspaceAccess, config_id: int) -> HttpResponse:
    saved = _config(access, config_id)
    initial = {"slug": saved.slug, "name": saved.name, "config": saved.config}
    status = 200
    if request.method == "POST":
        _require_edit(access)
        form = RoutingConfigForm(request.POST, initial=initial)
        if form.is_valid():
            try:
                services.config_update(routing_config=saved, actor=request.user, via=VIA, **form.cleaned_data)
            except ValidationError as exc:
                saved.refresh_from_db()  # the page names the stored config, not the refused edit
                _apply_errors(form, exc)
            else:
                return redirect("dashboard:settings_configs", slug=access.workspace.slug)
        status = 400
    else:
        form = RoutingConfigForm(initial=initial)
    context = _context(request, access, "settings", section="configs", form=form, saved=saved)
    return render(request, "dashboard/settings_config_edit.html", context, status=status)


@workspace_view(edit=True)
@require_http_methods(["GET", "POST"])
def settings_config_delete(request: HttpRequest, access: WorkspaceAccess, config_id: int) -> HttpResponse:
    """GET asks for confirmation; POST deletes."""
    saved = _config(access, config_id)
    if request.method == "GET":
        context = _context(request, access, "settings", section="configs", saved=saved)
        return render(request, "dashboard/settings_config_delete.html", context)
    services.config_delete(routing_config=saved, actor=request.user, via=VIA)
    return redirect("dashboard:settings_configs", slug=access.workspace.slug)
