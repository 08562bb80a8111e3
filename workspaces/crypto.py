"""Provider secrets are encrypted at rest with Fernet (AES-128-CBC + HMAC, from ``cryptography``).
MultiFernet lets operators rotate PORTICO_ENCRYPTION_KEY: the first key encrypts, all decrypt."""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(k) for k in keys])


def encrypt_secret(plaintext: str) -> str:
    return _fernet(tuple(settings.PORTICO_ENCRYPTION_KEYS)).encrypt(plaintext.encode()).decode()


def decrypt_secret(token: str) -> str:
    return _fernet(tuple(settings.PORTICO_ENCRYPTION_KEYS)).decrypt(token.encode()).decode()
