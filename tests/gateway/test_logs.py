"""Exactly one log per request, a query-free hot path, and streams cut short on either side."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import orjson
from django.db.backends import utils as db_utils

from gateway.logbuffer import get_log_buffer


def test_n_concurrent_requests_give_exactly_n_logs(gw):
    n = 60

    async def fire():
        async with httpx.AsyncClient(timeout=20) as client:
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}

            async def one(i):
                md = orjson.dumps({"request_id": f"r-{i}"}).decode()
                stream = i % 3 == 0
                resp = await client.post(
                    gw.v1 + "/chat/completions",
                    json={**body, "stream": stream},
                    headers=gw.headers(x_portkey_metadata=md),
                )
                return resp.status_code

            return await asyncio.gather(*(one(i) for i in range(n)))

    statuses = asyncio.run(fire())
    assert statuses == [200] * n
    logs = gw.wait_for_logs(n)
    assert len(logs) == n
    assert sorted(log.metadata["request_id"] for log in logs) == sorted(f"r-{i}" for i in range(n))


def test_the_hot_path_makes_no_query_when_caches_are_warm(gw, monkeypatch):
    seen: list[str] = []
    lock = threading.Lock()
    original = db_utils.CursorWrapper._execute_with_wrappers
    test_thread = threading.current_thread()

    def counting(self, sql, *args, **kwargs):
        # The log writers (in-process or the stream consumer) and the OTLP exporter (which
        # refreshes its per-workspace endpoints) have their own threads and the test reads from
        # its own; everything else is the request path.
        thread = threading.current_thread()
        if thread is not test_thread and not thread.name.startswith(
            ("portico-log-writer", "test-log-consumer", "portico-otel-export")
        ):
            with lock:
                seen.append(sql)
        return original(self, sql, *args, **kwargs)

    monkeypatch.setattr(db_utils.CursorWrapper, "_execute_with_wrappers", counting)
    gw.post()  # cold: fills the key, provider and price caches
    gw.wait_for_logs(1)
    assert any("workspaces_apikey" in sql for sql in seen)
    seen.clear()
    for _ in range(10):
        assert gw.post().status_code == 200
    gw.wait_for_logs(11)
    assert seen == []


def test_a_client_that_disconnects_mid_stream_is_logged(gw):
    headers = gw.headers(x_mock_chunks="50", x_mock_chunk_delay_ms="50")
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", gw.v1 + "/chat/completions", json=body, headers=headers, timeout=10) as resp:
        for i, _ in enumerate(resp.iter_lines()):
            if i >= 6:
                break
    [log] = gw.wait_for_logs(1)
    assert (log.status_code, log.success) == (499, False)
    assert 0 < log.completion_tokens < 50
    # The upstream stream was abandoned, not left running.
    deadline = time.monotonic() + 5
    while gw.upstream.stats["open_streams"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gw.upstream.stats["open_streams"] == 0


def test_an_upstream_reset_mid_stream_is_logged_as_a_failure(gw):
    headers = gw.headers(x_mock_chunks="10", x_mock_reset_after="4")
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    lines = []
    try:
        with httpx.stream("POST", gw.v1 + "/chat/completions", json=body, headers=headers, timeout=10) as resp:
            lines = [line for line in resp.iter_lines() if line.startswith("data:")]
    except httpx.HTTPError:
        pass
    assert "data: [DONE]" not in lines
    [log] = gw.wait_for_logs(1)
    assert (log.status_code, log.success) == (502, False)
    assert log.error_message


def test_stream_bodies_are_stored_as_relayed(gw):
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", gw.v1 + "/chat/completions", json=body, headers=gw.headers(), timeout=10) as resp:
        relayed = b"".join(resp.iter_bytes())
    [log] = gw.wait_for_logs(1)
    assert log.body.response_body.encode() == relayed


def test_log_buffer_counts_what_it_delivered(gw):
    before = get_log_buffer().stats
    gw.post()
    gw.wait_for_logs(1)

    def delivered() -> int:
        after = get_log_buffer().stats
        return sum(after[k] - before[k] for k in ("to_redis", "to_database"))

    # The row can be visible a moment before the writer thread bumps its counter.
    deadline = time.monotonic() + 5
    while delivered() < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert get_log_buffer().stats["emitted"] - before["emitted"] == 1
    assert delivered() == 1
