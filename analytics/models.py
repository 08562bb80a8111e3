from __future__ import annotations

import uuid
from decimal import Decimal

from django.db import models
from django.utils import timezone

from analytics.ids import uuid7
from workspaces.models import ApiKey, Workspace


class RequestLog(models.Model):
    """One row per proxied request (success or failure, auth failures excepted).

    Narrow on purpose: bodies live in RequestBody. Rows are written in batches by
    ``analytics.ingest.write_log_batch`` and never edited afterwards, except their cost,
    price_version and cache_saved_cost by the audited ``recompute_cost`` (analytics.recompute).
    """

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)  # time-ordered: analytics.ids
    created_at = models.DateTimeField(default=timezone.now)
    # No database-level foreign keys (Django's relation and on_delete stay): the deferred
    # constraint triggers checked the workspace and key once per inserted row at commit, about
    # a fifth of the log writer's database time. The writer takes the same FOR KEY SHARE locks
    # once per batch instead, and skips rows of deleted workspaces / clears deleted keys
    # (analytics.ingest._drop_orphans); deletions through the ORM (admin) cascade as before.
    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    api_key = models.ForeignKey(
        ApiKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_constraint=False
    )
    provider = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=200, blank=True)
    endpoint = models.CharField(max_length=200, blank=True)
    method = models.CharField(max_length=8, default="POST")
    status_code = models.PositiveSmallIntegerField()
    success = models.BooleanField()
    is_stream = models.BooleanField(default=False)
    latency_ms = models.FloatField(default=0)
    ttft_ms = models.FloatField(null=True, blank=True, help_text="Time to first token (streams).")
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    # Parts of the counts above, each priced at its own rate (analytics.pricing); database
    # defaults too, so writers that name columns (bench/analytics_data.py's COPY) still insert.
    # Whatever the provider's shape, prompt_tokens INCLUDES cached reads, cache writes and audio input
    # (OpenAI's convention; Anthropic's input_tokens excludes cache reads/writes and is
    # normalised by analytics.usage.UsageTracker), and completion_tokens includes reasoning and
    # audio output.
    cached_prompt_tokens = models.PositiveIntegerField(
        default=0, db_default=0, help_text="Prompt tokens read from the cache."
    )
    cache_write_tokens = models.PositiveIntegerField(
        default=0, db_default=0, help_text="Prompt tokens written to the cache."
    )
    reasoning_tokens = models.PositiveIntegerField(
        default=0, db_default=0, help_text="Completion tokens spent reasoning."
    )
    audio_prompt_tokens = models.PositiveIntegerField(default=0, db_default=0)
    audio_completion_tokens = models.PositiveIntegerField(default=0, db_default=0)
    # NULL means "unknown model, no price", which is different from a free call.
    cost = models.DecimalField(max_digits=18, decimal_places=8, null=True, blank=True)
    currency = models.CharField(max_length=3, default="USD")
    price_version = models.CharField(
        max_length=64,
        blank=True,
        default="",
        db_default="",
        help_text="What priced this log: 'genai-prices X.Y.Z' or 'override:<id>@<time>'.",
    )
    cache_status = models.CharField(max_length=16, default="DISABLED")
    # Why generation stopped, one entry per choice/candidate, in the vocabulary of the answer the
    # client got (gen_ai.response.finish_reasons): OpenAI "stop"/"length"/"tool_calls", Responses
    # "completed"/"max_output_tokens", Anthropic "end_turn"/"max_tokens", Gemini "STOP"/
    # "MAX_TOKENS". NULL when the answer named none (errors, embeddings, logs from before 0016).
    finish_reasons = models.JSONField(null=True, blank=True)
    retry_count = models.PositiveSmallIntegerField(default=0)
    # Requests routed by a Portkey config (gateway.routing): the saved config's id or "inline",
    # every try in order ({target, provider, status, ms[, cache]}), and on a cache hit (cost 0)
    # what the answer would have cost. Database defaults too, so writers that name their
    # columns (COPY in bench/analytics_data.py, an older worker mid-deploy) need not know them.
    config_id = models.CharField(max_length=32, blank=True, default="", db_default="")
    # The config target whose answer the client got (its x-portkey-last-used-option-index,
    # e.g. "config.targets[1]"; "" without a config). Also the last try in ``attempts``.
    last_used_option_index = models.CharField(max_length=100, blank=True, default="", db_default="")
    attempts = models.JSONField(default=list, blank=True, db_default=[])
    cache_saved_cost = models.DecimalField(max_digits=18, decimal_places=8, null=True, blank=True)
    trace_id = models.CharField(max_length=128, blank=True)
    span_id = models.CharField(max_length=128, blank=True)
    parent_span_id = models.CharField(max_length=128, blank=True)
    span_name = models.CharField(max_length=200, blank=True)
    user = models.CharField(max_length=128, blank=True)
    metadata = models.JSONField(default=dict)
    metadata_changes = models.JSONField(
        default=list, blank=True, help_text="What lenient validation changed in the request metadata."
    )
    error_message = models.TextField(blank=True)
    client_runtime = models.CharField(max_length=64, blank=True)
    sdk_version = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Log lists: newest first within a workspace and time window (keyset pagination).
            models.Index(fields=["workspace", "-created_at", "-id"], name="log_ws_time"),
            # Users page and `user=` filter.
            models.Index(fields=["workspace", "user", "-created_at"], name="log_ws_user_time"),
            # Trace view and feedback attachment.
            models.Index(fields=["workspace", "trace_id"], name="log_ws_trace"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.status_code} {self.model}"


