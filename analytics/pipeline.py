"""Moving log batches from where the gateway left them into the database.

Two sources, both at-least-once and safe to repeat because ``write_log_batch`` is idempotent
on the record id:

- the Redis stream (production): read through a consumer group, acknowledged only after the
  database commit; entries left pending by a dead consumer are reclaimed with XAUTOCLAIM;
- spool files (the gateway's last resort when Redis and the database were both unreachable):
  one JSON batch per line, replayed and deleted once every batch is written.

Celery tasks (analytics/tasks.py) and the management commands are thin wrappers around this.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import redis
from django.conf import settings
from django.db import DatabaseError, DataError, IntegrityError, close_old_connections

from analytics import ingest

logger = logging.getLogger(__name__)

CONSUMER_GROUP = "portico-writers"
BATCH_FIELD = b"batch"
SPOOL_SUFFIX = ".jsonl"
REPLAYING_SUFFIX = ".replaying"
# Consumers that own nothing and were idle this long are removed from the group.
_STALE_CONSUMER_MS = 3600 * 1000


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def encode_batch(records: list[dict]) -> bytes:
    return orjson.dumps(records, default=str, option=orjson.OPT_NON_STR_KEYS)


# --- Redis stream ---------------------------------------------------------------------------


def redis_client(url: str | None = None, *, block_ms: int = 1000) -> redis.Redis:
    # The socket timeout must outlast XREADGROUP's BLOCK.
    return redis.Redis.from_url(url or settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=block_ms / 1000 + 5)


def ensure_group(client: redis.Redis, stream_key: str) -> None:
    try:
        client.xgroup_create(stream_key, CONSUMER_GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def consume_log_stream(
    *,
    client: redis.Redis | None = None,
    stream_key: str | None = None,
    consumer: str | None = None,
    max_seconds: float = 5.0,
    count: int = 100,
    block_ms: int = 500,
    min_idle_ms: int = 10_000,
    batch_records: int | None = None,
    linger_ms: int | None = None,
) -> int:
    """Write stream entries to the database for up to ``max_seconds``; return the records written.

    Entries are gathered into one transaction until it holds ``batch_records`` records
    (LOG_WRITER_BATCH_RECORDS) or ``linger_ms`` (LOG_WRITER_LINGER_MS) passed since the first:
    a busy gateway adds one entry per flush, and a write of a few thousand records costs far
    less per record than one of a single entry (the transaction, COPY set-up and rollup
    upserts are per write). Entries are acknowledged (and deleted) only after their batch is
    committed. When the database is unavailable the entries stay pending, and this (or any
    other) consumer reclaims them after ``min_idle_ms``.
    """
    client = client or redis_client(block_ms=block_ms)
    stream_key = stream_key or settings.LOG_STREAM_KEY
    consumer = consumer or consumer_name()
    batch_records = batch_records or settings.LOG_WRITER_BATCH_RECORDS
    linger = (settings.LOG_WRITER_LINGER_MS if linger_ms is None else linger_ms) / 1000
    ensure_group(client, stream_key)
    deadline = time.monotonic() + max_seconds
    written = 0
    claim_from = "0-0"
    while True:
        # Reclaim first: a killed worker's batch gets back in line within seconds.
        claimed = client.xautoclaim(stream_key, CONSUMER_GROUP, consumer, min_idle_ms, start_id=claim_from, count=count)
        claim_from, entries = claimed[0], claimed[1]
        if not entries:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                break
            entries = _read(client, stream_key, consumer, count, min(block_ms, remaining_ms))
        batches = _decode_entries(client, stream_key, entries)
        gather_until = time.monotonic() + linger
        while batches and sum(map(len, batches.values())) < batch_records:
            wait_ms = int((min(gather_until, deadline) - time.monotonic()) * 1000)
            more = _read(client, stream_key, consumer, count, wait_ms) if wait_ms > 0 else []
            if not more:
                break
            entries = entries + more
            batches.update(_decode_entries(client, stream_key, more))
        if batches:
            try:
                written += _write_batches(client, stream_key, batches, dict(entries))
            except DatabaseError as exc:
                # Not acknowledged: the entries stay pending and are reclaimed once idle.
                logger.warning(
                    "Database unavailable (%s); %d log stream entries left pending for redelivery",
                    type(exc).__name__,
                    len(batches),
                )
                time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))  # don't spin on a dead database
                break
        if time.monotonic() >= deadline:
            break
    _forget_stale_consumers(client, stream_key)
    return written


def _read(client: redis.Redis, stream_key: str, consumer: str, count: int, block_ms: int) -> list:
    response = client.xreadgroup(CONSUMER_GROUP, consumer, {stream_key: ">"}, count=count, block=max(1, block_ms))
    return response[0][1] if response else []


def _decode_entries(client: redis.Redis, stream_key: str, entries: list) -> dict[bytes, list]:
    """The entries' batches by entry id; entries deleted while pending are acknowledged and
    undecodable ones dead-lettered (neither can ever be written)."""
    batches: dict[bytes, list] = {}
    for entry_id, fields in entries:
        if fields is None:  # deleted while pending (Redis < 7 still reports it)
            _acknowledge(client, stream_key, [entry_id])
        elif (batch := _decode_entry(fields)) is None:
            _dead_letter(client, stream_key, entry_id, fields, "undecodable entry")
        else:
            batches[entry_id] = batch
    return batches


def _write_batches(client: redis.Redis, stream_key: str, batches: dict[bytes, list], fields_by_id: dict) -> int:
    """Write the batches in one transaction, then XACK + XDEL their entries.

    Database unavailable: raises, nothing acknowledged. A batch the database refuses as data
    (IntegrityError/DataError despite ingest's coercion) is isolated and dead-lettered so it
    cannot block the stream forever.
    """
    close_old_connections()
    records = [record for batch in batches.values() for record in batch]
    try:
        ingest.write_log_batch(records)
        done = list(batches)
    except (IntegrityError, DataError):
        done = []
        for entry_id, batch in batches.items():
            try:
                ingest.write_log_batch(batch)
            except (IntegrityError, DataError) as exc:
                _dead_letter(client, stream_key, entry_id, fields_by_id[entry_id], type(exc).__name__)
                continue
            done.append(entry_id)
    _acknowledge(client, stream_key, done)
    return sum(len(batches[entry_id]) for entry_id in done)


def _decode_entry(fields: dict) -> list | None:
    raw = fields.get(BATCH_FIELD)
    try:
        batch = orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError:
        return None
    return batch if isinstance(batch, list) else None


def _acknowledge(client: redis.Redis, stream_key: str, entry_ids: list) -> None:
    if entry_ids:
        pipe = client.pipeline(transaction=False)
        pipe.xack(stream_key, CONSUMER_GROUP, *entry_ids)
        pipe.xdel(stream_key, *entry_ids)
        pipe.execute()


def _dead_letter(client: redis.Redis, stream_key: str, entry_id: bytes, fields: dict | None, reason: str) -> None:
    """Park an entry that can never be written in ``<stream>:dead`` (kept for a human), then ack it."""
    logger.error("Moving log stream entry %s to %s:dead (%s)", entry_id.decode(), stream_key, reason)
    dead = {b"entry": entry_id, b"reason": reason.encode(), **(fields or {})}
    client.xadd(f"{stream_key}:dead", dead)
    _acknowledge(client, stream_key, [entry_id])


def _forget_stale_consumers(client: redis.Redis, stream_key: str) -> None:
    # Worker processes come and go (names are host-pid); drop the ones with nothing pending.
    for info in client.xinfo_consumers(stream_key, CONSUMER_GROUP):
        if info["pending"] == 0 and info["idle"] > _STALE_CONSUMER_MS:
            client.xgroup_delconsumer(stream_key, CONSUMER_GROUP, info["name"])


# --- Spool files ----------------------------------------------------------------------------


@contextmanager
def _locked(path: Path, mode: str, *, blocking: bool = True) -> Iterator[object | None]:
    """Open ``path`` under an exclusive flock; yields None if ``blocking`` is off and it is taken."""
    with open(path, mode) as handle:
        flags = fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB
        try:
            fcntl.flock(handle.fileno(), flags)
        except BlockingIOError:
            yield None
            return
        yield handle


def spool_append(records: list[dict], *, spool_dir: Path | None = None) -> Path:
    """Append one batch as one JSON line to this process's spool file, fsync'd."""
    spool_dir = Path(spool_dir or settings.LOG_SPOOL_DIR)
    spool_dir.mkdir(parents=True, exist_ok=True)
    path = spool_dir / f"spool-{consumer_name()}{SPOOL_SUFFIX}"
    line = encode_batch(records) + b"\n"
    while True:
        created = not path.exists()
        with _locked(path, "ab") as handle:
            # A replayer may have renamed the file between open() and flock(): then this
            # handle points at its file, so start over on a fresh one.
            try:
                same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                continue
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        if created:
            _fsync_dir(spool_dir)
        return path


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replay_spool(*, spool_dir: Path | None = None) -> int:
    """Write every spooled batch to the database; return the records written.

    Each ``*.jsonl`` file is first renamed to a unique ``*.replaying`` name, so gateways keep
    spooling into a fresh file meanwhile. A file is deleted only once all its batches are
    written; on a database error it stays and is picked up by the next run. Lines that are
    not a JSON batch (torn write) are moved to ``<file>.rejected`` for a human.
    """
    spool_dir = Path(spool_dir or settings.LOG_SPOOL_DIR)
    if not spool_dir.is_dir():
        return 0
    mine = []
    for path in sorted(spool_dir.glob(f"*{SPOOL_SUFFIX}")):
        target = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}{REPLAYING_SUFFIX}")
        try:
            path.rename(target)
        except FileNotFoundError:
            continue  # another replayer took it
        mine.append(target)
    leftovers = [p for p in sorted(spool_dir.glob(f"*{REPLAYING_SUFFIX}")) if p not in mine]
    written = 0
    for path in mine + leftovers:
        # Our own files: wait for an in-flight append to finish. Leftovers of a crashed
        # replayer: skip if another replayer is on them.
        written += _replay_file(path, blocking=path in mine)
    return written


def _replay_file(path: Path, *, blocking: bool) -> int:
    try:
        with _locked(path, "rb", blocking=blocking) as handle:
            if handle is None or os.fstat(handle.fileno()).st_nlink == 0:
                return 0  # taken, or finished by another replayer meanwhile
            written, rejected = 0, []
            for line in handle.read().splitlines():
                if not line.strip():
                    continue
                try:
                    batch = orjson.loads(line)
                except orjson.JSONDecodeError:
                    batch = None
                if not isinstance(batch, list):
                    rejected.append(line)
                    continue
                close_old_connections()
                ingest.write_log_batch(batch)
                written += len(batch)
            if rejected:
                logger.error(
                    "Spool file %s: %d line(s) are not JSON batches, kept in .rejected", path.name, len(rejected)
                )
                with open(path.with_name(path.name + ".rejected"), "ab") as kept:
                    kept.write(b"\n".join(rejected) + b"\n")
            path.unlink()
    except FileNotFoundError:
        return 0
    logger.info("Replayed %d log record(s) from spool file %s", written, path.name)
    return written
