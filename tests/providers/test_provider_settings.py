"""A provider's kind and settings: validated, audited, set from the dashboard, used by
"Test connection"."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from tests.servers import QUICK_SHUTDOWN
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


class _Recorder:
    """A loopback HTTP server that answers 200 and records each request's path and headers."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs=QUICK_SHUTDOWN, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    ("kind", "base_path", "path", "headers"),
    [
        ("anthropic", "/v1", "/v1/models", {"x-api-key": "sk-stored", "anthropic-version": "2023-06-01"}),
        ("azure-openai", "", "/openai/models?api-version=2024-10-21", {"api-key": "sk-stored"}),
        ("google", "/v1beta", "/v1beta/models", {"x-goog-api-key": "sk-stored"}),
    ],
)
def test_test_connection_uses_the_kinds_own_credential_header(client, owner, workspace, kind, base_path, path, headers):
    # A real server on loopback, reached through the gateway's guarded client as in production.
    recorder = _Recorder()
    try:
        provider = services.provider_create(
            workspace=workspace, slug="p", kind=kind, base_url=recorder.url + base_path, api_key="sk-stored"
        )
        client.force_login(owner)
        response = client.post(reverse("dashboard:settings_provider_test", args=[workspace.slug, provider.id]))
    finally:
        recorder.close()

    assert "Connected" in response.content.decode()
    [(seen_path, seen_headers)] = recorder.seen
    assert seen_path == path
    assert {k: seen_headers.get(k) for k in headers} == headers
    assert "authorization" not in seen_headers  # only the kind's own credential header


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
