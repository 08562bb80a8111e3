"""A real webhook receiver for the alert tests: an HTTP server on loopback that records every
request, answers the statuses a test queues, and verifies signatures as a receiver would."""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

from tests.servers import QUICK_SHUTDOWN


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int = 200  # what the receiver answered
    message: object = None  # the headers as the HTTP server parsed them (case-insensitive)

    @property
    def json(self) -> dict:
        return orjson.loads(self.body)

    def signature_valid(self, secret: str) -> bool:
        """What a receiver does: HMAC-SHA256 of "<timestamp>.<body>" with the shared secret."""
        timestamp = self.headers["x-portico-timestamp"]
        expected = hmac.new(secret.encode(), timestamp.encode() + b"." + self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers["x-portico-signature"], f"v1={expected}")


@dataclass
class WebhookReceiver:
    """Records requests; answers the queued statuses in order, then 200. ``processed`` keeps
    one entry per idempotency key, as a receiver that drops duplicates would."""

    requests: list[Received] = field(default_factory=list)
    statuses: deque = field(default_factory=deque)
    port: int = 0
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/portico?team=ops"

    @property
    def processed(self) -> dict[str, Received]:
        seen: dict[str, Received] = {}
        for received in self.requests:
            if 200 <= received.status < 300:
                seen.setdefault(received.headers["idempotency-key"], received)
        return seen

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                status = receiver.statuses.popleft() if receiver.statuses else 200
                received = Received({k.lower(): v for k, v in self.headers.items()}, body, status, self.headers)
                receiver.requests.append(received)
                self.send_response(received.status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs=QUICK_SHUTDOWN, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def reset(self) -> None:
        self.requests.clear()
        self.statuses.clear()
