"""The exporter's HTTP client: the one upstream client (workspaces.upstream.client) run
synchronously for the export thread (workspaces.upstream.blocking): the endpoint's IP literal is
checked before any I/O, every address its host resolves to is checked by the SSRF guard before
connecting (so a name that resolves, or re-resolves, to an internal address is refused), the
connection is kept alive between batches, and redirects are never followed."""

from __future__ import annotations

from urllib.parse import urlsplit

from workspaces.upstream.blocking import BlockingClient
from workspaces.upstream.netguard import check_url


class GuardedPoster:
    """POSTs to one endpoint over a kept-alive connection; never follows redirects."""

    def __init__(self, endpoint: str, headers: dict[str, str], timeout: float) -> None:
        check_url(endpoint)  # IP literals in blocked networks are refused before any I/O
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {endpoint!r}")
        self.endpoint = endpoint
        self.headers = {**headers, "Content-Type": "application/x-protobuf", "User-Agent": "portico-otel-export"}
        self.timeout = timeout
        self._client = BlockingClient()

    def post(self, body: bytes) -> tuple[int, float | None]:
        """(status, Retry-After seconds or None); raises OSError on connection trouble."""
        answer = self._client.request("POST", self.endpoint, headers=self.headers, body=body, timeout=self.timeout)
        return answer.status, _retry_after(answer.headers.get("retry-after"))

    def close(self) -> None:
        self._client.close()


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
