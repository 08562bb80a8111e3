"""Static files under ASGI (how Portico is served): streamed by an asynchronous iterator, so
Django neither warns nor reads the whole file before sending it; WSGI gets WhiteNoise as is."""

from __future__ import annotations

import asyncio
import warnings

import pytest
from django.conf import settings
from django.templatetags.static import static
from django.test import AsyncClient, Client

pytestmark = pytest.mark.django_db


def _source(name: str) -> bytes:
    return (settings.BASE_DIR / "static" / name).read_bytes()


async def _aget(path: str):
    response = await AsyncClient().get(path)
    return response, b"".join([chunk async for chunk in response.streaming_content])


def test_a_static_file_over_asgi_streams_without_django_warning():
    url = static("js/logs.js")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        response, body = asyncio.run(_aget(url))
        head = asyncio.run(AsyncClient().head(url))  # (the test client drops a HEAD body itself)
    assert response.status_code == 200 and response.is_async
    assert body == _source("js/logs.js")
    assert response["content-length"] == str(len(body))
    assert head.status_code == 200 and head["content-length"] == str(len(body))
    assert not [w for w in caught if "StreamingHttpResponse" in str(w.message)], [str(w.message) for w in caught]


def test_over_wsgi_whitenoise_answers_as_it_always_did():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        response = Client().get(static("js/logs.js"))
        body = b"".join(response.streaming_content)
    assert response.status_code == 200 and not response.is_async
    assert body == _source("js/logs.js")
    assert not [w for w in caught if "StreamingHttpResponse" in str(w.message)]
