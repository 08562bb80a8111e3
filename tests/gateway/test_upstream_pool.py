"""The upstream client's pool, with both clients: idle connections are closed after
UPSTREAM_IDLE_TIMEOUT, and UPSTREAM_MAX_CONNECTIONS_PER_HOST caps the connections to one host
(further requests wait for one, within their total timeout)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from yarl import URL

from tests.gateway.upstream_server import answer
from workspaces.upstream.client import make_client


@pytest.fixture(autouse=True)
def loopback_allowed(settings, upstream_client):
    settings.UPSTREAM_ALLOWED_NETWORKS = ["127.0.0.0/8"]


class KeepAliveServer:
    """Answers every request on a connection after ``delay`` seconds and keeps it open; counts
    connections open at once and those the client closed."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.open = 0
        self.most_open = 0
        self.closed_by_client = 0
        self.requests = 0

    async def __aenter__(self) -> KeepAliveServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = URL(f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/models")
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _serve(self, reader, writer) -> None:
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            while True:
                try:
                    await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.closed_by_client += 1
                    return
                self.requests += 1
                await asyncio.sleep(self.delay)
                writer.write(answer())
                await writer.drain()
        except ConnectionError:
            self.closed_by_client += 1
        finally:
            self.open -= 1
            writer.close()


async def get(client, url: URL, timeout: aiohttp.ClientTimeout | None = None) -> bytes:
    resp = await client.request("GET", url, {}, None, timeout or aiohttp.ClientTimeout(total=5), base_path="/v1")
    data = await resp.read()
    resp.release()
    return data


def test_idle_connections_are_closed_after_the_idle_timeout(settings):
    settings.UPSTREAM_IDLE_TIMEOUT = 0.2

    async def scenario():
        async with KeepAliveServer() as server:
            client = make_client()
            await get(client, server.url)
            await asyncio.sleep(0.05)
            still_open = server.open
            await asyncio.sleep(0.6)  # the reaper closes it without any new request
            after = (server.open, server.closed_by_client)
            await client.close()
            return still_open, after

    assert asyncio.run(scenario()) == (1, (0, 1))


def test_a_busy_connection_is_kept_while_idle_ones_go(settings):
    settings.UPSTREAM_IDLE_TIMEOUT = 0.3

    async def scenario():
        async with KeepAliveServer() as server:
            client = make_client()
            for _ in range(5):  # used every 0.1 s: never idle for the timeout
                await get(client, server.url)
                await asyncio.sleep(0.1)
            kept = (server.requests, server.most_open, server.closed_by_client)
            await client.close()
            return kept

    assert asyncio.run(scenario()) == (5, 1, 0)


@pytest.mark.parametrize(("cap", "most_open"), [(2, 2), (0, 6)])
def test_connections_per_host_are_capped(settings, cap, most_open):
    settings.UPSTREAM_MAX_CONNECTIONS_PER_HOST = cap

    async def scenario():
        async with KeepAliveServer(delay=0.1) as server:
            client = make_client()
            bodies = await asyncio.gather(*(get(client, server.url) for _ in range(6)))
            await client.close()
            return bodies, server.most_open

    bodies, seen = asyncio.run(scenario())
    assert bodies == [b'{"ok":true}'] * 6  # all answered, the capped ones after waiting
    assert seen == most_open


@pytest.mark.slow  # waits on the upstream's real 1 s delay and the timeout (~2 s): not in make test-fast
def test_waiting_for_a_capped_host_counts_against_the_total_timeout(settings):
    settings.UPSTREAM_MAX_CONNECTIONS_PER_HOST = 1

    async def scenario():
        async with KeepAliveServer(delay=1.0) as server:
            client = make_client()
            busy = asyncio.ensure_future(get(client, server.url))
            await asyncio.sleep(0.05)
            with pytest.raises(TimeoutError):
                await get(client, server.url, aiohttp.ClientTimeout(total=0.3))
            first = await busy
            after = await get(client, server.url)  # the slot was not lost to the timed-out wait
            await client.close()
            return first, after, server.most_open

    assert asyncio.run(scenario()) == (b'{"ok":true}', b'{"ok":true}', 1)
