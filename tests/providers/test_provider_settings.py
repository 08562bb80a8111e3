"""A provider's kind and settings: validated, audited, set from the dashboard, used by
"Test connection"."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from workspaces import services
from workspaces.models import AuditEvent, Provider

pytestmark = pytest.mark.django_db


def test_kind_and_settings_are_in_the_audit_trail(workspace):
    provider = services.provider_create(
        workspace=workspace,
        slug="azure",
        kind="azure-openai",
        base_url="https://res.openai.azure.com",
        api_version="2024-06-01",
        deployment="gpt4o",
    )
    services.provider_update(provider=provider, api_version="2024-10-21")

    created, updated = AuditEvent.objects.filter(object_type="provider").order_by("id")
    assert (created.after["kind"], created.after["api_version"], created.after["deployment"]) == (
        "azure-openai",
        "2024-06-01",
        "gpt4o",
    )
    assert updated.changes == [("api_version", "2024-06-01", "2024-10-21")]


@pytest.mark.parametrize(
    ("fields", "error_field"),
    [
        ({"kind": "openai", "deployment": "d"}, "deployment"),
        ({"kind": "google", "api_version": "v1"}, "api_version"),
        ({"kind": "azure-openai", "deployment": "../x"}, "deployment"),
        ({"kind": "azure-openai", "deployment": ".."}, "deployment"),
        ({"kind": "anthropic", "api_version": "2023-06-01&x=1"}, "api_version"),
        ({"kind": "bedrock"}, "kind"),
    ],
)
def test_settings_that_do_not_fit_the_kind_are_refused_naming_the_field(workspace, fields, error_field):
    with pytest.raises(ValidationError) as caught:
        services.provider_create(workspace=workspace, slug="p", base_url="https://x.example.com", **fields)

    assert error_field in caught.value.message_dict
    assert not Provider.objects.filter(slug="p").exists()


def test_the_dashboard_adds_an_anthropic_provider(client, owner, workspace):
    client.force_login(owner)
    url = reverse("dashboard:settings_providers", kwargs={"slug": workspace.slug})

    response = client.post(
        url,
        {"slug": "claude", "kind": "anthropic", "base_url": "https://api.anthropic.com/v1", "api_key": "sk-ant"},
    )

    assert response.status_code == 302
    provider = Provider.objects.get(slug="claude")
    assert (provider.kind, provider.get_secret()) == ("anthropic", "sk-ant")
    assert "Anthropic" in client.get(url).content.decode()


def test_the_dashboard_shows_a_settings_error_on_its_field(client, owner, workspace):
    client.force_login(owner)
    url = reverse("dashboard:settings_providers", kwargs={"slug": workspace.slug})

    response = client.post(url, {"slug": "p", "kind": "openai", "base_url": "https://x.example.com", "deployment": "d"})

    assert response.status_code == 200
    assert "Only Azure OpenAI providers have a deployment." in response.content.decode()


class _Response:
    status = 200

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize(
    ("kind", "base_url", "url", "headers"),
    [
        (
            "anthropic",
            "https://api.anthropic.com/v1",
            "https://api.anthropic.com/v1/models",
            {"X-api-key": "sk-stored", "Anthropic-version": "2023-06-01"},
        ),
        (
            "azure-openai",
            "https://res.openai.azure.com",
            "https://res.openai.azure.com/openai/models?api-version=2024-10-21",
            {"Api-key": "sk-stored"},
        ),
        (
            "google",
            "https://generativelanguage.googleapis.com/v1beta",
            "https://generativelanguage.googleapis.com/v1beta/models",
            {"X-goog-api-key": "sk-stored"},
        ),
    ],
)
def test_test_connection_uses_the_kinds_own_credential_header(
    client, owner, workspace, monkeypatch, kind, base_url, url, headers
):
    provider = services.provider_create(
        workspace=workspace, slug="p", kind=kind, base_url=base_url, api_key="sk-stored"
    )
    seen = {}

    def fake_urlopen(request, timeout):
        seen["url"], seen["headers"] = request.full_url, dict(request.header_items())
        return _Response()

    monkeypatch.setattr("socket.getaddrinfo", lambda *a, **k: [(2, 1, 6, "", ("93.184.216.34", 0))])
    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)
    client.force_login(owner)

    response = client.post(reverse("dashboard:settings_provider_test", args=[workspace.slug, provider.id]))

    assert "Connected" in response.content.decode()
    assert seen["url"] == url
    assert seen["headers"] == {"Accept": "application/json", **headers}


def test_create_provider_takes_the_kind_and_its_settings(workspace, capsys):
    from django.core.management import call_command

    call_command(
        "create_provider",
        "--workspace",
        "acme",
        "--slug",
        "azure",
        "--kind",
        "azure-openai",
        "--base-url",
        "https://res.openai.azure.com",
        "--deployment",
        "gpt4o",
        "--api-key",
        "k",
    )

    provider = Provider.objects.get(slug="azure")
    assert (provider.kind, provider.deployment, provider.api_version) == ("azure-openai", "gpt4o", "")
    assert capsys.readouterr().out.strip() == "@azure"
