"""LogBuffer and the pipeline behind it: every emitted record reaches the database, through
Redis, directly, or via the spool, and a batch is written exactly once however it travels.

Tests use the transactional database: the buffer writes from its own thread."""

from __future__ import annotations

import asyncio
import io
import logging
import time
import uuid

import orjson
import pytest
from django.core.management import call_command
from django.db import OperationalError

from analytics import ingest, pipeline, tasks
from analytics.models import RequestLog
from gateway.logbuffer import LogBuffer
from tests.analytics.records import log_record

pytestmark = pytest.mark.django_db(transaction=True)

DEAD_REDIS = "redis://127.0.0.1:1/0"


def run(coro):
    return asyncio.run(coro)


async def emit_and_close(buffer: LogBuffer, records: list[dict]) -> None:
    await buffer.start()
    for record in records:
        buffer.emit(record)
    await buffer.close()


@pytest.fixture
def spool_dir(tmp_path, settings):
    settings.LOG_SPOOL_DIR = tmp_path / "spool"
    return settings.LOG_SPOOL_DIR


@pytest.fixture
def database_down(monkeypatch):
    def refuse(records):
        raise OperationalError("connection refused")

    monkeypatch.setattr(ingest, "write_log_batch", refuse)
    return monkeypatch


@pytest.fixture
def stream(settings):
    """(client, key): a stream key of this test's own, deleted afterwards."""
    key = f"portico:test:{uuid.uuid4().hex}"
    settings.LOG_STREAM_KEY = key
    client = pipeline.redis_client(block_ms=100)
    yield client, key
    client.delete(key, f"{key}:dead")
    client.close()


def spool_files(directory) -> list:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --- embedded mode ---------------------------------------------------------------------------


def test_embedded_mode_writes_every_record_by_close(workspace, spool_dir):
    buffer = LogBuffer(redis_url=None, batch_size=50)
    run(emit_and_close(buffer, [log_record(workspace) for _ in range(120)]))
    assert RequestLog.objects.count() == 120
    assert buffer.stats == {
        "emitted": 120,
        "to_redis": 0,
        "to_database": 120,
        "spooled": 0,
        "failed": 0,
        "dropped": 0,
        "pending": 0,
    }


def test_it_flushes_on_the_interval(workspace, spool_dir):
    async def scenario():
        buffer = LogBuffer(redis_url=None, flush_interval_ms=20, batch_size=1000)
        await buffer.start()
        buffer.emit(log_record(workspace))
        await asyncio.sleep(0.3)
        stats = buffer.stats
        await buffer.close()
        return stats

    assert run(scenario())["to_database"] == 1


def test_it_flushes_when_a_batch_is_full(workspace, spool_dir):
    async def scenario():
        buffer = LogBuffer(redis_url=None, flush_interval_ms=60_000, batch_size=10)
        await buffer.start()
        for _ in range(10):
            buffer.emit(log_record(workspace))
        await asyncio.sleep(0.3)
        stats = buffer.stats
        await buffer.close()
        return stats

    assert run(scenario())["to_database"] == 10


def test_emit_never_raises_and_a_bad_record_does_not_sink_the_batch(workspace, spool_dir):
    buffer = LogBuffer(redis_url=None)
    good = log_record(workspace)
    run(emit_and_close(buffer, [good, "not a record", {"id": "x"}]))
    assert list(RequestLog.objects.values_list("id", flat=True)) == [uuid.UUID(good["id"])]


def test_a_queued_builder_is_built_at_the_flush_and_a_failing_one_is_dropped(workspace, spool_dir, caplog):
    built = []

    def builder(record):
        def build():
            built.append(record["id"])
            return record

        return build

    def broken():
        raise ValueError("no record")

    async def scenario():
        buffer = LogBuffer(redis_url=None, flush_interval_ms=60_000, batch_size=1000)
        await buffer.start()
        records = [log_record(workspace) for _ in range(3)]
        buffer.emit(records[0])
        buffer.emit(builder(records[1]))
        buffer.emit(broken)
        buffer.emit(builder(records[2]))
        before_flush = list(built)
        await buffer.flush()
        stats = buffer.stats
        await buffer.close()
        return records, before_flush, stats

    records, before_flush, stats = run(scenario())
    assert before_flush == []  # emit only queues the builder
    assert built == [records[1]["id"], records[2]["id"]]
    assert set(RequestLog.objects.values_list("id", flat=True)) == {uuid.UUID(r["id"]) for r in records}
    assert stats["to_database"] == 3
    assert stats["dropped"] == 1
    assert "Could not build a log record" in caplog.text


# --- fallbacks -------------------------------------------------------------------------------


def test_unreachable_redis_falls_back_to_the_database(workspace, spool_dir, caplog):
    async def scenario():
        buffer = LogBuffer(redis_url=DEAD_REDIS)
        for _ in range(5):
            buffer.emit(log_record(workspace))
        await buffer.flush()
        buffer.emit(log_record(workspace))
        started = time.monotonic()
        await buffer.flush()  # inside the back-off: straight to the database
        second_flush = time.monotonic() - started
        await buffer.close()
        return buffer.stats, second_flush

    with caplog.at_level(logging.WARNING, logger="gateway.logbuffer"):
        stats, second_flush = run(scenario())
    assert (stats["to_redis"], stats["to_database"], stats["pending"]) == (0, 6, 0)
    assert RequestLog.objects.count() == 6
    assert caplog.text.count("Redis unavailable") == 1
    assert second_flush < 0.5