class RequestBody(models.Model):
    """Request/response bodies, kept apart from the narrow log row; skipped for
    ``x-portkey-debug: false`` requests and workspaces with ``store_bodies`` off."""

    # No database-level foreign key: on Postgres RequestLog is partitioned by created_at and its
    # primary key is (id, created_at), so `id` alone cannot be referenced. Bodies are deleted
    # with their logs by analytics.retention (and by Django's cascade on ORM deletes).
    log = models.OneToOneField(
        RequestLog, on_delete=models.CASCADE, primary_key=True, related_name="body", db_constraint=False
    )
    request_headers = models.JSONField(default=dict, help_text="Sensitive headers are redacted before storage.")
    request_body = models.TextField(blank=True)
    response_body = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"body of {self.log_id}"


class ModelPrice(models.Model):
    """A price override: beats the genai-prices catalogue for one model, for one workspace or
    (no workspace) for the whole installation. Rates are USD per million tokens; an empty
    cache/reasoning/audio rate prices those tokens at the input or output rate."""

    workspace = models.ForeignKey(
        Workspace,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text="Empty: the override applies to every workspace without its own.",
    )
    model = models.CharField(
        max_length=200, help_text="Model name as sent by clients; also prices dated names (gpt-4o-2024-08-06)."
    )
    input_per_million = models.DecimalField(max_digits=12, decimal_places=6)
    output_per_million = models.DecimalField(max_digits=12, decimal_places=6)
    cache_read_per_million = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True, help_text="Cached prompt tokens (empty: input rate)."
    )
    cache_write_per_million = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True, help_text="Cache writes (empty: input rate)."
    )
    reasoning_per_million = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True, help_text="Reasoning tokens (empty: output rate)."
    )
    audio_input_per_million = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True, help_text="Audio prompt tokens (empty: input rate)."
    )
    audio_output_per_million = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="Audio completion tokens (empty: output rate).",
    )
    currency = models.CharField(max_length=3, default="USD")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model", "workspace_id"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "model"], name="model_price_workspace_model"),
            models.UniqueConstraint(
                fields=["model"], condition=models.Q(workspace__isnull=True), name="model_price_installation_model"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} ({self.workspace.slug})" if self.workspace_id else self.model


# The parts of a log's token counts priced at their own rates (analytics.pricing), stored on
# RequestLog and summed in the rollups like prompt and completion tokens.
TOKEN_PARTS = (
    "cached_prompt_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "audio_prompt_tokens",
    "audio_completion_tokens",
)

# RollupMetrics' metric columns (analytics.reads.metrics.Metrics.rollup_fields, in this order).
ROLLUP_TOTALS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_prompt_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "audio_prompt_tokens",
    "audio_completion_tokens",
    "cost",
    "priced_requests",
    "unpriced_requests",
    "latency_sum_ms",
    "latency_hist",
    "last_seen",
)


