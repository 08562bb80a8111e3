"""One call through the one upstream client (workspaces.upstream.client) for other apps: a GET to a provider for
the dashboard's "Test connection" (``probe_upstream``) and a POST of an alert webhook
(``post_upstream``, analytics.alerts.delivery). The same SSRF guard as a real call (IP literals
checked, names resolved once by the guarding resolver and the connection made to the address
that was checked, so a DNS answer cannot change in between), and no redirect followed (a
provider's secret or a signed payload is never sent to another host; a 3xx is reported). These
are the functions other apps call."""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp
from asgiref.sync import async_to_sync
from yarl import URL

from workspaces.upstream import netguard, preflight
from workspaces.upstream.client import make_client


@dataclass(frozen=True)
class ProbeResult:
    status: int | None  # the provider's answer; None when it was not reached
    error: str = ""  # why it was not reached
    location: str = ""  # where a 3xx answer pointed (not followed)
    elapsed_ms: float = 0.0
    blocked: bool = False  # refused by the SSRF guard (trying again will not help)


def probe_upstream(url: str, *, credentials: dict[str, str], timeout: float) -> ProbeResult:
    """GET ``url`` with the provider kind's ``credentials`` headers and report the answer's
    status without reading its body."""
    headers = {"accept": "application/json", **{k.lower(): v for k, v in credentials.items()}}
    return async_to_sync(_call)("GET", url, headers, None, timeout)


def post_upstream(url: str, *, body: bytes, headers: dict[str, str], timeout: float) -> ProbeResult:
    """POST ``body`` to ``url`` and report the answer's status (the body is not read)."""
    return async_to_sync(_call)("POST", url, {k.lower(): v for k, v in headers.items()}, body, timeout)


async def _call(method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float) -> ProbeResult:
    try:
        target = URL(url)
        netguard.check_url(url)
    except (ValueError, UnicodeError):
        return ProbeResult(None, error="it is not a valid URL")
    except netguard.BlockedUpstreamError as exc:
        return _blocked(exc)
    client = make_client()
    started = time.monotonic()
    try:
        resp = await client.request(
            method, target, headers, body, aiohttp.ClientTimeout(total=timeout), base_path=target.path
        )
        resp.close()  # the status is the answer; the body is not needed
    except (netguard.BlockedUpstreamError, aiohttp.ClientError) as exc:
        blocked = preflight.blocked_cause(exc)
        if blocked is not None:
            return _blocked(blocked)
        return ProbeResult(None, error=str(exc) or type(exc).__name__)
    except TimeoutError:
        return ProbeResult(None, error=f"no answer within {timeout:g} s")
    except (OSError, ValueError) as exc:
        return ProbeResult(None, error=str(exc) or type(exc).__name__)
    finally:
        await client.close()
    location = next((v.decode("latin-1") for k, v in resp.raw_headers if k.lower() == b"location"), "")
    return ProbeResult(resp.status, location=location, elapsed_ms=(time.monotonic() - started) * 1000)


def _blocked(exc: Exception) -> ProbeResult:
    return ProbeResult(None, error=f"{exc} (see UPSTREAM_ALLOWED_NETWORKS)", blocked=True)
