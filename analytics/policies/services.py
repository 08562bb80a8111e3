"""Writes to policies (create, update, delete) for every caller: dashboard, REST API, admin, a
shell. Each is validated (``full_clean``: errors keyed by field) and recorded in the workspace's
audit trail in the same transaction (workspaces.services). Gateways pick a change up when their
policy cache entry expires (GATEWAY_AUTH_CACHE_TTL)."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError

from analytics.policies.models import Policy
from workspaces.models import AuditEvent, Workspace
from workspaces.services import Actor, delete_audited, register_audited, save_audited, stored_snapshot

POLICY_FIELDS = ["name", "scope", "per", "kind", "limit", "window", "action", "fail_closed", "enabled"]
register_audited(Policy, object_type="policy", fields=POLICY_FIELDS)


def policy_create(
    *,
    workspace: Workspace,
    name: str,
    limit: Decimal | float | int | str,
    actor: Actor = None,
    via: str = AuditEvent.Via.SYSTEM,
    **fields: object,
) -> Policy:
    """Create a policy. ``fields``: any other policy field (scope, per, kind, window, action, ...)."""
    _check_fields(fields)
    policy = Policy(workspace=workspace, name=name, limit=_decimal(limit), **fields)
    policy.full_clean()
    save_audited(policy, action="policy.create", before={}, actor=actor, via=via)
    return policy


def policy_update(*, policy: Policy, actor: Actor = None, via: str = AuditEvent.Via.SYSTEM, **fields: object) -> Policy:
    _check_fields(fields)
    before = stored_snapshot(policy)
    for name, value in fields.items():
        setattr(policy, name, _decimal(value) if name == "limit" else value)
    policy.full_clean()
    save_audited(
        policy,
        action="policy.update" if before else "policy.create",
        before=before,
        actor=actor,
        via=via,
        only_if_changed=True,
    )
    return policy


def policy_delete(*, policy: Policy, actor: Actor = None, via: str = AuditEvent.Via.SYSTEM) -> None:
    delete_audited(policy, action="policy.delete", actor=actor, via=via)


def _check_fields(fields: dict) -> None:
    unknown = set(fields) - set(POLICY_FIELDS)
    if unknown:
        raise TypeError(f"Unknown policy fields: {', '.join(sorted(unknown))}")


def _decimal(value: object) -> object:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, int | str) and not isinstance(value, bool):
        try:
            return Decimal(str(value).strip())
        except ArithmeticError:
            raise ValidationError({"limit": "Enter a number."}) from None
    return value