class RollupMetrics(models.Model):
    """Additive counters shared by every hourly rollup."""

    bucket = models.DateTimeField(help_text="Start of the hour (UTC).")
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cached_prompt_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    audio_prompt_tokens = models.BigIntegerField(default=0)
    audio_completion_tokens = models.BigIntegerField(default=0)
    cost = models.DecimalField(max_digits=20, decimal_places=8, default=Decimal(0))
    priced_requests = models.PositiveIntegerField(default=0, help_text="Requests whose model had a price.")
    unpriced_requests = models.PositiveIntegerField(
        default=0, help_text="Requests with tokens whose model had no price (their cost is NULL, not 0)."
    )
    latency_sum_ms = models.FloatField(default=0)
    # analytics.histogram buckets, sparse {"index": count}; merge by adding.
    latency_hist = models.JSONField(default=dict)
    last_seen = models.DateTimeField(null=True)

    class Meta:
        abstract = True


class MetadataRollup(RollupMetrics):
    """Per hour, per (metadata key, value). ``_user`` is a metadata key like any other, so
    per-user analytics read these rows too. Values past the per-key-per-hour cap are counted
    under OTHER_VALUE (see analytics.rollups)."""

    OTHER_VALUE = "(other)"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", db_index=False)
    key = models.CharField(max_length=128)
    value = models.CharField(max_length=128)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "key", "bucket", "value"], name="metadata_rollup_unique")
        ]

    def __str__(self) -> str:
        return f"{self.bucket:%Y-%m-%d %H}h {self.key}={self.value}"


class DimensionRollup(RollupMetrics):
    """Per hour, per (provider, model, API key, HTTP status code). ``status_class`` is
    ``status_code // 100``, stored so success/error splits filter on an integer."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", db_index=False)
    provider = models.CharField(max_length=64)
    model = models.CharField(max_length=200)
    api_key_id = models.BigIntegerField(default=0, help_text="0 = no key (custom logs).")
    status_class = models.PositiveSmallIntegerField(help_text="2 = 2xx, 4 = 4xx, 5 = 5xx, ...")
    status_code = models.PositiveSmallIntegerField(
        default=0, help_text="HTTP status; 0 on rows written before codes were kept (rebuild_rollups fills it)."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "bucket", "provider", "model", "api_key_id", "status_class", "status_code"],
                name="dimension_rollup_code_unique",
            )
        ]
        indexes = [
            # Window totals and graphs without a dimension filter read every row of the window:
            # with the sums in the index that is an index-only scan (a month of a busy workspace
            # is ~50k rows; reading them from the heap was the slow part at 10M logs).
            models.Index(
                fields=["workspace", "bucket"],
                include=[name for name in ROLLUP_TOTALS if name != "latency_hist"],
                name="dimension_rollup_window_sums",
            )
        ]

    def __str__(self) -> str:
        return f"{self.bucket:%Y-%m-%d %H}h {self.provider} {self.model} {self.status_code or f'{self.status_class}xx'}"


class PairRollup(RollupMetrics):
    """Per hour, per (key A = value A, key B = value B): what answers "group by B where A = v"
    (a filtered Summary) without scanning logs. Kept for a bounded set only (see
    analytics.pair_rollups): the workspace's pair keys (``MetadataKey.paired``, else the most
    used), at most ``settings.ROLLUP_PAIR_MAX_VALUES`` values of A per hour and of B per (A = v,
    hour); a log past either cap is not stored here, so that hour's pairs stop adding up to
    MetadataRollup's count and the engine reads the raw logs instead. ``b_missing`` rows count
    the logs with A = v and no B (``value_b`` empty), so complete rows add up to A = v's count."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", db_index=False)
    key_a = models.CharField(max_length=128)
    value_a = models.CharField(max_length=128)
    key_b = models.CharField(max_length=128)
    value_b = models.CharField(max_length=128)
    b_missing = models.BooleanField(default=False, help_text="Logs with A = value A and no key B.")

    class Meta:
        constraints = [
            # Also the index of both queries: the writer's look-up of a batch's hours per key A
            # (analytics.pair_rollups.existing_pairs) and the engine's window of one key A
            # (analytics.reads.pairs), value A and key B checked in the index.
            models.UniqueConstraint(
                fields=["workspace", "key_a", "bucket", "value_a", "key_b", "value_b", "b_missing"],
                name="pair_rollup_unique",
            )
        ]

    def __str__(self) -> str:
        b = "(not set)" if self.b_missing else self.value_b
        return f"{self.bucket:%Y-%m-%d %H}h {self.key_a}={self.value_a} {self.key_b}={b}"


