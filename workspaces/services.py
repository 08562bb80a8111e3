"""Writes to workspaces, memberships, API keys and providers. Every caller (admin, commands,
dashboard, REST) goes through these so validation and hashing happen in one place."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from workspaces import keys
from workspaces.models import ApiKey, Membership, Provider, Workspace


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
        workspace.save()
        if owner is not None:
            membership_add(workspace=workspace, user=owner, role=Membership.Role.OWNER)
    return workspace


def workspace_update(*, workspace: Workspace, **fields: object) -> Workspace:
    for name, value in fields.items():
        setattr(workspace, name, value)
    workspace.full_clean()
    workspace.save()
    return workspace


def membership_add(*, workspace: Workspace, user: AbstractBaseUser, role: str = Membership.Role.MEMBER) -> Membership:
    membership, _ = Membership.objects.update_or_create(workspace=workspace, user=user, defaults={"role": role})
    return membership


def api_key_create(
    *,
    workspace: Workspace,
    name: str,
    scopes: list[str] | None = None,
    default_metadata: dict | None = None,
    metadata_schema: dict | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; returns the model and the full key, which is not recoverable later."""
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
    )
    api_key.full_clean()
    api_key.save()
    return api_key, full_key


def api_key_update(*, api_key: ApiKey, **fields: object) -> ApiKey:
    for name, value in fields.items():
        setattr(api_key, name, value)
    api_key.full_clean()
    api_key.save()
    return api_key


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    api_key.is_active = False
    api_key.revoked_at = timezone.now()
    api_key.save(update_fields=["is_active", "revoked_at"])
    return api_key


def api_key_authenticate(full_key: str) -> ApiKey | None:
    """The usable key matching ``full_key``, or None. Compared in constant time."""
    if not keys.looks_like_key(full_key):
        return None
    candidate = ApiKey.objects.select_related("workspace").filter(prefix=keys.lookup_prefix(full_key)).first()
    if candidate is None or not keys.key_matches(full_key, candidate.hashed_key):
        return None
    return candidate if candidate.is_usable else None


def provider_create(
    *, workspace: Workspace, slug: str, base_url: str, api_key: str = "", name: str = "", kind: str = "openai"
) -> Provider:
    provider = Provider(workspace=workspace, slug=slug, base_url=base_url.rstrip("/"), name=name or slug, kind=kind)
    provider.set_secret(api_key)
    provider.full_clean()
    provider.save()
    return provider


def provider_rotate_secret(*, provider: Provider, api_key: str) -> Provider:
    provider.set_secret(api_key)
    provider.save(update_fields=["encrypted_secret", "updated_at"])
    return provider
