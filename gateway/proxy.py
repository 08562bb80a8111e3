"""Upstream forwarding: request headers in, response relayed out (the answer is read for the
log by analytics/usage.py as it passes). The HTTP client itself is workspaces.upstream.client,
the one every outbound call uses.

Bodies are forwarded byte for byte; the one exception is a streaming request that did not
ask for usage, where ``stream_options.include_usage`` is added so the log gets token counts,
and the usage-only chunk this produces is withheld from the client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from analytics.usage import StreamRelay
from workspaces.upstream.client import UpstreamAnswer

Send = Callable[[dict], Awaitable[None]]

# Never forwarded upstream: hop-by-hop headers, our own, and the caller's credentials.
_DROP_REQUEST = {
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
    "authorization",
    "cookie",
    "accept-encoding",
}
# Never relayed back: framing is ours (the client already decoded any content-encoding).
_DROP_RESPONSE = {
    b"content-length",
    b"content-encoding",
    b"transfer-encoding",
    b"connection",
    b"keep-alive",
    b"date",
    b"server",
}


def upstream_headers(client_headers: dict[str, str], provider_secret: str) -> dict[str, str]:
    headers = {
        name: value
        for name, value in client_headers.items()
        if name not in _DROP_REQUEST and not name.startswith("x-portkey-")
    }
    if provider_secret:
        headers["authorization"] = f"Bearer {provider_secret}"
    return headers


def response_headers(resp: UpstreamAnswer) -> list[tuple[bytes, bytes]]:
    """The answer's headers to relay, names lower-cased (a provider sends ~20 per answer, the
    same names each time: each name's verdict is memoised)."""
    relayed = []
    for name, value in resp.raw_headers:
        lower = _relayed_names.get(name, _UNSEEN)
        if lower is _UNSEEN:
            lower = _relayed_name(name)
        if lower is not None:
            relayed.append((lower, value))
    return relayed


_UNSEEN = object()
_relayed_names: dict[bytes, bytes | None] = {}  # raw name -> lower-cased, or None: not relayed


def _relayed_name(name: bytes) -> bytes | None:
    lower = name.lower()
    verdict = None if lower in _DROP_RESPONSE else lower
    if len(_relayed_names) >= 4096:
        _relayed_names.clear()  # bounded: an upstream that invents header names
    _relayed_names[name] = verdict
    return verdict


async def wait_for_disconnect(receive: Callable[[], Awaitable[dict]]) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def relay_stream(resp: UpstreamAnswer, send: Send, relay: StreamRelay) -> None:
    async for chunk in resp.content.iter_any():
        data = relay.feed(chunk)
        if data and relay.first_chunk_at is None:
            relay.first_chunk_at = time.perf_counter()
        if relay.done:
            # [DONE] ends the stream: finish the response in the same write. The upstream's
            # end of body (chunked terminator) may still be on its way: it is drained after
            # the request by ``resp.release()``, so neither the response nor its log waits
            # for it, and no disconnect can be seen between the two (uvicorn reports one to
            # any receive() once the response is complete).
            await send({"type": "http.response.body", "body": data + relay.tail(), "more_body": False})
            return
        if data:
            await send({"type": "http.response.body", "body": data, "more_body": True})
    await send({"type": "http.response.body", "body": relay.tail(), "more_body": False})


async def race_disconnect(work: Awaitable[None], receive: Callable[[], Awaitable[dict]]) -> bool:
    """Run ``work`` until it ends or the client goes away; True when the client went away.

    ``work`` runs in the calling task and one watcher task cancels it when the client
    disconnects: one extra task per stream instead of two, and no asyncio.wait bookkeeping.
    The watcher can only act while the caller is suspended inside ``work``, so its
    cancellation is always delivered there."""
    task = asyncio.current_task()
    running = True
    gone = False

    async def watch() -> None:
        nonlocal gone
        await wait_for_disconnect(receive)
        if running:
            gone = True
            task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        await work
    except asyncio.CancelledError:
        if not gone:
            raise  # cancelled from outside: not ours to swallow
        task.uncancel()
        return True
    except Exception:
        if gone:
            task.uncancel()
            return True
        raise
    finally:
        running = False
        watcher.cancel()
    if gone:  # the work swallowed the cancellation
        task.uncancel()
        return True
    return False
