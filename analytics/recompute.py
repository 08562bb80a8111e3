"""Recomputing derived analytics data from its source: the hourly rollups from RequestLog
(``rebuild_rollups``, the ``rebuild_rollups`` command), the metadata key registry from the
rollups (``refresh_metadata_keys``, a periodic task), and logs' costs from the current prices
(``recompute_cost``, the ``recompute_cost`` command). They take the advisory locks described
in analytics.rollups, so they run safely beside live ingestion.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Max, Min, Q, Sum

from analytics import pair_rollups
from analytics.models import (
    TOKEN_PARTS,
    DimensionRollup,
    MetadataKey,
    MetadataKeySender,
    MetadataRollup,
    PairRollup,
    RequestLog,
)
from analytics.pricing import load_price_book, price_usage
from analytics.reads import cache as dashboard_cache
from analytics.rollup_batch import LOG_FIELDS, OTHER, hour_of, metadata_items
from analytics.rollups import apply_rows, lock_for_writing, lock_workspace
from workspaces.audit import Actor, audit_record
from workspaces.models import AuditEvent, Workspace

# --- Registry -----------------------------------------------------------------------------


def refresh_metadata_keys(*, workspace_id: int | None = None, discover: bool = False, lock: bool = True) -> int:
    """Recompute registry rows from the rollups; return how many keys were looked at.

    Each key is refreshed in its own short transaction under its advisory locks, so ingestion
    waits at most one key's recomputation. ``discover`` also visits keys that have rollups but
    no registry row (after a rebuild); keys whose rollups are all gone lose their row.
    """
    registry = MetadataKey.objects.all()
    rollups = MetadataRollup.objects.all()
    if workspace_id is not None:
        registry = registry.filter(workspace_id=workspace_id)
        rollups = rollups.filter(workspace_id=workspace_id)
    pairs = set(registry.values_list("workspace_id", "key"))
    if discover:
        pairs |= set(rollups.order_by().values_list("workspace_id", "key").distinct())
    for pair in sorted(pairs):
        with transaction.atomic():
            if lock and connection.vendor == "postgresql":
                lock_for_writing([pair[0]], [pair])
            _refresh_key(*pair)
    return len(pairs)


def _refresh_key(workspace_id: int, key: str) -> None:
    rows = MetadataRollup.objects.filter(workspace_id=workspace_id, key=key)
    totals = rows.aggregate(requests=Sum("requests"), first=Min("bucket"), last=Max("last_seen"))
    registry = MetadataKey.objects.filter(workspace_id=workspace_id, key=key)
    if not totals["requests"]:
        registry.delete()
        return
    top = (
        rows.exclude(value=OTHER)
        .values("value")
        .annotate(count=Sum("requests"))
        .order_by("-count", "value")[: MetadataKey.VALUE_CAP]
    )
    top_values = {row["value"]: row["count"] for row in top}
    first_hour = totals["first"]
    current = registry.first()
    # Rollups know the first hour only; keep the exact first_seen when it lies in that hour.
    if current is not None and first_hour <= current.first_seen < first_hour + timedelta(hours=1):
        first_seen = current.first_seen
    else:
        first_seen = first_hour
    MetadataKey.objects.update_or_create(
        workspace_id=workspace_id,
        key=key,
        defaults={
            "first_seen": first_seen,
            "last_seen": totals["last"] or first_hour,
            "requests": totals["requests"],
            "distinct_values": len(top_values),
            "top_values": top_values,
        },
    )


# --- Rollups ------------------------------------------------------------------------------


@dataclass
class RebuildResult:
    logs: int
    metadata_rows: int
    dimension_rows: int
    pair_rows: int = 0


def rebuild_rollups(
    *, workspace_id: int | None = None, since: datetime | None = None, chunk_size: int = 5000
) -> RebuildResult:
    """Delete the rollups in scope (whole hours from ``since``'s hour) and recompute them, and
    the registry, from RequestLog, reading logs in (created_at, id) keyset chunks: memory stays
    constant. Pair rollups are rebuilt for the workspace's pair keys as chosen when it starts
    (from the registry; a workspace without one: from its first chunk of logs), one choice for
    every hour.

    One transaction per workspace, holding that workspace's rollup lock exclusively (see the
    analytics.rollups docstring): its log writers wait at their rollup step, other workspaces are not held
    up, and nothing is lost or counted twice.
    """
    start = hour_of(since) if since is not None else None
    result = RebuildResult(logs=0, metadata_rows=0, dimension_rows=0)
    for workspace in _workspaces(workspace_id):
        scope = Q(workspace_id=workspace) if start is None else Q(workspace_id=workspace, bucket__gte=start)
        with transaction.atomic():
            if connection.vendor == "postgresql":
                lock_workspace(workspace)
            MetadataRollup.objects.filter(scope).delete()
            DimensionRollup.objects.filter(scope).delete()
            PairRollup.objects.filter(scope).delete()
            if start is None:
                MetadataKeySender.objects.filter(workspace_id=workspace).delete()
            keys = pair_rollups.pair_keys([workspace])
            for chunk in _log_chunks(workspace, start, chunk_size):
                if not keys:
                    keys = {workspace: _pair_keys_of(chunk)}
                apply_rows(chunk, lock=False, senders=start is None, pair_keys=keys)
                result.logs += len(chunk)
            refresh_metadata_keys(workspace_id=workspace, discover=True, lock=False)
            result.metadata_rows += MetadataRollup.objects.filter(scope).count()
            result.dimension_rows += DimensionRollup.objects.filter(scope).count()
            result.pair_rows += PairRollup.objects.filter(scope).count()
        dashboard_cache.note_changed([workspace])
    return result


def _pair_keys_of(logs: list[dict]) -> tuple[str, ...]:
    """Pair keys chosen from a chunk of logs, for a workspace that has no registry yet."""
    requests: dict[str, int] = {}
    values: dict[str, set[str]] = {}
    for log in logs:
        for key, value in metadata_items(log["metadata"]):
            requests[key] = requests.get(key, 0) + 1
            values.setdefault(key, set()).add(value)
    return pair_rollups.choose_pair_keys((key, False, n, len(values[key])) for key, n in requests.items())


def _workspaces(workspace_id: int | None) -> list[int]:
    workspaces = Workspace.objects.order_by("id")
    if workspace_id is not None:
        workspaces = workspaces.filter(id=workspace_id)
    return list(workspaces.values_list("id", flat=True))


def _log_chunks(workspace_id: int, start: datetime | None, chunk_size: int) -> Iterator[list[dict]]:
    """A workspace's logs from ``start`` in (created_at, id) order, chunk by chunk (keyset).

    The ``created_at >= last`` bound is redundant with the exclusion but lets the database
    start the (workspace, created_at) index scan at the last position instead of the beginning.
    """
    logs = RequestLog.objects.filter(workspace_id=workspace_id).order_by("created_at", "id")
    if start is not None:
        logs = logs.filter(created_at__gte=start)
    page = logs
    while True:
        chunk = list(page.values(*LOG_FIELDS)[:chunk_size])
        if not chunk:
            return
        yield chunk
        last = chunk[-1]
        page = logs.filter(created_at__gte=last["created_at"]).exclude(
            created_at=last["created_at"], id__lte=last["id"]
        )


# --- Costs --------------------------------------------------------------------------------


@dataclass
class RecostResult:
    logs: int
    changed: int
    cost_before: Decimal
    cost_after: Decimal


_COST_FIELDS = ("id", "created_at", "provider", "model", "total_tokens", "prompt_tokens", "completion_tokens")
_PRICED_FIELDS = ("cost", "price_version", "cache_saved_cost")


def recompute_cost(
    *,
    workspace: Workspace,
    since: datetime,
    until: datetime | None = None,
    chunk_size: int = 5000,
    actor: Actor = None,
    via: str = AuditEvent.Via.COMMAND,
) -> RecostResult:
    """Price ``workspace``'s logs created in [since, until) again with the prices in force now
    (overrides as stored; the catalogue's price of each log's own time), store the costs and
    price versions that changed, rebuild the rollups from ``since``'s hour on, and record it
    all in the audit trail. Logs are otherwise never edited: this is the one exception, after
    a price change (a new override, a corrected one, a newer catalogue). A cache hit keeps its
    cost of 0 (nothing was paid upstream); what changes is its saving, ``cache_saved_cost``."""
    book = load_price_book()
    result = RecostResult(logs=0, changed=0, cost_before=Decimal(0), cost_after=Decimal(0))
    logs = RequestLog.objects.filter(workspace=workspace, created_at__gte=since).order_by("created_at", "id")
    if until is not None:
        logs = logs.filter(created_at__lt=until)
    page = logs
    while True:
        chunk = list(page.only(*_COST_FIELDS, *TOKEN_PARTS, *_PRICED_FIELDS, "cache_status")[:chunk_size])
        if not chunk:
            break
        changed = []
        for log in chunk:
            cost, version = None, ""
            if log.total_tokens:
                cost, version = price_usage(book, workspace.pk, log.provider, log.model, log, at=log.created_at)
            saved = log.cache_saved_cost
            if log.cache_status == "HIT":
                saved, cost = cost, Decimal(0)
            result.cost_before += log.cost or 0
            result.cost_after += cost or 0
            if (cost, version, saved) != (log.cost, log.price_version, log.cache_saved_cost):
                log.cost, log.price_version, log.cache_saved_cost = cost, version, saved
                changed.append(log)
        # Bounded by the chunk's times so Postgres reads only the partitions they fall in.
        first, last = chunk[0], chunk[-1]
        RequestLog.objects.filter(created_at__gte=first.created_at, created_at__lte=last.created_at).bulk_update(
            changed, list(_PRICED_FIELDS), batch_size=1000
        )
        result.logs += len(chunk)
        result.changed += len(changed)
        page = logs.filter(created_at__gte=last.created_at).exclude(created_at=last.created_at, id__lte=last.id)
    if result.changed:
        rebuild_rollups(workspace_id=workspace.pk, since=since)
    audit_record(
        workspace=workspace,
        action="workspace.recompute_cost",
        obj=workspace,
        before={"cost": format(result.cost_before.normalize(), "f")},
        after={
            "cost": format(result.cost_after.normalize(), "f"),
            "since": since.isoformat(),
            "until": until.isoformat() if until else None,
            "logs": result.logs,
            "changed": result.changed,
        },
        actor=actor,
        via=via,
    )
    return result
