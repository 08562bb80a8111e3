"""A batch of logs grouped per rollup row, before it is written (analytics.rollups writes it).

A row counts:

- once in DimensionRollup under (workspace, hour, provider, model, api key or 0, status_code // 100,
  status_code);
- once in MetadataRollup per metadata key, under (workspace, key, hour, value). String values are
  used as they are, numbers and booleans as their JSON text, cut to 128 characters; null,
  objects and arrays, and keys longer than 128 characters, are not grouped;
- once in PairRollup per ordered pair (A, B) of its workspace's pair keys (``pair_keys``) it
  carries A of, under (workspace, A, hour, value of A, B, value of B or None when it has no B).
  A log is added once, to its PairCombo (the logs of its workspace and hour with the same
  values of every pair key), not once per pair: each pair row is the union of the combos that
  hold its two values, summed per combo and then merged (``cell_metrics``). With three pair keys
  that is one contribution per log instead of six.

Each rollup row's metrics are an analytics.reads.metrics.Metrics (``metrics_of``): ``errors``
counts rows with ``success`` false; ``cost`` sums priced rows only (``cost`` not NULL) and
``priced_requests`` counts them; ``unpriced_requests`` counts rows with tokens but no cost (a
model without a price: "N requests with no price"); the token parts (cached prompt, cache
write, reasoning, audio) are summed like the prompt and completion tokens; ``last_seen`` is the
latest ``created_at``; the latency histogram is analytics.histogram's, merged by adding counts.

The high-cardinality cap (``fold_capped``) is described in analytics.rollups.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import cached_property
from typing import Any, NamedTuple

from analytics import histogram
from analytics.models import TOKEN_PARTS, MetadataRollup
from analytics.reads.metrics import Metrics

DimensionKey = tuple[int, datetime, str, str, int, int, int]  # workspace, bucket, provider, model, key, class, code
SenderKey = tuple[int, str, int]  # workspace, metadata key, api key or 0

OTHER = MetadataRollup.OTHER_VALUE
KEY_MAX_LENGTH = MetadataRollup._meta.get_field("key").max_length
VALUE_MAX_LENGTH = MetadataRollup._meta.get_field("value").max_length
# RequestLog fields the rollups read (attnames, as ingest's coerced rows carry them).
LOG_FIELDS = (
    "id",
    "created_at",
    "workspace_id",
    "api_key_id",
    "provider",
    "model",
    "status_code",
    "success",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "cached_prompt_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "audio_prompt_tokens",
    "audio_completion_tokens",
    "cost",
    "metadata",
)


MetadataGroup = tuple[int, str, datetime]  # workspace_id, key, bucket
PairCell = tuple[str, str, str | None]  # value of A, key B, value of B (None: not set)


def hour_of(moment: datetime) -> datetime:
    """Start of the UTC hour holding ``moment`` (an aware datetime)."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def metadata_items(metadata: Any) -> list[tuple[str, str]]:
    """The (key, value) pairs of a log's metadata that rollups group by (rules in the docstring)."""
    if not isinstance(metadata, dict):
        return []
    items = []
    for key, value in metadata.items():
        if type(key) is not str or not key or len(key) > KEY_MAX_LENGTH:
            continue
        if type(value) is str:
            text = value
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = str(value)
        else:
            continue
        items.append((key, text[:VALUE_MAX_LENGTH]))
    return items


class Contribution(NamedTuple):
    """What one log adds to each rollup row it counts in."""

    created_at: datetime
    success: bool
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal | None
    latency_ms: float
    hist_key: str
    parts: tuple[int, ...] | None  # TOKEN_PARTS' counts, None when all are 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def metrics_of(contributions: list[Contribution]) -> Metrics:
    """The metrics of one rollup row: its logs' contributions summed."""
    metrics = Metrics(requests=len(contributions))
    metrics.errors = sum(1 for c in contributions if not c.success)
    metrics.prompt_tokens = sum(c.prompt_tokens for c in contributions)
    metrics.completion_tokens = sum(c.completion_tokens for c in contributions)
    # Most logs have no parts: one pass finds the ones that do.
    with_parts = [c.parts for c in contributions if c.parts is not None]
    if with_parts:
        for name, total in zip(TOKEN_PARTS, map(sum, zip(*with_parts, strict=True)), strict=True):
            setattr(metrics, name, total)
    priced = [c.cost for c in contributions if c.cost is not None]
    metrics.cost = sum(priced, Decimal(0))
    metrics.priced_requests = len(priced)
    metrics.unpriced_requests = sum(1 for c in contributions if c.cost is None and c.tokens)
    metrics.latency_sum_ms = sum(c.latency_ms for c in contributions)
    metrics.hist = dict(Counter(c.hist_key for c in contributions))
    metrics.last_seen = max(c.created_at for c in contributions)
    return metrics


