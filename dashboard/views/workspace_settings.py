"""Workspace settings pages (default metadata and schema, API keys, providers, members) and the
audit trail. Every member can read them; only owners and admins can change settings, and only
owners can manage members (403 for the others). Writes go through ``workspaces.services`` with
``via="dashboard"`` so they are validated and audited exactly like admin, command and REST
changes."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from config.parsing import InvalidParameter, clean_text, parse_int
from dashboard.forms import (
    ApiKeyCreateForm,
    MemberAddForm,
    MemberRoleForm,
    ProviderCreateForm,
    ProviderSecretForm,
    WorkspaceMetadataForm,
)
from workspaces import services
from workspaces.access import WorkspaceAccess, user_memberships, workspace_view
from workspaces.models import ApiKey, AuditEvent, Membership, Provider, Workspace
from workspaces.provider_kinds import probe_request

VIA = AuditEvent.Via.DASHBOARD
AUDIT_PAGE_SIZE = 100
TEST_TIMEOUT_SECONDS = 5


def _context(request: HttpRequest, access: WorkspaceAccess, page: str, **extra: object) -> dict:
    return {
        "access": access,
        "workspace": access.workspace,
        "page": page,
        "memberships": user_memberships(request.user),
        **extra,
    }


def _require_edit(access: WorkspaceAccess) -> None:
    if not access.can_edit:
        raise PermissionDenied("Only workspace owners and admins can change settings.")


def _apply_errors(form: object, exc: ValidationError) -> None:
    """Model validation errors shown on the form field they belong to (or above the form)."""
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc)
        return
    for field, messages in exc.message_dict.items():
        form.add_error(field if field in form.fields else None, messages)


# --- Workspace metadata ------------------------------------------------------------------


@workspace_view()
@require_http_methods(["GET", "POST"])
def settings_metadata(request: HttpRequest, access: WorkspaceAccess) -> HttpResponse:
    workspace = access.workspace
    initial = {
        "default_metadata": workspace.default_metadata,
        "metadata_schema": workspace.metadata_schema,
        "time_zone": workspace.time_zone,
    }
    saved = False
    if request.method == "POST":
        _require_edit(access)
        form = WorkspaceMetadataForm(request.POST, initial=initial)
        if form.is_valid():
            fields = dict(form.cleaned_data)
            if not fields["time_zone"]:
                del fields["time_zone"]  # not posted: unchanged
            try:
                services.workspace_update(workspace=workspace, actor=request.user, via=VIA, **fields)
            except ValidationError as exc:
                workspace.refresh_from_db()
                _apply_errors(form, exc)
            else:
                saved = True
    else:
        form = WorkspaceMetadataForm(initial=initial)
    context = _context(request, access, "settings", form=form, saved=saved, section="metadata")
    return render(request, "dashboard/settings_metadata.html", context)


@workspace_view()
@require_POST
def settings_metadata_validate(request: HttpRequest, access: WorkspaceAccess) -> HttpResponse:
    """Live validation while typing: the errors saving would show, without saving."""
    _require_edit(access)
    form = WorkspaceMetadataForm(request.POST)
    errors: dict[str, list[str]] = {}
    if form.is_valid():
        candidate = Workspace.objects.get(pk=access.workspace.pk)
        candidate.default_metadata = form.cleaned_data["default_metadata"]
        candidate.metadata_schema = form.cleaned_data["metadata_schema"]
        candidate.time_zone = form.cleaned_data["time_zone"] or candidate.time_zone
        try:
            candidate.clean()
        except ValidationError as exc:
            errors = exc.message_dict
    else:
        errors = {field: list(messages) for field, messages in form.errors.items()}
    return render(request, "dashboard/_metadata_validation.html", {"errors": errors, "checked": True})


# --- API keys ----------------------------------------------------------------------------


@workspace_view()
@require_http_methods(["GET", "POST"])
def settings_keys(request: HttpRequest, access: WorkspaceAccess) -> HttpResponse:
    created = None
    resubmitted = False
    if request.method == "POST":
        _require_edit(access)
        form = ApiKeyCreateForm(request.POST)
        # A reload of the "key created" page re-posts the form: one key per form, not two.
        nonce = request.POST.get("form_nonce", "")[:64]
        if nonce and not cache.add(f"portico:keyform:{access.workspace.pk}:{nonce}", 1, timeout=86400):
            resubmitted, form = True, ApiKeyCreateForm()
        elif form.is_valid():
            data = form.cleaned_data
            days = data.pop("expires_in_days")
            try:
                api_key, full_key = services.api_key_create(
                    workspace=access.workspace,
                    expires_at=timezone.now() + timedelta(days=days) if days else None,
                    actor=request.user,
                    via=VIA,
                    **data,
                )
            except ValidationError as exc:
                _apply_errors(form, exc)
            else:
                created = {"api_key": api_key, "full_key": full_key}
                form = ApiKeyCreateForm()
    else:
        form = ApiKeyCreateForm()
    keys = ApiKey.objects.filter(workspace=access.workspace).order_by("-is_active", "-created_at")
    context = _context(
        request,
        access,
        "settings",
        section="keys",
        form=form,
        keys=keys,
        created=created,
        resubmitted=resubmitted,
        form_nonce=uuid.uuid4().hex,
        gateway_url=request.build_absolute_uri("/v1"),
        provider=access.workspace.providers.filter(is_active=True).order_by("slug").first(),
    )
    response = render(request, "dashboard/settings_keys.html", context)
    if created:
        # The key is in this response only: never cached, never in a redirect or the session.
        add_never_cache_headers(response)
    return response


@workspace_view(edit=True)
@require_POST
def settings_key_revoke(request: HttpRequest, access: WorkspaceAccess, key_id: int) -> HttpResponse:
    api_key = get_object_or_404(ApiKey, workspace=access.workspace, pk=key_id)
    if api_key.is_active:
        services.api_key_revoke(api_key=api_key, actor=request.user, via=VIA)
    return redirect("dashboard:settings_keys", slug=access.workspace.slug)


# --- Members -----------------------------------------------------------------------------


def _require_owner(access: WorkspaceAccess) -> None:
    if access.role != Membership.Role.OWNER:
        raise PermissionDenied("Only workspace owners can manage members.")


def _members_page(
    request: HttpRequest,
    access: WorkspaceAccess,
    *,
    form: MemberAddForm | None = None,
    error: str = "",
    status: int = 200,
) -> HttpResponse:
    members = Membership.objects.filter(workspace=access.workspace).select_related("user").order_by("user__username")
    context = _context(
        request,
        access,
        "settings",
        section="members",
        members=members,
        form=form or MemberAddForm(),
        error=error,
        roles=Membership.Role.values,
        can_manage=access.role == Membership.Role.OWNER,
    )
    return render(request, "dashboard/settings_members.html", context, status=status)


def _member(access: WorkspaceAccess, membership_id: int) -> Membership:
    return get_object_or_404(
        Membership.objects.select_related("user", "workspace"), workspace=access.workspace, pk=membership_id
    )


@workspace_view()
@require_http_methods(["GET", "POST"])
def settings_members(request: HttpRequest, access: WorkspaceAccess) -> HttpResponse:
    """The member list; owners add an existing account by username or e-mail."""
    if request.method == "GET":
        return _members_page(request, access)
    _require_owner(access)
    form = MemberAddForm(request.POST)
    if form.is_valid():
        user = form.cleaned_data["user"]
        if Membership.objects.filter(workspace=access.workspace, user=user).exists():
            form.add_error("user", f"{user.get_username()} is already a member; change their role in the list.")
        else:
            services.membership_add(
                workspace=access.workspace, user=user, role=form.cleaned_data["role"], actor=request.user, via=VIA
            )
            return redirect("dashboard:settings_members", slug=access.workspace.slug)
    return _members_page(request, access, form=form, status=400)


@workspace_view()
@require_POST
def settings_member_role(request: HttpRequest, access: WorkspaceAccess, membership_id: int) -> HttpResponse:
    _require_owner(access)
    membership = _member(access, membership_id)
    form = MemberRoleForm(request.POST)
    if not form.is_valid():
        return _members_page(request, access, error=f"role: {' '.join(form.errors['role'])}", status=400)
    try:
        services.membership_add(
            workspace=access.workspace,
            user=membership.user,
            role=form.cleaned_data["role"],
            actor=request.user,
            via=VIA,
        )
    except ValidationError as exc:
        return _members_page(request, access, error=" ".join(exc.messages), status=400)
    return redirect("dashboard:settings_members", slug=access.workspace.slug)


@workspace_view()
@require_http_methods(["GET", "POST"])
def settings_member_remove(request: HttpRequest, access: WorkspaceAccess, membership_id: int) -> HttpResponse:
    """GET asks for confirmation (a page, so no script is needed); POST removes."""
    _require_owner(access)
    membership = _member(access, membership_id)
    if request.method == "GET":
        context = _context(request, access, "settings", section="members", membership=membership, can_manage=True)
        return render(request, "dashboard/settings_member_remove.html", context)
    try:
        services.membership_remove(membership=membership, actor=request.user, via=VIA)
    except ValidationError as exc:
        return _members_page(request, access, error=" ".join(exc.messages), status=400)
    if membership.user_id == request.user.pk:
        return redirect("dashboard:home")  # they left: the workspace is no longer theirs to see
    return redirect("dashboard:settings_members", slug=access.workspace.slug)


# --- Providers ---------------------------------------------------------------------------


@workspace_view()
@require_http_methods(["GET", "POST"])
def settings_providers(request: HttpRequest, access: WorkspaceAccess) -> HttpResponse:
    if request.method == "POST":
        _require_edit(access)
        form = ProviderCreateForm(request.POST)
        if form.is_valid():
            try:
                services.provider_create(workspace=access.workspace, actor=request.user, via=VIA, **form.cleaned_data)
            except ValidationError as exc:
                _apply_errors(form, exc)
            else:
                return redirect("dashboard:settings_providers", slug=access.workspace.slug)
    else:
        form = ProviderCreateForm()
    providers = Provider.objects.filter(workspace=access.workspace).order_by("slug")
    context = _context(
        request,
        access,
        "settings",
        section="providers",
        form=form,
        providers=providers,
        secret_form=ProviderSecretForm(),
    )
    return render(request, "dashboard/settings_providers.html", context)


@workspace_view(edit=True)
@require_POST
def settings_provider_rotate(request: HttpRequest, access: WorkspaceAccess, provider_id: int) -> HttpResponse:
    provider = get_object_or_404(Provider, workspace=access.workspace, pk=provider_id)
    form = ProviderSecretForm(request.POST)
    if form.is_valid():
        services.provider_rotate_secret(
            provider=provider, api_key=form.cleaned_data["api_key"], actor=request.user, via=VIA
        )
        message, ok = "Secret replaced. The new key is used within a few seconds.", True
    else:
        message, ok = "Enter the new API key.", False
    return render(request, "dashboard/_provider_result.html", {"message": message, "ok": ok})


@workspace_view(edit=True)
@require_POST
def settings_provider_test(request: HttpRequest, access: WorkspaceAccess, provider_id: int) -> HttpResponse:
    """Call the provider's ``/models`` with its stored key and report what came back."""
    provider = get_object_or_404(Provider, workspace=access.workspace, pk=provider_id)
    ok, message = check_provider(provider)
    return render(request, "dashboard/_provider_result.html", {"message": message, "ok": ok})


