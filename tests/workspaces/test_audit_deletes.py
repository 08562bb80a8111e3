"""Deletions and price edits are audited whatever the path (service, admin page, admin bulk
action, command), and a workspace's trail survives the workspace."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import reverse

from analytics import pricing
from analytics.models import ModelPrice
from workspaces import services
from workspaces.models import ApiKey, AuditEvent, Membership, Provider, Workspace

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "root-pass-123")


@pytest.fixture
def admin_client(client, root):
    client.force_login(root)
    return client


def _api_key(workspace: Workspace) -> ApiKey:
    return services.api_key_create(workspace=workspace, name="doomed")[0]


def _provider(workspace: Workspace) -> Provider:
    return services.provider_create(workspace=workspace, slug="doomed", base_url="https://x.example.com/v1")


def _membership(workspace: Workspace) -> Membership:
    return workspace.memberships.get(role=Membership.Role.MEMBER)


def _price(workspace: Workspace) -> ModelPrice:
    return pricing.price_create(model="doomed-model", input_per_million=Decimal(1), output_per_million=Decimal(2))


# (object type, factory, delete service call)
KINDS = {
    "api_key": (_api_key, lambda obj, **kw: services.api_key_delete(api_key=obj, **kw)),
    "provider": (_provider, lambda obj, **kw: services.provider_delete(provider=obj, **kw)),
    "membership": (_membership, lambda obj, **kw: services.membership_remove(membership=obj, **kw)),
    "workspace": (lambda ws: ws, lambda obj, **kw: services.workspace_delete(workspace=obj, **kw)),
    "model_price": (_price, lambda obj, **kw: pricing.price_delete(price=obj, **kw)),
}


MODELS = {
    "api_key": ApiKey,
    "provider": Provider,
    "membership": Membership,
    "workspace": Workspace,
    "model_price": ModelPrice,
}


def _assert_recorded(object_type: str, obj_id: int, label: str, actor, via: str) -> None:
    action = "membership.remove" if object_type == "membership" else f"{object_type}.delete"
    event = AuditEvent.objects.get(action=action)
    assert (event.object_type, event.object_id, event.object_repr) == (object_type, str(obj_id), label)
    assert (event.actor, event.actor_label, event.via) == (actor, actor.get_username(), via)
    assert event.before and event.after == {}
    assert not MODELS[object_type].objects.filter(pk=obj_id).exists()


@pytest.mark.parametrize("object_type", KINDS)
def test_the_delete_service_records_who_deleted_what(object_type, owner, workspace):
    make, delete = KINDS[object_type]
    obj = make(workspace)
    pk, label = obj.pk, str(obj)
    delete(obj, actor=owner, via="api")
    _assert_recorded(object_type, pk, label, owner, "api")


@pytest.mark.parametrize("object_type", KINDS)
def test_the_admin_delete_page_records_the_deletion(object_type, admin_client, root, workspace):
    obj = KINDS[object_type][0](workspace)
    pk, label = obj.pk, str(obj)
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_delete", args=[pk])
    response = admin_client.post(url, {"post": "yes"})
    assert response.status_code == 302
    _assert_recorded(object_type, pk, label, root, "admin")


@pytest.mark.parametrize("object_type", KINDS)
def test_the_admin_bulk_delete_action_records_each_deletion(object_type, admin_client, root, workspace):
    obj = KINDS[object_type][0](workspace)
    pk, label = obj.pk, str(obj)
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_changelist")
    response = admin_client.post(url, {"action": "delete_selected", "_selected_action": [pk], "post": "yes"})
    assert response.status_code == 302
    _assert_recorded(object_type, pk, label, root, "admin")


def test_deleting_a_workspace_keeps_its_trail(owner, workspace, api_key):
    services.workspace_update(workspace=workspace, default_metadata={"team": "x"}, actor=owner, via="dashboard")
    earlier = set(AuditEvent.objects.filter(workspace=workspace).values_list("id", flat=True))
    services.workspace_delete(workspace=workspace, actor=owner, via="command")
    kept = AuditEvent.objects.filter(workspace_slug="acme")
    assert earlier < set(kept.values_list("id", flat=True))
    assert {e.workspace_id for e in kept} == {None} and {e.workspace_name for e in kept} == {"Acme"}
    last = kept.get(action="workspace.delete")
    assert last.before["api_keys"] == [api_key[0].prefix]
    assert last.before["members"] == {"member": "member", "owner": "owner"}


def test_superusers_find_a_deleted_workspaces_events_in_the_admin(admin_client, workspace, api_key):
    admin_client.post(reverse("admin:workspaces_workspace_delete", args=[workspace.pk]), {"post": "yes"})
    page = admin_client.get(reverse("admin:workspaces_auditevent_changelist"), {"q": "acme"}).content.decode()
    assert "workspace.delete" in page and "api_key.create" in page


def test_deleting_a_user_records_the_removal_of_each_membership(admin_client, root, workspace, member):
    response = admin_client.post(reverse("admin:auth_user_delete", args=[member.pk]), {"post": "yes"})
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="membership.remove")
    assert (event.workspace, event.before["user"], event.actor) == (workspace, "member", root)
    assert not get_user_model().objects.filter(username="member").exists()


def test_the_dashboard_and_command_paths_keep_the_last_owner(owner, workspace):
    with pytest.raises(services.LastOwnerError):
        services.membership_remove(membership=workspace.memberships.get(user=owner), actor=owner, via="dashboard")
    with pytest.raises(services.LastOwnerError):
        services.membership_add(workspace=workspace, user=owner, role="admin", via="command")
    assert workspace.memberships.get(user=owner).role == "owner"
    assert not AuditEvent.objects.filter(action__in=["membership.remove", "membership.update"]).exists()


def test_price_edits_in_the_admin_are_recorded(admin_client, root):
    price = pricing.price_create(model="m-1", input_per_million=Decimal("1.5"), output_per_million=Decimal(3))
    response = admin_client.post(
        reverse("admin:analytics_modelprice_change", args=[price.pk]),
        {"model": "m-1", "input_per_million": "2.5", "output_per_million": "3", "currency": "USD"},
    )
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="model_price.update")
    assert (event.workspace, event.actor, event.via) == (None, root, "admin")
    assert event.changes == [("input_per_million", "1.5", "2.5")]


def test_price_edits_in_the_changelist_are_recorded(admin_client, root):
    price = pricing.price_create(model="m-1", input_per_million=Decimal(1), output_per_million=Decimal(3))
    form = {
        "form-TOTAL_FORMS": "1",
        "form-INITIAL_FORMS": "1",
        "form-0-id": str(price.pk),
        "form-0-input_per_million": "4",
        "form-0-output_per_million": "3",
        "_save": "Save",
    }
    response = admin_client.post(reverse("admin:analytics_modelprice_changelist") + "?q=m-1", form)
    assert response.status_code == 302
    assert AuditEvent.objects.get(action="model_price.update").changes == [("input_per_million", "1", "4")]


def test_load_pricing_records_changed_prices_only(root, tmp_path):
    overrides = tmp_path / "prices.json"
    overrides.write_text('{"prices": [{"model": "gpt-4o", "input": "2.5", "output": "10"}]}')
    call_command("load_pricing", str(overrides), stdout=StringIO())
    assert AuditEvent.objects.filter(object_type="model_price").count() == 1
    call_command("load_pricing", str(overrides), "--overwrite", stdout=StringIO())  # nothing changes
    assert AuditEvent.objects.filter(object_type="model_price").count() == 1
    price = ModelPrice.objects.get()
    pricing.price_update(price=price, input_per_million=Decimal("999"), actor=root, via="admin")
    call_command("load_pricing", str(overrides), "--overwrite", stdout=StringIO())
    restored = AuditEvent.objects.filter(object_type="model_price").latest("id")
    assert (restored.action, restored.via, restored.object_repr) == ("model_price.update", "command", price.model)
    assert restored.before["input_per_million"] == "999"


# Registered models that are not configuration (login throttling records, permission groups
# unrelated to workspaces) or cannot be deleted at all (logs, the audit trail itself).
NOT_CONFIGURATION = {"auth.Group", "axes.AccessAttempt", "axes.AccessLog", "axes.AccessFailureLog"}


@pytest.mark.parametrize("model", list(admin.site._registry), ids=lambda m: m._meta.label)
def test_every_deletable_model_admin_routes_deletes_through_services(model, rf, root):
    """A new ModelAdmin for configuration must delete (one object and the bulk action) and
    save through an audited service, not Django's default which writes no audit event."""
    if model._meta.label in NOT_CONFIGURATION:
        return
    model_admin = admin.site._registry[model]
    request = rf.get("/")
    request.user = root
    if not model_admin.has_delete_permission(request):
        return
    hooks = ["delete_model", "delete_queryset"]
    if model._meta.app_label in ("workspaces", "analytics"):
        hooks.append("save_model")  # user accounts are not configuration; their memberships are
    for hook in hooks:
        assert getattr(type(model_admin), hook) is not getattr(admin.ModelAdmin, hook), (
            f"{type(model_admin).__name__}.{hook} is Django's default: route it through a service that audits."
        )
