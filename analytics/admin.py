"""Admin for request logs (read-only: logs are evidence and are never edited), model prices
(written through ``analytics.pricing``'s services, so every change is audited) and the metadata
key registry (read-only but its ``paired`` flag, analytics.pair_rollups)."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from analytics import pair_rollups, pricing
from analytics.models import MetadataKey, ModelPrice, RequestBody, RequestLog
from workspaces.models import AuditEvent


class _ReadOnly:
    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class RequestBodyInline(_ReadOnly, admin.StackedInline):
    model = RequestBody
    fields = ["request_headers", "request_body", "response_body"]


@admin.register(RequestLog)
class RequestLogAdmin(_ReadOnly, admin.ModelAdmin):
    list_display = [
        "created_at",
        "workspace",
        "status_code",
        "provider",
        "model",
        "latency_ms",
        "total_tokens",
        "cost",
        "user",
        "trace_id",
    ]
    list_filter = ["status_code", "success", "provider", "model", "is_stream", "workspace", "created_at"]
    search_fields = ["trace_id", "user"]
    search_help_text = "Trace ID or user."
    list_select_related = ["workspace"]
    # The log table is large: skip the unfiltered COUNT(*) the changelist would run per page.
    show_full_result_count = False
    inlines = [RequestBodyInline]
    fieldsets = [
        (
            None,
            {"fields": ["id", "created_at", "workspace", "api_key", "endpoint", "method", "status_code", "success"]},
        ),
        (
            "Upstream",
            {
                "fields": [
                    "provider",
                    "model",
                    "is_stream",
                    "finish_reasons",
                    "cache_status",
                    "retry_count",
                    "error_message",
                ]
            },
        ),
        (
            "Usage",
            {
                "fields": [
                    "latency_ms",
                    "ttft_ms",
                    "prompt_tokens",
                    "completion_tokens",
                    "total_tokens",
                    "cached_prompt_tokens",
                    "cache_write_tokens",
                    "reasoning_tokens",
                    "audio_prompt_tokens",
                    "audio_completion_tokens",
                    "cost",
                    "currency",
                    "price_version",
                ]
            },
        ),
        ("Tracing", {"fields": ["trace_id", "span_id", "parent_span_id", "span_name", "user"]}),
        ("Metadata", {"fields": ["metadata", "metadata_changes", "client_runtime", "sdk_version"]}),
    ]


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    """Overrides of the genai-prices catalogue (installation-wide, or for one workspace)."""

    list_display = [
        "model",
        "workspace",
        "input_per_million",
        "output_per_million",
        "cache_read_per_million",
        "reasoning_per_million",
        "currency",
        "updated_at",
    ]
    list_editable = ["input_per_million", "output_per_million"]
    list_filter = ["currency", "workspace"]
    list_select_related = ["workspace"]
    search_fields = ["model"]

    def save_model(self, request: HttpRequest, obj: ModelPrice, form: forms.ModelForm, change: bool) -> None:
        # Also the path of the changelist's inline editing (list_editable).
        pricing.price_update(price=obj, actor=request.user, via=AuditEvent.Via.ADMIN)

    def delete_model(self, request: HttpRequest, obj: ModelPrice) -> None:
        pricing.price_delete(price=obj, actor=request.user, via=AuditEvent.Via.ADMIN)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        with transaction.atomic():
            for price in queryset:
                pricing.price_delete(price=price, actor=request.user, via=AuditEvent.Via.ADMIN)


@admin.register(MetadataKey)
class MetadataKeyAdmin(admin.ModelAdmin):
    """The registry is kept by the log writer; an admin only chooses the pair keys."""

    list_display = ["key", "workspace", "requests", "distinct_values", "last_seen", "paired"]
    list_editable = ["paired"]
    list_filter = ["paired", "workspace"]
    list_select_related = ["workspace"]
    search_fields = ["key"]
    fields = ["workspace", "key", "requests", "distinct_values", "first_seen", "last_seen", "paired"]
    readonly_fields = ["workspace", "key", "requests", "distinct_values", "first_seen", "last_seen"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # derived from the logs (rebuild_rollups); retention removes what is gone

    def save_model(self, request: HttpRequest, obj: MetadataKey, form: forms.ModelForm, change: bool) -> None:
        # The flag alone (also from the changelist's list_editable), audited: save() would write
        # back counters the log writer has moved on since the page was loaded.
        pair_rollups.set_paired(
            workspace_id=obj.workspace_id,
            keys=[obj.key],
            paired=obj.paired,
            actor=request.user,
            via=AuditEvent.Via.ADMIN,
        )


# Alert rules and their history (analytics/alerts/admin.py), registered on import.
from analytics.alerts import admin as alerts_admin  # noqa: E402, F401

# Policies (analytics/policies/admin.py), registered on import.
from analytics.policies import admin as policies_admin  # noqa: E402, F401
