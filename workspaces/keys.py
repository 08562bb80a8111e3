"""API key format and hashing. A key is ``pk-`` + 48 random base62 characters; the first 8
after ``pk-`` are a public lookup prefix, the whole key is stored only as a keyed hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from functools import lru_cache

from django.conf import settings

KEY_PREFIX = "pk-"
LOOKUP_LENGTH = 8
_ALPHABET = string.ascii_letters + string.digits
_BODY_LENGTH = 48


def generate_key() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(_BODY_LENGTH))


def lookup_prefix(key: str) -> str:
    return key[: len(KEY_PREFIX) + LOOKUP_LENGTH]


def looks_like_key(key: str) -> bool:
    return key.startswith(KEY_PREFIX) and len(key) == len(KEY_PREFIX) + _BODY_LENGTH


@lru_cache(maxsize=4)
def _pepper(secret_key: str) -> bytes:
    return hashlib.sha256(b"portico.api-key:" + secret_key.encode()).digest()


def hash_key(key: str) -> str:
    # Keyed with a value derived from SECRET_KEY so a leaked database alone cannot be used to
    # test guesses offline.
    return hmac.digest(_pepper(settings.SECRET_KEY), key.encode(), "sha256").hex()


def key_matches(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(key), stored_hash)
