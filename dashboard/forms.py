"""The dashboard's settings forms (metadata, API keys, providers, members, configs, prices) and
the Alerts and Policies pages' forms. They only shape input: every write goes through
``workspaces.services``, ``analytics.pricing`` (prices), ``analytics.alerts.services`` or
``analytics.policies.services``."""

from __future__ import annotations

import re
from decimal import Decimal

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser

from analytics.alerts import metrics, rules
from analytics.alerts.models import AlertRule
from analytics.filters import WholeNumberField
from analytics.policies.models import Policy
from workspaces.forms import PrettyJSONField
from workspaces.models import ApiKey, Membership, Provider


def _code_area(rows: int = 8) -> forms.Textarea:
    # The dashboard styles editors with CSS (light/dark themes) rather than the admin's inline style.
    return forms.Textarea(attrs={"rows": rows, "spellcheck": "false", "class": "code", "autocomplete": "off"})


METADATA_HELP = 'A JSON object of string values, e.g. {"environment": "production"}. Leave empty for none.'
SCHEMA_HELP = (
    "JSON Schema subset: object, string properties, required, enum, pattern, maxLength, default. Leave empty for none."
)


class WorkspaceMetadataForm(forms.Form):
    default_metadata = PrettyJSONField(required=False, widget=_code_area(), help_text=METADATA_HELP)
    metadata_schema = PrettyJSONField(required=False, widget=_code_area(14), help_text=SCHEMA_HELP)
    time_zone = forms.CharField(
        required=False,
        max_length=64,
        help_text="IANA name (e.g. Europe/Paris, UTC) of the day and calendar month of policy windows.",
    )

    def clean_time_zone(self) -> str:
        """Blank: unchanged. Otherwise a zone zoneinfo knows."""
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        name = self.cleaned_data["time_zone"].strip()
        if name:
            try:
                ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                raise forms.ValidationError(
                    f"Time zone '{name}' is not an IANA time zone name; use e.g. Europe/Paris or UTC."
                ) from None
        return name


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="Shown in logs and reports, e.g. the service that uses it.")
    scopes = forms.MultipleChoiceField(
        choices=ApiKey.Scope.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        initial=ApiKey.DEFAULT_SCOPES,
    )
    default_metadata = PrettyJSONField(required=False, widget=_code_area(5), help_text=METADATA_HELP)
    metadata_schema = PrettyJSONField(required=False, widget=_code_area(5), help_text=SCHEMA_HELP)
    expires_in_days = forms.IntegerField(
        required=False, min_value=1, max_value=3650, help_text="Leave empty for a key that does not expire."
    )


class ProviderCreateForm(forms.Form):
    slug = forms.CharField(max_length=63, help_text="Clients select it with x-portkey-provider: @slug.")
    name = forms.CharField(max_length=200, required=False)
    kind = forms.ChoiceField(
        choices=Provider.Kind.choices,
        initial=Provider.Kind.OPENAI,
        required=False,
        help_text="The provider's own API: its auth header, URL shapes and usage format.",
    )
    base_url = forms.URLField(
        label="Base URL",
        max_length=500,
        assume_scheme="https",
        help_text="e.g. https://api.openai.com/v1, https://api.anthropic.com/v1, "
        "https://RESOURCE.openai.azure.com, https://generativelanguage.googleapis.com/v1beta",
    )
    api_version = forms.CharField(
        label="API version",
        max_length=32,
        required=False,
        help_text="Azure: api-version (default 2024-10-21). Anthropic: anthropic-version (default 2023-06-01).",
    )
    deployment = forms.CharField(
        max_length=64, required=False, help_text="Azure only. Empty: the request's model names the deployment."
    )
    api_key = forms.CharField(
        label="API key",
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted and never shown again.",
    )

    def clean_kind(self) -> str:
        return self.cleaned_data["kind"] or Provider.Kind.OPENAI


class ProviderSecretForm(forms.Form):
    api_key = forms.CharField(
        label="New API key",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Replaces the stored key; the old one is not shown.",
    )


