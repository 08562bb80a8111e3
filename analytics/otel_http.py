"""The exporter's HTTP client: the standard library's ``http.client`` behind the SSRF guard
(workspaces.upstream.netguard). The endpoint is checked with ``check_url`` (IP literals), every address its
host resolves to is checked before connecting (so a name that resolves, or re-resolves, to an
internal address is refused), and redirects are never followed (http.client does not)."""

from __future__ import annotations

import http.client
import socket
import ssl
from urllib.parse import urlsplit

from workspaces.upstream.netguard import BlockedUpstreamError, check_url, is_blocked


def _guarded_connection(host: str):
    """``socket.create_connection`` for http.client, connecting only to addresses the SSRF
    guard allows (checked at connect time, so a name re-resolving to an internal address is
    refused as well)."""

    def create_connection(address, timeout=None, source_address=None):
        _host, port = address
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        allowed = [info for info in infos if not is_blocked(info[4][0])]
        if not allowed:
            raise BlockedUpstreamError(f"{host} resolves only to networks Portico may not call")
        error: OSError | None = None
        for family, kind, proto, _name, sockaddr in allowed:
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(timeout)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise error or OSError(f"cannot connect to {host}")

    return create_connection


class GuardedPoster:
    """POSTs to one endpoint over a kept-alive connection; never follows redirects."""

    def __init__(self, endpoint: str, headers: dict[str, str], timeout: float) -> None:
        check_url(endpoint)  # IP literals in blocked networks are refused before any I/O
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {endpoint!r}")
        self.host, self.https = parts.hostname, parts.scheme == "https"
        self.port = parts.port or (443 if self.https else 80)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.headers = {**headers, "Content-Type": "application/x-protobuf", "User-Agent": "portico-otel-export"}
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.https:
                conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            conn._create_connection = _guarded_connection(self.host)
            self._conn = conn
        return self._conn

    def post(self, body: bytes) -> tuple[int, float | None]:
        """(status, Retry-After seconds or None); raises OSError on connection trouble."""
        conn = self._connection()
        try:
            conn.request("POST", self.path, body=body, headers=self.headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, _retry_after(response.getheader("Retry-After"))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
