"""The upstream client (workspaces.upstream.client, both implementations: native and aiohttp),
against a raw socket server that answers exactly what each test scripts: framing (length, chunked, until
close), compression, interim answers, keep-alive reuse, failures and timeouts, and the bytes
of the request it sends."""

from __future__ import annotations

import asyncio
import gzip
import socket
import zlib

import aiohttp
import pytest
from yarl import URL

from tests.gateway.upstream_server import OK_JSON, Server, answer, call, self_signed
from workspaces.upstream import netguard
from workspaces.upstream.client import make_client


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(autouse=True)
def loopback_allowed(settings, upstream_client):
    settings.UPSTREAM_ALLOWED_NETWORKS = ["127.0.0.0/8"]


def test_it_sends_the_request_as_aiohttp_would():
    async def scenario():
        async with Server([answer()]) as server:
            resp, data, _ = await call(
                server, headers={"content-type": "application/json", "x-trace": "t"}, path="/v1/a b"
            )
            return server.requests[0], resp, data

    raw, resp, data = run(scenario())
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/a%20b HTTP/1.1"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Host"].startswith("127.0.0.1:")
    assert headers["Accept"] == "*/*"
    assert headers["Accept-Encoding"] == "gzip, deflate"
    assert headers["Content-Length"] == "7"
    assert headers["x-trace"] == "t"
    assert "User-Agent" not in headers
    assert body == b'{"a":1}'
    assert (resp.status, resp.content_type, data) == (200, "application/json", OK_JSON)


def test_it_refuses_header_injection_and_non_http_urls():
    async def scenario():
        client = make_client()
        timeout = aiohttp.ClientTimeout(total=1)
        with pytest.raises(ValueError):
            await client.request(
                "POST", URL("http://127.0.0.1:9/x"), {"x-a": "1\r\nx-b: 2"}, b"", timeout, base_path=""
            )
        with pytest.raises(aiohttp.NonHttpUrlClientError):
            await client.request("POST", URL("ftp://127.0.0.1/x"), {}, b"", timeout, base_path="")
        await client.close()

    run(scenario())


def test_it_reads_chunked_and_close_delimited_bodies():
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"
    until_close = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it"

    async def scenario():
        async with Server([chunked]) as server:
            _, a, _ = await call(server)
        async with Server([until_close]) as server:
            _, b, _ = await call(server)
        return a, b

    assert run(scenario()) == (b"abcdefg", b"all of it")


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_it_decodes_compressed_answers(encoding):
    payload = OK_JSON * 50
    body = gzip.compress(payload) if encoding == "gzip" else zlib.compress(payload)

    async def scenario():
        async with Server([answer(body, headers=f"content-encoding: {encoding}")]) as server:
            _, data, _ = await call(server)
            return data

    assert run(scenario()) == payload


def test_it_skips_interim_answers_and_reads_head_and_204():
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + answer()
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n"
    empty = b"HTTP/1.1 204 No Content\r\n\r\n"

    async def scenario():
        async with Server([interim]) as server:
            r1, d1, _ = await call(server)
        async with Server([head]) as server:
            r2, d2, _ = await call(server, method="HEAD", body=None)
        async with Server([empty]) as server:
            r3, d3, _ = await call(server, method="DELETE", body=None)
        return (r1.status, d1), (r2.status, d2), (r3.status, d3)

    assert run(scenario()) == ((200, OK_JSON), (200, b""), (204, b""))


def test_it_reuses_connections_and_respects_connection_close():
    async def scenario():
        async with Server([answer(), answer(), answer(headers="connection: close"), answer()]) as server:
            client = make_client()
            timeout = aiohttp.ClientTimeout(sock_read=5)
            for _ in range(4):
                resp = await client.request("POST", server.url(), {}, b"x", timeout, base_path="")
                assert await resp.read() == OK_JSON
                resp.release()
            await client.close()
            return server.connections

    assert run(scenario()) == 2  # the third answer closed the first connection


def test_it_streams_large_bodies_with_back_pressure():
    size = 4 * 1024 * 1024

    async def slow_big(writer):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        block = b"x" * 65536
        for _ in range(size // len(block)):
            writer.write(b"%x\r\n%s\r\n" % (len(block), block))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def scenario():
        async with Server([slow_big]) as server:
            client = make_client()
            resp = await client.request(
                "POST", server.url(), {}, b"x", aiohttp.ClientTimeout(sock_read=5), base_path=""
            )
            total = 0
            async for chunk in resp.content.iter_any():
                total += len(chunk)
                await asyncio.sleep(0)  # a reader slower than the socket
            resp.release()
            await client.close()
            return total

    assert run(scenario()) == size


def test_failures_raise_aiohttp_errors():
    async def hang_up(writer):
        writer.close()

    async def reset_mid_body(writer):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()
        writer.transport.abort()

    async def scenario():
        async with Server([hang_up]) as server:
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await call(server)
        async with Server([reset_mid_body]) as server:
            with pytest.raises(aiohttp.ClientPayloadError):
                await call(server)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]
        client = make_client()
        with pytest.raises(aiohttp.ClientConnectorError):
            await client.request(
                "POST", URL(f"http://127.0.0.1:{dead}/"), {}, b"", aiohttp.ClientTimeout(total=2), base_path=""
            )
        await client.close()

    run(scenario())


def test_timeouts():
    async def never(writer):
        await asyncio.sleep(10)

    async def slow_body(writer):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345")
        await writer.drain()
        await asyncio.sleep(10)

    async def scenario():
        async with Server([never]) as server:
            with pytest.raises(aiohttp.SocketTimeoutError):
                await call(server, timeout=aiohttp.ClientTimeout(sock_read=0.2))
        async with Server([slow_body]) as server:
            with pytest.raises(TimeoutError):
                await call(server, timeout=aiohttp.ClientTimeout(total=0.3))

    run(scenario())


def test_names_resolving_to_blocked_networks_are_refused(settings):
    settings.UPSTREAM_ALLOWED_NETWORKS = []

    async def scenario():
        client = make_client()
        with pytest.raises(netguard.BlockedUpstreamError):
            await client.request(
                "POST", URL("http://localhost:9/v1"), {}, b"", aiohttp.ClientTimeout(total=2), base_path=""
            )
        await client.close()

    run(scenario())


def test_tls_is_verified(tmp_path):
    import ssl

    cert, key = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

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
        url = URL(f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/models")
        timeout = aiohttp.ClientTimeout(total=5)
        client = make_client()
        # An unknown issuer is refused, as aiohttp refuses it.
        with pytest.raises(aiohttp.ClientConnectorCertificateError) as info:
            await client.request("GET", url, {}, None, timeout, base_path="")
        # Readable, as the dashboard's connection test shows it (formatting it raised before).
        assert str(info.value).startswith("Cannot connect to host 127.0.0.1:")
        # Trusted, the exchange works over TLS.
        await client.close()
        trusting = ssl.create_default_context(cafile=str(cert))
        client = make_client(ssl_context=trusting)
        resp = await client.request("GET", url, {}, None, timeout, base_path="")
        data = await resp.read()
        resp.release()
        await client.close()
        server.close()
        return resp.status, data

    assert run(scenario()) == (200, OK_JSON)
