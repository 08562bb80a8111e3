"""A workspace's OpenTelemetry export settings: the service validates, encrypts the headers and
audits by header name only; the admin edits them through it and never shows a header value."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from workspaces import services
from workspaces.models import AuditEvent, OtelExport

pytestmark = pytest.mark.django_db

URL = "https://otel.example.com/v1/traces"


def test_headers_are_encrypted_at_rest_and_audited_by_name(workspace, owner):
    export = services.otel_export_update(
        workspace=workspace, endpoint=URL, headers={"Authorization": "Bearer tok-123"}, actor=owner, via="admin"
    )
    stored = OtelExport.objects.get(pk=export.pk)
    assert "tok-123" not in stored.encrypted_headers
    assert stored.get_headers() == {"Authorization": "Bearer tok-123"}
    event = AuditEvent.objects.filter(object_type="otel_export").latest("id")
    assert (event.action, event.actor, event.via) == ("otel_export.create", owner, "admin")
    assert event.after["header_names"] == ["Authorization"] and event.after["headers"] == "changed"
    assert "tok-123" not in str(event.before) + str(event.after)


def test_headers_are_kept_unless_replaced_or_removed(workspace):
    services.otel_export_update(workspace=workspace, endpoint=URL, headers={"x-team": "secret"})
    export = services.otel_export_update(workspace=workspace, enabled=False)
    assert export.get_headers() == {"x-team": "secret"} and not export.enabled
    update = AuditEvent.objects.filter(object_type="otel_export").latest("id")
    assert update.action == "otel_export.update" and "headers" not in update.after
    export = services.otel_export_update(workspace=workspace, headers={})
    assert export.get_headers() == {} and export.encrypted_headers == ""


@pytest.mark.parametrize(
    ("endpoint", "headers", "field"),
    [
        ("http://169.254.169.254/v1/traces", None, "endpoint"),  # cloud metadata: SSRF guard
        ("ftp://otel.example.com/v1/traces", None, "endpoint"),
        (URL, {"bad header": "x"}, "headers"),
        (URL, {"x-ok": "line\r\nInjected: yes"}, "headers"),
    ],
)
def test_it_refuses_unsafe_endpoints_and_headers(workspace, endpoint, headers, field, settings):
    settings.UPSTREAM_ALLOWED_NETWORKS = []
    with pytest.raises(ValidationError) as error:
        services.otel_export_update(workspace=workspace, endpoint=endpoint, headers=headers)
    assert field in error.value.message_dict
    assert not OtelExport.objects.exists()


@pytest.fixture
def admin_client(client, django_user_model):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "root-pass-123")
    client.force_login(root)
    return client


def test_the_admin_adds_an_export_through_the_audited_service(admin_client, workspace):
    response = admin_client.post(
        "/admin/workspaces/otelexport/add/",
        {"workspace": workspace.pk, "enabled": "on", "endpoint": URL, "headers": "Authorization: Bearer tok-9\n"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    export = OtelExport.objects.get(workspace=workspace)
    assert export.get_headers() == {"Authorization": "Bearer tok-9"}
    assert AuditEvent.objects.filter(action="otel_export.create", via="admin").exists()


def test_the_admin_never_renders_header_values_and_blank_keeps_them(admin_client, workspace):
    export = services.otel_export_update(workspace=workspace, endpoint=URL, headers={"x-api-key": "very-secret"})
    page = admin_client.get(f"/admin/workspaces/otelexport/{export.pk}/change/")
    assert page.status_code == 200
    assert "very-secret" not in page.content.decode() and "x-api-key" in page.content.decode()
    response = admin_client.post(
        f"/admin/workspaces/otelexport/{export.pk}/change/", {"enabled": "on", "endpoint": URL, "headers": ""}
    )
    assert response.status_code == 302
    assert OtelExport.objects.get(pk=export.pk).get_headers() == {"x-api-key": "very-secret"}
    response = admin_client.post(
        f"/admin/workspaces/otelexport/{export.pk}/change/",
        {"enabled": "on", "endpoint": URL, "headers": "", "clear_headers": "on"},
    )
    assert OtelExport.objects.get(pk=export.pk).get_headers() == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [("no colon here", "Line 1: write it as"), ("x-ok: 1\nbad name: 2", "is not a valid HTTP header name")],
)
def test_the_admin_shows_a_bad_header_line_inline(admin_client, workspace, text, message):
    response = admin_client.post(
        "/admin/workspaces/otelexport/add/",
        {"workspace": workspace.pk, "enabled": "on", "endpoint": URL, "headers": text},
    )
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not OtelExport.objects.exists()
