"""REST API for alert rules: admin-scoped keys or owner/admin sessions, outsiders 404, errors
naming the field, test-send results, history, and responses that match the OpenAPI schema."""

from __future__ import annotations

import pytest
from django.utils import timezone

from analytics.alerts.models import AlertRule
from tests.alerts.conftest import make_rule, write_logs
from tests.analytics.test_api_schema import check
from workspaces import services
from workspaces.models import AuditEvent

pytestmark = pytest.mark.django_db

RULES = "/api/v1/alert-rules/"


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    from drf_spectacular.generators import SchemaGenerator

    with django_db_blocker.unblock():
        return SchemaGenerator().get_schema(request=None, public=True)


@pytest.fixture
def admin_key(workspace):
    return services.api_key_create(workspace=workspace, name="ops", scopes=["admin"])[1]


def call(client, method: str, path: str, key: str | None = None, body=None, **params):
    headers = {"x-portkey-api-key": key} if key else {}
    if params:
        path += "?" + "&".join(f"{k}={v}" for k, v in params.items())
    return getattr(client, method)(path, body, content_type="application/json", headers=headers)


def test_crud_with_an_admin_key(client, admin_key, receiver, schema):
    body = {
        "name": "Chat spend",
        "scope": "metadata.feature=chat",
        "per": "_user",
        "metric": "spend",
        "window": "1h",
        "threshold": 5,
        "webhook_urls": [receiver.url],
        "emails": ["ops@example.com"],
    }
    created = call(client, "post", RULES, admin_key, body)
    assert created.status_code == 201, created.json()
    check(schema, "/api/v1/alert-rules/", "post", created)
    data = created.json()
    assert data["webhook_secret"].startswith("whsec_") and data["has_webhook_secret"]
    assert (data["threshold"], data["comparison"], data["cooldown_minutes"], data["enabled"]) == (5.0, "gt", 60, True)
    path = f"{RULES}{data['id']}/"
    listed = call(client, "get", RULES, admin_key)
    check(schema, "/api/v1/alert-rules/", "get", listed)
    assert [r["name"] for r in listed.json()["data"]] == ["Chat spend"]
    assert "webhook_secret" not in listed.json()["data"][0]
    patched = call(client, "patch", path, admin_key, {"threshold": "7.5", "enabled": False})
    check(schema, "/api/v1/alert-rules/{rule_id}/", "patch", patched)
    assert (patched.json()["threshold"], patched.json()["enabled"], patched.json()["per"]) == (7.5, False, "_user")
    put = call(client, "put", path, admin_key, {"name": "All spend", "metric": "spend", "threshold": 1})
    assert put.status_code == 200 and put.json()["scope"] == "" and put.json()["webhook_urls"] == []
    check(schema, "/api/v1/alert-rules/{rule_id}/", "get", call(client, "get", path, admin_key))
    deleted = call(client, "delete", path, admin_key)
    assert deleted.status_code == 204 and not AlertRule.objects.exists()
    actions = list(AuditEvent.objects.filter(object_type="alert_rule").order_by("id").values_list("action", "via"))
    assert actions == [
        ("alert_rule.create", "api"),
        ("alert_rule.update", "api"),
        ("alert_rule.update", "api"),
        ("alert_rule.delete", "api"),
    ]


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"name": "x", "metric": "spend", "threshold": 1, "scope": "colour=red"}, "scope", "colour"),
        ({"name": "x", "metric": "spend", "threshold": 1, "window": "3w"}, "window", "3w"),
        ({"name": "x", "metric": "vibes", "threshold": 1}, "metric", "spend"),
        ({"name": "x", "metric": "spend", "threshold": "lots"}, "threshold", "number"),
        ({"name": "x", "metric": "spend", "threshold": 1, "per_limit": "5"}, "per_limit", "integer"),
        ({"name": "x", "metric": "spend", "threshold": 1, "webhook_urls": ["nope"]}, "webhook_urls", "nope"),
        ({"metric": "spend", "threshold": 1}, "name", "required"),
    ],
)
def test_invalid_bodies_name_the_field(client, admin_key, schema, body, param, fragment):
    response = call(client, "post", RULES, admin_key, body)
    assert response.status_code == 400
    check(schema, "/api/v1/alert-rules/", "post", response)
    error = response.json()["error"]
    assert error["param"] == param and fragment in error["message"], error


