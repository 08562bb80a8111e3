"""Admin for policies, written through analytics.policies.services so every change is validated
and lands in the workspace's audit trail."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from analytics.policies import services
from analytics.policies.models import Policy
from workspaces.models import AuditEvent


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    list_display = ["name", "workspace", "kind", "limit", "window", "per", "action", "enabled"]
    list_filter = ["enabled", "kind", "action", "workspace"]
    search_fields = ["name", "scope", "workspace__slug"]
    list_select_related = ["workspace"]
    fields = ["workspace", "name", "enabled", "scope", "per", "kind", "limit", "window", "action", "fail_closed"]
    readonly_fields = ["created_at", "updated_at"]

    def save_model(self, request: HttpRequest, obj: Policy, form: forms.ModelForm, change: bool) -> None:
        services.policy_update(policy=obj, actor=request.user, via=AuditEvent.Via.ADMIN)

    def delete_model(self, request: HttpRequest, obj: Policy) -> None:
        services.policy_delete(policy=obj, actor=request.user, via=AuditEvent.Via.ADMIN)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        with transaction.atomic():
            for policy in queryset:
                services.policy_delete(policy=policy, actor=request.user, via=AuditEvent.Via.ADMIN)