def test_database_down_too_spools_then_replay_writes_the_rows(workspace, spool_dir, database_down):
    buffer = LogBuffer(redis_url=DEAD_REDIS, batch_size=4)
    records = [log_record(workspace) for _ in range(10)]
    run(emit_and_close(buffer, records))
    assert (buffer.stats["spooled"], buffer.stats["to_database"], buffer.stats["pending"]) == (10, 0, 0)
    [spool_file] = spool_files(spool_dir)
    lines = (spool_dir / spool_file).read_bytes().splitlines()
    assert sum(len(orjson.loads(line)) for line in lines) == 10

    database_down.undo()
    assert tasks.replay_spool.apply().get() == 10
    assert RequestLog.objects.count() == 10
    assert spool_files(spool_dir) == []


def test_every_sink_down_keeps_records_in_memory_until_one_is_back(workspace, tmp_path, database_down):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")

    async def scenario():
        buffer = LogBuffer(redis_url=None, spool_dir=blocked, backoff_s=0)
        for _ in range(3):
            buffer.emit(log_record(workspace))
        await buffer.flush()
        down = buffer.stats
        database_down.undo()
        await buffer.flush()
        await buffer.close()
        return down, buffer.stats

    down, after = run(scenario())
    assert (down["failed"], down["pending"], down["to_database"]) == (3, 3, 0)
    assert (after["to_database"], after["pending"]) == (3, 0)
    assert RequestLog.objects.count() == 3


def test_memory_is_bounded_and_drops_are_counted(workspace, tmp_path, database_down, caplog):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")

    async def scenario():
        buffer = LogBuffer(redis_url=None, spool_dir=blocked, max_pending=5, batch_size=2)
        for _ in range(8):
            buffer.emit(log_record(workspace))
        await buffer.flush()
        return buffer.stats

    stats = run(scenario())
    assert (stats["pending"], stats["dropped"]) == (5, 3)
    assert "Dropped 3 log record(s)" in caplog.text


def test_after_the_database_recovers_the_buffer_replays_its_spool(workspace, spool_dir, database_down):
    async def scenario():
        buffer = LogBuffer(redis_url=None, backoff_s=0)
        buffer.emit(log_record(workspace))
        await buffer.flush()  # spooled
        database_down.undo()
        buffer.emit(log_record(workspace))
        await buffer.flush()  # direct, then the spool is replayed in the background
        await buffer.close()
        return buffer.stats

    stats = run(scenario())
    assert (stats["spooled"], stats["to_database"]) == (1, 1)
    assert RequestLog.objects.count() == 2
    assert spool_files(spool_dir) == []


# --- spool files -----------------------------------------------------------------------------


def test_a_failed_replay_keeps_the_file_for_the_next_run(workspace, spool_dir, database_down):
    pipeline.spool_append([log_record(workspace)], spool_dir=spool_dir)
    with pytest.raises(OperationalError):
        pipeline.replay_spool(spool_dir=spool_dir)
    [leftover] = spool_files(spool_dir)
    assert leftover.endswith(".replaying")
    # A gateway spooling meanwhile writes to a fresh file.
    pipeline.spool_append([log_record(workspace)], spool_dir=spool_dir)
    database_down.undo()
    call_command("replay_spool", stdout=io.StringIO())
    assert RequestLog.objects.count() == 2
    assert spool_files(spool_dir) == []


def test_a_torn_spool_line_is_kept_apart(workspace, spool_dir):
    path = pipeline.spool_append([log_record(workspace)], spool_dir=spool_dir)
    with open(path, "ab") as handle:
        handle.write(b'[{"id": "torn')
    assert pipeline.replay_spool(spool_dir=spool_dir) == 1
    [rejected] = spool_files(spool_dir)
    assert rejected.endswith(".rejected")
    assert (spool_dir / rejected).read_bytes() == b'[{"id": "torn\n'


# --- Redis stream ----------------------------------------------------------------------------


@pytest.mark.redis
def test_redis_mode_goes_through_the_stream(workspace, stream, spool_dir, settings):
    client, key = stream
    buffer = LogBuffer(batch_size=10)
    assert buffer.redis_url == settings.REDIS_URL
    run(emit_and_close(buffer, [log_record(workspace) for _ in range(30)]))
    assert (buffer.stats["to_redis"], buffer.stats["to_database"]) == (30, 0)
    assert client.xlen(key) == 3
    assert RequestLog.objects.count() == 0

    # On a busy machine one short consumer run may end before it reads: give it a few.
    written, deadline = 0, time.monotonic() + 15
    while written < 30 and time.monotonic() < deadline:
        written += pipeline.consume_log_stream(client=client, max_seconds=1.0, block_ms=100)
    assert written == 30
    assert RequestLog.objects.count() == 30
    assert client.xpending(key, pipeline.CONSUMER_GROUP)["pending"] == 0
    assert client.xlen(key) == 0


