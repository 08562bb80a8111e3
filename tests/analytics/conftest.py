import pytest


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """The actor fixtures create users with passwords; the default PBKDF2 hasher spends most
    of a test's setup there."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
