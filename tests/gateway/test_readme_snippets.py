"""The README's "Sending requests" snippets, run as printed (only the address changed to the
test gateway's) with the real SDKs: each request is logged with the metadata the README says."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
README_BASE_URL = "http://127.0.0.1:8000/v1"


def snippet(title: str) -> str:
    """The python block that follows the line ``title`` in the README."""
    match = re.search(rf"^{re.escape(title)}\n\n```python\n(.*?)```", README.read_text(), re.S | re.M)
    assert match, f"no python block after {title!r} in README.md"
    return match.group(1)


def run_snippet(code: str, gw, monkeypatch) -> None:
    assert README_BASE_URL in code
    monkeypatch.setenv("PORTICO_API_KEY", gw.key)
    exec(compile(code.replace(README_BASE_URL, gw.v1), "README.md", "exec"), {})


@pytest.fixture(autouse=True)
def _no_ambient_portkey_env(monkeypatch):
    # The Portkey SDK reads PORTKEY_* variables as defaults; the snippet must work without them.
    for name in ("PORTKEY_API_KEY", "PORTKEY_BASE_URL", "PORTKEY_PROVIDER"):
        monkeypatch.delenv(name, raising=False)


def test_the_portkey_snippet_logs_the_metadata_the_readme_names(gw, monkeypatch):
    code = snippet("Portkey SDK:")
    promised = json.loads(re.search(r"^# Logged metadata: (\{.*\})$", code, re.M).group(1))
    run_snippet(code, gw, monkeypatch)
    [log] = gw.wait_for_logs(1)
    assert log.metadata == promised
    assert promised == {"_user": "user-123", "environment": "production", "feature": "summarization"}


def test_the_openai_snippet_logs_its_metadata_header(gw, monkeypatch):
    code = snippet("OpenAI SDK:")
    sent = json.loads(re.search(r'"x-portkey-metadata": \'(\{.*\})\'', code).group(1))
    run_snippet(code, gw, monkeypatch)
    [log] = gw.wait_for_logs(1)
    assert (log.status_code, log.metadata) == (200, sent)


def test_the_config_snippet_misses_then_hits_the_cache_at_cost_0(gw, monkeypatch, capsys):
    from gateway.response_cache import response_cache

    response_cache.clear_local()
    run_snippet(
        snippet('Portkey SDK with a config (against `make run`\'s demo, from the shell of "Sending requests"):'),
        gw,
        monkeypatch,
    )
    assert capsys.readouterr().out.split() == ["MISS", "HIT"]
    miss, hit = gw.wait_for_logs(2)
    assert (miss.config_id, hit.config_id, hit.cache_status, hit.cost) == ("inline", "inline", "HIT", 0)
    assert hit.cache_saved_cost == miss.cost > 0
