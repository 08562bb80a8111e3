"""One write per answer: uvicorn's response head goes out with the first body write.

uvicorn's httptools protocol writes the status line and headers to the socket as soon as the
application sends ``http.response.start``, and the body with the next message: two ``send``
calls and, on loopback, two TCP segments, so the client's event loop wakes for the head and
again for the body. Nearly every answer Portico gives (a proxied chat completion, a dashboard
page) sends its body right after the head, in the same turn of the event loop. ``install``
makes each request's cycle hold the head until then and write it together with the body (one
``send``, one segment, one wake-up for the client: ~15 us less per answer at concurrency 1,
``bench/bench_response_head.py``).

Nothing waits on this: the held head is written at the end of the event loop's turn when no
body follows in it (a stream whose first chunk is not there yet, a 100 Continue), and before
the connection closes. Bytes and their order on the wire are unchanged; only how many writes
carry them.

The cycle class is uvicorn's own (``uvicorn.protocols.http.httptools_impl``, pinned in
requirements.txt), given a transport that holds the first write; installed by config.asgi
when the server imports the application (``uvicorn config.asgi:application``, unchanged).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http import httptools_impl


class HeldHeadTransport:
    """A request's view of its connection's transport: the first write (the response head,
    or a 100 Continue) is held until the next write or the end of this event-loop turn."""

    __slots__ = ("_flush_handle", "_held", "_started", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._flush_handle.cancel()
            self._transport.write(held + data)
        elif not self._started:
            self._started = True
            self._held = data
            self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():  # the client left in the meantime
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str):
        # is_closing, get_extra_info, ...: the connection's own.
        return getattr(self._transport, name)


class OneWriteCycle(httptools_impl.RequestResponseCycle):
    """uvicorn's request/response cycle writing through a HeldHeadTransport."""

    def __init__(self, scope, transport, *args, **kwargs) -> None:
        super().__init__(scope, HeldHeadTransport(transport), *args, **kwargs)


def install() -> None:
    """Make uvicorn's httptools protocol (``--http httptools``, the production command line)
    use OneWriteCycle for the requests it reads from now on. Idempotent."""
    httptools_impl.RequestResponseCycle = OneWriteCycle
