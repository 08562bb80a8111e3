"""Postgres: make analytics_requestlog a table range-partitioned by created_at, one partition
per UTC day plus a DEFAULT partition, so retention drops whole days (analytics.retention).
SQLite, the embedded default, is left as it is.

- The primary key becomes (id, created_at): a partitioned table's unique keys must contain the
  partition column. `id` leads so lookups by id alone (log detail, bodies) still use it. Ids are
  UUID4, so they stay unique in practice; ingest's conflict target is (created_at, id).
- Every other index (Django's, the GIN index of 0002) and constraint (foreign keys, checks) is
  read from the old table and recreated, under the same name, on the partitioned table, which
  gives each partition its own copy.
- Partitions are created for [max(oldest row's day, today - longest retention), today + 7 days];
  older rows land in the DEFAULT partition, where retention deletes them. Partition names are
  analytics_requestlog_pYYYYMMDD, the scheme analytics.retention maintains (kept as a copy here
  so this migration does not change when that module does).
- Existing rows are copied in this migration's transaction: on a large table, run it in a
  maintenance window.

Reversible: the reverse copies the rows back into a plain table with primary key (id).
"""

from datetime import UTC, datetime, timedelta

from django.db import migrations

TABLE = "analytics_requestlog"
OLD = "analytics_requestlog_migrating"
AHEAD_DAYS = 7
DEFAULT_RETENTION_DAYS = 30


def _relkind(cursor) -> str:
    cursor.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", [TABLE])
    return cursor.fetchone()[0]


def _definitions(cursor) -> tuple[list[str], list[tuple[str, str]]]:
    """Non-primary-key index definitions and (name, definition) of check/foreign-key constraints."""
    cursor.execute(
        "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s::regclass AND NOT indisprimary "
        "ORDER BY indexrelid",
        [TABLE],
    )
    # A partitioned table's index reads "ON ONLY table"; recreated on a plain table it is "ON table".
    indexes = [row[0].replace(" ON ONLY ", " ON ") for row in cursor.fetchall()]
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype IN ('c', 'f') ORDER BY conname",
        [TABLE],
    )
    return indexes, cursor.fetchall()


def _rebuild_table(cursor, *, partitioned: bool, primary_key: str, create_partitions=None) -> None:
    indexes, constraints = _definitions(cursor)
    cursor.execute(f"ALTER TABLE {TABLE} RENAME TO {OLD}")
    partition_by = " PARTITION BY RANGE (created_at)" if partitioned else ""
    cursor.execute(
        f"CREATE TABLE {TABLE} (LIKE {OLD} INCLUDING DEFAULTS INCLUDING STORAGE INCLUDING COMMENTS){partition_by}"
    )
    if create_partitions:
        create_partitions(cursor)
    cursor.execute(f"INSERT INTO {TABLE} SELECT * FROM {OLD}")  # noqa: S608
    cursor.execute(f"DROP TABLE {OLD}")  # frees the index and constraint names
    cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_pkey PRIMARY KEY ({primary_key})")
    for name, definition in constraints:
        cursor.execute(f'ALTER TABLE {TABLE} ADD CONSTRAINT "{name}" {definition}')
    for definition in indexes:
        cursor.execute(definition)


def _create_partitions(cursor) -> None:
    cursor.execute(f"SELECT min(created_at) FROM {OLD}")  # noqa: S608
    oldest = cursor.fetchone()[0]
    cursor.execute("SELECT max(log_retention_days) FROM workspaces_workspace")
    retention = cursor.fetchone()[0] or DEFAULT_RETENTION_DAYS
    today = datetime.now(UTC).date()
    first = today - timedelta(days=retention)
    if oldest is not None:
        first = max(first, min(oldest.astimezone(UTC).date(), today))
    cursor.execute(f"CREATE TABLE {TABLE}_default PARTITION OF {TABLE} DEFAULT")
    day = first
    while day <= today + timedelta(days=AHEAD_DAYS):
        following = day + timedelta(days=1)
        cursor.execute(
            f"CREATE TABLE {TABLE}_p{day:%Y%m%d} PARTITION OF {TABLE} "
            f"FOR VALUES FROM ('{day.isoformat()} 00:00:00+00') TO ('{following.isoformat()} 00:00:00+00')"
        )
        day = following


def partition(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        if _relkind(cursor) == "p":
            return
        _rebuild_table(cursor, partitioned=True, primary_key="id, created_at", create_partitions=_create_partitions)


def unpartition(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        if _relkind(cursor) != "p":
            return
        _rebuild_table(cursor, partitioned=False, primary_key="id")


class Migration(migrations.Migration):
    dependencies = [("analytics", "0006_requestbody_log_without_db_constraint")]
    operations = [migrations.RunPython(partition, unpartition)]
