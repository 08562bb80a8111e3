"""Alert rules, their current state, their history and every delivery attempt. Imported by
analytics.models, so they belong to the analytics app (migration analytics 0016)."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from analytics.alerts import rules
from workspaces import crypto
from workspaces.models import Workspace


class AlertRule(models.Model):
    """A condition on a metric over a scope and window, checked every minute (README "Alerts").
    Configuration: written only through analytics.alerts.services (audited). ``checked_at`` and
    ``check_error`` are the evaluator's status, not configuration."""

    class Comparison(models.TextChoices):
        GT = "gt", ">"
        GTE = "gte", ">="
        LT = "lt", "<"
        LTE = "lte", "<="

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="alert_rules")
    name = models.CharField(max_length=200)
    scope = models.TextField(
        blank=True, help_text="Logs filters, e.g. metadata.feature=chat&model=gpt-4o; empty: every request."
    )
    per = models.CharField(
        max_length=160, blank=True, help_text="_user, metadata.<key>, model, provider or api_key: one check per value."
    )
    per_limit = models.PositiveIntegerField(
        default=100,
        validators=[MinValueValidator(1), MaxValueValidator(rules.PER_LIMIT_MAX)],
        help_text="With per: the values checked, highest first.",
    )
    # A name in analytics.alerts.metrics' registry (not choices: a new kind needs no migration).
    metric = models.CharField(max_length=32)
    # Options of metric kinds that need more than scope and window (e.g. a budget's policy).
    metric_options = models.JSONField(default=dict, blank=True)
    window = models.CharField(max_length=16, default="1h", help_text="5m, 1h, 24h, 7d, ..., today or month.")
    comparison = models.CharField(max_length=3, choices=Comparison.choices, default=Comparison.GT)
    threshold = models.DecimalField(max_digits=20, decimal_places=6)
    min_requests = models.PositiveIntegerField(
        default=1, help_text="Error rate and p95 latency: fewer requests in the window count as no data."
    )
    cooldown_minutes = models.PositiveIntegerField(
        default=60,
        validators=[MaxValueValidator(rules.COOLDOWN_MAX_MINUTES)],
        help_text="No new 'fired' notification for a scope value sooner than this after the last one.",
    )
    webhook_urls = models.JSONField(default=list, blank=True)
    encrypted_webhook_secret = models.TextField(blank=True, editable=False)
    emails = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    check_error = models.TextField(blank=True, editable=False)

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="alert_rule_unique_name")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from analytics.alerts import metrics

        errors: dict[str, list[str]] = {}
        # Each check raises a ValidationError keyed by its field; all of them are reported.
        steps = [
            lambda: setattr(self, "scope", rules.clean_scope(self.scope)),
            lambda: setattr(self, "per", rules.clean_per(self.per)),
            lambda: rules.parse_window(self.window),
            lambda: setattr(self, "webhook_urls", rules.clean_webhook_urls(self.webhook_urls)),
            lambda: setattr(self, "emails", rules.clean_emails(self.emails)),
        ]
        for step in steps:
            try:
                step()
            except ValidationError as exc:
                for name, messages in exc.message_dict.items():
                    errors.setdefault(name, []).extend(messages)
        kind = metrics.REGISTRY.get(self.metric)
        if kind is None:
            errors.setdefault("metric", []).append(f"Use one of: {', '.join(metrics.REGISTRY)}.")
        else:
            for name, messages in kind.validate(self).items():
                errors.setdefault(name, []).extend(messages)
        taken = AlertRule.objects.filter(workspace_id=self.workspace_id, name=self.name).exclude(pk=self.pk)
        if self.workspace_id and self.name and taken.exists():
            errors.setdefault("name", []).append("The workspace already has a rule with this name.")
        if self.threshold is not None and self.threshold < 0:
            errors.setdefault("threshold", []).append("Use a number of at least 0.")
        if errors:
            raise ValidationError(errors)

    def validate_constraints(self, exclude: object = None) -> None:
        # The unique name is checked by clean(), which reports it under "name".
        super().validate_constraints(exclude={*(exclude or ()), "name"})

    def set_webhook_secret(self, secret: str) -> None:
        self.encrypted_webhook_secret = crypto.encrypt_secret(secret) if secret else ""

    def get_webhook_secret(self) -> str:
        return crypto.decrypt_secret(self.encrypted_webhook_secret) if self.encrypted_webhook_secret else ""

    @property
    def has_webhook_secret(self) -> bool:
        return bool(self.encrypted_webhook_secret)

    @property
    def comparison_symbol(self) -> str:
        return rules.COMPARISONS.get(self.comparison, self.comparison)

    @property
    def window_spec(self) -> rules.Window:
        return rules.parse_window(self.window)

    @property
    def channels(self) -> list[tuple[str, str]]:
        """(channel, target) for every webhook URL and e-mail address."""
        return [("webhook", url) for url in self.webhook_urls] + [("email", address) for address in self.emails]


