"""config.response_head: uvicorn's answers go out in one write, with nothing held back."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from uvicorn.protocols.http import httptools_impl

from config import response_head
from config.response_head import HeldHeadTransport, OneWriteCycle
from tests.servers import serve_asgi


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_head_and_body_of_one_turn_are_one_write():
    async def answer() -> list[bytes]:
        transport = RecordingTransport()
        held = HeldHeadTransport(transport)
        held.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        assert transport.writes == []  # held until the body
        held.write(b"ok")
        await asyncio.sleep(0)  # the end-of-turn flush finds nothing left to write
        return transport.writes

    assert asyncio.run(answer()) == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]


def test_a_head_without_a_body_in_its_turn_goes_out_at_the_end_of_the_turn():
    async def answer() -> tuple[list[bytes], list[bytes]]:
        transport = RecordingTransport()
        held = HeldHeadTransport(transport)
        held.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        await asyncio.sleep(0)
        after_turn = list(transport.writes)
        held.write(b"5\r\nhello\r\n")
        held.write(b"0\r\n\r\n")
        return after_turn, transport.writes

    after_turn, writes = asyncio.run(answer())
    assert after_turn == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    assert writes[1:] == [b"5\r\nhello\r\n", b"0\r\n\r\n"]  # later writes are not held


def test_a_head_held_when_the_client_left_is_dropped():
    async def answer() -> RecordingTransport:
        transport = RecordingTransport()
        held = HeldHeadTransport(transport)
        held.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        transport.closed = True  # connection lost before the end of the turn
        await asyncio.sleep(0)
        return transport

    assert asyncio.run(answer()).writes == []


def test_close_writes_what_is_held_first():
    async def answer() -> RecordingTransport:
        transport = RecordingTransport()
        held = HeldHeadTransport(transport)
        held.write(b"HTTP/1.1 500 Internal Server Error\r\nconnection: close\r\n\r\n")
        held.close()
        await asyncio.sleep(0)
        return transport

    transport = asyncio.run(answer())
    assert transport.writes == [b"HTTP/1.1 500 Internal Server Error\r\nconnection: close\r\n\r\n"]
    assert transport.closed
    assert HeldHeadTransport(transport).is_closing()  # everything else is the connection's own


def test_the_gateway_application_installs_it():
    import config.asgi  # noqa: F401 - the module uvicorn imports in production

    assert httptools_impl.RequestResponseCycle is OneWriteCycle
    response_head.install()  # idempotent
    assert httptools_impl.RequestResponseCycle is OneWriteCycle


# --- Through a real uvicorn with the production protocol (httptools, uvloop) ---------------


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    message = await receive()
    body = message.get("body", b"")
    if scope["path"] == "/slow-stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await asyncio.sleep(0.6)  # the first chunk is late: the head must not wait for it
        await send({"type": "http.response.body", "body": b"late", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    answer = b"echo:" + body
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture
def server():
    response_head.install()
    with serve_asgi(app, lifespan="off", http="httptools", loop="uvloop") as url:
        yield int(url.rsplit(":", 1)[1])


def _read_until(sock: socket.socket, marker: bytes, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_answers_are_whole_and_keep_alive_works(server):
    with socket.create_connection(("127.0.0.1", server)) as sock:
        for body in (b"one", b"two"):  # the same connection, twice
            sock.sendall(b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            data = _read_until(sock, b"echo:" + body, timeout=5)
            assert data.startswith(b"HTTP/1.1 201 Created\r\n")
            assert data.endswith(b"\r\n\r\necho:" + body)
        sock.sendall(b"HEAD /x HTTP/1.1\r\nhost: t\r\n\r\n")
        head = _read_until(sock, b"\r\n\r\n", timeout=5)
        assert head.startswith(b"HTTP/1.1 201 Created\r\n") and head.endswith(b"\r\n\r\n")


def test_a_stream_head_arrives_before_its_late_first_chunk(server):
    with socket.create_connection(("127.0.0.1", server)) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /slow-stream HTTP/1.1\r\nhost: t\r\n\r\n")
        head = _read_until(sock, b"\r\n\r\n", timeout=5)
        head_after = time.monotonic() - started
        rest = _read_until(sock, b"0\r\n\r\n", timeout=5)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in head
    assert head_after < 0.45, f"the head waited {head_after:.2f} s for the first chunk"
    assert b"4\r\nlate\r\n" in head + rest


def test_expect_100_continue_still_gets_its_interim_answer(server):
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n")
        interim = _read_until(sock, b"100 Continue\r\n\r\n", timeout=5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        data = _read_until(sock, b"echo:hello", timeout=5)
    assert data.startswith(b"HTTP/1.1 201 Created\r\n") and data.endswith(b"echo:hello")
