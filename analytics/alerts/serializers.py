"""Shapes of the alert API (/api/v1/alert-rules/, alert-events, alert-deliveries): request
validation of JSON types here; the rule's own checks (scope vocabulary, windows, URLs, the SSRF
guard) run in the model and come back keyed by field."""

from __future__ import annotations

from rest_framework import serializers

from analytics.alerts import rules
from analytics.alerts.models import AlertDelivery, AlertEvent, AlertRule
from analytics.serializers import StrictBooleanField, StrictCharField, StrictIntegerField


class AlertRuleInputSerializer(serializers.Serializer):
    name = StrictCharField(max_length=200)
    enabled = StrictBooleanField(required=False, default=True)
    scope = StrictCharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=rules.SCOPE_MAX_LENGTH,
        help_text="Logs filters joined with & (or one per line), e.g. metadata.feature=chat&model=gpt-4o.",
    )
    per = StrictCharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=160,
        help_text="One check per value of: _user, metadata.<key>, model, provider or api_key.",
    )
    per_limit = StrictIntegerField(required=False, default=100, min_value=1, max_value=rules.PER_LIMIT_MAX)
    metric = StrictCharField(max_length=32, help_text="spend, tokens, requests, error_rate or p95_latency.")
    metric_options = serializers.DictField(required=False, default=dict)
    window = StrictCharField(required=False, default="1h", max_length=16, help_text="5m, 1h, 24h, 7d, today, month.")
    comparison = serializers.ChoiceField(choices=list(rules.COMPARISONS), required=False, default="gt")
    threshold = serializers.DecimalField(max_digits=20, decimal_places=6, coerce_to_string=False)
    min_requests = StrictIntegerField(required=False, default=1, min_value=0, max_value=1_000_000_000)
    cooldown_minutes = StrictIntegerField(required=False, default=60, min_value=0, max_value=rules.COOLDOWN_MAX_MINUTES)
    webhook_urls = serializers.ListField(
        child=StrictCharField(max_length=rules.URL_MAX_LENGTH), required=False, default=list, max_length=20
    )
    emails = serializers.ListField(child=StrictCharField(max_length=254), required=False, default=list, max_length=50)
    webhook_secret = StrictCharField(
        required=False,
        write_only=True,
        min_length=16,
        max_length=200,
        help_text="HMAC key of the X-Portico-Signature header; generated on create when omitted.",
    )


class AlertRuleSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    workspace = serializers.CharField()
    name = serializers.CharField()
    enabled = serializers.BooleanField()
    scope = serializers.CharField()
    per = serializers.CharField()
    per_limit = serializers.IntegerField()
    metric = serializers.CharField()
    metric_options = serializers.DictField()
    window = serializers.CharField()
    comparison = serializers.CharField()
    threshold = serializers.FloatField()
    min_requests = serializers.IntegerField()
    cooldown_minutes = serializers.IntegerField()
    webhook_urls = serializers.ListField(child=serializers.CharField())
    emails = serializers.ListField(child=serializers.CharField())
    has_webhook_secret = serializers.BooleanField()
    webhook_secret = serializers.CharField(
        required=False, help_text="Only in the answer to the call that set or generated it."
    )
    firing = serializers.ListField(child=serializers.CharField(), help_text="Scope values firing now.")
    checked_at = serializers.DateTimeField(allow_null=True)
    check_error = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class AlertRuleListSerializer(serializers.Serializer):
    object = serializers.CharField()
    data = AlertRuleSerializer(many=True)


def rule_data(rule: AlertRule) -> dict:
    return {
        "id": rule.pk,
        "workspace": rule.workspace.slug,
        "name": rule.name,
        "enabled": rule.enabled,
        "scope": rule.scope,
        "per": rule.per,
        "per_limit": rule.per_limit,
        "metric": rule.metric,
        "metric_options": rule.metric_options,
        "window": rule.window,
        "comparison": rule.comparison,
        "threshold": float(rule.threshold),
        "min_requests": rule.min_requests,
        "cooldown_minutes": rule.cooldown_minutes,
        "webhook_urls": rule.webhook_urls,
        "emails": rule.emails,
        "has_webhook_secret": rule.has_webhook_secret,
        "firing": sorted(state.scope_value for state in rule.states.all() if state.firing),
        "checked_at": rule.checked_at,
        "check_error": rule.check_error,
        "created_at": rule.created_at,
        "updated_at": rule.updated_at,
    }


class AlertEventSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The event's uid: the Idempotency-Key of its webhooks.")
    rule = serializers.IntegerField()
    rule_name = serializers.CharField()
    kind = serializers.ChoiceField(choices=AlertEvent.Kind.values)
    scope_value = serializers.CharField()
    value = serializers.FloatField(allow_null=True)
    threshold = serializers.FloatField()
    metric = serializers.CharField()
    window = serializers.CharField()
    window_start = serializers.DateTimeField()
    window_end = serializers.DateTimeField()
    notified = serializers.BooleanField(help_text="False: inside the cooldown, recorded but not sent.")
    created_at = serializers.DateTimeField()


def event_data(event: AlertEvent) -> dict:
    return {
        "id": str(event.uid),
        "rule": event.rule_id,
        "rule_name": event.rule.name,
        "kind": event.kind,
        "scope_value": event.scope_value,
        "value": event.value,
        "threshold": float(event.threshold),
        "metric": event.metric,
        "window": event.window,
        "window_start": event.window_start,
        "window_end": event.window_end,
        "notified": event.notified,
        "created_at": event.created_at,
    }


class AlertDeliverySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    event = serializers.CharField(help_text="The event's uid.")
    rule = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=AlertEvent.Kind.values)
    channel = serializers.ChoiceField(choices=["webhook", "email"])
    target = serializers.CharField()
    attempt = serializers.IntegerField()
    status = serializers.ChoiceField(choices=AlertDelivery.Status.values)
    final = serializers.BooleanField(help_text="Failed and not retried again.")
    due_at = serializers.DateTimeField()
    attempted_at = serializers.DateTimeField(allow_null=True)
    status_code = serializers.IntegerField(allow_null=True)
    error = serializers.CharField()
    duration_ms = serializers.FloatField(allow_null=True)


def delivery_data(delivery: AlertDelivery) -> dict:
    return {
        "id": delivery.pk,
        "event": str(delivery.event.uid),
        "rule": delivery.event.rule_id,
        "kind": delivery.event.kind,
        "channel": delivery.channel,
        "target": delivery.target,
        "attempt": delivery.attempt,
        "status": delivery.status,
        "final": delivery.final,
        "due_at": delivery.due_at,
        "attempted_at": delivery.attempted_at,
        "status_code": delivery.status_code,
        "error": delivery.error,
        "duration_ms": delivery.duration_ms,
    }


class AlertEventListSerializer(serializers.Serializer):
    object = serializers.CharField()
    data = AlertEventSerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True)
    has_more = serializers.BooleanField()


class AlertDeliveryListSerializer(serializers.Serializer):
    object = serializers.CharField()
    data = AlertDeliverySerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True)
    has_more = serializers.BooleanField()


class TestSendResultSerializer(serializers.Serializer):
    object = serializers.CharField()
    data = AlertDeliverySerializer(many=True)
