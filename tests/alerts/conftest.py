"""Fixtures for the alert tests: a real webhook receiver (an HTTP server on loopback that
records every request and answers what the test queues), rules made through the services, and
logs written through write_log_batch so the rollups are filled as in production."""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from analytics.alerts import services as alert_services
from analytics.ingest import write_log_batch
from tests.analytics.records import log_record


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

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
                received = Received({k.lower(): v for k, v in self.headers.items()}, body)
                received.status = receiver.statuses.popleft() if receiver.statuses else 200
                receiver.requests.append(received)
                self.send_response(received.status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def reset(self) -> None:
        self.requests.clear()
        self.statuses.clear()


@pytest.fixture(scope="module")
def _receiver():
    receiver = WebhookReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def receiver(_receiver):
    if _receiver.server is None:  # a test stopped it
        _receiver.start()
    _receiver.reset()
    yield _receiver
    _receiver.reset()


def write_logs(workspace, *records: dict) -> list[dict]:
    """Logs from override dicts (``created_at`` may be a datetime), in one batch."""
    built = []
    for overrides in records:
        overrides = dict(overrides)
        if isinstance(overrides.get("created_at"), datetime):
            overrides["created_at"] = overrides["created_at"].isoformat()
        built.append(log_record(workspace, **overrides))
    write_log_batch(built)
    return built


def make_rule(workspace, **fields):
    """(rule, webhook secret) through the service."""
    defaults = {"name": "Chat spend", "metric": "spend", "threshold": "1", "window": "1h", "cooldown_minutes": 60}
    return alert_services.alert_rule_create(workspace=workspace, **{**defaults, **fields})
