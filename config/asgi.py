"""ASGI entry point. ``/v1/...`` goes to the gateway's own lean ASGI app (no Django request
cycle on the hot path); everything else, including the analytics endpoints that share the
``/v1`` prefix with Portkey (``/v1/logs``, ``/v1/feedback``), goes to Django."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_asgi_application()

from gateway.app import GatewayApp  # noqa: E402 - needs django.setup() first

gateway_application = GatewayApp()

from config.startup import freeze_startup_heap  # noqa: E402

freeze_startup_heap()
DJANGO_V1_PATHS = ("/v1/logs", "/v1/feedback")
# OTLP/HTTP trace ingest (analytics/otel_api.py) is a Django view too.
DJANGO_V1_PATHS += ("/v1/otel/",)


def routes_to_gateway(path: str) -> bool:
    return path.startswith("/v1/") and not path.startswith(DJANGO_V1_PATHS)


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        await gateway_application.lifespan(scope, receive, send)
    elif scope["type"] == "http" and routes_to_gateway(scope["path"]):
        await gateway_application(scope, receive, send)
    else:
        await django_application(scope, receive, send)
