"""Two-key rollups (PairRollup): which pairs are kept, and the caps the writer applies.

A workspace's pair keys are at most ``settings.ROLLUP_PAIR_KEYS`` registry keys: the ones an
admin flagged ``MetadataKey.paired`` first, then the most requested keys that have at most
``ROLLUP_PAIR_MAX_VALUES`` distinct values (a user id or request id would overflow every hour),
ties by name, so the choice is stable while the counts are. Fewer than two keys: no pairs.
Every log counts once per ordered pair (A, B) of those keys whose A it carries (with B's value,
or "not set"), written by ``analytics.rollups.apply_rows`` in the log batch's transaction, under
the key A locks it already holds (module docstring there).

Caps, first come, first served as MetadataRollup's: per (workspace, A, hour) at most
ROLLUP_PAIR_MAX_VALUES values of A have pair rows, and per (A = v, B, hour) at most as many
values of B. A log past a cap is not stored at all for that pair and hour (never folded into
an "(other)" row, which no raw grouping has), so that hour's pairs for A = v no longer add up
to MetadataRollup's count for A = v, and the read engine (analytics.reads.pairs) answers from
the raw logs. The same happens to hours written before a key became a pair key: the choice can
change (a key flagged, the counts overtaking each other) and only makes hours incomplete,
never wrong; ``rebuild_rollups`` fills them in.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.db import transaction

from analytics.models import MetadataKey, PairRollup
from analytics.rollup_batch import MetadataGroup, PairCell, PairCombo
from workspaces.audit import Actor, audit_record, register_audited
from workspaces.models import AuditEvent

register_audited(MetadataKey, object_type="metadata_key", fields=["key", "paired"])

# (workspace, key A, value A, key B, bucket, value B, b_missing): PairRollup's unique key.
PairKey = tuple


def choose_pair_keys(candidates: Iterable[tuple[str, bool, int, int]]) -> tuple[str, ...]:
    """The pair keys among a workspace's registry rows (key, paired, requests, distinct values)."""
    limit, max_values = settings.ROLLUP_PAIR_KEYS, settings.ROLLUP_PAIR_MAX_VALUES
    ranked = sorted(
        (row for row in candidates if row[1] or row[3] <= max_values),
        key=lambda row: (not row[1], -row[2], row[0]),
    )
    keys = tuple(sorted(row[0] for row in ranked[:limit]))
    return keys if len(keys) >= 2 else ()


def pair_keys(workspace_ids: Iterable[int]) -> dict[int, tuple[str, ...]]:
    """Each workspace's pair keys (only workspaces that have at least two)."""
    workspace_ids = set(workspace_ids)
    if not workspace_ids or settings.ROLLUP_PAIR_KEYS < 2:
        return {}
    rows: dict[int, list] = {}
    registry = MetadataKey.objects.filter(workspace_id__in=workspace_ids).values_list(
        "workspace_id", "key", "paired", "requests", "distinct_values"
    )
    for workspace_id, *row in registry:
        rows.setdefault(workspace_id, []).append(row)
    chosen = {workspace_id: choose_pair_keys(candidates) for workspace_id, candidates in rows.items()}
    return {workspace_id: keys for workspace_id, keys in chosen.items() if keys}


def existing_pairs(groups: Iterable[MetadataGroup]) -> dict[MetadataGroup, dict[str, dict[str, set[str]]]]:
    """Stored pairs per (workspace, key A, hour): {value A: {key B: values of B}} (a value of A
    with only "not set" rows has an empty dict: it holds a slot all the same)."""
    groups = set(groups)
    if not groups:
        return {}
    # IN lists on the unique index's leading columns (workspace, key A, bucket): a superset of
    # the groups, as analytics.rollups.existing_values reads MetadataRollup.
    rows = PairRollup.objects.filter(
        workspace_id__in={g[0] for g in groups}, key_a__in={g[1] for g in groups}, bucket__in={g[2] for g in groups}
    ).values_list("workspace_id", "key_a", "bucket", "value_a", "key_b", "value_b", "b_missing")
    found: dict[MetadataGroup, dict[str, dict[str, set[str]]]] = {}
    for workspace_id, key_a, bucket, value_a, key_b, value_b, b_missing in rows:
        group = (workspace_id, key_a, bucket)
        if group in groups:
            by_b = found.setdefault(group, {}).setdefault(value_a, {})
            if not b_missing:
                by_b.setdefault(key_b, set()).add(value_b)
    return found


def fold_pairs(
    pairs: dict[MetadataGroup, dict[PairCell, list[PairCombo]]],
    existing: dict[MetadataGroup, dict[str, dict[str, set[str]]]],
    cap: int,
) -> list[tuple[PairKey, list[PairCombo]]]:
    """Pair rows to upsert, in key order, with the caps applied (module docstring)."""
    result = []
    for group, cells in pairs.items():
        workspace_id, key_a, bucket = group
        have = existing.get(group, {})
        values_a = set(have)
        values_b: dict[tuple[str, str], set[str]] = {}
        for (value_a, key_b, value_b), combos in cells.items():
            if value_a not in values_a:
                if len(values_a) >= cap:
                    continue
                values_a.add(value_a)
            if value_b is None:
                result.append(((workspace_id, key_a, value_a, key_b, bucket, "", True), combos))
                continue
            seen = values_b.get((value_a, key_b))
            if seen is None:
                seen = values_b[(value_a, key_b)] = set(have.get(value_a, {}).get(key_b, ()))
            if value_b not in seen:
                if len(seen) >= cap:
                    continue
                seen.add(value_b)
            result.append(((workspace_id, key_a, value_a, key_b, bucket, value_b, False), combos))
    result.sort(key=lambda item: item[0])
    return result


def set_paired(
    *,
    workspace_id: int,
    keys: Iterable[str],
    paired: bool = True,
    actor: Actor = None,
    via: str = AuditEvent.Via.SYSTEM,
) -> int:
    """Flag (or unflag) registry keys as pair keys, audited; return how many rows changed.
    Updates the flag alone: the log writer rewrites the registry's counters beside it. Hours
    written before the change are incomplete for the new pairs until ``rebuild_rollups`` runs."""
    changed = 0
    rows = MetadataKey.objects.filter(workspace_id=workspace_id, key__in=list(keys)).exclude(paired=paired)
    with transaction.atomic():
        for row in rows.select_related("workspace"):
            MetadataKey.objects.filter(pk=row.pk).update(paired=paired)
            after = {"key": row.key, "paired": paired}
            audit_record(
                workspace=row.workspace,
                action="metadata_key.update",
                obj=row,
                before={**after, "paired": row.paired},
                after=after,
                actor=actor,
                via=via,
            )
            changed += 1
    return changed
