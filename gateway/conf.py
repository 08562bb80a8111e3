"""The settings the gateway's hot path reads, and the per-URL answers it memoises.

``settings.X`` costs a LazyObject call each time: the hot path reads ``conf`` instead, a
snapshot refreshed on ``setting_changed`` (override_settings / pytest-django's ``settings``
fixture send it). Upstream URLs, their SSRF verdicts and the confined endpoint of a path
depend only on their inputs and a deployment sees few of them, so they are memoised here.
"""

from __future__ import annotations

import functools

import aiohttp
from django.conf import settings
from django.core.signals import setting_changed
from yarl import URL

from workspaces.upstream import netguard


class Conf:
    """The settings the hot path reads, copied once and refreshed whenever a setting changes
    (override_settings / pytest-django's ``settings`` fixture send ``setting_changed``)."""

    __slots__ = (
        "allow_custom_hosts",
        "allowed_networks",
        "headers_to_metadata",
        "max_body_bytes",
        "max_header_bytes",
        "metadata_max_keys",
        "redis_url",
        "request_first",
        "strict",
        "upstream_timeout",
    )

    def __init__(self) -> None:
        self.reload()

    def reload(self, **_: object) -> None:
        self.max_header_bytes = settings.GATEWAY_MAX_HEADER_BYTES
        self.max_body_bytes = settings.GATEWAY_MAX_BODY_BYTES
        self.headers_to_metadata = tuple(settings.HEADERS_TO_METADATA)
        self.strict = settings.METADATA_VALIDATION == "strict"
        self.request_first = settings.METADATA_PRECEDENCE == "request_first"
        self.metadata_max_keys = settings.METADATA_MAX_KEYS
        self.redis_url = settings.REDIS_URL
        self.allow_custom_hosts = settings.PORTICO_ALLOW_CUSTOM_HOSTS
        self.upstream_timeout = timeout_for(settings.GATEWAY_UPSTREAM_TIMEOUT)
        self.allowed_networks = tuple(settings.UPSTREAM_ALLOWED_NETWORKS)
        upstream_guard.cache_clear()


@functools.lru_cache(maxsize=8)
def timeout_for(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=seconds)


@functools.lru_cache(maxsize=1024)
def upstream_guard(url: str, allowed_networks: tuple[str, ...]) -> str | None:
    """netguard.check_url's verdict for ``url``: None when allowed, else the refusal message.
    Memoised: the verdict depends only on the URL's host and the allowed networks."""
    try:
        netguard.check_url(url)
    except netguard.BlockedUpstreamError as exc:
        return str(exc)
    return None


@functools.lru_cache(maxsize=1024)
def upstream_url(url: str) -> URL:
    # What aiohttp would build from the string on every call.
    return URL(url)


@functools.lru_cache(maxsize=1024)
def confined_endpoint(path: str) -> str | None:
    """The endpoint to forward for a ``/v1/...`` path, or None when the path leaves ``/v1/``
    once percent-decoded and its dot segments resolved (``/v1/../admin``, ``/v1/%2e%2e/``,
    ``/v1/..%2f``, backslashes): appended to the provider's base URL it would reach another path
    of the provider's host with the provider's secret attached. Clients resolve dot segments
    before sending; a path that still has some is forwarded resolved, so the upstream reads
    the path that was checked. Memoised: a deployment sees a handful of distinct paths."""
    try:
        resolved = netguard.resolve_path(path)
    except netguard.PathOutsideBaseError:
        return None
    if not resolved.startswith("/v1/"):
        return None
    return path[3:] if resolved == path else resolved[3:]


@functools.lru_cache(maxsize=256)
def base_path(base_url: str) -> str:
    # The path every upstream URL built on ``base_url`` must stay under (checked by the client).
    return netguard.resolve_path(URL(base_url).raw_path)


conf = Conf()


def _reload_conf(**kwargs: object) -> None:
    conf.reload()


setting_changed.connect(_reload_conf, dispatch_uid="portico.gateway.conf")
