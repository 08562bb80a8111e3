"""Policies enforced by a real gateway (uvicorn on loopback) in front of the mock upstream:
per-value rate limits and budgets, Portkey-shaped refusals that are logged with their metadata,
and edits that take effect within the auth cache TTL. Embedded mode here (counters in process);
the Redis drills are in test_policies_redis.py."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
from django.urls import reverse

from analytics.policies import services as policy_services
from gateway.policies import enforcer, policy_cache
from workspaces import services
from workspaces.models import Membership


@pytest.fixture
def pol(gw):
    policy_cache.clear()
    enforcer.clear()
    yield gw
    policy_cache.clear()
    enforcer.clear()


def _meta(**values: str) -> str:
    return json.dumps(values)


def _not_at_minute_end() -> None:
    if time.time() % 60 > 50:  # fixed one-minute windows: do not straddle a boundary
        time.sleep(60 - time.time() % 60 + 0.1)


def test_every_feature_gets_its_own_per_minute_request_limit(pol):
    policy_services.policy_create(
        workspace=pol.workspace, name="feature rpm", per="metadata.feature", kind="requests", limit=3, window="minute"
    )
    _not_at_minute_end()
    chat = pol.headers(x_portkey_metadata=_meta(feature="chat", _user="ann"))
    statuses = [pol.post(headers=chat).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    refused = pol.post(headers=chat)
    error = refused.json()["error"]
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
    assert error["code"] == "rate_limit_exceeded"
    assert "'feature rpm'" in error["message"] and "metadata.feature=chat" in error["message"]
    # Another feature has its own counter; a request without a feature is not counted.
    assert pol.post(headers=pol.headers(x_portkey_metadata=_meta(feature="search"))).status_code == 200
    assert pol.post().status_code == 200
    logs = pol.wait_for_logs(8)
    blocked = [log for log in logs if log.status_code == 429]
    assert len(blocked) == 3
    assert all(log.metadata["feature"] == "chat" and log.user == "ann" for log in blocked)
    assert "feature rpm" in blocked[0].error_message


def test_every_user_gets_a_monthly_cost_budget(pol):
    policy_services.policy_create(
        workspace=pol.workspace, name="user budget", per="_user", kind="cost", limit="0.0001", window="month"
    )
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    alice = pol.headers(x_portkey_metadata=_meta(_user="alice"))
    assert pol.post(json=body, headers=alice).status_code == 200  # nothing spent yet
    pol.wait_for_logs(1)
    refused = pol.post(json=body, headers=alice)
    assert refused.status_code == 412
    error = refused.json()["error"]
    assert error["code"] == "usage_limit_exceeded"
    assert "'user budget'" in error["message"] and "_user=alice" in error["message"]
    assert pol.post(json=body, headers=pol.headers(x_portkey_metadata=_meta(_user="bob"))).status_code == 200
    logs = pol.wait_for_logs(3)
    assert [(log.user, log.status_code) for log in logs] == [("alice", 200), ("alice", 412), ("bob", 200)]


def test_budget_counts_what_was_spent_before_the_policy_existed(pol):
    """A new (or lost) counter starts from the logs of the window, not from zero."""
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    headers = pol.headers(x_portkey_metadata=_meta(team="red"))
    assert pol.post(json=body, headers=headers).status_code == 200
    spent = pol.wait_for_logs(1)[0].cost
    assert spent > 0
    policy_services.policy_create(
        workspace=pol.workspace, name="team day", per="metadata.team", kind="cost", limit=spent, window="day"
    )
    policy_cache.clear()  # the first request cached "no policy" for the TTL
    assert pol.post(json=body, headers=headers).status_code == 412


def test_token_budget_and_scope_by_model(pol):
    policy_services.policy_create(
        workspace=pol.workspace, name="mini tokens", scope="model=gpt-4o-mini", kind="tokens", limit=1, window="hour"
    )
    assert pol.post(json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    assert pol.post().status_code == 200  # gpt-4o-mini: reserves, then settles its actual tokens
    pol.wait_for_logs(2)
    assert pol.post().status_code == 412
    assert pol.post(json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200


def test_alert_only_and_disabled_policies_do_not_block(pol):
    policy_services.policy_create(workspace=pol.workspace, name="watch", kind="requests", limit=1, action="alert")
    policy_services.policy_create(workspace=pol.workspace, name="off", kind="requests", limit=1, enabled=False)
    assert [pol.post().status_code for _ in range(3)] == [200, 200, 200]


@pytest.mark.slow  # waits out the 1 s cache TTL in real time (~3 s): not in make test-fast
def test_an_edited_policy_takes_effect_within_the_cache_ttl(pol, settings):
    settings.GATEWAY_AUTH_CACHE_TTL = 1
    _not_at_minute_end()
    policy = policy_services.policy_create(
        workspace=pol.workspace, name="edited", kind="requests", limit=1000, window="minute"
    )
    assert pol.post().status_code == 200
    policy_services.policy_update(policy=policy, limit=Decimal(1))
    deadline = time.monotonic() + 1.5  # the TTL and a little slack
    statuses = []
    while time.monotonic() < deadline:
        statuses.append(pol.post().status_code)
        time.sleep(0.05)
    assert statuses[-1] == 429
    policy_services.policy_update(policy=policy, enabled=False)
    time.sleep(1.2)
    assert pol.post().status_code == 200


def test_policies_of_another_workspace_do_not_apply(pol, other_workspace):
    policy_services.policy_create(workspace=other_workspace, name="theirs", kind="requests", limit=1)
    assert [pol.post().status_code for _ in range(3)] == [200, 200, 200]


def test_blocked_requests_show_on_the_errors_page_by_metadata(pol, client, django_user_model):
    policy_services.policy_create(
        workspace=pol.workspace, name="feature rpm", per="metadata.feature", kind="requests", limit=2, window="minute"
    )
    _not_at_minute_end()
    chat = pol.headers(x_portkey_metadata=_meta(feature="chat", _user="ann"))
    assert [pol.post(headers=chat).status_code for _ in range(5)] == [200, 200, 429, 429, 429]
    pol.wait_for_logs(5)
    owner = django_user_model.objects.create_user("errors-owner", "o@example.com", "owner-pass-123")
    services.membership_add(workspace=pol.workspace, user=owner, role=Membership.Role.OWNER)
    client.force_login(owner)
    page = client.get(f"{reverse('dashboard:errors', args=[pol.workspace.slug])}?range=24h")
    assert page.status_code == 200
    assert ("429", 3) in [(row["status"], row["requests"]) for row in page.context["status_codes"]]
    assert ("feature", "chat") in {(row["key"], row["value"]) for row in page.context["failing_metadata"]}
