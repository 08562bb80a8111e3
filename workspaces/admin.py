"""Admin panel for workspaces, their members, API keys, providers and saved configs: where operators set
default metadata and metadata schemas. Writes, deletions included (one object or the bulk
"delete selected" action), go through ``workspaces.services`` so the admin validates, hashes,
encrypts and audits exactly like the commands and the dashboard."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db import models, transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from workspaces import services
from workspaces.forms import PrettyJSONField
from workspaces.models import ApiKey, AuditEvent, Membership, OtelExport, Provider, RoutingConfig, Workspace

JSON_AS_TEXT = {models.JSONField: {"form_class": PrettyJSONField}}
SCHEMA_HELP = (
    "Default metadata is a JSON object of string values, e.g. "
    '<code>{"environment": "production"}</code>. The schema is a JSON Schema subset (object, string '
    "properties, required, enum, pattern, maxLength, default), e.g. "
    '<code>{"type": "object", "properties": {"team": {"type": "string", "enum": ["search", "ads"]}}, '
    '"required": ["team"]}</code>. Leave a box empty for none.'
)


class _AuditedDeletes:
    """Deletes through a service, one object or the bulk action, all or nothing."""

    def delete_through_service(self, request: HttpRequest, obj: models.Model) -> None:
        raise NotImplementedError

    def delete_model(self, request: HttpRequest, obj: models.Model) -> None:
        self.delete_through_service(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        with transaction.atomic():
            for obj in queryset:
                self.delete_through_service(request, obj)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]


class _ReadOnlyInline(admin.TabularInline):
    """Listed on the workspace page for context; edited on their own admin pages."""

    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ApiKeyInline(_ReadOnlyInline):
    model = ApiKey
    fields = readonly_fields = ["name", "prefix", "scopes", "is_active", "expires_at", "last_used_at"]


class ProviderInline(_ReadOnlyInline):
    model = Provider
    fields = readonly_fields = ["slug", "kind", "base_url", "is_active"]


@admin.register(Workspace)
class WorkspaceAdmin(_AuditedDeletes, admin.ModelAdmin):
    list_display = ["name", "slug", "log_retention_days", "store_bodies", "allow_custom_hosts", "created_at"]
    list_filter = ["store_bodies", "allow_custom_hosts", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["created_at"]
    formfield_overrides = JSON_AS_TEXT
    fieldsets = [
        (None, {"fields": ["name", "slug", "created_at"]}),
        ("Metadata", {"fields": ["default_metadata", "metadata_schema"], "description": SCHEMA_HELP}),
        ("Logs and gateway", {"fields": ["log_retention_days", "store_bodies", "allow_custom_hosts"]}),
    ]
    inlines = [MembershipInline, ApiKeyInline, ProviderInline]

    def save_model(self, request: HttpRequest, obj: Workspace, form: forms.ModelForm, change: bool) -> None:
        services.workspace_update(workspace=obj, actor=request.user, via=AuditEvent.Via.ADMIN)

    def delete_through_service(self, request: HttpRequest, obj: Workspace) -> None:
        services.workspace_delete(workspace=obj, actor=request.user, via=AuditEvent.Via.ADMIN)

    def save_formset(
        self, request: HttpRequest, form: forms.ModelForm, formset: forms.BaseFormSet, change: bool
    ) -> None:
        if formset.model is not Membership:
            super().save_formset(request, form, formset, change)
            return
        # Membership changes go through the services so they land in the audit trail. Superusers
        # may leave a workspace ownerless here (keep_owner=False); the dashboard may not.
        for membership in formset.save(commit=False):
            services.membership_add(
                workspace=form.instance,
                user=membership.user,
                role=membership.role,
                actor=request.user,
                via=AuditEvent.Via.ADMIN,
                keep_owner=False,
            )
        for membership in formset.deleted_objects:
            services.membership_remove(
                membership=membership, actor=request.user, via=AuditEvent.Via.ADMIN, keep_owner=False
            )


@admin.register(Membership)
class MembershipAdmin(_AuditedDeletes, admin.ModelAdmin):
    list_display = ["user", "workspace", "role", "created_at"]
    list_filter = ["role", "workspace"]
    search_fields = ["user__username", "user__email", "workspace__slug", "workspace__name"]
    autocomplete_fields = ["user", "workspace"]
    list_select_related = ["user", "workspace"]
    readonly_fields = ["created_at"]

    def save_model(self, request: HttpRequest, obj: Membership, form: forms.ModelForm, change: bool) -> None:
        if change and {"user", "workspace"} & set(form.changed_data):
            # Moving a membership is a removal plus an addition.
            services.membership_remove(
                membership=Membership.objects.get(pk=obj.pk),
                actor=request.user,
                via=AuditEvent.Via.ADMIN,
                keep_owner=False,
            )
        saved = services.membership_add(
            workspace=obj.workspace,
            user=obj.user,
            role=obj.role,
            actor=request.user,
            via=AuditEvent.Via.ADMIN,
            keep_owner=False,
        )
        obj.pk = saved.pk
        obj._state.adding = False

    def delete_through_service(self, request: HttpRequest, obj: Membership) -> None:
        services.membership_remove(membership=obj, actor=request.user, via=AuditEvent.Via.ADMIN, keep_owner=False)


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiKey.Scope.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        initial=ApiKey.DEFAULT_SCOPES,
    )

    class Meta:
        model = ApiKey
        fields = ["name", "workspace", "scopes", "is_active", "expires_at", "default_metadata", "metadata_schema"]


class ScopeFilter(admin.SimpleListFilter):
    title = "scope"
    parameter_name = "scope"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return ApiKey.Scope.choices

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() not in ApiKey.Scope.values:
            return queryset
        # JSON "contains" is unsupported on SQLite; matching the quoted value in the JSON text
        # works on both backends because scope names are distinct whole strings.
        return queryset.filter(scopes__icontains=f'"{self.value()}"')


@admin.register(ApiKey)
class ApiKeyAdmin(_AuditedDeletes, admin.ModelAdmin):
    form = ApiKeyForm
    list_display = [
        "name",
        "workspace",
        "prefix",
        "scope_list",
        "is_active",
        "created_at",
        "last_used_at",
        "expires_at",
    ]
    list_filter = ["workspace", "is_active", ScopeFilter]
    search_fields = ["name", "prefix"]
    list_select_related = ["workspace"]
    autocomplete_fields = ["workspace"]
    formfield_overrides = JSON_AS_TEXT
    actions = ["revoke_selected"]
    metadata_fieldset = ("Metadata", {"fields": ["default_metadata", "metadata_schema"], "description": SCHEMA_HELP})
    add_fieldsets = [(None, {"fields": ["name", "workspace", "scopes", "expires_at"]}), metadata_fieldset]
    change_fieldsets = [
        (None, {"fields": ["name", "workspace", "prefix", "scopes", "is_active", "expires_at"]}),
        metadata_fieldset,
        ("Usage", {"fields": ["created_at", "last_used_at", "revoked_at"]}),
    ]

    def get_fieldsets(self, request: HttpRequest, obj: ApiKey | None = None) -> list:
        return self.change_fieldsets if obj else self.add_fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        # A key stays in the workspace it was issued for; the hash is never shown at all.
        return ["workspace", "prefix", "created_at", "last_used_at", "revoked_at"] if obj else []

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: forms.ModelForm, change: bool) -> None:
        if change:
            self._save_change(request, obj, form)
            return
        created, full_key = services.api_key_create(
            workspace=obj.workspace,
            name=obj.name,
            scopes=obj.scopes,
            default_metadata=obj.default_metadata,
            metadata_schema=obj.metadata_schema,
            expires_at=obj.expires_at,
            actor=request.user,
            via=AuditEvent.Via.ADMIN,
        )
        # The admin goes on with `obj` (history entry, response): give it the saved row.
        for field in ("id", "prefix", "hashed_key", "created_at"):
            setattr(obj, field, getattr(created, field))
        obj._state.adding = False
        request._portico_full_key = full_key

    def _save_change(self, request: HttpRequest, obj: ApiKey, form: forms.ModelForm) -> None:
        fields = {}
        if "is_active" in form.changed_data:
            # Deactivating a key revokes it; reactivating clears the revocation time.
            fields["revoked_at"] = None if obj.is_active else timezone.now()
        services.api_key_update(api_key=obj, actor=request.user, via=AuditEvent.Via.ADMIN, **fields)

    def delete_through_service(self, request: HttpRequest, obj: ApiKey) -> None:
        services.api_key_delete(api_key=obj, actor=request.user, via=AuditEvent.Via.ADMIN)

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None) -> HttpResponse:
        full_key = getattr(request, "_portico_full_key", None)
        if full_key is None:
            return super().response_add(request, obj, post_url_continue)
        # The key is rendered in this response only: not in a redirect, a message cookie or the
        # session, so it cannot be seen again.
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "API key created",
            "api_key": obj,
            "full_key": full_key,
        }
        response = TemplateResponse(request, "admin/workspaces/apikey/key_created.html", context)
        add_never_cache_headers(response)
        return response

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        revoked = 0
        for api_key in queryset.filter(is_active=True):
            services.api_key_revoke(api_key=api_key, actor=request.user, via=AuditEvent.Via.ADMIN)
            revoked += 1
        self.message_user(request, f"Revoked {revoked} API key(s).", messages.SUCCESS)


class ProviderForm(forms.ModelForm):
    base_url = forms.URLField(max_length=500, assume_scheme="https", help_text="e.g. https://api.openai.com/v1")
    # Write-only: the stored secret is never sent back to the browser, not even encrypted.
    api_key = forms.CharField(
        label="API key",
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted. When editing, leave blank to keep the current key; enter a value to replace it.",
    )
    clear_api_key = forms.BooleanField(label="Remove the stored API key", required=False)

    class Meta:
        model = Provider
        fields = ["workspace", "slug", "name", "kind", "base_url", "api_version", "deployment", "is_active"]

    def clean_base_url(self) -> str:
        return self.cleaned_data["base_url"].rstrip("/")

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("api_key") and cleaned.get("clear_api_key"):
            self.add_error("clear_api_key", "Either enter a new API key or remove the stored one, not both.")
        return cleaned


@admin.register(Provider)
class ProviderAdmin(_AuditedDeletes, admin.ModelAdmin):
    form = ProviderForm
    list_display = ["slug", "workspace", "kind", "base_url", "has_secret", "is_active", "updated_at"]
    list_filter = ["workspace", "kind", "is_active"]
    search_fields = ["slug", "name", "base_url", "workspace__slug"]
    list_select_related = ["workspace"]
    autocomplete_fields = ["workspace"]

    def get_fieldsets(self, request: HttpRequest, obj: Provider | None = None) -> list:
        credentials = ["secret_status", "api_key", "clear_api_key"] if obj else ["api_key"]
        fieldsets = [
            (None, {"fields": ["workspace", "slug", "name", "kind", "base_url", "is_active"]}),
            ("Provider settings", {"fields": ["api_version", "deployment"]}),
            ("Credentials", {"fields": credentials}),
        ]
        if obj:
            fieldsets.append(("History", {"fields": ["created_at", "updated_at"]}))
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Provider | None = None) -> list[str]:
        return ["secret_status", "created_at", "updated_at"] if obj else []

    @admin.display(boolean=True, description="secret")
    def has_secret(self, obj: Provider) -> bool:
        return obj.has_secret

    @admin.display(description="Stored API key")
    def secret_status(self, obj: Provider) -> str:
        return "Set (encrypted)" if obj.has_secret else "None"

    def save_model(self, request: HttpRequest, obj: Provider, form: forms.ModelForm, change: bool) -> None:
        secret = None  # keep the stored one
        if form.cleaned_data.get("clear_api_key"):
            secret = ""
        elif form.cleaned_data.get("api_key"):
            secret = form.cleaned_data["api_key"]
        services.provider_update(provider=obj, secret=secret, actor=request.user, via=AuditEvent.Via.ADMIN)

    def delete_through_service(self, request: HttpRequest, obj: Provider) -> None:
        services.provider_delete(provider=obj, actor=request.user, via=AuditEvent.Via.ADMIN)


class OtelExportForm(forms.ModelForm):
    endpoint = forms.URLField(
        max_length=500, assume_scheme="https", help_text="The collector's full OTLP/HTTP traces URL."
    )
    # Write-only like a provider's API key: header values are credentials, never sent back.
    headers = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80, "autocomplete": "off", "spellcheck": "false"}),
        help_text="One 'Name: value' per line, e.g. 'Authorization: Bearer ...'. Stored encrypted. "
        "When editing, leave blank to keep the stored headers; enter lines to replace them all.",
    )
    clear_headers = forms.BooleanField(label="Remove the stored headers", required=False)

    class Meta:
        model = OtelExport
        fields = ["workspace", "enabled", "endpoint"]

    def clean_headers(self) -> dict[str, str] | None:
        text = self.cleaned_data.get("headers") or ""
        try:
            headers = services.parse_header_lines(text) if text.strip() else None
            if headers:
                services.check_headers(headers)
            return headers
        except forms.ValidationError as exc:
            raise forms.ValidationError(exc.message_dict["headers"]) from None

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("headers") and cleaned.get("clear_headers"):
            self.add_error("clear_headers", "Either enter new headers or remove the stored ones, not both.")
        return cleaned


@admin.register(OtelExport)
class OtelExportAdmin(_AuditedDeletes, admin.ModelAdmin):
    form = OtelExportForm
    list_display = ["workspace", "endpoint", "enabled", "header_list", "updated_at"]
    list_filter = ["enabled"]
    search_fields = ["workspace__slug", "endpoint"]
    list_select_related = ["workspace"]
    autocomplete_fields = ["workspace"]

    def get_fieldsets(self, request: HttpRequest, obj: OtelExport | None = None) -> list:
        headers = ["header_list", "headers", "clear_headers"] if obj else ["headers"]
        return [(None, {"fields": ["workspace", "enabled", "endpoint"]}), ("Request headers", {"fields": headers})]

    def get_readonly_fields(self, request: HttpRequest, obj: OtelExport | None = None) -> list[str]:
        # One export per workspace: it stays with the workspace it was made for.
        return ["workspace", "header_list"] if obj else []

    @admin.display(description="stored headers")
    def header_list(self, obj: OtelExport) -> str:
        return ", ".join(obj.header_names) or "None"

    def save_model(self, request: HttpRequest, obj: OtelExport, form: forms.ModelForm, change: bool) -> None:
        headers = {} if form.cleaned_data.get("clear_headers") else form.cleaned_data.get("headers")
        saved = services.otel_export_update(
            workspace=obj.workspace,
            endpoint=obj.endpoint,
            enabled=obj.enabled,
            headers=headers,
            actor=request.user,
            via=AuditEvent.Via.ADMIN,
        )
        obj.pk = saved.pk
        obj._state.adding = False

    def delete_through_service(self, request: HttpRequest, obj: OtelExport) -> None:
        services.otel_export_delete(export=obj, actor=request.user, via=AuditEvent.Via.ADMIN)


@admin.register(RoutingConfig)
class RoutingConfigAdmin(_AuditedDeletes, admin.ModelAdmin):
    list_display = ["slug", "workspace", "public_id", "name", "updated_at"]
    list_filter = ["workspace"]
    search_fields = ["slug", "name", "public_id", "workspace__slug"]
    list_select_related = ["workspace"]
    autocomplete_fields = ["workspace"]
    formfield_overrides = JSON_AS_TEXT
    fields = ["workspace", "slug", "name", "config", "public_id", "created_at", "updated_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: RoutingConfig | None = None) -> list[str]:
        # A config stays in its workspace: its id is what clients of that workspace send.
        return (
            ["workspace", "public_id", "created_at", "updated_at"] if obj else ["public_id", "created_at", "updated_at"]
        )

    def save_model(self, request: HttpRequest, obj: RoutingConfig, form: forms.ModelForm, change: bool) -> None:
        services.config_update(routing_config=obj, actor=request.user, via=AuditEvent.Via.ADMIN)

    def delete_through_service(self, request: HttpRequest, obj: RoutingConfig) -> None:
        services.config_delete(routing_config=obj, actor=request.user, via=AuditEvent.Via.ADMIN)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the audit trail is evidence."""

    # The copied slug, not the foreign key: events of deleted workspaces keep it (superusers
    # find them by filtering or searching on it).
    list_display = ["created_at", "workspace_slug", "actor_label", "via", "action", "object_repr"]
    list_filter = ["via", "action", "object_type", "workspace_slug"]
    search_fields = ["object_repr", "actor_label", "action", "workspace_slug", "workspace_name"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


# Deleting a user removes their memberships: the user admin routes deletes through a service
# that records each removal in the workspace's trail.
admin.site.unregister(get_user_model())


@admin.register(get_user_model())
class AuditedUserAdmin(_AuditedDeletes, UserAdmin):
    def delete_through_service(self, request: HttpRequest, obj: models.Model) -> None:
        services.user_delete(user=obj, actor=request.user, via=AuditEvent.Via.ADMIN)