class PairCombo:
    """The logs of one batch, workspace and hour with the same value (or none) of each pair key;
    its metrics are summed once, however many pair rows it belongs to."""

    __slots__ = ("_metrics", "contributions")

    def __init__(self) -> None:
        self.contributions: list[Contribution] = []
        self._metrics: Metrics | None = None

    def metrics(self) -> Metrics:
        if self._metrics is None:
            self._metrics = metrics_of(self.contributions)
        return self._metrics


def cell_metrics(combos: list[PairCombo]) -> Metrics:
    """One pair row's metrics: its combos' metrics merged (a fresh object: combos are shared)."""
    metrics = Metrics()
    for combo in combos:
        metrics.add(combo.metrics())
    return metrics


@dataclass
class KeyStats:
    """What one batch adds to a registry row."""

    first_seen: datetime
    last_seen: datetime
    requests: int = 0
    values: Counter[str] = field(default_factory=Counter)


@dataclass
class BatchRollup:
    """A batch's contributions grouped per rollup row (summed once the cap is applied)."""

    # Values in order of first appearance: the cap gives free slots in this order.
    metadata: dict[MetadataGroup, dict[str, list[Contribution]]] = field(default_factory=dict)
    dimensions: dict[DimensionKey, list[Contribution]] = field(default_factory=dict)
    # (workspace, api key or 0, the row's metadata keys) -> [first, last, requests]: rows of one
    # client mostly carry the same keys, so this is one dict update per row, expanded per key later.
    senders: dict[tuple[int, int, tuple[str, ...]], list] = field(default_factory=dict)
    # (workspace, key A, bucket) -> {(value A, key B, value B or None): the PairCombos holding
    # it}, in order of first appearance (the pair caps are first come, first served too).
    pairs: dict[MetadataGroup, dict[PairCell, list[PairCombo]]] = field(default_factory=dict)

    @cached_property
    def dimension_metrics(self) -> list[tuple[DimensionKey, Metrics]]:
        """Each DimensionRollup row's metrics, in key order (the upsert order). Computed once, so
        the writer can sum them while Postgres is still busy with the batch's COPY."""
        return [(key, metrics_of(group)) for key, group in sorted(self.dimensions.items())]

    def sender_stats(self) -> dict[SenderKey, list]:
        stats: dict[SenderKey, list] = {}
        for (workspace_id, api_key_id, keys), (first, last, requests) in self.senders.items():
            for key in keys:
                current = stats.get((workspace_id, key, api_key_id))
                if current is None:
                    stats[(workspace_id, key, api_key_id)] = [first, last, requests]
                else:
                    current[0], current[1] = min(current[0], first), max(current[1], last)
                    current[2] += requests
        return stats

    def key_stats(self) -> dict[tuple[int, str], KeyStats]:
        keys: dict[tuple[int, str], KeyStats] = {}
        for (workspace_id, key, _bucket), values in self.metadata.items():
            for value, group in values.items():
                # Groups are in (created_at, id) order: first and last are the extremes.
                first, last = group[0].created_at, group[-1].created_at
                stats = keys.get((workspace_id, key))
                if stats is None:
                    stats = keys[(workspace_id, key)] = KeyStats(first, last)
                stats.first_seen, stats.last_seen = min(stats.first_seen, first), max(stats.last_seen, last)
                stats.requests += len(group)
                stats.values[value] += len(group)
        return keys


def _metadata_item(key: Any, value: Any) -> tuple[str, str] | None:
    """One (key, value) pair as metadata_items groups it, or None."""
    items = metadata_items({key: value})
    return items[0] if items else None


