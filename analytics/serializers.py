"""Request validation for the write endpoints and the response shapes the OpenAPI schema
describes. Read endpoints return plain dicts built by selectors/reports (cheaper than a
serializer per row); tests check those dicts against these shapes."""

from __future__ import annotations

from rest_framework import serializers

from analytics.filters import MAX_LIST_ITEMS

MAX_CUSTOM_LOGS = 1000


def _reject_nul(value: object, path: str = "") -> None:
    """Postgres text and jsonb refuse NUL characters: say so instead of failing later."""
    if isinstance(value, str) and "\x00" in value:
        raise serializers.ValidationError(f"Null characters are not allowed{f' (at {path})' if path else ''}.")
    if isinstance(value, dict):
        for key, item in value.items():
            _reject_nul(key, path)
            _reject_nul(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _reject_nul(item, f"{path}[{index}]")


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: true, "5" and 5.5 are refused rather than coerced."""

    def to_internal_value(self, data: object) -> int:
        if isinstance(data, bool) or not isinstance(data, int | float) or data != int(data):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    """A JSON number: true and "0.5" are refused rather than coerced."""

    def to_internal_value(self, data: object) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A JSON boolean: 0, 1 and "true" are refused rather than coerced."""

    def to_internal_value(self, data: object) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictCharField(serializers.CharField):
    """A JSON string: numbers are refused rather than coerced."""

    def to_internal_value(self, data: object) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


# --- Errors ------------------------------------------------------------------------------


class ErrorDetailSerializer(serializers.Serializer):
    message = serializers.CharField()
    type = serializers.CharField(help_text="invalid_request_error, authentication_error, permission_error, ...")
    param = serializers.CharField(allow_null=True, help_text="The parameter or field to fix, when there is one.")
    code = serializers.CharField(allow_null=True)


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


# --- Logs --------------------------------------------------------------------------------


class AttemptSerializer(serializers.Serializer):
    target = serializers.CharField(help_text="The config target tried, e.g. config.targets[0].")
    provider = serializers.CharField()
    status = serializers.IntegerField(help_text="Its answer's status (408/502/504 when it did not answer).")
    ms = serializers.FloatField(help_text="Milliseconds the try took.")
    cache = serializers.CharField(required=False, help_text="HIT when answered from the cache.")


class LogSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    workspace = serializers.CharField(help_text="Workspace slug.")
    api_key_id = serializers.IntegerField(allow_null=True)
    provider = serializers.CharField(allow_blank=True)
    model = serializers.CharField(allow_blank=True)
    endpoint = serializers.CharField(allow_blank=True)
    method = serializers.CharField()
    status_code = serializers.IntegerField()
    success = serializers.BooleanField()
    is_stream = serializers.BooleanField()
    latency_ms = serializers.FloatField()
    ttft_ms = serializers.FloatField(allow_null=True)
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    cached_prompt_tokens = serializers.IntegerField(help_text="Part of prompt_tokens read from the provider's cache.")
    cache_write_tokens = serializers.IntegerField(help_text="Part of prompt_tokens written to the cache.")
    reasoning_tokens = serializers.IntegerField(help_text="Part of completion_tokens spent reasoning.")
    audio_prompt_tokens = serializers.IntegerField()
    audio_completion_tokens = serializers.IntegerField()
    cost = serializers.FloatField(allow_null=True, help_text="null when the model has no price.")
    currency = serializers.CharField()
    price_version = serializers.CharField(
        allow_blank=True, help_text="What priced it: 'genai-prices X.Y.Z' or 'override:<id>@<time>'; '' unpriced."
    )
    cache_status = serializers.CharField(help_text="HIT, MISS, REFRESH or DISABLED (x-portkey-cache-status).")
    cache_saved_cost = serializers.FloatField(
        allow_null=True, help_text="On a cache HIT (cost 0): what the answer would have cost; else null."
    )
    retry_count = serializers.IntegerField(help_text="Retries of the target that answered.")
    config_id = serializers.CharField(
        allow_blank=True, help_text="The x-portkey-config: a saved config's id (pc-...), 'inline', or '' for none."
    )
    last_used_option_index = serializers.CharField(
        allow_blank=True, help_text="The config target that answered, e.g. config.targets[1]; '' without a config."
    )
    attempts = AttemptSerializer(many=True, help_text="Every try of a config-routed request, in order.")
    finish_reasons = serializers.ListField(
        child=serializers.CharField(),
        allow_null=True,
        help_text="Why generation stopped, one per choice, as the answer said (gen_ai.response.finish_reasons): "
        "e.g. ['stop'], ['length'], Responses ['completed'], Anthropic ['end_turn'], Gemini ['STOP']; "
        "null when the answer named none.",
    )
    trace_id = serializers.CharField(allow_blank=True)
    span_id = serializers.CharField(allow_blank=True)
    parent_span_id = serializers.CharField(allow_blank=True)
    span_name = serializers.CharField(allow_blank=True)
    user = serializers.CharField(allow_blank=True)
    metadata = serializers.DictField(child=serializers.CharField(allow_blank=True))


class LogListSerializer(serializers.Serializer):
    object = serializers.CharField(default="list")
    data = LogSerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True, help_text="Pass as ?cursor= for the next (older) page.")
    has_more = serializers.BooleanField()


