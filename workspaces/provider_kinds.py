"""The facts about provider kinds that more than the gateway needs: their names, the API
versions sent by default, and the cheap authenticated request the dashboard's "Test
connection" makes. How a proxied request is shaped per kind stays in gateway/providers.py,
which builds on these (nothing below the gateway imports it)."""

from __future__ import annotations

from urllib.parse import quote

OPENAI = "openai"
AZURE_OPENAI = "azure-openai"
ANTHROPIC = "anthropic"
GOOGLE = "google"
KINDS = (OPENAI, AZURE_OPENAI, ANTHROPIC, GOOGLE)  # Provider.Kind's values

ANTHROPIC_VERSION = "2023-06-01"
AZURE_API_VERSION = "2024-10-21"


def probe_request(kind: str, base_url: str, secret: str, api_version: str = "") -> tuple[str, dict[str, str]]:
    """URL and credential headers of a cheap authenticated GET (the model list), for the
    dashboard's "Test connection"; each kind is asked with its own credential header."""
    base = base_url.rstrip("/")
    if kind == AZURE_OPENAI:
        version = quote(api_version or AZURE_API_VERSION, safe="")
        return f"{base.removesuffix('/openai')}/openai/models?api-version={version}", {
            "api-key": secret
        } if secret else {}
    headers: dict[str, str] = {}
    if kind == ANTHROPIC:
        headers["anthropic-version"] = api_version or ANTHROPIC_VERSION
        if secret:
            headers["x-api-key"] = secret
    elif kind == GOOGLE:
        if secret:
            headers["x-goog-api-key"] = secret
    elif secret:
        headers["Authorization"] = f"Bearer {secret}"
    return base + "/models", headers
