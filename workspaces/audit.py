"""The audit trail: every audited write records an AuditEvent (who, through which door, the
audited fields before and after) in the same transaction as the change. ``save_audited`` and
``delete_audited`` are the two doors; workspaces.services uses them for its models, other apps
register theirs (``register_audited``: analytics' model prices, alert rules)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db import models, transaction

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
