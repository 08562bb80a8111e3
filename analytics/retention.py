"""Retention: request logs (and their bodies) older than their workspace's
``log_retention_days`` are deleted; hourly rollups are kept ``settings.ROLLUP_RETENTION_DAYS``
(400 by default), or as long as the workspace keeps its logs if that is longer. A retention of
0 days counts as 1.

Postgres (RequestLog is partitioned by UTC day on created_at, migration 0007):

- Partitions are shared by all workspaces, so a day's partition is dropped only once it is
  older than the LONGEST retention of any workspace. Its logs' bodies are deleted first (bodies
  have no time column; the delete joins the partition's ids to the bodies' primary key).
- Workspaces with a shorter retention lose their older rows by ``DELETE ... WHERE workspace_id
  = X AND created_at < cutoff``, in chunks. The time bound prunes the delete to the partitions
  below the cutoff (plus DEFAULT) and the (workspace, created_at) index finds the rows in each:
  a range delete, not a scan. In steady state an hourly run removes one hour per workspace.
- ``maintain_partitions`` creates the daily partitions for [today - longest retention,
  today + 7 days] ahead of time. Rows outside every partition (clock skew, late replays) land in
  the DEFAULT partition, so an insert never fails; the range deletes above clean it too, and a
  partition created for a day that has rows in DEFAULT takes them over in the same transaction.
- Creating or dropping a partition briefly needs an exclusive lock on the log table; it is
  tried with a lock timeout and, if ingestion or a long query holds the table, skipped until
  the next run rather than queueing every writer behind it.

SQLite (the embedded default): the same chunked range deletes, no partitions.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from analytics.models import DimensionRollup, MetadataKey, MetadataRollup, PairRollup, RequestBody, RequestLog
from analytics.reads import cache as dashboard_cache
from workspaces.models import Workspace

logger = logging.getLogger(__name__)

LOG_TABLE = RequestLog._meta.db_table
BODY_TABLE = RequestBody._meta.db_table
DEFAULT_PARTITION = f"{LOG_TABLE}_default"
AHEAD_DAYS = 7
DELETE_CHUNK = 10_000
DDL_LOCK_TIMEOUT = "5s"
# Partition names, as migration 0007 creates them: analytics_requestlog_pYYYYMMDD.
_PARTITION_NAME = re.compile(rf"^{LOG_TABLE}_p(\d{{8}})$")


def retention_days(days: int) -> int:
    return max(1, days)


def longest_retention_days() -> int:
    days = Workspace.objects.aggregate(days=Max("log_retention_days"))["days"]
    return retention_days(days if days is not None else Workspace._meta.get_field("log_retention_days").default)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


# --- Partitions (Postgres) ----------------------------------------------------------------


def is_partitioned() -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", [LOG_TABLE])
        return cursor.fetchone()[0] == "p"


def partition_name(day: date) -> str:
    return f"{LOG_TABLE}_p{day:%Y%m%d}"


def partitions() -> dict[date, str]:
    """The daily partitions of the log table, by day (DEFAULT not included)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            [LOG_TABLE],
        )
        names = [row[0] for row in cursor.fetchall()]
    found = {}
    for name in names:
        if match := _PARTITION_NAME.match(name):
            found[datetime.strptime(match.group(1), "%Y%m%d").date()] = name
    return found


def ensure_partitions(first: date, last: date) -> list[str]:
    """Create the missing daily partitions for ``first`` .. ``last`` (inclusive); return their names."""
    existing = partitions()
    created = []
    day = first
    while day <= last:
        if day not in existing and _create_partition(day):
            created.append(partition_name(day))
        day += timedelta(days=1)
    return created


def maintain_partitions(today: date | None = None) -> list[str]:
    """Partitions for [today - longest retention, today + AHEAD_DAYS]; no-op when not partitioned."""
    if not is_partitioned():
        return []
    today = today or timezone.now().astimezone(UTC).date()
    return ensure_partitions(today - timedelta(days=longest_retention_days()), today + timedelta(days=AHEAD_DAYS))