class AlertState(models.Model):
    """The condition of one rule for one scope value ("" without ``per``): kept while it fires
    and while a later 'fired' notification would fall inside the cooldown."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="states")
    scope_value = models.CharField(max_length=200, blank=True)
    firing = models.BooleanField(default=False)
    since = models.DateTimeField(null=True, blank=True, help_text="When it started firing.")
    value = models.FloatField(null=True, blank=True, help_text="At the last check.")
    checked_at = models.DateTimeField(null=True, blank=True)
    fired_event = models.ForeignKey("AlertEvent", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    last_notified_at = models.DateTimeField(null=True, blank=True, help_text="Last 'fired' notification sent.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rule", "scope_value"], name="alert_state_unique")]

    def __str__(self) -> str:
        return f"{self.rule} {self.scope_value or '(all)'}: {'firing' if self.firing else 'ok'}"


class AlertEvent(models.Model):
    """A rule fired, resolved, or was test-sent. ``payload`` is the webhook body, built once so
    every retry sends the same bytes; ``notified`` is False for a firing inside the cooldown
    (and for its resolution): recorded, not sent."""

    class Kind(models.TextChoices):
        FIRED = "fired"
        RESOLVED = "resolved"
        TEST = "test"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False, help_text="The idempotency key.")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    scope_value = models.CharField(max_length=200, blank=True)
    value = models.FloatField(null=True, blank=True)
    threshold = models.DecimalField(max_digits=20, decimal_places=6, default=Decimal(0))
    metric = models.CharField(max_length=32)
    window = models.CharField(max_length=16)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    notified = models.BooleanField(default=True)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The Alerts page and GET /api/v1/alert-events: newest first within a workspace.
            models.Index(fields=["workspace", "-created_at"], name="alert_event_ws_time"),
        ]

    def __str__(self) -> str:
        return f"{self.rule} {self.kind} {self.scope_value}".strip()


class AlertDelivery(models.Model):
    """One attempt to deliver an event to one channel target. A row is created ``pending``
    with the time it is due; the sender claims it (pending -> sending) so two workers never send
    the same attempt, then records the outcome. A failed attempt that may be retried is followed
    by a new pending row (attempt + 1) due after the backoff."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        DELIVERED = "delivered"
        FAILED = "failed"  # this attempt failed; another follows unless ``final``

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    event = models.ForeignKey(AlertEvent, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=8)  # webhook | email
    target = models.CharField(max_length=2000)
    attempt = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    final = models.BooleanField(default=False, help_text="Failed and not retried again.")
    due_at = models.DateTimeField(default=timezone.now)
    attempted_at = models.DateTimeField(null=True, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "alert deliveries"
        indexes = [
            # The sender's "what is due" query.
            models.Index(fields=["status", "due_at"], name="alert_delivery_due"),
            # The Alerts page and GET /api/v1/alert-deliveries: newest first within a workspace.
            models.Index(fields=["workspace", "-id"], name="alert_delivery_ws"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.target} #{self.attempt} {self.status}"
