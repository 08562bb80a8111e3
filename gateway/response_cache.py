"""The ``cache: {"mode": "simple"}`` store: exact-match answers of non-streaming requests.

Keyed by workspace, target provider, method, endpoint, query and the body as sent upstream
(after ``override_params``), so two workspaces never share an answer and the same prompt sent
to two providers is two entries. Only 2xx answers are stored.

With REDIS_URL the entries live in Redis (``SET ... EX max_age``), shared by every gateway
process; without it, in a per-process LRU of at most LOCAL_MAX_ENTRIES entries. Like the rate
limits, the cache fails open: Redis unreachable is a MISS (and nothing is stored) for a few
seconds, never a failed request.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from typing import NamedTuple

import orjson
import redis.asyncio as aioredis
from django.conf import settings

log = logging.getLogger("portico.gateway.cache")

LOCAL_MAX_ENTRIES = 1000
MAX_ENTRY_BYTES = 1024 * 1024  # answers larger than this are served but not stored
_REDIS_PAUSE_S = 5.0


class CachedAnswer(NamedTuple):
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def cache_key(*, workspace_id: int, provider: str, method: str, endpoint: str, query: bytes, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (str(workspace_id).encode(), provider.encode(), method.encode(), endpoint.encode(), query):
        digest.update(part)
        digest.update(b"\x00")
    digest.update(body)
    return digest.hexdigest()


def _encode(answer: CachedAnswer) -> bytes:
    head = orjson.dumps([answer.status, [[k.decode("latin-1"), v.decode("latin-1")] for k, v in answer.headers]])
    return head + b"\n" + answer.body


def _decode(raw: bytes) -> CachedAnswer | None:
    head, sep, body = raw.partition(b"\n")
    if not sep:
        return None
    try:
        status, headers = orjson.loads(head)
        pairs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
        return None  # written by another version: a miss
    return CachedAnswer(status, pairs, body)


class ResponseCache:
    def __init__(self) -> None:
        self._redis: aioredis.Redis | None = None
        self._redis_url = ""
        self._redis_down_until = 0.0
        self._local: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def _client(self) -> aioredis.Redis | None:
        url = settings.REDIS_URL
        if not url or time.monotonic() < self._redis_down_until:
            return None
        if self._redis is None or self._redis_url != url:
            self._redis = aioredis.Redis.from_url(
                url, socket_timeout=0.5, socket_connect_timeout=0.5, retry_on_timeout=False
            )
            self._redis_url = url
        return self._redis

    @staticmethod
    def _name(key: str) -> str:
        return f"{settings.REDIS_KEY_PREFIX}:rc:{key}"

    def _redis_failed(self, exc: Exception) -> None:
        log.warning("response cache unavailable (Redis: %s); answering MISS for %.0f s", type(exc).__name__, 5)
        self._redis_down_until = time.monotonic() + _REDIS_PAUSE_S

    async def get(self, key: str) -> CachedAnswer | None:
        if settings.REDIS_URL:
            client = self._client()
            if client is None:
                return None
            try:
                raw = await client.get(self._name(key))
            except Exception as exc:
                self._redis_failed(exc)
                return None
            return _decode(raw) if raw else None
        entry = self._local.get(key)
        if entry is None:
            return None
        expires, raw = entry
        if expires <= time.monotonic():
            del self._local[key]
            return None
        self._local.move_to_end(key)
        return _decode(raw)

    async def set(self, key: str, answer: CachedAnswer, max_age: int) -> None:
        raw = _encode(answer)
        if len(raw) > MAX_ENTRY_BYTES:
            return
        if settings.REDIS_URL:
            client = self._client()
            if client is None:
                return
            try:
                await client.set(self._name(key), raw, ex=max_age)
            except Exception as exc:
                self._redis_failed(exc)
            return
        self._local[key] = (time.monotonic() + max_age, raw)
        self._local.move_to_end(key)
        while len(self._local) > LOCAL_MAX_ENTRIES:
            self._local.popitem(last=False)

    def clear_local(self) -> None:
        self._local.clear()

    async def close(self) -> None:
        if self._redis is not None:
            client, self._redis = self._redis, None
            try:
                await client.aclose()
            except Exception:
                log.debug("closing the response cache's Redis client failed", exc_info=True)


response_cache = ResponseCache()
