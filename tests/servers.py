"""A real uvicorn serving an ASGI application on a loopback port, in a thread, for tests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn

# For socketserver's serve_forever: shutdown() waits for the loop's next poll, every 0.5 s by
# default, and test servers are stopped after every test that starts one.
QUICK_SHUTDOWN = {"poll_interval": 0.02}


@contextlib.contextmanager
def serve_asgi(application, *, lifespan: str = "on", http: str = "h11", loop: str = "asyncio") -> Iterator[str]:
    """Yield the base URL (``http://127.0.0.1:<port>``) while uvicorn serves ``application``.
    The socket is bound before the server starts, so the port is known and never raced for."""
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on accepted sockets of a
    # TCP-proto listener; without it every answer's body waited ~40 ms for the client's delayed
    # ACK of the headers (uvicorn binding --host/--port itself, as in production, sets it).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(application, lifespan=lifespan, log_level="warning", loop=loop, http=http)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
