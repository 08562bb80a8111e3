from __future__ import annotations

import secrets

import orjson
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from config.parsing import InvalidParameter
from workspaces import crypto
from workspaces.metadata import MetadataPolicy
from workspaces.metadata_schema import format_errors, metadata_errors, schema_errors

slug_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9_-]{0,62}$", "Use lower-case letters, digits, '-' and '_' (at most 63 characters)."
)


def _check_defaults(field: str, metadata: object, schemas: list[tuple[str, dict]]) -> dict[str, list[str]]:
    """Field errors for default metadata that breaks the format rules or a schema's constraints."""
    if not isinstance(metadata, dict):
        return {field: ['Default metadata must be a JSON object, e.g. {"environment": "production"}.']}
    messages = [msg for _, msg in format_errors(metadata)]
    if not messages:
        for owner, schema in schemas:
            messages += [
                f"{msg} ({owner} schema)" for _, msg in metadata_errors(metadata, schema, check_required=False)
            ]
    return {field: messages} if messages else {}


def _known_time_zone(name: object) -> bool:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not isinstance(name, str) or not name or len(name) > 64:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


class Workspace(models.Model):
    name = models.CharField(max_length=200)
    slug = models.CharField(max_length=63, unique=True, validators=[slug_validator])
    default_metadata = models.JSONField(default=dict, blank=True, help_text="Merged into every request's metadata.")
    metadata_schema = models.JSONField(
        default=dict,
        blank=True,
        help_text="JSON Schema subset: object, string properties, required, enum, pattern, maxLength, default.",
    )
    log_retention_days = models.PositiveIntegerField(default=30)
    store_bodies = models.BooleanField(default=True, help_text="Store request/response bodies with logs.")
    allow_custom_hosts = models.BooleanField(
        default=False, help_text="Allow x-portkey-custom-host requests (provider key sent by the client)."
    )
    time_zone = models.CharField(
        max_length=64,
        default="UTC",
        help_text="IANA time zone (e.g. Europe/Paris) of calendar windows: a policy's day and month.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        errors = {}
        if not _known_time_zone(self.time_zone):
            errors["time_zone"] = [
                f"'{str(self.time_zone)[:64]}': use an IANA time zone name, e.g. Europe/Paris or UTC."
            ]
        if problems := schema_errors(self.metadata_schema):
            errors["metadata_schema"] = problems
        else:
            errors.update(
                _check_defaults("default_metadata", self.default_metadata, [("workspace", self.metadata_schema)])
            )
            if self.pk and self.metadata_schema:
                # A schema change must not strand existing API keys with defaults it now rejects.
                for key in self.api_keys.all():
                    bad = metadata_errors(key.default_metadata or {}, self.metadata_schema, check_required=False)
                    if bad:
                        errors.setdefault("metadata_schema", []).append(
                            f"API key '{key.name}' has default metadata this schema rejects: {bad[0][1]}"
                        )
        if errors:
            raise ValidationError(errors)


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        ADMIN = "admin"
        MEMBER = "member"
        VIEWER = "viewer"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "workspace"], name="unique_membership")]

    def __str__(self) -> str:
        return f"{self.user} in {self.workspace} ({self.role})"

    @property
    def can_edit(self) -> bool:
        return self.role in (self.Role.OWNER, self.Role.ADMIN)


