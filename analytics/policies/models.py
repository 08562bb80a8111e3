"""Policies: a budget or rate limit over a scope, optionally per value of a key. Imported by
analytics.models, so they belong to the analytics app (migration analytics 0019). Written only
through analytics.policies.services (validated and audited)."""

from __future__ import annotations

import hashlib

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from analytics.policies import rules
from workspaces.models import Workspace


class Policy(models.Model):
    class Kind(models.TextChoices):
        REQUESTS = "requests", "Requests"
        TOKENS = "tokens", "Tokens"
        COST = "cost", "Cost (USD)"

    class Action(models.TextChoices):
        BLOCK = "block", "Block (429 / 412)"
        ALERT = "alert", "Alert only"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="policies")
    name = models.CharField(max_length=200)
    scope = models.TextField(
        blank=True, help_text="Logs filters, e.g. metadata.feature=chat&model=gpt-4o; empty: every request."
    )
    per = models.CharField(
        max_length=160, blank=True, help_text="_user, metadata.<key>, model, provider or api_key: a counter per value."
    )
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.REQUESTS)
    limit = models.DecimalField(max_digits=20, decimal_places=8)
    window = models.CharField(
        max_length=16, default="minute", help_text="minute, hour, day, month, or rolling <n>m/<n>h/<n>d."
    )
    action = models.CharField(max_length=8, choices=Action.choices, default=Action.BLOCK)
    fail_closed = models.BooleanField(
        default=False, help_text="Refuse matching requests (503) while the counters are unreachable."
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        verbose_name_plural = "policies"
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="policy_unique_name")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        steps = [
            lambda: setattr(self, "scope", rules.clean_scope(self.scope)),
            lambda: setattr(self, "per", rules.clean_per(self.per)),
            lambda: rules.parse_window(self.window),
        ]
        for step in steps:
            try:
                step()
            except ValidationError as exc:
                for name, messages in exc.message_dict.items():
                    errors.setdefault(name, []).extend(messages)
        if self.limit is not None and self.limit <= 0:
            errors.setdefault("limit", []).append("Use a number above 0.")
        elif self.limit is not None and self.kind != self.Kind.COST and self.limit != int(self.limit):
            errors.setdefault("limit", []).append("Requests and tokens are whole numbers.")
        taken = Policy.objects.filter(workspace_id=self.workspace_id, name=self.name).exclude(pk=self.pk)
        if self.workspace_id and self.name and taken.exists():
            errors.setdefault("name", []).append("The workspace already has a policy with this name.")
        if errors:
            raise ValidationError(errors)

    def validate_constraints(self, exclude: object = None) -> None:
        super().validate_constraints(exclude={*(exclude or ()), "name"})

    @property
    def window_spec(self) -> rules.PolicyWindow:
        return rules.parse_window(self.window)

    @property
    def unit(self) -> str:
        return rules.LIMIT_KINDS[self.kind]

    @property
    def shape(self) -> str:
        """What the counters count: a change of scope, per, kind or window starts new counters
        (rebuilt from the logs); a changed limit or action keeps them."""
        text = "\x1f".join((self.scope, self.per, self.kind, self.window))
        return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:10]