@pytest.mark.redis
def test_a_batch_read_by_a_dead_consumer_is_reclaimed_and_written_once(workspace, stream):
    client, key = stream
    records = [log_record(workspace) for _ in range(7)]
    pipeline.ensure_group(client, key)
    client.xadd(key, {"batch": pipeline.encode_batch(records)})
    client.xreadgroup(pipeline.CONSUMER_GROUP, "dead", {key: ">"}, count=1)  # read, never acked
    assert pipeline.consume_log_stream(client=client, consumer="alive", max_seconds=0.2, block_ms=50) == 0
    time.sleep(0.15)
    written, deadline = 0, time.monotonic() + 15
    while written < 7 and time.monotonic() < deadline:
        written += pipeline.consume_log_stream(
            client=client, consumer="alive", max_seconds=1.0, block_ms=50, min_idle_ms=100
        )
    assert written == 7
    assert RequestLog.objects.count() == 7
    assert client.xpending(key, pipeline.CONSUMER_GROUP)["pending"] == 0
    assert pipeline.consume_log_stream(client=client, max_seconds=0.2, block_ms=50, min_idle_ms=0) == 0
    assert RequestLog.objects.count() == 7


@pytest.mark.redis
def test_a_database_outage_leaves_entries_pending(workspace, stream, database_down):
    client, key = stream
    pipeline.ensure_group(client, key)
    client.xadd(key, {"batch": pipeline.encode_batch([log_record(workspace)])})
    assert pipeline.consume_log_stream(client=client, max_seconds=0.2, block_ms=50) == 0
    assert client.xpending(key, pipeline.CONSUMER_GROUP)["pending"] == 1
    database_down.undo()
    assert pipeline.consume_log_stream(client=client, max_seconds=0.2, block_ms=50, min_idle_ms=0) == 1
    assert client.xpending(key, pipeline.CONSUMER_GROUP)["pending"] == 0
    assert RequestLog.objects.count() == 1


@pytest.mark.redis
def test_an_undecodable_entry_is_dead_lettered_not_retried_forever(workspace, stream):
    client, key = stream
    pipeline.ensure_group(client, key)
    client.xadd(key, {"batch": b"{not json"})
    good = log_record(workspace)
    client.xadd(key, {"batch": pipeline.encode_batch([good])})
    assert pipeline.consume_log_stream(client=client, max_seconds=0.2, block_ms=50) == 1
    assert client.xpending(key, pipeline.CONSUMER_GROUP)["pending"] == 0
    [(_, dead)] = client.xrange(f"{key}:dead")
    assert dead[b"batch"] == b"{not json"


def test_the_consume_task_is_a_no_op_in_embedded_mode(settings):
    settings.REDIS_URL = ""
    assert tasks.consume_log_stream.apply().get() == 0


def _record_write_sizes(monkeypatch) -> list[int]:
    """The size of every batch the stream writer hands to write_log_batch, in order."""
    sizes: list[int] = []
    real_write = ingest.write_log_batch
    monkeypatch.setattr(ingest, "write_log_batch", lambda batch: sizes.append(len(batch)) or real_write(batch))
    return sizes


def _consume(client, expected: int, **options) -> int:
    # On a busy machine one short consumer run may end before it reads: give it a few.
    written, deadline = 0, time.monotonic() + 15
    while written < expected and time.monotonic() < deadline:
        written += pipeline.consume_log_stream(client=client, block_ms=50, **options)
    return written


@pytest.mark.redis
def test_the_writer_gathers_entries_into_larger_transactions(workspace, stream, monkeypatch):
    # Ten gateway flushes of 30 records: written as transactions of at least 100 records (the
    # last may be smaller), not one per entry, and every record exactly once.
    client, key = stream
    pipeline.ensure_group(client, key)
    records = [log_record(workspace) for _ in range(300)]
    for start in range(0, 300, 30):
        client.xadd(key, {"batch": pipeline.encode_batch(records[start : start + 30])})
    sizes = _record_write_sizes(monkeypatch)
    written = _consume(client, 300, max_seconds=1.0, count=2, batch_records=100, linger_ms=500)
    assert written == 300 and RequestLog.objects.count() == 300
    assert sum(sizes) == 300
    assert all(size >= 100 for size in sizes[:-1]), sizes
    assert len(sizes) <= 3
    assert client.xpending(key, pipeline.CONSUMER_GROUP)["pending"] == 0


@pytest.mark.redis
def test_without_linger_the_writer_writes_what_one_read_returns(workspace, stream, monkeypatch):
    client, key = stream
    pipeline.ensure_group(client, key)
    for _ in range(4):
        client.xadd(key, {"batch": pipeline.encode_batch([log_record(workspace) for _ in range(5)])})
    sizes = _record_write_sizes(monkeypatch)
    written = _consume(client, 20, max_seconds=0.5, count=1, batch_records=10_000, linger_ms=0)
    assert written == 20 and sizes == [5, 5, 5, 5]