class ApiKey(models.Model):
    class Scope(models.TextChoices):
        INFERENCE = "inference", "Inference (/v1 gateway)"
        LOGS_READ = "logs.read", "Read logs and analytics"
        ADMIN = "admin", "Administer the workspace"

    DEFAULT_SCOPES = [Scope.INFERENCE.value, Scope.LOGS_READ.value]

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200)
    # Public lookup prefix ("pk-" + 8 chars) and the keyed hash of the whole key; the key
    # itself is never stored.
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list, blank=True)
    default_metadata = models.JSONField(default=dict, blank=True)
    metadata_schema = models.JSONField(default=dict, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Limits enforced by the gateway (Redis counters; per process in embedded mode).
    rate_limit_rpm = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests per minute; over it the gateway answers 429."
    )
    usage_limit_cost = models.DecimalField(
        max_digits=14, decimal_places=4, null=True, blank=True, help_text="Spend per period (USD); over it: 412."
    )
    usage_limit_period = models.CharField(
        max_length=8, choices=[("day", "Day"), ("month", "Month")], default="month", blank=True
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def clean(self) -> None:
        errors = {}
        valid_scopes = set(self.Scope.values)
        if not isinstance(self.scopes, list) or any(s not in valid_scopes for s in self.scopes):
            errors["scopes"] = [f"Scopes must be a list drawn from: {', '.join(sorted(valid_scopes))}."]
        if problems := schema_errors(self.metadata_schema):
            errors["metadata_schema"] = problems
        else:
            schemas = [("API key", self.metadata_schema)]
            if self.workspace_id:
                schemas.append(("workspace", self.workspace.metadata_schema))
            errors.update(_check_defaults("default_metadata", self.default_metadata, schemas))
        if errors:
            raise ValidationError(errors)

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def is_usable(self) -> bool:
        return self.is_active and (self.expires_at is None or self.expires_at > timezone.now())

    def metadata_policy(self) -> MetadataPolicy:
        """The defaults and schemas every request of this key gets (its own and its
        workspace's): built here only, for the gateway's key cache and the custom-log APIs."""
        workspace = self.workspace
        return MetadataPolicy(
            workspace_defaults=dict(workspace.default_metadata or {}),
            workspace_schema=workspace.metadata_schema or None,
            key_defaults=dict(self.default_metadata or {}),
            key_schema=self.metadata_schema or None,
        )


# A URL path segment we build ourselves (an Azure deployment): no "/", no "..", no query.
path_segment_validator = RegexValidator(
    r"^(?!\.+$)[A-Za-z0-9._-]{1,64}$", "Use letters, digits, '.', '-' and '_' (at most 64 characters)."
)
api_version_validator = RegexValidator(
    r"^[A-Za-z0-9._-]{1,32}$", "Use letters, digits, '.', '-' and '_' (at most 32 characters), e.g. 2024-10-21."
)


class Provider(models.Model):
    class Kind(models.TextChoices):
        # The values are what gateway/providers.py dispatches on.
        OPENAI = "openai", "OpenAI-compatible"
        AZURE_OPENAI = "azure-openai", "Azure OpenAI"
        ANTHROPIC = "anthropic", "Anthropic"
        GOOGLE = "google", "Google Gemini"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="providers")
    slug = models.CharField(
        max_length=63, validators=[slug_validator], help_text="Clients select it with x-portkey-provider: @slug."
    )
    name = models.CharField(max_length=200, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.OPENAI)
    base_url = models.URLField(max_length=500, help_text="e.g. https://api.openai.com/v1")
    api_version = models.CharField(
        max_length=32,
        blank=True,
        validators=[api_version_validator],
        help_text="Azure OpenAI: the api-version query parameter (default 2024-10-21). "
        "Anthropic: the anthropic-version header when the client sends none (default 2023-06-01).",
    )
    deployment = models.CharField(
        max_length=64,
        blank=True,
        validators=[path_segment_validator],
        help_text="Azure OpenAI only: the deployment every request goes to. Empty: the request's model names it.",
    )
    encrypted_secret = models.TextField(blank=True, editable=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        constraints = [models.UniqueConstraint(fields=["workspace", "slug"], name="unique_provider_slug")]

    def __str__(self) -> str:
        return f"@{self.slug}"

    def clean(self) -> None:
        from workspaces.upstream.netguard import BlockedUpstreamError, check_url, clean_upstream_base

        try:
            # The same shape rules as x-portkey-custom-host (no credentials, query or dot
            # segments), then the SSRF guard.
            clean_upstream_base(self.base_url or "", param="base_url")
        except InvalidParameter as exc:
            raise ValidationError({"base_url": exc.message.removeprefix("base_url: ")}) from None
        try:
            check_url(self.base_url or "")
        except BlockedUpstreamError as exc:
            raise ValidationError(
                {"base_url": f"{exc}; allow the network with UPSTREAM_ALLOWED_NETWORKS if this is intended."}
            ) from None
        if self.deployment and self.kind != self.Kind.AZURE_OPENAI:
            raise ValidationError({"deployment": "Only Azure OpenAI providers have a deployment."})
        if self.api_version and self.kind not in (self.Kind.AZURE_OPENAI, self.Kind.ANTHROPIC):
            raise ValidationError({"api_version": "Only Azure OpenAI and Anthropic providers use an API version."})

    def set_secret(self, secret: str) -> None:
        self.encrypted_secret = crypto.encrypt_secret(secret) if secret else ""

    def get_secret(self) -> str:
        return crypto.decrypt_secret(self.encrypted_secret) if self.encrypted_secret else ""

    @property
    def has_secret(self) -> bool:
        return bool(self.encrypted_secret)


class AuditEvent(models.Model):
    """One change to a workspace, its members, API keys or providers (or to a model price,
    which belongs to no workspace), written by the write services in the same transaction as
    the change. Secrets (key hashes, provider credentials) are never part of
    ``before``/``after``; a rotation shows up as ``secret: "changed"``.

    The trail outlives what it describes: deleting a workspace nulls ``workspace`` and the
    copied ``workspace_slug``/``workspace_name`` keep its events findable in the admin."""

    class Via(models.TextChoices):
        DASHBOARD = "dashboard"
        ADMIN = "admin"
        API = "api"
        COMMAND = "command"
        SYSTEM = "system"

    workspace = models.ForeignKey(
        Workspace, on_delete=models.SET_NULL, null=True, blank=True, related_name="audit_events"
    )
    # Copied at write time so the events of a deleted workspace still say whose they were.
    workspace_slug = models.CharField(max_length=63, blank=True, db_index=True)
    workspace_name = models.CharField(max_length=200, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Kept as text so the record survives the user's deletion and names command/API callers.
    actor_label = models.CharField(max_length=150, blank=True)
    via = models.CharField(max_length=16, choices=Via.choices, default=Via.SYSTEM)
    action = models.CharField(max_length=64, help_text="e.g. workspace.update, api_key.revoke")
    object_type = models.CharField(max_length=32)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The audit page: newest first within a workspace.
            models.Index(fields=["workspace", "-created_at"], name="audit_ws_time"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.action} {self.object_repr}"

    @property
    def changes(self) -> list[tuple[str, object, object]]:
        """(field, before, after) for every field that differs."""
        names = list(dict.fromkeys([*self.before, *self.after]))
        return [
            (name, self.before.get(name), self.after.get(name))
            for name in names
            if self.before.get(name) != self.after.get(name)
        ]


class OtelExport(models.Model):
    """Where a workspace's logs are exported as OpenTelemetry spans (OTLP/HTTP protobuf), by the
    log writer after each committed batch (analytics.otel_export). The request headers often
    carry a credential (``Authorization``, ``x-honeycomb-team``, ...): they are stored encrypted
    like provider secrets, and only their names are ever shown or audited."""

    workspace = models.OneToOneField(Workspace, on_delete=models.CASCADE, related_name="otel_export")
    enabled = models.BooleanField(default=True)
    endpoint = models.URLField(
        max_length=500, help_text="The collector's full OTLP/HTTP traces URL, e.g. https://otel.example.com/v1/traces"
    )
    encrypted_headers = models.TextField(blank=True, editable=False)
    # The names alone, in clear: shown in the admin and the audit trail.
    header_names = models.JSONField(default=list, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "OpenTelemetry export"

    def __str__(self) -> str:
        return f"{self.workspace} -> {self.endpoint}"

    def clean(self) -> None:
        from workspaces.upstream.netguard import BlockedUpstreamError, check_url

        if not (self.endpoint or "").lower().startswith(("http://", "https://")):
            raise ValidationError({"endpoint": "Enter an http:// or https:// URL."})
        try:
            check_url(self.endpoint)
        except BlockedUpstreamError as exc:
            raise ValidationError(
                {"endpoint": f"{exc}; allow the network with UPSTREAM_ALLOWED_NETWORKS if this is intended."}
            ) from None

    def set_headers(self, headers: dict[str, str]) -> None:
        self.encrypted_headers = crypto.encrypt_secret(orjson.dumps(headers).decode()) if headers else ""
        self.header_names = sorted(headers)

    def get_headers(self) -> dict[str, str]:
        return orjson.loads(crypto.decrypt_secret(self.encrypted_headers)) if self.encrypted_headers else {}


def _new_config_id() -> str:
    return "pc-" + secrets.token_hex(8)


class RoutingConfig(models.Model):
    """A saved Portkey config (retries, fallback/loadbalance targets, cache, timeout): clients
    send its ``public_id`` or ``slug`` in ``x-portkey-config`` instead of the JSON itself.
    Validated by the gateway's own parser on save, so a saved config never fails to parse."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="routing_configs")
    public_id = models.CharField(max_length=32, unique=True, default=_new_config_id, editable=False)
    slug = models.CharField(
        max_length=63, validators=[slug_validator], help_text="Clients may send x-portkey-config: <slug>."
    )
    name = models.CharField(max_length=200, blank=True)
    config = models.JSONField(help_text='A Portkey config, e.g. {"retry": {"attempts": 3}}.')
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        verbose_name = "config"
        constraints = [models.UniqueConstraint(fields=["workspace", "slug"], name="unique_routing_config_slug")]

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        # Imported here like Provider.clean's netguard: the gateway's one config parser (pure
        # Python, no import back into this app) decides what a valid config is.
        from workspaces.configs import parse_config, provider_slugs

        errors = {}
        if self.slug and self.slug.startswith("pc-"):
            # "pc-..." is how public ids look; a slug like one could shadow another config.
            errors["slug"] = ["A slug must not start with 'pc-' (config ids do)."]
        try:
            parsed = parse_config(self.config)
        except InvalidParameter as exc:
            errors["config"] = [exc.message]
        else:
            if self.workspace_id:
                known = set(Provider.objects.filter(workspace_id=self.workspace_id).values_list("slug", flat=True))
                unknown = [
                    f"{path.replace('config', 'x-portkey-config', 1)}: @{slug} is not a provider of this workspace."
                    for path, slug in provider_slugs(parsed)
                    if slug not in known
                ]
                if unknown:
                    errors["config"] = unknown
        if errors:
            raise ValidationError(errors)