class MetadataKey(models.Model):
    """Registry of metadata keys seen per workspace; feeds filter dropdowns and the
    metadata-keys page. ``top_values`` holds up to VALUE_CAP values by request count.
    ``paired``: an admin's choice of the keys PairRollup is kept for (analytics.pair_rollups)."""

    VALUE_CAP = 100

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=128)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    requests = models.BigIntegerField(default=0)
    distinct_values = models.PositiveIntegerField(default=0, help_text="Capped at VALUE_CAP (then 'at least').")
    top_values = models.JSONField(default=dict, help_text="{value: requests}, at most VALUE_CAP entries.")
    paired = models.BooleanField(
        default=False, help_text="Keep two-key rollups for this key (filtered Summary); see ROLLUP_PAIR_KEYS."
    )

    class Meta:
        ordering = ["key"]
        constraints = [models.UniqueConstraint(fields=["workspace", "key"], name="metadata_key_unique")]

    def __str__(self) -> str:
        return self.key


class MetadataKeySender(models.Model):
    """Which API keys send a metadata key: one row per (workspace, key, API key), updated by the
    log writer with the registry. Lets the metadata-keys page name the keys behind each spelling
    of a near-duplicate (``env`` vs ``environment``) without scanning logs."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", db_index=False)
    key = models.CharField(max_length=128)
    api_key_id = models.BigIntegerField(default=0, help_text="0 = no key (custom logs).")
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    requests = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "key", "api_key_id"], name="metadata_key_sender_unique")
        ]

    def __str__(self) -> str:
        return f"{self.key} from key {self.api_key_id or '-'}"


class Feedback(models.Model):
    """Portkey's POST /v1/feedback: a score attached to a trace id."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    trace_id = models.CharField(max_length=128)
    value = models.SmallIntegerField(help_text="-10 .. 10")
    weight = models.FloatField(default=1.0, help_text="0 .. 1")
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["workspace", "trace_id"], name="feedback_ws_trace")]

    def __str__(self) -> str:
        return f"{self.trace_id}: {self.value}"


class LogExport(models.Model):
    """A Portkey-style log export job (POST /v1/logs/exports): filters and requested fields
    saved as a draft, run by ``start`` into LogExportChunk rows, downloaded as JSONL."""

    class Status(models.TextChoices):
        # Portkey's values; "stopped" is what cancel leaves.
        DRAFT = "draft"
        IN_PROGRESS = "in_progress"
        SUCCESS = "success"
        FAILED = "failed"
        STOPPED = "stopped"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    created_by = models.ForeignKey(ApiKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    description = models.CharField(max_length=500, blank=True)
    filters = models.JSONField(default=dict, blank=True, help_text="Portkey's filter names, as sent.")
    requested_data = models.JSONField(default=list, blank=True, help_text="Exported fields (Portkey's names).")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    total_records = models.PositiveIntegerField(default=0)
    error_message = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        # GET /v1/logs/exports: a workspace's jobs, newest first.
        indexes = [models.Index(fields=["workspace", "-created_at"], name="log_export_ws_time")]

    def __str__(self) -> str:
        return f"export {self.id} ({self.status})"


class LogExportChunk(models.Model):
    """Part of an export's JSONL, gzip-compressed; one row per chunk of the keyset walk, so
    neither writing nor downloading holds a whole export in memory."""

    export = models.ForeignKey(LogExport, on_delete=models.CASCADE, related_name="chunks")
    seq = models.PositiveIntegerField()
    data = models.BinaryField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["export", "seq"], name="log_export_chunk_unique")]

    def __str__(self) -> str:
        return f"{self.export_id} #{self.seq}"


# Alert rules live in their own module (analytics/alerts/models.py); importing them here makes
# them models of this app.
from analytics.alerts.models import AlertDelivery, AlertEvent, AlertRule, AlertState  # noqa: E402, F401
from analytics.policies.models import Policy  # noqa: E402, F401
