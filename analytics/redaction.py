"""Request headers as stored with a log: anything that can carry a credential is redacted. One
rule for the gateway's log records and for logs made elsewhere (analytics.services)."""

from __future__ import annotations

import functools

SENSITIVE_HEADER_WORDS = ("authorization", "api-key", "apikey", "secret", "token", "cookie", "password")


@functools.lru_cache(maxsize=2048)
def _sensitive(name: str) -> bool:
    return any(word in name for word in SENSITIVE_HEADER_WORDS)


def redact_headers(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` with the value of every name that can carry a credential replaced."""
    return {name: ("[redacted]" if _sensitive(name) else value) for name, value in headers.items()}
