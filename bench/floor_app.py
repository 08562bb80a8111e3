"""The floor under Portico's overhead (bench/gateway_overhead.py --floor): a raw ASGI app that
forwards each request to the mock upstream with the project's own upstream client
(workspaces.upstream.native) under the same uvicorn command line, and does nothing else: no
authentication, metadata, policies, pricing or log. Portico's added latency minus this one's
is what the gateway's own work costs; this one's is what the server and the extra hop cost.

    uvicorn bench.floor_app:app  (with FLOOR_UPSTREAM=http://127.0.0.1:PORT/v1)
"""

from __future__ import annotations

import os

import aiohttp
import django
from yarl import URL

django.setup()

from config.response_head import install  # noqa: E402
from workspaces.upstream import netguard  # noqa: E402
from workspaces.upstream.native import NativeClient  # noqa: E402

install()  # the same server as Portico's (config.asgi installs it there)
UPSTREAM = os.environ.get("FLOOR_UPSTREAM", "http://127.0.0.1:8001/v1")
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=600)
_DROP = {"host", "content-length", "connection", "authorization", "accept-encoding"}
_client: NativeClient | None = None


async def app(scope, receive, send) -> None:
    global _client
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _client is not None:
                    await _client.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if _client is None:
        _client = NativeClient(netguard.GuardedResolver())
    message = await receive()
    body = message.get("body", b"")
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k.decode() not in _DROP}
    headers["authorization"] = "Bearer sk-mock-bench"
    url = URL(UPSTREAM + scope["path"][3:])
    resp = await _client.request(scope["method"], url, headers, body, TIMEOUT, base_path="/v1")
    data = await resp.read()
    resp.release()
    out = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": resp.status, "headers": out})
    await send({"type": "http.response.body", "body": data})