def test_a_key_without_the_admin_scope_is_refused(client, workspace, api_key, schema):
    response = call(client, "get", RULES, api_key[1])  # inference + logs.read
    assert response.status_code == 403
    check(schema, "/api/v1/alert-rules/", "get", response)
    assert call(client, "get", RULES).status_code == 401


def test_sessions_need_the_edit_role(client, workspace, owner, member):
    make_rule(workspace)
    client.force_login(member)
    assert call(client, "get", RULES).status_code == 403
    client.force_login(owner)
    assert [r["name"] for r in call(client, "get", RULES).json()["data"]] == ["Chat spend"]
    created = call(client, "post", RULES, body={"name": "Errors", "metric": "error_rate", "threshold": 5})
    assert created.status_code == 201
    assert AuditEvent.objects.get(action="alert_rule.create", via="api").actor == owner


def test_outsiders_get_404(client, workspace, other_workspace, outsider):
    rule, _ = make_rule(workspace)
    foreign_key = services.api_key_create(workspace=other_workspace, name="x", scopes=["admin"])[1]
    for method in ("get", "patch", "delete"):
        assert call(client, method, f"{RULES}{rule.pk}/", foreign_key, {}).status_code == 404
    assert call(client, "post", f"{RULES}{rule.pk}/test/", foreign_key).status_code == 404
    assert call(client, "get", RULES, foreign_key, workspace="acme").status_code == 404
    assert call(client, "get", "/api/v1/alert-events/", foreign_key).json()["data"] == []
    client.force_login(outsider)
    assert call(client, "get", f"{RULES}{rule.pk}/").status_code == 404
    assert call(client, "get", RULES, workspace="acme").status_code == 404
    assert call(client, "get", f"{RULES}nope/", foreign_key).status_code == 404
    assert AlertRule.objects.filter(pk=rule.pk).exists()


def test_test_send_reports_each_channel(client, workspace, admin_key, receiver, schema):
    write_logs(workspace, {"created_at": timezone.now(), "cost": "3"})
    rule, secret = make_rule(workspace, webhook_urls=[receiver.url, "http://127.0.0.1:9/closed"])
    response = call(client, "post", f"{RULES}{rule.pk}/test/", admin_key)
    assert response.status_code == 200
    check(schema, "/api/v1/alert-rules/{rule_id}/test/", "post", response)
    results = {(d["target"], d["status"], d["status_code"]) for d in response.json()["data"]}
    assert results == {(receiver.url, "delivered", 200), ("http://127.0.0.1:9/closed", "failed", None)}
    [received] = receiver.requests
    assert received.signature_valid(secret)
    assert (received.json["type"], received.json["state"], received.json["value"]) == ("alert.test", "test", 3.0)
    event = AuditEvent.objects.get(action="alert_rule.test_send")
    assert (event.after["delivered"], event.after["failed"]) == (1, 1)
    events = call(client, "get", "/api/v1/alert-events/", admin_key)
    check(schema, "/api/v1/alert-events/", "get", events)
    assert [e["kind"] for e in events.json()["data"]] == ["test"]
    deliveries = call(client, "get", "/api/v1/alert-deliveries/", admin_key, rule=rule.pk)
    check(schema, "/api/v1/alert-deliveries/", "get", deliveries)
    assert len(deliveries.json()["data"]) == 2  # test-sends are not retried
    no_channels, _ = make_rule(workspace, name="quiet")
    refused = call(client, "post", f"{RULES}{no_channels.pk}/test/", admin_key)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "webhook_urls"


def test_history_pages_with_a_cursor(client, workspace, admin_key, schema):
    from analytics.alerts import evaluation
    from analytics.alerts.models import AlertEvent

    rule, _ = make_rule(workspace)
    now = timezone.now()
    for _ in range(3):
        evaluation.create_event(rule, AlertEvent.Kind.FIRED, "", 2.0, (now, now), now, notified=False)
    first = call(client, "get", "/api/v1/alert-events/", admin_key, limit=2).json()
    assert len(first["data"]) == 2 and first["has_more"]
    rest = call(client, "get", "/api/v1/alert-events/", admin_key, limit=2, cursor=first["next_cursor"]).json()
    assert len(rest["data"]) == 1 and not rest["has_more"]
    bad = call(client, "get", "/api/v1/alert-events/", admin_key, limit="x")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"
    check(schema, "/api/v1/alert-events/", "get", bad)
    unknown = call(client, "get", "/api/v1/alert-deliveries/", admin_key, colour="red")
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "colour"