class LogBodySerializer(serializers.Serializer):
    request_headers = serializers.DictField(child=serializers.JSONField())
    request_body = serializers.CharField(allow_blank=True)
    response_body = serializers.CharField(allow_blank=True)


class FeedbackSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    value = serializers.IntegerField()
    weight = serializers.FloatField()
    metadata = serializers.DictField(child=serializers.JSONField())
    created_at = serializers.DateTimeField()


class LogDetailSerializer(LogSerializer):
    metadata_changes = serializers.ListField(child=serializers.CharField())
    error_message = serializers.CharField(allow_blank=True)
    client_runtime = serializers.CharField(allow_blank=True)
    sdk_version = serializers.CharField(allow_blank=True)
    body = LogBodySerializer(allow_null=True, help_text="null when bodies were not stored.")
    feedback = FeedbackSerializer(many=True, help_text="Feedback sent for this log's trace id.")


# --- Analytics ---------------------------------------------------------------------------


class GraphValuesSerializer(serializers.Serializer):
    """The keys present depend on the metric: requests/errors/users: total; cost: total, avg,
    unpriced_requests (requests with tokens whose model has no price: not in the total);
    tokens: total, prompt, completion, cached_prompt, cache_write, reasoning, audio_prompt,
    audio_completion, avg; latency: avg, p50, p90, p99 (ms); error-rate: rate
    (a fraction), errors. Averages and percentiles are null when there were no requests."""

    total = serializers.FloatField(required=False)
    avg = serializers.FloatField(required=False, allow_null=True)
    prompt = serializers.IntegerField(required=False)
    completion = serializers.IntegerField(required=False)
    cached_prompt = serializers.IntegerField(required=False)
    cache_write = serializers.IntegerField(required=False)
    reasoning = serializers.IntegerField(required=False)
    audio_prompt = serializers.IntegerField(required=False)
    audio_completion = serializers.IntegerField(required=False)
    unpriced_requests = serializers.IntegerField(required=False)
    p50 = serializers.FloatField(required=False, allow_null=True)
    p90 = serializers.FloatField(required=False, allow_null=True)
    p99 = serializers.FloatField(required=False, allow_null=True)
    rate = serializers.FloatField(required=False, allow_null=True)
    errors = serializers.IntegerField(required=False)


class GraphPointSerializer(GraphValuesSerializer):
    timestamp = serializers.DateTimeField(help_text="Start of the hour or day (UTC).")


class GraphSeriesSerializer(serializers.Serializer):
    value = serializers.CharField(help_text="A top value of group_by, or '(other)' for the rest.")
    summary = GraphValuesSerializer()
    data_points = GraphPointSerializer(many=True)


class GraphSerializer(serializers.Serializer):
    object = serializers.CharField(default="analytics.graph")
    metric = serializers.CharField()
    source = serializers.ChoiceField(["rollups", "logs"], help_text="logs: the filters needed a raw-log scan.")
    interval = serializers.ChoiceField(["hour", "day"])
    start = serializers.DateTimeField(help_text="Window start, floored to the hour.")
    end = serializers.DateTimeField(help_text="Window end (exclusive), raised to the next whole hour.")
    summary = GraphValuesSerializer()
    data_points = GraphPointSerializer(many=True)
    group_by = serializers.CharField(required=False)
    series = GraphSeriesSerializer(many=True, required=False, help_text="Present with group_by: top 10 + '(other)'.")


