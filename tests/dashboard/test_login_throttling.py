"""Repeated failed logins lock a username/IP pair out (django-axes), on the dashboard and the
admin alike; a lockout is a 429 and the right password does not get through meanwhile."""

from __future__ import annotations

import pytest


@pytest.fixture
def limit(settings):
    settings.AXES_FAILURE_LIMIT = 3
    return 3


@pytest.mark.parametrize("url", ["/login/", "/admin/login/"])
def test_it_locks_out_after_repeated_failures(client, owner, limit, url):
    for _ in range(limit - 1):
        resp = client.post(url, {"username": "owner", "password": "wrong"})
        assert resp.status_code == 200  # the form again, with an error
    resp = client.post(url, {"username": "owner", "password": "wrong"})
    assert resp.status_code == 429
    resp = client.post(url, {"username": "owner", "password": "owner-pass-123"})
    assert resp.status_code == 429
    assert "_auth_user_id" not in client.session


def test_other_users_are_not_locked_out(client, owner, member, limit):
    for _ in range(limit):
        client.post("/login/", {"username": "owner", "password": "wrong"})
    resp = client.post("/login/", {"username": "member", "password": "member-pass-123"})
    assert resp.status_code == 302
    assert client.session["_auth_user_id"] == str(member.pk)


def test_a_success_resets_the_counter(client, owner, limit):
    for _ in range(limit - 1):
        client.post("/login/", {"username": "owner", "password": "wrong"})
    assert client.post("/login/", {"username": "owner", "password": "owner-pass-123"}).status_code == 302
    client.logout()
    for _ in range(limit - 1):
        assert client.post("/login/", {"username": "owner", "password": "wrong"}).status_code == 200
