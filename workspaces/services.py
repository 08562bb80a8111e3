"""Writes to workspaces, memberships, API keys, providers and saved configs, deletions included. Every caller
(admin, commands, dashboard, REST, a shell) goes through these so validation, hashing and the
audit trail happen in one place. Each write takes ``actor=`` (the user, when there is one) and
``via=`` (where the change came from: dashboard, admin, api, command) and records an
``AuditEvent`` in the same transaction as the change.

Why services and not database triggers (django-pghistory): the default install runs on SQLite,
where pgtrigger's triggers do not exist, and a trigger sees rows, not the person and the page
behind a change; the services know both. What guards the services' completeness instead: the
admin's save and delete hooks call them (a test fails for a ModelAdmin that does not), and
nothing else in the code base saves or deletes these models."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone

from workspaces import keys
from workspaces.models import ApiKey, AuditEvent, Membership, OtelExport, Provider, RoutingConfig, Workspace

Actor = AbstractBaseUser | None

# Fields shown in the audit trail. Key hashes and provider credentials are deliberately absent.
_AUDITED_FIELDS = {
    Workspace: [
        "name",
        "slug",
        "default_metadata",
        "metadata_schema",
        "log_retention_days",
        "store_bodies",
        "allow_custom_hosts",
        "time_zone",
    ],
    ApiKey: [
        "name",
        "prefix",
        "scopes",
        "default_metadata",
        "metadata_schema",
        "is_active",
        "expires_at",
        "revoked_at",
        "rate_limit_rpm",
        "usage_limit_cost",
        "usage_limit_period",
    ],
    Provider: ["slug", "name", "kind", "base_url", "api_version", "deployment", "is_active"],
    Membership: ["role"],
    # Header names only: their values are credentials.
    OtelExport: ["enabled", "endpoint", "header_names"],
    RoutingConfig: ["slug", "name", "public_id", "config"],
}
_OBJECT_TYPES = {
    Workspace: "workspace",
    ApiKey: "api_key",
    Provider: "provider",
    Membership: "membership",
    OtelExport: "otel_export",
    RoutingConfig: "config",
}


def register_audited(model: type[models.Model], *, object_type: str, fields: list[str]) -> None:
    """Let another app's services audit ``model`` (e.g. analytics' model prices) through
    ``save_audited``/``delete_audited``; ``fields`` are the ones shown in the trail."""
    _AUDITED_FIELDS[model] = fields
    _OBJECT_TYPES[model] = object_type


def _workspace_of(obj: models.Model) -> Workspace | None:
    return obj if isinstance(obj, Workspace) else getattr(obj, "workspace", None)


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        # "2.5" whether it came from a form or from a 6-decimal column, so equal is unchanged.
        return format(value.normalize(), "f")
    return value


def audit_snapshot(obj: models.Model) -> dict:
    """The audited fields of ``obj`` as JSON values (never its secrets)."""
    snapshot = {name: _json_value(getattr(obj, name, None)) for name in _AUDITED_FIELDS[type(obj)]}
    if isinstance(obj, Provider):
        snapshot["has_secret"] = obj.has_secret
    if isinstance(obj, Membership):
        snapshot["user"] = obj.user.get_username()
    return snapshot


def stored_snapshot(obj: models.Model) -> dict:
    """The audited fields as currently stored (callers such as the admin hand in an instance
    that already carries the new values)."""
    if obj.pk is None:
        return {}
    stored = type(obj)._default_manager.filter(pk=obj.pk).first()
    return audit_snapshot(stored) if stored is not None else {}


def audit_record(
    *,
    workspace: Workspace | None,
    action: str,
    obj: models.Model,
    before: dict,
    after: dict,
    actor: Actor = None,
    via: str = AuditEvent.Via.SYSTEM,
) -> AuditEvent:
    """Record one change. ``workspace`` is None for settings of the whole installation (model
    prices)."""
    label = actor.get_username() if actor is not None else via
    return AuditEvent.objects.create(
        workspace=workspace,
        workspace_slug=workspace.slug if workspace else "",
        workspace_name=workspace.name if workspace else "",
        actor=actor if actor is not None and actor.pk else None,
        actor_label=label[:150],
        via=via,
        action=action,
        object_type=_OBJECT_TYPES[type(obj)],
        object_id=str(obj.pk or ""),
        object_repr=str(obj)[:200],
        before=before,
        after=after,
    )


def save_audited(
    obj: models.Model,
    *,
    action: str | Callable[[dict], str],
    before: dict,
    actor: Actor,
    via: str,
    update_fields: list[str] | None = None,
    after_extra: dict | None = None,
    only_if_changed: bool = False,
) -> None:
    """Save ``obj`` and record ``action`` with its before/after snapshots in one transaction.
    ``action`` may be a function of the after snapshot; ``after_extra`` is added to that
    snapshot (a secret marked changed, never its value); with ``only_if_changed`` an unchanged
    snapshot records nothing."""
    with transaction.atomic():
        obj.save(update_fields=update_fields)
        after = {**audit_snapshot(obj), **(after_extra or {})}
        if only_if_changed and after == before:
            return
        audit_record(
            workspace=_workspace_of(obj),
            action=action(after) if callable(action) else action,
            obj=obj,
            before=before,
            after=after,
            actor=actor,
            via=via,
        )


def delete_audited(obj: models.Model, *, action: str, actor: Actor, via: str, before_extra: dict | None = None) -> None:
    """Record ``action`` with the object's last snapshot, then delete it, in one transaction
    (the event is written first: afterwards the object has no primary key to name)."""
    with transaction.atomic():
        audit_record(
            workspace=_workspace_of(obj),
            action=action,
            obj=obj,
            before={**audit_snapshot(obj), **(before_extra or {})},
            after={},
            actor=actor,
            via=via,
        )
        obj.delete()


def workspace_create(
    *,
    slug: str,
    name: str = "",
    default_metadata: dict | None = None,
    metadata_schema: dict | None = None,
    log_retention_days: int = 30,
    store_bodies: bool = True,
    allow_custom_hosts: bool = False,
    owner: AbstractBaseUser | None = None,
    actor: Actor = None,
    via: str = AuditEvent.Via.SYSTEM,
) -> Workspace:
    workspace = Workspace(
        slug=slug,
        name=name or slug,
        default_metadata=default_metadata or {},
        metadata_schema=metadata_schema or {},
        log_retention_days=log_retention_days,
        store_bodies=store_bodies,
        allow_custom_hosts=allow_custom_hosts,
    )
    workspace.full_clean()
    with transaction.atomic():
        save_audited(workspace, action="workspace.create", before={}, actor=actor, via=via)
        if owner is not None:
            membership_add(workspace=workspace, user=owner, role=Membership.Role.OWNER, actor=actor, via=via)
    return workspace


def workspace_update(
    *, workspace: Workspace, actor: Actor = None, via: str = AuditEvent.Via.SYSTEM, **fields: object
) -> Workspace:
    before = stored_snapshot(workspace)
    for name, value in fields.items():
        setattr(workspace, name, value)
    workspace.full_clean()
    action = "workspace.update" if before else "workspace.create"
    save_audited(workspace, action=action, before=before, actor=actor, via=via, only_if_changed=True)
    return workspace


def workspace_delete(*, workspace: Workspace, actor: Actor = None, via: str = AuditEvent.Via.SYSTEM) -> None:
    """Delete a workspace with its members, keys, providers and logs. Its audit trail stays
    (``AuditEvent.workspace`` is set to NULL); the last event lists what went with it."""
    went_with_it = {
        "api_keys": sorted(workspace.api_keys.values_list("prefix", flat=True)),
        "providers": sorted(workspace.providers.values_list("slug", flat=True)),
        "configs": sorted(workspace.routing_configs.values_list("slug", flat=True)),
        "members": dict(workspace.memberships.order_by("user__username").values_list("user__username", "role")),
    }
    delete_audited(workspace, action="workspace.delete", actor=actor, via=via, before_extra=went_with_it)


class LastOwnerError(ValidationError):
    """Removing or demoting this membership would leave its workspace without an owner."""


def _ensure_another_owner(membership: Membership) -> None:
    if membership.role != Membership.Role.OWNER:
        return
    # Locking the owners serialises two owners removing each other at the same moment: the
    # second sees the first's removal and is refused.
    owners = Membership.objects.select_for_update().filter(
        workspace_id=membership.workspace_id, role=Membership.Role.OWNER
    )
    if not [pk for pk in owners.order_by("pk").values_list("pk", flat=True) if pk != membership.pk]:
        raise LastOwnerError(
            f"{membership.user.get_username()} is the last owner of {membership.workspace.slug}: "
            "make someone else owner first."
        )


def membership_add(
    *,
    workspace: Workspace,
    user: AbstractBaseUser,
    role: str = Membership.Role.MEMBER,
    actor: Actor = None,
    via: str = AuditEvent.Via.SYSTEM,
    keep_owner: bool = True,
) -> Membership:
    """Add ``user`` with ``role``, or change their role (idempotent: the same role records
    nothing). With ``keep_owner`` (all callers but the superusers' admin) the last owner
    cannot be demoted (LastOwnerError)."""
    if role not in Membership.Role.values:
        raise ValidationError({"role": f"Unknown role '{role}'; choose one of {', '.join(Membership.Role.values)}."})
    with transaction.atomic():
        existing = Membership.objects.filter(workspace=workspace, user=user).first()
        if existing and keep_owner and role != Membership.Role.OWNER:
            _ensure_another_owner(existing)
        before = audit_snapshot(existing) if existing else {}
        membership, _ = Membership.objects.update_or_create(workspace=workspace, user=user, defaults={"role": role})
        after = audit_snapshot(membership)
        if after != before:
            audit_record(
                workspace=workspace,
                action="membership.update" if existing else "membership.add",
                obj=membership,
                before=before,
                after=after,
                actor=actor,
                via=via,
            )
    return membership


def membership_remove(
    *, membership: Membership, actor: Actor = None, via: str = AuditEvent.Via.SYSTEM, keep_owner: bool = True
) -> None:
    """Remove a member. With ``keep_owner`` the last owner cannot be removed (LastOwnerError);
    the admin passes False: superusers may leave a workspace ownerless, e.g. before deleting it."""
    with transaction.atomic():
        if keep_owner:
            _ensure_another_owner(membership)
        delete_audited(membership, action="membership.remove", actor=actor, via=via)


def user_delete(*, user: AbstractBaseUser, actor: Actor = None, via: str = AuditEvent.Via.SYSTEM) -> None:
    """Delete a user account; each workspace it belonged to records the membership's removal."""
    with transaction.atomic():
        for membership in Membership.objects.select_related("workspace", "user").filter(user=user):
            membership_remove(membership=membership, actor=actor, via=via, keep_owner=False)
        user.delete()


def api_key_create(
    *,
    workspace: Workspace,
    name: str,
    scopes: list[str] | None = None,
    default_metadata: dict | None = None,
    metadata_schema: dict | None = None,
    expires_at: datetime | None = None,
    actor: Actor = None,
    via: str = AuditEvent.Via.SYSTEM,
    **limits: object,
) -> tuple[ApiKey, str]:
    """Create a key; returns the model and the full key, which is not recoverable later.
    ``limits`` are the optional limit fields (rate_limit_rpm, usage_limit_cost, usage_limit_period)."""
    full_key = keys.generate_key()
    api_key = ApiKey(
        workspace=workspace,
        name=name,
        prefix=keys.lookup_prefix(full_key),
        hashed_key=keys.hash_key(full_key),
        scopes=list(ApiKey.DEFAULT_SCOPES if scopes is None else scopes),
        default_metadata=default_metadata or {},
        metadata_schema=metadata_schema or {},
        expires_at=expires_at,
        **limits,
    )
    api_key.full_clean()
    save_audited(api_key, action="api_key.create", before={}, actor=actor, via=via)
    return api_key, full_key


def api_key_update(
    *, api_key: ApiKey, actor: Actor = None, via: str = AuditEvent.Via.SYSTEM, **fields: object
) -> ApiKey:
    before = stored_snapshot(api_key)
    for name, value in fields.items():
        setattr(api_key, name, value)
    api_key.full_clean()

    def action(after: dict) -> str:
        if before.get("is_active") and not after["is_active"]:
            return "api_key.revoke"
        return "api_key.update" if before else "api_key.create"

    save_audited(api_key, action=action, before=before, actor=actor, via=via, only_if_changed=True)
    return api_key


def api_key_revoke(*, api_key: ApiKey, actor: Actor = None, via: str = AuditEvent.Via.SYSTEM) -> ApiKey:
    before = audit_snapshot(api_key)
    api_key.is_active = False
    api_key.revoked_at = timezone.now()
    save_audited(
        api_key, action="api_key.revoke", before=before, actor=actor, via=via, update_fields=["is_active", "revoked_at"]
    )
    return api_key


def api_key_delete(*, api_key: ApiKey, actor: Actor = None, via: str = AuditEvent.Via.SYSTEM) -> None:
    """Delete a key. Revoking keeps it listed; deleting removes it (its logs stay, unlinked)."""
    delete_audited(api_key, action="api_key.delete", actor=actor, via=via)


def api_key_authenticate(full_key: str) -> ApiKey | None:
    """The usable key matching ``full_key``, or None. Compared in constant time."""
    if not keys.looks_like_key(full_key):
        return None
    candidate = ApiKey.objects.select_related("workspace").filter(prefix=keys.lookup_prefix(full_key)).first()
    if candidate is None or not keys.key_matches(full_key, candidate.hashed_key):
        return None
    return candidate if candidate.is_usable else None


def provider_create(
    *,
    workspace: Workspace,
    slug: str,
    base_url: str,
    api_key: str = "",
    name: str = "",
    kind: str = Provider.Kind.OPENAI,
    api_version: str = "",
    deployment: str = "",
    actor: Actor = None,
    via: str = AuditEvent.Via.SYSTEM,
) -> Provider:
    provider = Provider(
        workspace=workspace,
        slug=slug,
        base_url=base_url.rstrip("/"),
        name=name or slug,
        kind=kind,
        api_version=api_version.strip(),
        deployment=deployment.strip(),
    )
    provider.set_secret(api_key)
    provider.full_clean()
    save_audited(provider, action="provider.create", before={}, actor=actor, via=via)
    return provider


def provider_update(
    *,
    provider: Provider,
    secret: str | None = None,
    actor: Actor = None,
    via: str = AuditEvent.Via.SYSTEM,
    **fields: object,
) -> Provider:
    """Change a provider's settings. ``secret``: None keeps the stored credential, "" removes
    it, anything else replaces it (recorded in the audit trail as changed, never as a value)."""
    before = stored_snapshot(provider)
    for name, value in fields.items():
        setattr(provider, name, value)
    if isinstance(provider.base_url, str):
        provider.base_url = provider.base_url.rstrip("/")
    if secret is not None:
        provider.set_secret(secret)
    provider.full_clean()
    save_audited(
        provider,
        action="provider.update" if before else "provider.create",
        before=before,
        actor=actor,
        via=via,
        after_extra={"secret": "changed"} if secret else None,
        only_if_changed=True,
    )
    return provider


def provider_rotate_secret(
    *, provider: Provider, api_key: str, actor: Actor = None, via: str = AuditEvent.Via.SYSTEM
) -> Provider:
    before = audit_snapshot(provider)
    provider.set_secret(api_key)
    save_audited(
        provider,
        action="provider.rotate_secret",
        before=before,
        actor=actor,
        via=via,
        update_fields=["encrypted_secret", "updated_at"],
        after_extra={"secret": "changed" if api_key else "removed"},
    )
    return provider


def provider_delete(*, provider: Provider, actor: Actor = None, via: str = AuditEvent.Via.SYSTEM) -> None:
    delete_audited(provider, action="provider.delete", actor=actor, via=via)


# RFC 9110 token characters: what an HTTP header name may be made of.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")


def parse_header_lines(text: str) -> dict[str, str]:
    """``Name: value`` lines (as typed in the admin) as a dict; raises ValidationError naming
    the first bad line."""
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise ValidationError({"headers": f"Line {number}: write it as 'Name: value'."})
        headers[name.strip()] = value.strip()
    return headers


def check_headers(headers: dict[str, str]) -> None:
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ValidationError({"headers": f"'{str(name)[:40]}' is not a valid HTTP header name."})
        if not isinstance(value, str) or any(c in value for c in "\r\n\x00") or len(value) > 8192:
            raise ValidationError({"headers": f"The value of '{name}' must be one line of text (at most 8192)."})


def otel_export_update(
    *,
    workspace: Workspace,
    endpoint: str | None = None,
    enabled: bool | None = None,
    headers: dict[str, str] | None = None,
    actor: Actor = None,
    via: str = AuditEvent.Via.SYSTEM,
) -> OtelExport:
    """Create or change the workspace's OpenTelemetry export. ``headers``: None keeps the stored
    ones, {} removes them, anything else replaces them (audited by name, never by value). The
    log writers pick the change up within analytics.otel_export's refresh interval."""
    export = OtelExport.objects.filter(workspace=workspace).first() or OtelExport(workspace=workspace)
    before = stored_snapshot(export)
    if endpoint is not None:
        export.endpoint = endpoint.strip()
    if enabled is not None:
        export.enabled = enabled
    changed_headers = headers is not None and headers != (export.get_headers() if export.pk else {})
    if headers is not None:
        check_headers(headers)
        export.set_headers(headers)
    export.full_clean()
    save_audited(
        export,
        action="otel_export.update" if before else "otel_export.create",
        before=before,
        actor=actor,
        via=via,
        after_extra={"headers": "changed"} if changed_headers else None,
        only_if_changed=True,
    )
    return export


def otel_export_delete(*, export: OtelExport, actor: Actor = None, via: str = AuditEvent.Via.SYSTEM) -> None:
    delete_audited(export, action="otel_export.delete", actor=actor, via=via)


def config_create(
    *,
    workspace: Workspace,
    slug: str,
    config: dict,
    name: str = "",
    actor: Actor = None,
    via: str = AuditEvent.Via.SYSTEM,
) -> RoutingConfig:
    """Save a Portkey config; clients use it with ``x-portkey-config: <public_id or slug>``."""
    saved = RoutingConfig(workspace=workspace, slug=slug, name=name or slug, config=config)
    saved.full_clean()
    save_audited(saved, action="config.create", before={}, actor=actor, via=via)
    return saved


def config_update(
    *, routing_config: RoutingConfig, actor: Actor = None, via: str = AuditEvent.Via.SYSTEM, **fields: object
) -> RoutingConfig:
    """Change a saved config (``fields``: slug, name, config); gateways pick the change up
    within GATEWAY_AUTH_CACHE_TTL."""
    before = stored_snapshot(routing_config)
    for name, value in fields.items():
        setattr(routing_config, name, value)
    routing_config.full_clean()
    action = "config.update" if before else "config.create"
    save_audited(routing_config, action=action, before=before, actor=actor, via=via, only_if_changed=True)
    return routing_config


def config_delete(*, routing_config: RoutingConfig, actor: Actor = None, via: str = AuditEvent.Via.SYSTEM) -> None:
    delete_audited(routing_config, action="config.delete", actor=actor, via=via)
