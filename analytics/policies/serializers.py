"""Shapes of the policy API (/api/v1/policies/): JSON types are checked here; the policy's own
checks (scope vocabulary, per, window, limit) run in the model and come back keyed by field."""

from __future__ import annotations

from rest_framework import serializers

from analytics.alerts import rules as alert_rules
from analytics.policies.models import Policy
from analytics.policies.selectors import UsageRow
from analytics.serializers import StrictBooleanField, StrictCharField


class PolicyInputSerializer(serializers.Serializer):
    name = StrictCharField(max_length=200)
    enabled = StrictBooleanField(required=False, default=True)
    scope = StrictCharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=alert_rules.SCOPE_MAX_LENGTH,
        help_text="Logs filters known before forwarding, joined with &: metadata.<key>[__in|__ne|__exists], "
        "user, model, provider, api_key. Empty: every request.",
    )
    per = StrictCharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=160,
        help_text="A counter per value of: _user, metadata.<key>, model, provider or api_key.",
    )
    # Plain text, checked by the model (a ChoiceField named "kind" collides in the schema's enums).
    kind = StrictCharField(
        required=False, default=Policy.Kind.REQUESTS, max_length=8, help_text="requests, tokens or cost."
    )
    limit = serializers.DecimalField(max_digits=20, decimal_places=8, coerce_to_string=False)
    window = StrictCharField(
        required=False, default="minute", max_length=16, help_text="minute, hour, day, month, or rolling 24h, 7d..."
    )
    action = StrictCharField(
        required=False, default=Policy.Action.BLOCK, max_length=8, help_text="block (429/412) or alert (alerts only)."
    )
    fail_closed = StrictBooleanField(required=False, default=False)


class PolicySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    workspace = serializers.CharField()
    name = serializers.CharField()
    enabled = serializers.BooleanField()
    scope = serializers.CharField()
    per = serializers.CharField()
    kind = serializers.CharField()
    limit = serializers.FloatField()
    unit = serializers.CharField()
    window = serializers.CharField()
    window_label = serializers.CharField()
    action = serializers.CharField()
    fail_closed = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class PolicyListSerializer(serializers.Serializer):
    object = serializers.CharField()
    data = PolicySerializer(many=True)


class UsageRowSerializer(serializers.Serializer):
    value = serializers.CharField(help_text="The per value; empty without per.")
    used = serializers.FloatField()
    limit = serializers.FloatField()
    percent = serializers.FloatField()


class UsageSerializer(serializers.Serializer):
    object = serializers.CharField()
    policy = serializers.IntegerField()
    data = UsageRowSerializer(many=True)


def policy_data(policy: Policy) -> dict:
    return {
        "id": policy.pk,
        "workspace": policy.workspace.slug,
        "name": policy.name,
        "enabled": policy.enabled,
        "scope": policy.scope,
        "per": policy.per,
        "kind": policy.kind,
        "limit": float(policy.limit),
        "unit": policy.unit,
        "window": policy.window,
        "window_label": policy.window_spec.label,
        "action": policy.action,
        "fail_closed": policy.fail_closed,
        "created_at": policy.created_at,
        "updated_at": policy.updated_at,
    }


def usage_data(row: UsageRow) -> dict:
    return {"value": row.value, "used": row.used, "limit": row.limit, "percent": round(row.percent, 2)}