class GroupRowSerializer(serializers.Serializer):
    value = serializers.JSONField(help_text="The group's value (an API key id for api-keys).")
    metadata_value = serializers.CharField(required=False, help_text="Metadata groups (Portkey's name).")
    user = serializers.CharField(required=False)
    model = serializers.CharField(required=False, allow_blank=True)
    provider = serializers.CharField(required=False, allow_blank=True)
    api_key_id = serializers.IntegerField(required=False, allow_null=True, help_text="null: logs without a key.")
    name = serializers.CharField(required=False, allow_blank=True, help_text="API key name.")
    requests = serializers.IntegerField()
    errors = serializers.IntegerField()
    success_rate = serializers.FloatField(help_text="A fraction in [0, 1].")
    cost = serializers.FloatField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    cached_prompt_tokens = serializers.IntegerField()
    cache_write_tokens = serializers.IntegerField()
    reasoning_tokens = serializers.IntegerField()
    audio_prompt_tokens = serializers.IntegerField()
    audio_completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    unpriced_requests = serializers.IntegerField(help_text="Requests with tokens whose model has no price.")
    avg_tokens = serializers.FloatField()
    avg_latency_ms = serializers.FloatField()
    p95_latency_ms = serializers.FloatField(allow_null=True)
    last_seen = serializers.DateTimeField(allow_null=True)


class GroupListSerializer(serializers.Serializer):
    object = serializers.CharField(default="list")
    source = serializers.ChoiceField(["rollups", "logs"])
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    total = serializers.IntegerField(help_text="Number of groups.")
    page = serializers.IntegerField(help_text="1-based.")
    page_size = serializers.IntegerField()
    has_more = serializers.BooleanField()
    data = GroupRowSerializer(many=True)


class MetadataValueCountSerializer(serializers.Serializer):
    value = serializers.CharField()
    requests = serializers.IntegerField()


class MetadataKeySerializer(serializers.Serializer):
    key = serializers.CharField()
    first_seen = serializers.DateTimeField()
    last_seen = serializers.DateTimeField()
    requests = serializers.IntegerField()
    distinct_values = serializers.IntegerField()
    distinct_values_capped = serializers.BooleanField(help_text="true: there are at least this many.")
    top_values = MetadataValueCountSerializer(many=True)


class MetadataKeyListSerializer(serializers.Serializer):
    object = serializers.CharField(default="list")
    total = serializers.IntegerField()
    data = MetadataKeySerializer(many=True)


# --- Custom logs (POST /v1/logs) ---------------------------------------------------------


class CustomLogRequestSerializer(serializers.Serializer):
    url = StrictCharField(max_length=2000)
    method = StrictCharField(max_length=8, required=False, default="POST")
    provider = StrictCharField(max_length=64, required=False, allow_blank=True)
    headers = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False, default=dict)
    body = serializers.JSONField(required=False, default=dict, allow_null=True, help_text="A JSON value or JSON text.")

    def validate_body(self, value: object) -> object:
        _reject_nul(value)
        return value


class CustomLogResponseSerializer(serializers.Serializer):
    status = StrictIntegerField(min_value=100, max_value=599, required=False, default=200)
    headers = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False, default=dict)
    body = serializers.JSONField(required=False, default=dict, allow_null=True, help_text="A JSON value or JSON text.")
    response_time = StrictFloatField(min_value=0, max_value=1e9, required=False, help_text="Latency (ms).")
    time = StrictFloatField(min_value=0, max_value=1e9, required=False, help_text="Alias of response_time.")
    streamingMode = StrictBooleanField(required=False, default=False)

    def validate_body(self, value: object) -> object:
        _reject_nul(value)
        return value


class CustomLogSerializer(serializers.Serializer):
    request = CustomLogRequestSerializer()
    response = CustomLogResponseSerializer()
    metadata = serializers.DictField(
        child=serializers.JSONField(allow_null=True),
        required=False,
        default=dict,
        help_text="Metadata (checked by the workspace's metadata rules); traceId/trace_id, spanId/span_id, "
        "spanName/span_name and parentSpanId/parent_span_id set the log's tracing fields.",
    )


class CustomLogResultSerializer(serializers.Serializer):
    status = serializers.CharField(default="success")
    message = serializers.CharField()
    log_ids = serializers.ListField(child=serializers.UUIDField())


# --- Feedback (POST /v1/feedback) --------------------------------------------------------


class FeedbackCreateSerializer(serializers.Serializer):
    trace_id = StrictCharField(max_length=128)
    value = StrictIntegerField(min_value=-10, max_value=10)
    weight = StrictFloatField(min_value=0, max_value=1, required=False, default=1.0)
    metadata = serializers.DictField(child=serializers.JSONField(allow_null=True), required=False, default=dict)

    def validate_metadata(self, value: dict) -> dict:
        _reject_nul(value)
        if len(value) > MAX_LIST_ITEMS:
            raise serializers.ValidationError(f"At most {MAX_LIST_ITEMS} keys are allowed.")
        return value


class FeedbackResultSerializer(serializers.Serializer):
    status = serializers.CharField(default="success")
    message = serializers.CharField()
    feedback_ids = serializers.ListField(child=serializers.UUIDField())
