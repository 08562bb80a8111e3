"""Malformed and hostile answers, with both upstream clients: a bad status line, bad chunk sizes,
oversized or too many header fields and an early close each fail as an aiohttp error (which the
gateway answers with a 502), and the connection that carried it is never used again."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.gateway.upstream_server import Server, answer, call

MAX_FIELD = 8190


@pytest.fixture(autouse=True)
def loopback_allowed(settings, upstream_client):
    settings.UPSTREAM_ALLOWED_NETWORKS = ["127.0.0.0/8"]


def failure_then_retry(reply: bytes | object) -> tuple[BaseException, bytes, int]:
    """The error ``reply`` causes, then what a second request gets (and how many connections
    the server saw): a fresh connection must carry it."""

    async def scenario():
        async with Server([reply, answer()]) as server:
            with pytest.raises(aiohttp.ClientError) as info:
                await call(server)
            _, data, _ = await call(server)
            return info.value, data, server.connections

    return asyncio.run(scenario())


@pytest.mark.parametrize(
    "head",
    [b"HTTZ/1.1 200 OK\r\n\r\n", b"HTTP/1.1 2x0 OK\r\n\r\n", b"garbage\r\n\r\n"],
    ids=["protocol", "status", "garbage"],
)
def test_a_bad_status_line_is_an_error(head):
    error, data, connections = failure_then_retry(head)
    assert isinstance(error, aiohttp.ClientResponseError)
    assert (data, connections) == (b'{"ok":true}', 2)


@pytest.mark.parametrize(
    "chunks", [b"zz\r\nabcd\r\n0\r\n\r\n", b"-4\r\nabcd\r\n0\r\n\r\n", b"4\r\nabcdef\r\n0\r\n\r\n"]
)
def test_bad_chunk_sizes_are_an_error(chunks):
    reply = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunks
    error, data, connections = failure_then_retry(reply)
    assert isinstance(error, aiohttp.ClientResponseError | aiohttp.ClientPayloadError)
    assert (data, connections) == (b'{"ok":true}', 2)


@pytest.mark.parametrize(
    "headers",
    [f"x-big: {'v' * (MAX_FIELD + 1)}", f"x-{'n' * (MAX_FIELD + 1)}: v"],
    ids=["value", "name"],
)
def test_a_header_field_over_8190_bytes_is_refused(headers):
    error, data, connections = failure_then_retry(answer(headers=headers))
    assert isinstance(error, aiohttp.ClientResponseError)
    assert (data, connections) == (b'{"ok":true}', 2)


def test_a_header_field_under_the_cap_is_read():
    async def scenario():
        async with Server([answer(headers=f"x-big: {'v' * 8000}")]) as server:
            resp, data, _ = await call(server)
            return dict(resp.raw_headers)[b"x-big"], data

    value, data = asyncio.run(scenario())
    assert (len(value), data) == (8000, b'{"ok":true}')


def test_a_large_head_within_the_caps_is_read_with_its_body():
    # 90 fields of 1,000 bytes and a 64 KiB body in one write: the caps count header fields,
    # not the body bytes that arrive with the head.
    many = "\r\n".join(f"x-h{i}: {'v' * 1000}" for i in range(90))
    body = b"b" * 65536

    async def scenario():
        async with Server([answer(body, headers=many)]) as server:
            resp, data, _ = await call(server)
            return len(resp.raw_headers), data

    assert asyncio.run(scenario()) == (91, body)  # the 90 and content-length


def test_more_than_100_header_fields_are_refused():
    many = "\r\n".join(f"x-h{i}: {i}" for i in range(120))
    error, data, connections = failure_then_retry(answer(headers=many))
    assert isinstance(error, aiohttp.ClientResponseError)
    assert (data, connections) == (b'{"ok":true}', 2)


async def endless_fields(writer):
    writer.write(b"HTTP/1.1 200 OK\r\n")
    for i in range(1000):  # far past the count cap, never ending the head
        writer.write(b"x-%d: %s\r\n" % (i, b"v" * 100))
        await writer.drain()
    await asyncio.sleep(5)


async def endless_value(writer):
    writer.write(b"HTTP/1.1 200 OK\r\nx-endless: ")
    for _ in range(100):  # one value far past the field cap, never ending
        writer.write(b"v" * 1000)
        await writer.drain()
    await asyncio.sleep(5)


@pytest.mark.parametrize("reply", [endless_fields, endless_value], ids=["fields", "value"])
def test_an_endless_head_is_cut_off(reply):
    error, data, connections = failure_then_retry(reply)
    assert isinstance(error, aiohttp.ClientResponseError)
    assert (data, connections) == (b'{"ok":true}', 2)


@pytest.mark.parametrize(
    "partial",
    [
        b"HTTP/1.1 200 OK\r\ncontent-",  # inside the head
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part",  # short of its length
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n",  # no last chunk
    ],
    ids=["head", "length", "chunked"],
)
def test_an_early_close_is_an_error(partial):
    async def close_early(writer):
        writer.write(partial)
        await writer.drain()
        writer.close()

    error, data, connections = failure_then_retry(close_early)
    assert isinstance(error, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError)
    assert (data, connections) == (b'{"ok":true}', 2)
