"""The providers page's "Test connection" button, against real loopback HTTP servers: it reports
what the provider answered, never follows a redirect (the stored secret stays with the
provider's host), resolves a name once and connects to the address the SSRF guard checked."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.urls import reverse

from tests.servers import QUICK_SHUTDOWN
from workspaces import services

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def each_client(upstream_client):
    """Every check runs with both upstream clients (UPSTREAM_CLIENT)."""


SECRET = "sk-secret-do-not-show"


class Upstream:
    """A loopback HTTP server answering every GET with ``status`` (and ``headers``); records the
    path and Authorization header of each request."""

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.requests: list[tuple[str, str | None]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                upstream.requests.append((self.path, self.headers.get("authorization")))
                body = b'{"object": "list", "data": []}'
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs=QUICK_SHUTDOWN, daemon=True)

    def __enter__(self) -> Upstream:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _test_connection(client, workspace, provider) -> str:
    url = reverse("dashboard:settings_provider_test", args=[workspace.slug, provider.id])
    return client.post(url).content.decode()


def _provider(workspace, base_url: str):
    return services.provider_create(workspace=workspace, slug="up", base_url=base_url, api_key=SECRET)


def test_it_reports_a_working_connection(owner_client, workspace):
    with Upstream(200) as upstream:
        page = _test_connection(owner_client, workspace, _provider(workspace, upstream.url + "/v1"))
    assert "Connected: GET" in page and "/v1/models answered 200" in page
    assert upstream.requests == [("/v1/models", f"Bearer {SECRET}")]
    assert SECRET not in page


def test_it_reports_a_refused_provider_key(owner_client, workspace):
    with Upstream(401) as upstream:
        page = _test_connection(owner_client, workspace, _provider(workspace, upstream.url + "/v1"))
    assert "refused the stored key (401)" in page


def test_it_does_not_follow_a_redirect_to_another_host(owner_client, workspace):
    with Upstream() as elsewhere:
        target = elsewhere.url + "/v1/models"
        with Upstream(302, {"location": target}) as upstream:
            page = _test_connection(owner_client, workspace, _provider(workspace, upstream.url + "/v1"))
    assert upstream.requests == [("/v1/models", f"Bearer {SECRET}")]
    assert elsewhere.requests == []  # neither the request nor the secret went there
    assert f"answered 302, a redirect to {target}" in page
    assert "does not follow redirects" in page
    assert 'class="notice bad"' in page and SECRET not in page


def test_it_will_not_probe_internal_networks(owner_client, workspace, settings):
    with Upstream() as upstream:
        provider = _provider(workspace, upstream.url + "/v1")  # saved while loopback was allowed
        settings.UPSTREAM_ALLOWED_NETWORKS = []
        literal = _test_connection(owner_client, workspace, provider)
        provider.base_url = f"http://localhost:{upstream.port}/v1"
        provider.save()
        name = _test_connection(owner_client, workspace, provider)
    assert "may not call" in literal and "may not call" in name
    assert upstream.requests == []


def test_it_resolves_a_name_once_and_connects_to_the_checked_address(owner_client, workspace, monkeypatch):
    # DNS rebinding: the first answer passes the guard, a second one would point at the cloud
    # metadata address. The check and the connection must use the same answer.
    real_getaddrinfo = socket.getaddrinfo
    answers: list[str] = []

    def rebinding(host, *args, **kwargs):
        if host != "rebind.test":
            return real_getaddrinfo(host, *args, **kwargs)
        address = "127.0.0.1" if not answers else "169.254.169.254"
        answers.append(address)
        return real_getaddrinfo(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with Upstream() as upstream:
        page = _test_connection(owner_client, workspace, _provider(workspace, f"http://rebind.test:{upstream.port}/v1"))
    assert answers == ["127.0.0.1"]
    assert upstream.requests == [("/v1/models", f"Bearer {SECRET}")]
    assert "Connected" in page