def aggregate(rows: Iterable[dict], pair_keys: dict[int, tuple[str, ...]] | None = None) -> BatchRollup:
    """Group rows' (dicts with LOG_FIELDS) contributions per rollup row, before the cap.
    ``pair_keys``: each workspace's pair keys (analytics.pair_rollups.pair_keys); none: no pairs.

    Contributions are summed per row only after the cap folded the groups (summing lists with
    sum() runs in C; adding field by field per log and key costs several times more). This
    runs for every log the writer stores, so the common cases are inlined: string metadata
    values (anything else goes through metadata_items' rules), hours and histogram buckets
    memoised per batch.
    """
    batch = BatchRollup()
    metadata, dimensions, senders = batch.metadata, batch.dimensions, batch.senders
    pair_keys = pair_keys or {}
    hours: dict[int, datetime] = {}
    hist_keys: dict[float, str] = {}
    # (workspace, bucket, each pair key's value or None) -> its logs, in order of first appearance.
    combos: dict[tuple, PairCombo] = {}
    for row in sorted(rows, key=_by_time):
        workspace_id, created_at = row["workspace_id"], row["created_at"]
        hour_number = int(created_at.timestamp()) // 3600
        bucket = hours.get(hour_number)
        if bucket is None:
            bucket = hours[hour_number] = hour_of(created_at)
        latency = row["latency_ms"]
        hist_key = hist_keys.get(latency)
        if hist_key is None:
            hist_key = hist_keys[latency] = str(histogram.bucket_of(latency))
        parts = (
            row["cached_prompt_tokens"],
            row["cache_write_tokens"],
            row["reasoning_tokens"],
            row["audio_prompt_tokens"],
            row["audio_completion_tokens"],
        )
        contribution = Contribution(
            created_at,
            row["success"],
            row["prompt_tokens"],
            row["completion_tokens"],
            row["cost"],
            latency,
            hist_key,
            parts if any(parts) else None,
        )
        status, api_key_id = row["status_code"], row["api_key_id"] or 0
        dimension = (workspace_id, bucket, row["provider"], row["model"], api_key_id, status // 100, status)
        group = dimensions.get(dimension)
        if group is None:
            dimensions[dimension] = [contribution]
        else:
            group.append(contribution)
        row_metadata = row["metadata"]
        if not row_metadata or type(row_metadata) is not dict:
            continue
        keys = []
        paired = pair_keys.get(workspace_id)
        present: dict[str, str] = {}
        for key, value in row_metadata.items():
            if type(value) is not str or type(key) is not str or not 0 < len(key) <= KEY_MAX_LENGTH:
                item = _metadata_item(key, value)
                if item is None:
                    continue
                key, value = item
            elif len(value) > VALUE_MAX_LENGTH:
                value = value[:VALUE_MAX_LENGTH]
            keys.append(key)
            if paired and key in paired:
                present[key] = value
            values = metadata.get((workspace_id, key, bucket))
            if values is None:
                metadata[(workspace_id, key, bucket)] = {value: [contribution]}
            else:
                group = values.get(value)
                if group is None:
                    values[value] = [contribution]
                else:
                    group.append(contribution)
        if present:
            combo_key = (workspace_id, bucket, tuple(map(present.get, paired)))
            combo = combos.get(combo_key)
            if combo is None:
                combo = combos[combo_key] = PairCombo()
            combo.contributions.append(contribution)
        if keys:
            signature = (workspace_id, api_key_id, tuple(keys))
            sender = senders.get(signature)
            if sender is None:
                senders[signature] = [created_at, created_at, 1]
            else:
                sender[1] = created_at  # rows are in created_at order
                sender[2] += 1
    _add_pairs(batch.pairs, combos, pair_keys)
    return batch


def _add_pairs(pairs: dict, combos: dict[tuple, PairCombo], pair_keys: dict[int, tuple[str, ...]]) -> None:
    """Each combo into every (A = its value, B = its value or not set) of its pair keys. Combos
    come in order of first appearance, so cells do too (a cell first appears with the first log
    of the first combo holding it, and within one combo in pair key order, as per log)."""
    for (workspace_id, bucket, values), combo in combos.items():
        paired = pair_keys[workspace_id]
        for key_a, value_a in zip(paired, values, strict=True):
            if value_a is None:
                continue
            cells = pairs.get((workspace_id, key_a, bucket))
            if cells is None:
                cells = pairs[(workspace_id, key_a, bucket)] = {}
            for key_b, value_b in zip(paired, values, strict=True):
                if key_b != key_a:
                    cell = (value_a, key_b, value_b)
                    group = cells.get(cell)
                    if group is None:
                        cells[cell] = [combo]
                    else:
                        group.append(combo)


def _by_time(row: dict) -> tuple:
    # The id's integer (a slot): comparing UUID objects runs Python code on every tie, and
    # records of one gateway flush often share a timestamp to the microsecond.
    return row["created_at"], row["id"].int


def fold_capped(
    groups: dict[MetadataGroup, dict[str, list[Contribution]]], existing: dict[MetadataGroup, set[str]], cap: int
) -> list[tuple[tuple, list[Contribution]]]:
    """Rows to upsert, keyed (workspace, key, bucket, value), with the cap applied (see docstring)."""
    result = []
    for group, values in sorted(groups.items()):
        have = existing.get(group, set())
        free = cap - len(have - {OTHER})
        other: list[Contribution] = []
        for value, contributions in values.items():
            if value != OTHER and (value in have or free > 0):
                if value not in have:
                    free -= 1
                result.append(((*group, value), contributions))
            else:
                other.extend(contributions)
        if other:
            result.append(((*group, OTHER), other))
    return result