def check_provider(provider: Provider) -> tuple[bool, str]:
    """(reachable and accepted the key, a sentence saying what happened). The call goes through
    the gateway's guarded client: the SSRF guard applies to the address actually connected to,
    and a redirect is reported, not followed (it would carry the secret to another host). Each
    provider kind is asked with its own credential header."""
    from workspaces.upstream.probe import probe_upstream

    url, credentials = probe_request(
        provider.kind, provider.base_url, provider.get_secret() if provider.has_secret else "", provider.api_version
    )
    result = probe_upstream(url, credentials=credentials, timeout=TEST_TIMEOUT_SECONDS)
    status, elapsed = result.status, result.elapsed_ms
    if status is None:
        return False, f"Could not connect to {url}: {result.error}."
    if 200 <= status < 300:
        return True, f"Connected: GET {url} answered {status} in {elapsed:.0f} ms."
    if status in (401, 403):
        return False, f"Reached {url}, but it refused the stored key ({status}). Rotate the secret."
    if 300 <= status < 400:
        return False, (
            f"GET {url} answered {status}, a redirect to {result.location or 'an unnamed location'}. "
            "The gateway does not follow redirects (the key would go to another address): "
            "set the base URL to the address the provider serves from."
        )
    return False, f"GET {url} answered {status} in {elapsed:.0f} ms."


