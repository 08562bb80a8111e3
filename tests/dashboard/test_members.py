"""Settings > Members: owners add members by username or e-mail, change roles and remove
members after a confirmation page (never the last owner); everyone else reads; outsiders get a
404; every change is audited and every POST needs the CSRF token."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from workspaces import services
from workspaces.models import AuditEvent, Membership

pytestmark = pytest.mark.django_db


def _url(name, workspace, *args):
    return reverse(f"dashboard:{name}", args=[workspace.slug, *args])


def _membership(workspace, user) -> Membership:
    return workspace.memberships.get(user=user)


def test_owner_sees_every_member_with_controls(owner_client, workspace, viewer):
    page = owner_client.get(_url("settings_members", workspace)).content.decode()
    assert re.findall(r'data-member="([^"]+)"', page) == ["member", "owner", "viewer"]
    assert 'id="member-form"' in page and "Change role" in page and "Remove" in page
    assert "onsubmit" not in page and "onclick" not in page


@pytest.mark.parametrize("role", ["admin", "member", "viewer"])
def test_non_owners_see_the_list_read_only(client, django_user_model, workspace, role):
    user = django_user_model.objects.create_user("reader", "r@example.com", "reader-pass-123")
    services.membership_add(workspace=workspace, user=user, role=role)
    client.force_login(user)
    page = client.get(_url("settings_members", workspace)).content.decode()
    assert 'data-member="owner"' in page and "only workspace owners can add, change or remove" in page
    assert 'id="member-form"' not in page and "Change role" not in page


@pytest.mark.parametrize("role", ["admin", "member"])
def test_non_owners_cannot_change_members(client, django_user_model, workspace, member, role):
    user = django_user_model.objects.create_user("reader", "r@example.com", "reader-pass-123")
    services.membership_add(workspace=workspace, user=user, role=role)
    client.force_login(user)
    target = _membership(workspace, member).pk
    assert client.post(_url("settings_members", workspace), {"user": "owner", "role": "viewer"}).status_code == 403
    assert client.post(_url("settings_member_role", workspace, target), {"role": "owner"}).status_code == 403
    assert client.get(_url("settings_member_remove", workspace, target)).status_code == 403
    assert client.post(_url("settings_member_remove", workspace, target)).status_code == 403
    assert _membership(workspace, member).role == "member"


def test_outsiders_get_404_everywhere(client, outsider, workspace, member):
    client.force_login(outsider)
    target = _membership(workspace, member).pk
    assert client.get(_url("settings_members", workspace)).status_code == 404
    assert client.post(_url("settings_members", workspace), {"user": "outsider", "role": "owner"}).status_code == 404
    assert client.post(_url("settings_member_role", workspace, target), {"role": "viewer"}).status_code == 404
    assert client.post(_url("settings_member_remove", workspace, target)).status_code == 404
    assert not workspace.memberships.filter(user=outsider).exists()


def test_an_owner_cannot_reach_another_workspaces_members(owner_client, workspace, other_workspace, outsider):
    foreign = _membership(other_workspace, outsider).pk
    assert owner_client.post(_url("settings_member_role", workspace, foreign), {"role": "viewer"}).status_code == 404
    assert owner_client.post(_url("settings_member_remove", workspace, foreign)).status_code == 404
    assert _membership(other_workspace, outsider).role == "owner"


@pytest.mark.parametrize("who", ["outsider", "OUTSIDER@example.com"])
def test_owner_adds_a_member_by_username_or_email(owner_client, owner, workspace, outsider, who):
    response = owner_client.post(_url("settings_members", workspace), {"user": who, "role": "viewer"})
    assert response.status_code == 302
    assert _membership(workspace, outsider).role == "viewer"
    event = AuditEvent.objects.filter(action="membership.add").latest("id")
    assert (event.actor, event.via, event.after["user"]) == (owner, "dashboard", "outsider")


def test_adding_an_unknown_or_existing_member_says_why(owner_client, workspace, member):
    response = owner_client.post(_url("settings_members", workspace), {"user": "nobody", "role": "member"})
    assert response.status_code == 400 and "No account with the username or e-mail" in response.content.decode()
    response = owner_client.post(_url("settings_members", workspace), {"user": "member", "role": "admin"})
    assert response.status_code == 400 and "member is already a member" in response.content.decode()
    response = owner_client.post(_url("settings_members", workspace), {"user": "member", "role": "boss"})
    assert response.status_code == 400 and "boss is not one of the available choices" in response.content.decode()
    assert _membership(workspace, member).role == "member"


def test_owner_changes_a_role_and_it_is_audited(owner_client, owner, workspace, member):
    target = _membership(workspace, member)
    response = owner_client.post(_url("settings_member_role", workspace, target.pk), {"role": "admin"})
    assert response.status_code == 302
    assert _membership(workspace, member).role == "admin"
    event = AuditEvent.objects.get(action="membership.update")
    assert (event.actor, event.via, event.object_id, event.changes) == (
        owner,
        "dashboard",
        str(target.pk),
        [("role", "member", "admin")],
    )


def test_an_unknown_role_is_a_400_naming_the_field(owner_client, workspace, member):
    response = owner_client.post(_url("settings_member_role", workspace, _membership(workspace, member).pk), {})
    assert response.status_code == 400 and "role: This field is required." in response.content.decode()


def test_removal_asks_for_confirmation_then_removes(owner_client, owner, workspace, member):
    target = _membership(workspace, member).pk
    page = owner_client.get(_url("settings_member_remove", workspace, target)).content.decode()
    assert "Remove member from Acme?" in page and 'method="post"' in page and "onsubmit" not in page
    assert _membership(workspace, member)  # a GET changes nothing
    response = owner_client.post(_url("settings_member_remove", workspace, target))
    assert response.status_code == 302 and response.url == _url("settings_members", workspace)
    assert not workspace.memberships.filter(user=member).exists()
    event = AuditEvent.objects.get(action="membership.remove")
    assert (event.actor, event.via, event.object_repr) == (owner, "dashboard", "member in acme (member)")


def test_the_last_owner_can_be_neither_removed_nor_demoted(owner_client, owner, workspace):
    own = _membership(workspace, owner).pk
    response = owner_client.post(_url("settings_member_remove", workspace, own))
    assert response.status_code == 400 and "owner is the last owner of acme" in response.content.decode()
    response = owner_client.post(_url("settings_member_role", workspace, own), {"role": "member"})
    assert response.status_code == 400 and "last owner" in response.content.decode()
    assert _membership(workspace, owner).role == "owner"


def test_an_owner_may_leave_when_another_owner_remains(owner_client, owner, workspace, member):
    services.membership_add(workspace=workspace, user=member, role="owner")
    response = owner_client.post(_url("settings_member_remove", workspace, _membership(workspace, owner).pk))
    assert response.status_code == 302 and response.url == reverse("dashboard:home")
    assert owner_client.get(_url("settings_members", workspace)).status_code == 404


def test_member_posts_need_the_csrf_token(owner, workspace, member, outsider):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    target = _membership(workspace, member).pk
    assert client.post(_url("settings_members", workspace), {"user": "outsider", "role": "owner"}).status_code == 403
    assert client.post(_url("settings_member_role", workspace, target), {"role": "owner"}).status_code == 403
    assert client.post(_url("settings_member_remove", workspace, target)).status_code == 403
    assert _membership(workspace, member).role == "member" and not workspace.memberships.filter(user=outsider).exists()
    # With the token the page carries, the same request works.
    page = client.get(_url("settings_members", workspace)).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    response = client.post(
        _url("settings_member_role", workspace, target), {"role": "viewer", "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302 and _membership(workspace, member).role == "viewer"
