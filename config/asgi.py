"""ASGI entry point. ``/v1/...`` goes to the gateway's own lean ASGI app (no Django request
cycle on the hot path); everything else, including the analytics endpoints that share the
``/v1`` prefix with Portkey (``/v1/logs`` and ``/v1/logs/exports...``, ``/v1/feedback``,
``/v1/analytics/...``), goes to Django.

``/healthz`` is answered here too, before Django: a container healthcheck asks for
``http://localhost:8000/healthz`` over plain HTTP, which production settings would refuse
(ALLOWED_HOSTS without localhost: 400; SECURE_SSL_REDIRECT: 301). It reveals nothing but
that the process serves requests."""

import asyncio
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_asgi_application()

from gateway.app import GatewayApp  # noqa: E402 - needs django.setup() first

gateway_application = GatewayApp()

from analytics.metrics_listener import start_metrics_listener  # noqa: E402
from config.checks import warn_at_startup  # noqa: E402
from config.response_head import install as install_one_write_answers  # noqa: E402
from config.scheduler import start_embedded_scheduler  # noqa: E402
from config.startup import freeze_startup_heap  # noqa: E402

freeze_startup_heap()
install_one_write_answers()  # uvicorn's httptools protocol: head and body in one write
DJANGO_V1_PATHS = ("/v1/logs", "/v1/feedback", "/v1/analytics", "/v1/otel/")


def routes_to_gateway(path: str) -> bool:
    return path.startswith("/v1/") and not path.startswith(DJANGO_V1_PATHS)


HEALTH_BODY = b'{"status": "ok"}'


async def health(send) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(HEALTH_BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": HEALTH_BODY})


async def lifespan(scope, receive, send) -> None:
    """The gateway's lifespan, plus this process's share of embedded mode's periodic jobs, its
    candidacy for METRICS_BIND's listener and the log stream's persistence warning. Both stop
    before the server hears that shutdown is complete: after that the server cancels whatever
    the lifespan still awaits."""
    scheduler = listener = None

    async def relay(message: dict) -> None:
        nonlocal scheduler, listener
        if message["type"] == "lifespan.startup.complete":
            await asyncio.to_thread(warn_at_startup)
            scheduler = start_embedded_scheduler()
            listener = start_metrics_listener()
        elif message["type"].startswith("lifespan.shutdown"):
            for running in (scheduler, listener):
                if running is not None:
                    await asyncio.to_thread(running.stop)
            scheduler = listener = None
        await send(message)

    await gateway_application.lifespan(scope, receive, relay)


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
    elif scope["type"] == "http" and routes_to_gateway(scope["path"]):
        await gateway_application(scope, receive, send)
    elif scope["type"] == "http" and scope["path"] == "/healthz":
        await health(send)
    else:
        await django_application(scope, receive, send)
