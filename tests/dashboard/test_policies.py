"""The Policies page: every member reads it and its usage, owners and admins create, edit and
delete policies through the audited services, outsiders get 404, bad input is a 400 naming the
field, and the preview shows the top scope values' usage against the limit."""

from __future__ import annotations

import pytest
from django.urls import reverse

from analytics.policies.models import Policy
from tests.alerts.conftest import write_logs
from workspaces.models import AuditEvent

pytestmark = pytest.mark.django_db

FORM = {
    "name": "User budget",
    "kind": "cost",
    "limit": "2",
    "window": "month",
    "scope": "metadata.feature=chat",
    "per": "_user",
    "action": "block",
    "enabled": "on",
}


def url(name: str, *args) -> str:
    return reverse(f"dashboard:{name}", args=["acme", *args])


def _spend(workspace) -> None:
    write_logs(
        workspace,
        *[{"user": f"u{i}", "metadata": {"_user": f"u{i}", "feature": "chat"}, "cost": f"0.{i}0"} for i in range(1, 4)],
        {"user": "x", "metadata": {"_user": "x", "feature": "search"}, "cost": "5"},
    )


def test_an_owner_creates_a_user_budget_and_a_feature_rate_limit(owner_client, workspace):
    response = owner_client.post(url("policies"), FORM)
    assert response.status_code == 302
    rate = {**FORM, "name": "Feature rpm", "kind": "requests", "limit": "60", "window": "minute", "scope": ""}
    assert owner_client.post(url("policies"), {**rate, "per": "metadata.feature"}).status_code == 302
    page = owner_client.get(url("policies")).content.decode()
    assert "User budget" in page and "per calendar month" in page and "Feature rpm" in page
    assert list(Policy.objects.order_by("name").values_list("name", "per", "window")) == [
        ("Feature rpm", "metadata.feature", "minute"),
        ("User budget", "_user", "month"),
    ]
    assert AuditEvent.objects.filter(action="policy.create", via="dashboard").count() == 2


def test_bad_input_is_a_400_naming_the_field(owner_client):
    response = owner_client.post(url("policies"), {**FORM, "scope": "latency_min=5", "window": "fortnight"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "latency_min: not known before the request is forwarded" in page
    assert "fortnight" in page
    assert not Policy.objects.exists()


def test_the_edit_page_shows_usage_per_value_against_the_limit(owner_client, workspace):
    _spend(workspace)
    owner_client.post(url("policies"), FORM)
    policy = Policy.objects.get()
    page = owner_client.get(url("policy_edit", policy.pk)).content.decode()
    # Top values first; the search feature's spend is outside the scope.
    assert page.index('data-value="u3"') < page.index('data-value="u2"') < page.index('data-value="u1"')
    assert 'data-value="x"' not in page and "15.0%" in page
    partial = owner_client.get(url("policy_usage", policy.pk))
    assert partial.status_code == 200 and 'data-value="u3"' in partial.content.decode()
    # The usage table typed into the address bar leads to its policy's page, not a bare fragment.
    opened = owner_client.get(url("policy_usage", policy.pk), headers={"Sec-Fetch-Dest": "document"})
    assert opened.status_code == 302 and opened["Location"] == url("policy_edit", policy.pk)
    changed = owner_client.post(url("policy_edit", policy.pk), {**FORM, "limit": "0.5"})
    assert changed.status_code == 302
    policy.refresh_from_db()
    assert str(policy.limit.normalize()) == "0.5"
    assert AuditEvent.objects.filter(action="policy.update", via="dashboard").exists()


@pytest.fixture
def viewer_client(client, viewer):
    client.force_login(viewer)
    return client


def test_the_preview_shows_unsaved_values(viewer_client, workspace):
    _spend(workspace)
    preview = viewer_client.post(url("policy_preview"), {**FORM, "limit": "0.3"})
    assert preview.status_code == 200
    text = preview.content.decode()
    assert "Preview" in text and 'data-value="u3"' in text and "100.0%" in text
    bad = viewer_client.post(url("policy_preview"), {**FORM, "per": "colour"})
    assert "colour" in bad.content.decode() and not Policy.objects.exists()


def test_viewers_read_but_do_not_write(viewer_client, workspace):
    policy = Policy.objects.create(workspace=workspace, name="rpm", limit=10)
    assert viewer_client.get(url("policies")).status_code == 200
    assert viewer_client.get(url("policy_edit", policy.pk)).status_code == 200
    assert viewer_client.post(url("policies"), FORM).status_code == 403
    assert viewer_client.post(url("policy_edit", policy.pk), FORM).status_code == 403
    assert viewer_client.post(url("policy_delete", policy.pk)).status_code == 403
    assert Policy.objects.count() == 1


def test_outsiders_get_404(client, outsider, workspace):
    policy = Policy.objects.create(workspace=workspace, name="rpm", limit=10)
    client.force_login(outsider)
    for name, args in [("policies", ()), ("policy_edit", (policy.pk,)), ("policy_usage", (policy.pk,))]:
        assert client.get(url(name, *args)).status_code == 404
    assert client.post(url("policy_preview"), FORM).status_code == 404
    assert client.post(url("policy_delete", policy.pk)).status_code == 404


def test_an_owner_deletes_a_policy(owner_client, workspace):
    policy = Policy.objects.create(workspace=workspace, name="rpm", limit=10)
    assert owner_client.get(url("policy_delete", policy.pk)).status_code == 200
    assert owner_client.post(url("policy_delete", policy.pk)).status_code == 302
    assert not Policy.objects.exists()
    assert AuditEvent.objects.filter(action="policy.delete", via="dashboard").exists()
