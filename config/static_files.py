"""Static files (admin, dashboard) served by the app itself, with WhiteNoise, without Django's
ASGI warning.

WhiteNoise answers with a FileResponse that streams its file through a synchronous iterator.
Under ASGI (uvicorn, how Portico is served) Django then warns on every static file,
"StreamingHttpResponse must consume synchronous iterators in order to serve them
asynchronously", and reads the whole file in a worker thread before sending any of it. This
middleware is WhiteNoise's, with one change for requests that came in over ASGI: the file is
streamed by an asynchronous iterator that reads each chunk in a thread, so the event loop never
blocks on the disk and nothing is logged. Requests over WSGI get WhiteNoise's response unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from django.core.handlers.asgi import ASGIRequest
from whitenoise.middleware import WhiteNoiseMiddleware

CHUNK_SIZE = 64 * 1024


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    @staticmethod
    def serve(static_file, request):
        response = WhiteNoiseMiddleware.serve(static_file, request)
        if isinstance(request, ASGIRequest) and response.streaming and not response.is_async:
            # The file (None for HEAD and 304) is closed by the response, as before.
            response.streaming_content = _read_in_chunks(getattr(response, "file_to_stream", None))
        return response


async def _read_in_chunks(file) -> AsyncIterator[bytes]:
    if file is None:
        return
    while chunk := await asyncio.to_thread(file.read, CHUNK_SIZE):
        yield chunk
