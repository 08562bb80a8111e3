"""HTTPS_PROXY / HTTP_PROXY / NO_PROXY with both upstream clients, through a small CONNECT proxy
on a real loopback socket: the proxy is asked for the address the SSRF guard checked (never the
name, which the proxy would resolve itself), TLS is verified end to end through the tunnel,
NO_PROXY bypasses it, and a blocked target is refused before the proxy hears of it."""

from __future__ import annotations

import asyncio
import socket
import ssl

import aiohttp
import pytest
from aiohttp.resolver import DefaultResolver
from yarl import URL

from tests.gateway.upstream_server import OK_JSON, Server, answer, self_signed
from workspaces.upstream import netguard
from workspaces.upstream.client import make_client

PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, settings, upstream_client):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    settings.UPSTREAM_ALLOWED_NETWORKS = ["127.0.0.0/8"]  # not ::1: "localhost" is 127.0.0.1 here


class ConnectProxy:
    """An HTTP proxy: CONNECT tunnels, and absolute-form requests forwarded (aiohttp sends a
    plain-http request that way). Records what each client asked for and its Proxy-Authorization;
    answers ``refuse`` (e.g. 407) instead when set."""

    def __init__(self, refuse: int = 0) -> None:
        self.asked: list[str] = []
        self.authorization: list[str | None] = []
        self.refuse = refuse

    async def __aenter__(self) -> ConnectProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _serve(self, reader, writer) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ")
            headers = dict(line.split(": ", 1) for line in lines[1:] if line)
            self.asked.append(f"{method} {target}")
            self.authorization.append(headers.get("Proxy-Authorization"))
            if self.refuse:
                writer.write(b"HTTP/1.1 %d Refused\r\ncontent-length: 0\r\n\r\n" % self.refuse)
                await writer.drain()
                return
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                try:
                    up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
                except OSError:  # as real proxies answer a target they cannot reach
                    writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                    await writer.drain()
                    return
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:  # absolute-form: GET http://host:port/path HTTP/1.1
                url = URL(target)
                up_reader, up_writer = await asyncio.open_connection(url.host, url.port)
                up_writer.write(head.replace(target.encode(), url.raw_path_qs.encode(), 1))
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()


async def _pipe(reader, writer) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def fetch(url: URL, ssl_context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    client = make_client(ssl_context=ssl_context)
    try:
        resp = await client.request("GET", url, {}, None, aiohttp.ClientTimeout(total=5), base_path="/v1")
        data = await resp.read()
        resp.release()
        return resp.status, data
    finally:
        await client.close()


def test_http_goes_through_http_proxy_to_the_checked_address(monkeypatch):
    async def scenario():
        async with Server([answer()]) as server, ConnectProxy() as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            result = await fetch(URL(f"http://localhost:{server.port}/v1/models"))
            return result, proxy.asked, server.requests

    result, asked, requests = asyncio.run(scenario())
    assert result == (200, OK_JSON)
    [target] = asked
    port = target.rsplit(":", 1)[1].split("/")[0]
    assert "localhost" not in target and f"127.0.0.1:{port}" in target  # the name never reaches the proxy
    assert b"\r\nHost: localhost:" in requests[0]  # the upstream still sees its own name


class DeadFirstResolver(DefaultResolver):
    """Resolves every name to 127.0.0.2 (nothing listens there) first, then 127.0.0.1."""

    async def resolve(self, host: str, port: int = 0, family=socket.AF_INET) -> list:
        found = await super().resolve("127.0.0.1", port, socket.AF_INET)
        return [{**found[0], "hostname": host, "host": "127.0.0.2"}, {**found[0], "hostname": host}]


def test_each_checked_address_is_tried_through_the_proxy(monkeypatch, tmp_path):
    """The proxy cannot reach the first address the name resolves to (it answers CONNECT with
    502, as proxies do); the call goes on to the next one."""
    monkeypatch.setattr(netguard, "DefaultResolver", DeadFirstResolver)
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    trusting.check_hostname = False  # the certificate names localhost, the test uses its own name
    seen: list[bytes] = []

    async def handle(reader, writer):
        try:
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(answer())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def scenario():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        async with ConnectProxy() as proxy:
            monkeypatch.setenv("HTTPS_PROXY", proxy.url)
            result = await fetch(URL(f"https://upstream.test:{port}/v1/models"), trusting)
        server.close()
        return result, proxy.asked

    result, asked = asyncio.run(scenario())
    assert result == (200, OK_JSON)
    assert [target.split(":")[0] for target in asked] == ["CONNECT 127.0.0.2", "CONNECT 127.0.0.1"]
    assert b"\r\nHost: upstream.test:" in seen[0]  # the upstream still sees its own name


def test_https_is_tunnelled_and_verified_through_https_proxy(monkeypatch, tmp_path):
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))

    async def handle(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def scenario():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        async with ConnectProxy() as proxy:
            monkeypatch.setenv("https_proxy", proxy.url)  # lower-case works too
            trusted = await fetch(URL(f"https://localhost:{port}/v1/models"), trusting)
            with pytest.raises(aiohttp.ClientConnectorCertificateError):  # still verified
                await fetch(URL(f"https://localhost:{port}/v1/models"))
        server.close()
        return trusted, proxy.asked

    trusted, asked = asyncio.run(scenario())
    assert trusted == (200, OK_JSON)
    assert asked[0].startswith("CONNECT 127.0.0.1:")


def test_no_proxy_hosts_are_called_directly(monkeypatch):
    async def scenario():
        async with Server([answer()]) as server, ConnectProxy() as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            monkeypatch.setenv("NO_PROXY", "example.com,localhost")
            result = await fetch(URL(f"http://localhost:{server.port}/v1/models"))
            return result, proxy.asked

    assert asyncio.run(scenario()) == ((200, OK_JSON), [])


def test_a_blocked_target_is_refused_before_the_proxy_is_asked(monkeypatch, settings):
    settings.UPSTREAM_ALLOWED_NETWORKS = []

    async def scenario():
        async with Server([answer()]) as server, ConnectProxy() as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            for host in ("localhost", "127.0.0.1"):
                with pytest.raises(netguard.BlockedUpstreamError):
                    await fetch(URL(f"http://{host}:{server.port}/v1/models"))
            return proxy.asked, server.requests

    assert asyncio.run(scenario()) == ([], [])


def test_proxy_credentials_are_sent_and_a_refusal_is_an_error(monkeypatch):
    async def scenario():
        async with Server([answer()]) as server, ConnectProxy(refuse=407) as proxy:
            monkeypatch.setenv("HTTPS_PROXY", proxy.url.replace("http://", "http://ops:s3cret@"))
            with pytest.raises(aiohttp.ClientError):
                await fetch(URL(f"https://localhost:{server.port}/v1/models"))
            return proxy.authorization, server.requests

    authorization, requests = asyncio.run(scenario())
    assert authorization[0] == "Basic b3BzOnMzY3JldA=="  # ops:s3cret
    assert requests == []
