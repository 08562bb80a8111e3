"""Per-process caches of API keys, providers and saved configs, so the hot path makes no database query
when warm. Entries expire after GATEWAY_AUTH_CACHE_TTL seconds: a revoked key stops working
within that time. Misses are filled through the ORM in a thread, one fill per key at a time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.signals import setting_changed
from django.db import close_old_connections
from django.db.models import Case, IntegerField, Q, Value, When
from django.utils import timezone

from config.parsing import InvalidParameter
from workspaces import keys
from workspaces.configs import Config, parse_config
from workspaces.errors import GatewayError
from workspaces.metadata import MetadataPolicy
from workspaces.models import ApiKey, Provider, RoutingConfig


@dataclass(frozen=True, slots=True)
class KeySnapshot:
    key_id: int
    hashed_key: str
    workspace_id: int
    workspace_slug: str
    scopes: frozenset[str]
    active: bool
    expires_at: float | None
    policy: MetadataPolicy
    store_bodies: bool
    allow_custom_hosts: bool
    rate_limit_rpm: int | None = None
    usage_limit_cost: float | None = None
    usage_limit_period: str = "month"

    def usable(self, now: float) -> bool:
        return self.active and (self.expires_at is None or self.expires_at > now)


@dataclass(frozen=True, slots=True)
class ProviderSnapshot:
    """What the gateway needs to call a provider (gateway/providers.py reads it): ``kind`` picks
    the auth header, URL shapes and usage format; ``api_version`` is Azure's api-version or
    Anthropic's default anthropic-version; ``deployment`` Azure's fixed deployment."""

    slug: str
    kind: str
    base_url: str
    secret: str
    api_version: str = ""
    deployment: str = ""


T = TypeVar("T")
log = logging.getLogger("portico.gateway.auth")
_STALE_RETRY_SECONDS = 2.0


class TTLCache(Generic[T]):
    """A small async read-through cache; ``None`` results are cached too (unknown keys)."""

    def __init__(self, loader: Callable[[object], Awaitable[T | None]], ttl: Callable[[], float]) -> None:
        self._loader = loader
        self._ttl = ttl
        self._entries: dict[object, tuple[float, T | None]] = {}
        self._inflight: dict[object, asyncio.Future] = {}

    def peek(self, key: object, default: object = None) -> T | object | None:
        """The cached value if fresh (possibly a cached None), else ``default``; never loads.
        Lets the hot path skip a coroutine when the cache is warm."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        return default

    async def get(self, key: object) -> T | None:
        entry = self._entries.get(key)
        now = time.monotonic()
        if entry is not None and entry[0] > now:
            return entry[1]
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._fill(key))
            self._inflight[key] = future
        return await asyncio.shield(future)

    async def _fill(self, key: object) -> T | None:
        try:
            try:
                value = await self._loader(key)
            except Exception:
                # Database unreachable: keep serving what we knew (a key revoked during the
                # outage stays usable until the database answers again) rather than failing
                # every request; retry the load after a short pause.
                stale = self._entries.get(key)
                if stale is None:
                    raise
                log.warning("cache reload failed; serving the previous value for a few seconds", exc_info=True)
                self._entries[key] = (time.monotonic() + _STALE_RETRY_SECONDS, stale[1])
                return stale[1]
            if len(self._entries) > 100_000:
                self._entries.clear()  # bound memory under a flood of random keys
            self._entries[key] = (time.monotonic() + self._ttl(), value)
            return value
        finally:
            self._inflight.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
        _verified.clear()


def _load_key(prefix: str) -> KeySnapshot | None:
    close_old_connections()
    api_key = ApiKey.objects.select_related("workspace").filter(prefix=prefix).first()
    if api_key is None:
        return None
    ws = api_key.workspace
    # "Last used" is refreshed when the cache entry is refilled, not on every request, so the
    # hot path stays write-free; it is accurate to within the cache TTL.
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=timezone.now())
    return KeySnapshot(
        key_id=api_key.pk,
        hashed_key=api_key.hashed_key,
        workspace_id=ws.pk,
        workspace_slug=ws.slug,
        scopes=frozenset(api_key.scopes),
        active=api_key.is_active,
        expires_at=api_key.expires_at.timestamp() if api_key.expires_at else None,
        policy=api_key.metadata_policy(),
        store_bodies=ws.store_bodies,
        allow_custom_hosts=ws.allow_custom_hosts,
        rate_limit_rpm=api_key.rate_limit_rpm,
        usage_limit_cost=float(api_key.usage_limit_cost) if api_key.usage_limit_cost is not None else None,
        usage_limit_period=api_key.usage_limit_period or "month",
    )