class MemberAddForm(forms.Form):
    """Who to add (an existing account, by username or e-mail) and with which role."""

    user = forms.CharField(
        label="Username or e-mail",
        max_length=254,
        help_text="An existing account. New people get one from an administrator (manage.py add_member --email).",
    )
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.MEMBER)

    def clean_user(self) -> AbstractBaseUser:
        value = self.cleaned_data["user"].strip()
        User = get_user_model()
        user = User.objects.filter(**{User.USERNAME_FIELD: value}).first()
        if user is None and "@" in value:
            matches = list(User.objects.filter(email__iexact=value)[:2])
            if len(matches) > 1:
                raise forms.ValidationError("Several accounts use this e-mail; enter the username instead.")
            user = matches[0] if matches else None
        if user is None:
            raise forms.ValidationError(f"No account with the username or e-mail '{value}'.")
        return user


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices)


CONFIG_HELP = (
    'A Portkey config, e.g. {"retry": {"attempts": 3}, "strategy": {"mode": "fallback"}, '
    '"targets": [{"provider": "@primary"}, {"provider": "@backup", "override_params": {"model": "gpt-4o-mini"}}]}.'
)


class RoutingConfigForm(forms.Form):
    slug = forms.CharField(max_length=63, help_text="Clients may send x-portkey-config: <slug> (or the config's id).")
    name = forms.CharField(max_length=200, required=False)
    config = PrettyJSONField(widget=_code_area(16), help_text=CONFIG_HELP)


class ThresholdField(forms.CharField):
    """A non-negative decimal in ASCII digits (Django's DecimalField also takes other scripts' digits)."""

    def to_python(self, value: object) -> Decimal | None:
        text = super().to_python(value).strip()
        if not text:
            return None
        if not re.fullmatch(r"[0-9]{1,14}(\.[0-9]{1,6})?", text):
            raise forms.ValidationError("Enter a number such as 5 or 0.25 (at most 6 decimals).")
        return Decimal(text)


def _lines_area(rows: int = 3) -> forms.Textarea:
    return forms.Textarea(attrs={"rows": rows, "spellcheck": "false", "class": "code", "autocomplete": "off"})


class AlertRuleForm(forms.Form):
    """An alert rule as the Alerts page edits it; analytics.alerts.services validates the rest."""

    name = forms.CharField(max_length=200)
    metric = forms.ChoiceField(choices=[])
    comparison = forms.ChoiceField(choices=AlertRule.Comparison.choices, initial="gt")
    threshold = ThresholdField(help_text="USD for spend, % for error rate, ms for p95 latency.")
    window = forms.CharField(
        max_length=16,
        initial="1h",
        help_text="5m, 15m, 1h, 24h, 7d (any <n>m, <n>h, <n>d up to 90d), today or month (UTC).",
        widget=forms.TextInput(attrs={"list": "alert-windows", "autocomplete": "off"}),
    )
    scope = forms.CharField(
        required=False,
        max_length=rules.SCOPE_MAX_LENGTH,
        widget=_lines_area(),
        help_text="Logs filters, one per line: metadata.feature=chat, metadata.environment__in=prod,staging, "
        "model=gpt-4o, api_key=12. Empty: every request.",
    )
    per = forms.CharField(
        required=False,
        max_length=160,
        label="Per value of",
        widget=forms.TextInput(attrs={"list": "alert-per", "autocomplete": "off"}),
        help_text="Optional: _user, metadata.<key>, model, provider or api_key gets a check per value.",
    )
    per_limit = WholeNumberField(
        min_value=1, max_value=rules.PER_LIMIT_MAX, required=False, initial=100, label="Values checked (with per)"
    )
    min_requests = WholeNumberField(
        min_value=0,
        max_value=1_000_000_000,
        required=False,
        initial=1,
        help_text="Error rate and p95: below it, no data.",
    )
    cooldown_minutes = WholeNumberField(
        min_value=0, max_value=rules.COOLDOWN_MAX_MINUTES, initial=60, label="Cooldown (minutes)"
    )
    webhook_urls = forms.CharField(
        required=False, widget=_lines_area(2), label="Webhook URLs", help_text="One URL per line (at most 5)."
    )
    emails = forms.CharField(
        required=False, widget=_lines_area(2), label="E-mail addresses", help_text="One per line (at most 20)."
    )
    enabled = forms.BooleanField(required=False, initial=True)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["metric"].choices = [
            (kind.name, f"{kind.label} ({kind.unit})") for kind in metrics.REGISTRY.values()
        ]

    def clean_webhook_urls(self) -> list[str]:
        return rules.split_lines(self.cleaned_data["webhook_urls"])

    def clean_emails(self) -> list[str]:
        return rules.split_lines(self.cleaned_data["emails"], commas=True)

    def rule_fields(self) -> dict:
        data = dict(self.cleaned_data)
        data["per_limit"] = data["per_limit"] or 100
        data["min_requests"] = 1 if data["min_requests"] is None else data["min_requests"]
        return data

    @classmethod
    def initial_for(cls, rule: AlertRule) -> dict:
        return {
            **{
                name: getattr(rule, name) for name in cls.base_fields if name not in ("webhook_urls", "emails", "scope")
            },
            "threshold": f"{rule.threshold.normalize():f}",
            "scope": "\n".join(f"{param}={value}" for param, value in rules.scope_pairs(rule.scope)),
            "webhook_urls": "\n".join(rule.webhook_urls),
            "emails": "\n".join(rule.emails),
        }


