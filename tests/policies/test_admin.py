"""The admin edits policies through the services: validated and audited."""

from __future__ import annotations

import pytest
from django.urls import reverse

from analytics.policies.models import Policy
from workspaces.models import AuditEvent

pytestmark = pytest.mark.django_db

FORM = {
    "name": "Feature rpm",
    "enabled": "on",
    "scope": "",
    "per": "metadata.feature",
    "kind": "requests",
    "limit": "60",
    "window": "minute",
    "action": "block",
}


def test_adding_and_deleting_a_policy_in_the_admin_is_audited(admin_client, workspace):
    response = admin_client.post(reverse("admin:analytics_policy_add"), {**FORM, "workspace": workspace.pk})
    assert response.status_code == 302
    policy = Policy.objects.get()
    assert (policy.per, policy.window) == ("metadata.feature", "minute")
    admin_client.post(reverse("admin:analytics_policy_delete", args=[policy.pk]), {"post": "yes"})
    assert not Policy.objects.exists()
    assert list(AuditEvent.objects.filter(object_type="policy").order_by("id").values_list("action", "via")) == [
        ("policy.create", "admin"),
        ("policy.delete", "admin"),
    ]


def test_the_admin_shows_field_errors(admin_client, workspace):
    response = admin_client.post(
        reverse("admin:analytics_policy_add"), {**FORM, "workspace": workspace.pk, "scope": "status_code=500"}
    )
    assert response.status_code == 200
    assert "not known before the request is forwarded" in response.content.decode()
    assert not Policy.objects.exists()