def _create_partition(day: date) -> bool:
    name = partition_name(day)
    low, high = _midnight(day), _midnight(day + timedelta(days=1))
    bounds = f"FOR VALUES FROM ('{low.isoformat()}') TO ('{high.isoformat()}')"
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'")
            cursor.execute(
                f"SELECT 1 FROM {DEFAULT_PARTITION} WHERE created_at >= %s AND created_at < %s LIMIT 1",  # noqa: S608
                [low, high],
            )
            if cursor.fetchone() is None:
                cursor.execute(f"CREATE TABLE {name} PARTITION OF {LOG_TABLE} {bounds}")
            else:
                # The DEFAULT partition holds rows of this day: Postgres refuses a new partition
                # that would leave them there, so move them into it before attaching it.
                cursor.execute(f"CREATE TABLE {name} (LIKE {LOG_TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
                cursor.execute(
                    f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} "  # noqa: S608
                    "WHERE created_at >= %s AND created_at < %s RETURNING *) "
                    f"INSERT INTO {name} SELECT * FROM moved",
                    [low, high],
                )
                cursor.execute(f"ALTER TABLE {LOG_TABLE} ATTACH PARTITION {name} {bounds}")
    except OperationalError as exc:
        logger.warning("Could not create log partition %s (retrying at the next run): %s", name, exc)
        return False
    return True


def drop_expired_partitions(now: datetime) -> list[str]:
    """Drop the daily partitions older than every workspace's retention; return their names."""
    horizon = now - timedelta(days=longest_retention_days())
    dropped = []
    for day, name in sorted(partitions().items()):
        if _midnight(day + timedelta(days=1)) > horizon:
            break
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'")
                cursor.execute(f"DELETE FROM {BODY_TABLE} b USING {name} l WHERE b.log_id = l.id")  # noqa: S608
                cursor.execute(f"DROP TABLE {name}")
        except OperationalError as exc:
            logger.warning("Could not drop log partition %s (retrying at the next run): %s", name, exc)
            break
        dropped.append(name)
    return dropped


# --- Range deletes (every database) -------------------------------------------------------


def delete_expired_logs(workspace_id: int, cutoff: datetime, chunk: int = DELETE_CHUNK) -> int:
    """Delete a workspace's logs (and bodies) created before ``cutoff``, oldest first, about
    ``chunk`` rows per transaction so locks stay short; return how many logs went."""
    expired = RequestLog.objects.filter(workspace_id=workspace_id, created_at__lt=cutoff).order_by()
    total = 0
    while True:
        with transaction.atomic():
            # The chunk is a time range, so every statement stays an index range on each partition.
            bound = list(expired.order_by("created_at").values_list("created_at", flat=True)[chunk - 1 : chunk])
            batch = expired.filter(created_at__lte=bound[0]) if bound else expired
            RequestBody.objects.filter(log_id__in=batch.values("id")).delete()
            # A raw delete: the bodies are gone, and the ORM's cascade would load every row first.
            deleted = batch._raw_delete(batch.db)
        total += deleted
        if not bound:
            return total


def delete_expired_rollups(workspace_id: int, cutoff: datetime) -> int:
    """Delete a workspace's rollup rows for hours before ``cutoff``; return how many went.

    Metadata and pair rollups are deleted key by key (from the registry, which holds every key
    that has rollups) so the delete is a range on the (workspace, key, bucket) index.
    """
    keys = list(MetadataKey.objects.filter(workspace_id=workspace_id).values_list("key", flat=True))
    deleted = 0
    if keys:
        deleted += MetadataRollup.objects.filter(workspace_id=workspace_id, key__in=keys, bucket__lt=cutoff).delete()[0]
        deleted += PairRollup.objects.filter(workspace_id=workspace_id, key_a__in=keys, bucket__lt=cutoff).delete()[0]
    deleted += DimensionRollup.objects.filter(workspace_id=workspace_id, bucket__lt=cutoff).delete()[0]
    return deleted


def apply_retention(now: datetime | None = None) -> dict[str, int]:
    """Apply every workspace's retention; return counts (partitions dropped, logs, rollup rows)."""
    now = now or timezone.now()
    report: Counter[str] = Counter()
    if is_partitioned():
        report["partitions_dropped"] = len(drop_expired_partitions(now))
    for workspace_id, days in Workspace.objects.order_by("id").values_list("id", "log_retention_days"):
        log_days = retention_days(days)
        report["logs_deleted"] += delete_expired_logs(workspace_id, now - timedelta(days=log_days))
        rollup_days = max(settings.ROLLUP_RETENTION_DAYS, log_days)
        deleted = delete_expired_rollups(workspace_id, now - timedelta(days=rollup_days))
        if deleted:
            dashboard_cache.note_changed([workspace_id])
        report["rollups_deleted"] += deleted
    return dict(report)