def _rate(label: str, *, required: bool = False, help_text: str = "") -> forms.DecimalField:
    return forms.DecimalField(
        label=label,
        required=required,
        min_value=0,
        max_digits=12,
        decimal_places=6,
        help_text=help_text,
        widget=forms.NumberInput(attrs={"step": "any", "inputmode": "decimal"}),
    )


class ModelPriceForm(forms.Form):
    """A workspace's price override; rates in USD per million tokens (analytics.models.ModelPrice)."""

    model = forms.CharField(
        max_length=200, help_text="As clients send it; also prices its dated versions (gpt-4o-2024-08-06)."
    )
    input_per_million = _rate("Input", required=True)
    output_per_million = _rate("Output", required=True)
    cache_read_per_million = _rate("Cached input (cache read)", help_text="Empty: the input rate.")
    cache_write_per_million = _rate("Cache write", help_text="Empty: the input rate.")
    reasoning_per_million = _rate("Reasoning", help_text="Empty: the output rate.")
    audio_input_per_million = _rate("Audio input", help_text="Empty: the input rate.")
    audio_output_per_million = _rate("Audio output", help_text="Empty: the output rate.")


class PolicyLimitField(forms.CharField):
    """A positive decimal in ASCII digits, up to 8 decimals (costs as the logs store them)."""

    def to_python(self, value: object) -> Decimal | None:
        text = super().to_python(value).strip()
        if not text:
            return None
        if not re.fullmatch(r"[0-9]{1,12}(\.[0-9]{1,8})?", text):
            raise forms.ValidationError("Enter a number such as 100 or 2.5 (at most 8 decimals).")
        return Decimal(text)


class PolicyForm(forms.Form):
    """A policy as the Policies page edits it; analytics.policies.services validates the rest."""

    name = forms.CharField(max_length=200)
    kind = forms.ChoiceField(choices=Policy.Kind.choices, initial=Policy.Kind.REQUESTS, label="Limit on")
    limit = PolicyLimitField(help_text="Requests, tokens or USD per window.")
    window = forms.CharField(
        max_length=16,
        initial="minute",
        help_text="minute, hour, day, month (calendar, in the workspace's time zone) or rolling 1h, 24h, 7d, 30d.",
        widget=forms.TextInput(attrs={"list": "policy-windows", "autocomplete": "off"}),
    )
    scope = forms.CharField(
        required=False,
        max_length=rules.SCOPE_MAX_LENGTH,
        widget=_lines_area(),
        help_text="One per line: metadata.feature=chat, metadata.environment__in=prod,staging, model=gpt-4o, "
        "api_key=12, user=alice. Empty: every request.",
    )
    per = forms.CharField(
        required=False,
        max_length=160,
        label="Per value of",
        widget=forms.TextInput(attrs={"list": "policy-per", "autocomplete": "off"}),
        help_text="Optional: _user or metadata.<key> (also model, provider, api_key) gets its own counter per value.",
    )
    action = forms.ChoiceField(choices=Policy.Action.choices, initial=Policy.Action.BLOCK)
    fail_closed = forms.BooleanField(
        required=False, label="Fail closed", help_text="Refuse its requests (503) while Redis is unreachable."
    )
    enabled = forms.BooleanField(required=False, initial=True)

    def policy_fields(self) -> dict:
        return dict(self.cleaned_data)

    @classmethod
    def initial_for(cls, policy: Policy) -> dict:
        return {
            **{name: getattr(policy, name) for name in cls.base_fields if name != "scope"},
            "limit": f"{policy.limit.normalize():f}",
            "scope": "\n".join(f"{param}={value}" for param, value in rules.scope_pairs(policy.scope)),
        }