def _load_provider(key: tuple[int, str]) -> ProviderSnapshot | None:
    close_old_connections()
    workspace_id, slug = key
    provider = Provider.objects.filter(workspace_id=workspace_id, slug=slug, is_active=True).first()
    if provider is None:
        return None
    return ProviderSnapshot(
        slug=provider.slug,
        kind=provider.kind,
        base_url=provider.base_url.rstrip("/"),
        secret=provider.get_secret(),
        api_version=provider.api_version,
        deployment=provider.deployment,
    )


def _load_config(key: tuple[int, str]) -> Config | InvalidParameter | None:
    """A saved config by public id (``pc-...``) or slug, parsed once per cache fill. Saved
    configs were validated on save; one that no longer parses (rules changed) is cached as
    its error, answered as a 400."""
    close_old_connections()
    workspace_id, ref = key
    saved = (
        RoutingConfig.objects.filter(Q(public_id=ref) | Q(slug=ref), workspace_id=workspace_id)
        .order_by(Case(When(public_id=ref, then=Value(0)), default=Value(1), output_field=IntegerField()))
        .only("public_id", "config")
        .first()
    )
    if saved is None:
        return None
    try:
        return parse_config(saved.config, config_id=saved.public_id)
    except InvalidParameter as exc:
        return exc


def _ttl() -> float:
    return settings.GATEWAY_AUTH_CACHE_TTL


key_cache: TTLCache[KeySnapshot] = TTLCache(sync_to_async(_load_key), _ttl)
provider_cache: TTLCache[ProviderSnapshot] = TTLCache(sync_to_async(_load_provider), _ttl)
# Edits in Settings or the admin reach every gateway process within the TTL, like providers.
config_cache: TTLCache[Config | InvalidParameter] = TTLCache(sync_to_async(_load_config), _ttl)


def _unauthorized(message: str) -> GatewayError:
    return GatewayError(401, message, type="authentication_error", code="invalid_api_key", log=False)


# Full keys already checked against their stored hash: key -> that hash. The keyed hash
# (HMAC-SHA256) is the most expensive step of a warm request; a key is re-verified whenever
# its snapshot's hash differs from the one remembered (rotation) and it is still subject to
# the snapshot's active/expiry checks on every request.
_verified: dict[str, str] = {}
_VERIFIED_MAX = 10_000


def _forget_verified(*, setting: str = "", **_: object) -> None:
    # The keyed hash depends on SECRET_KEY.
    if setting == "SECRET_KEY":
        _verified.clear()


setting_changed.connect(_forget_verified, dispatch_uid="portico.gateway.auth.verified")


def _matches(full_key: str, hashed_key: str) -> bool:
    if _verified.get(full_key) == hashed_key:
        return True
    if not keys.key_matches(full_key, hashed_key):
        return False
    if len(_verified) >= _VERIFIED_MAX:
        _verified.clear()  # bound memory under many distinct keys
    _verified[full_key] = hashed_key
    return True


def authenticate_cached(full_key: str | None) -> KeySnapshot | None:
    """``authenticate`` without awaiting, when the answer is in the cache and is a success:
    the snapshot, or None when ``authenticate`` must decide (and raise if it fails)."""
    if not full_key or not keys.looks_like_key(full_key):
        return None
    snapshot = key_cache.peek(keys.lookup_prefix(full_key))
    if snapshot is None or not snapshot.usable(time.time()) or not _matches(full_key, snapshot.hashed_key):
        return None
    return snapshot


async def authenticate(full_key: str | None) -> KeySnapshot:
    if not full_key:
        raise _unauthorized("Missing API key: send it in the x-portkey-api-key header (or Authorization: Bearer).")
    if not keys.looks_like_key(full_key):
        raise _unauthorized("Invalid API key.")
    snapshot = await key_cache.get(keys.lookup_prefix(full_key))
    if snapshot is None or not _matches(full_key, snapshot.hashed_key):
        raise _unauthorized("Invalid API key.")
    if not snapshot.active:
        raise _unauthorized("This API key has been revoked.")
    if not snapshot.usable(time.time()):
        raise _unauthorized("This API key has expired.")
    return snapshot
