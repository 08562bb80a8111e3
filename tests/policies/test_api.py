"""REST API for policies: admin-scoped keys or sessions (members read, owners write), outsiders
404, errors naming the field, usage per scope value, audit trail, and answers that match the
OpenAPI schema."""

from __future__ import annotations

import pytest

from analytics.policies.models import Policy
from tests.alerts.conftest import write_logs
from tests.analytics.test_api_schema import check
from workspaces import services
from workspaces.models import AuditEvent

pytestmark = pytest.mark.django_db

POLICIES = "/api/v1/policies/"


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    from drf_spectacular.generators import SchemaGenerator

    with django_db_blocker.unblock():
        return SchemaGenerator().get_schema(request=None, public=True)


@pytest.fixture
def admin_key(workspace):
    return services.api_key_create(workspace=workspace, name="ops", scopes=["admin"])[1]


def call(client, method: str, path: str, key: str | None = None, body=None):
    headers = {"x-portkey-api-key": key} if key else {}
    return getattr(client, method)(path, body, content_type="application/json", headers=headers)


def test_crud_with_an_admin_key(client, admin_key, schema):
    body = {"name": "User budget", "per": "_user", "kind": "cost", "limit": 5, "window": "month"}
    created = call(client, "post", POLICIES, admin_key, body)
    assert created.status_code == 201, created.json()
    check(schema, "/api/v1/policies/", "post", created)
    data = created.json()
    assert (data["limit"], data["unit"], data["action"], data["window_label"]) == (
        5.0,
        "USD",
        "block",
        "per calendar month",
    )
    path = f"{POLICIES}{data['id']}/"
    listed = call(client, "get", POLICIES, admin_key)
    check(schema, "/api/v1/policies/", "get", listed)
    assert [p["name"] for p in listed.json()["data"]] == ["User budget"]
    patched = call(client, "patch", path, admin_key, {"limit": 7.5, "action": "alert"})
    assert patched.status_code == 200 and patched.json()["limit"] == 7.5 and patched.json()["action"] == "alert"
    assert call(client, "delete", path, admin_key).status_code == 204
    assert not Policy.objects.exists()
    actions = list(AuditEvent.objects.filter(object_type="policy").order_by("id").values_list("action", "via"))
    assert actions == [("policy.create", "api"), ("policy.update", "api"), ("policy.delete", "api")]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "limit": 1, "scope": "status_code=500"}, "scope"),
        ({"name": "x", "limit": 1, "scope": "metadata.=chat"}, "scope"),
        ({"name": "x", "limit": 1, "per": "colour"}, "per"),
        ({"name": "x", "limit": 1, "window": "fortnight"}, "window"),
        ({"name": "x", "limit": 0}, "limit"),
        ({"name": "x", "limit": 1.5, "kind": "requests"}, "limit"),
        ({"name": "x", "limit": "lots"}, "limit"),
        ({"name": "x", "limit": 1, "kind": "dollars"}, "kind"),
        ({"name": "x", "limit": 1, "fail_closed": "yes"}, "fail_closed"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(client, admin_key, body, field):
    answer = call(client, "post", POLICIES, admin_key, body)
    assert answer.status_code == 400, answer.content
    assert answer.json()["error"]["param"] == field or field in str(answer.json())


def test_usage_per_scope_value(client, admin_key, workspace, schema):
    write_logs(
        workspace,
        {"user": "alice", "metadata": {"_user": "alice", "feature": "chat"}, "cost": "0.30"},
        {"user": "alice", "metadata": {"_user": "alice", "feature": "chat"}, "cost": "0.20"},
        {"user": "bob", "metadata": {"_user": "bob", "feature": "chat"}, "cost": "0.10"},
        {"user": "carol", "metadata": {"_user": "carol", "feature": "search"}, "cost": "0.90"},
    )
    created = call(
        client,
        "post",
        POLICIES,
        admin_key,
        {
            "name": "chat budget",
            "scope": "metadata.feature=chat",
            "per": "_user",
            "kind": "cost",
            "limit": 1,
            "window": "day",
        },
    ).json()
    usage = call(client, "get", f"{POLICIES}{created['id']}/usage/", admin_key)
    assert usage.status_code == 200
    check(schema, "/api/v1/policies/{policy_id}/usage/", "get", usage)
    rows = [(row["value"], round(row["used"], 6), row["percent"]) for row in usage.json()["data"]]
    assert rows == [("alice", 0.5, 50.0), ("bob", 0.1, 10.0)]


def test_members_read_owners_write_outsiders_404(client, workspace, owner, member, outsider):
    policy = Policy.objects.create(workspace=workspace, name="rpm", limit=10)
    client.force_login(member)
    assert call(client, "get", POLICIES).status_code == 200
    assert call(client, "get", f"{POLICIES}{policy.pk}/").status_code == 200
    assert call(client, "post", POLICIES, body={"name": "x", "limit": 1}).status_code == 403
    assert call(client, "delete", f"{POLICIES}{policy.pk}/").status_code == 403
    client.force_login(owner)
    assert call(client, "post", POLICIES, body={"name": "x", "limit": 1}).status_code == 201
    client.force_login(outsider)
    assert call(client, "get", f"{POLICIES}{policy.pk}/?workspace=acme").status_code == 404
    assert call(client, "get", f"{POLICIES}{policy.pk}/").status_code in (400, 404)


def test_a_key_without_admin_scope_is_refused_and_another_workspace_is_404(client, workspace, other_workspace):
    _, plain = services.api_key_create(workspace=workspace, name="inference")
    assert call(client, "get", POLICIES, plain).status_code == 403
    theirs = Policy.objects.create(workspace=other_workspace, name="theirs", limit=1)
    _, admin = services.api_key_create(workspace=workspace, name="ops", scopes=["admin"])
    assert call(client, "get", f"{POLICIES}{theirs.pk}/", admin).status_code == 404
    assert call(client, "get", f"{POLICIES}{theirs.pk}/usage/", admin).status_code == 404
