"""Admin for alert rules (written through analytics.alerts.services, so every change is
audited and the webhook secret is encrypted) and their history (read-only)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from analytics.alerts import metrics, rules, services
from analytics.alerts.models import AlertDelivery, AlertEvent, AlertRule
from workspaces.models import AuditEvent


class LinesField(forms.CharField):
    """A list edited as one item per line."""

    widget = forms.Textarea(attrs={"rows": 3, "cols": 80, "spellcheck": "false"})

    def prepare_value(self, value: object) -> object:
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value: object) -> list[str]:
        return rules.split_lines(str(value or ""), commas=False)


class AlertRuleForm(forms.ModelForm):
    metric = forms.ChoiceField(choices=[])
    webhook_urls = LinesField(required=False, help_text="One URL per line.")
    emails = LinesField(required=False, help_text="One address per line.")
    new_webhook_secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Leave blank to keep the stored secret (a new rule gets a generated one, shown once).",
    )

    class Meta:
        model = AlertRule
        fields = [
            "workspace",
            "name",
            "enabled",
            "scope",
            "per",
            "per_limit",
            "metric",
            "window",
            "comparison",
            "threshold",
            "min_requests",
            "cooldown_minutes",
            "webhook_urls",
            "emails",
        ]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["metric"].choices = [(kind.name, kind.label) for kind in metrics.REGISTRY.values()]


class _ReadOnly:
    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    form = AlertRuleForm
    list_display = ["name", "workspace", "metric", "window", "condition", "per", "enabled", "checked_at"]
    list_filter = ["enabled", "metric", "workspace"]
    search_fields = ["name", "scope", "workspace__slug"]
    list_select_related = ["workspace"]
    readonly_fields = ["checked_at", "check_error", "created_at", "updated_at"]

    @admin.display(description="condition")
    def condition(self, obj: AlertRule) -> str:
        return f"{obj.comparison_symbol} {obj.threshold.normalize():f}"

    def save_model(self, request: HttpRequest, obj: AlertRule, form: forms.ModelForm, change: bool) -> None:
        secret = form.cleaned_data.get("new_webhook_secret") or None
        if not change and secret is None:
            secret = services.generate_webhook_secret()
            messages.info(request, f"Webhook secret of '{obj.name}' (shown once): {secret}")
        services.alert_rule_update(rule=obj, webhook_secret=secret, actor=request.user, via=AuditEvent.Via.ADMIN)

    def delete_model(self, request: HttpRequest, obj: AlertRule) -> None:
        services.alert_rule_delete(rule=obj, actor=request.user, via=AuditEvent.Via.ADMIN)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        with transaction.atomic():
            for rule in queryset:
                services.alert_rule_delete(rule=rule, actor=request.user, via=AuditEvent.Via.ADMIN)


@admin.register(AlertEvent)
class AlertEventAdmin(_ReadOnly, admin.ModelAdmin):
    list_display = ["created_at", "workspace", "rule", "kind", "scope_value", "value", "threshold", "notified"]
    list_filter = ["kind", "workspace"]
    list_select_related = ["workspace", "rule"]
    search_fields = ["rule__name", "scope_value"]


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(_ReadOnly, admin.ModelAdmin):
    list_display = ["id", "workspace", "event", "channel", "target", "attempt", "status", "status_code", "duration_ms"]
    list_filter = ["status", "channel", "workspace"]
    list_select_related = ["workspace", "event", "event__rule"]