# --- Audit -------------------------------------------------------------------------------


@workspace_view()
@require_GET
def audit(request: HttpRequest, access: WorkspaceAccess) -> HttpResponse:
    events = AuditEvent.objects.filter(workspace=access.workspace).select_related("actor")
    filters, errors = _audit_query(request)
    if filters["object_type"]:
        events = events.filter(object_type=filters["object_type"])
    if filters["via"]:
        events = events.filter(via=filters["via"])
    if filters["actor"]:
        events = events.filter(actor_label__icontains=filters["actor"])
    if filters["action"]:
        events = events.filter(Q(action=filters["action"]) | Q(action__startswith=filters["action"] + "."))
    if filters["before"]:
        events = events.filter(id__lt=filters["before"])
    page = list(events.order_by("-id")[: AUDIT_PAGE_SIZE + 1])
    more = len(page) > AUDIT_PAGE_SIZE
    page = page[:AUDIT_PAGE_SIZE]
    context = _context(
        request,
        access,
        "audit",
        events=page,
        filters=filters,
        next_before=page[-1].id if more else None,
        object_types=["workspace", "api_key", "provider", "membership", "config"],
        vias=AuditEvent.Via.values,
        filter_errors=errors,
    )
    template = "dashboard/_audit.html" if request.headers.get("HX-Target") == "results" else "dashboard/audit.html"
    return render(request, template, context, status=400 if errors else 200)


def _audit_query(request: HttpRequest) -> tuple[dict, list[str]]:
    """The audit page's filters and ``before`` cursor (an event id), through config.parsing; a
    value it refuses is reported and ignored (NUL would be a database error on Postgres)."""
    filters: dict = {}
    errors = []
    for name in ("object_type", "via", "actor", "action", "before"):
        raw = request.GET.get(name, "")
        try:
            if name == "before":
                filters[name] = parse_int(raw, param=name, minimum=1) if raw.strip() else None
            else:
                filters[name] = clean_text(raw, param=name, max_length=200)
        except InvalidParameter as exc:
            filters[name] = None if name == "before" else ""
            errors.append(exc.message)
    return filters, errors
