"""manage.py add_member: adds or re-roles a member idempotently, creates the account only with
--email, names the option at fault, and lands in the audit trail as a command."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from workspaces.models import AuditEvent, Membership

pytestmark = pytest.mark.django_db


def _run(*args: str) -> tuple[list[str], str]:
    out, err = StringIO(), StringIO()
    call_command("add_member", *args, stdout=out, stderr=err)
    return out.getvalue().splitlines(), err.getvalue()


def test_it_adds_an_existing_user_and_prints_name_and_role(workspace, outsider):
    lines, _ = _run("--workspace", "acme", "--username", "outsider", "--role", "viewer")
    assert lines[-1] == "outsider viewer"
    assert workspace.memberships.get(user=outsider).role == "viewer"
    event = AuditEvent.objects.filter(action="membership.add").latest("id")
    assert (event.via, event.actor_label, event.after) == ("command", "command", {"role": "viewer", "user": "outsider"})


def test_running_it_again_changes_the_role_once(workspace, member):
    _, said = _run("--workspace", "acme", "--username", "member", "--role", "admin")
    assert "from member to admin" in said
    _, said = _run("--workspace", "acme", "--username", "member", "--role", "admin")
    assert "nothing changed" in said
    assert workspace.memberships.get(user=member).role == "admin"
    assert AuditEvent.objects.filter(action="membership.update").count() == 1


def test_it_creates_a_missing_user_only_with_an_email(workspace):
    lines, said = _run("--workspace", "acme", "--username", "newbie", "--email", "New@Example.com", "--role", "member")
    user = get_user_model().objects.get(username="newbie")
    assert lines[-1] == "newbie member" and not user.has_usable_password()
    assert "changepassword newbie" in said
    assert workspace.memberships.filter(user=user, role="member").exists()


def test_it_refuses_an_unknown_user_without_email(workspace):
    with pytest.raises(CommandError, match="--username: no user named 'ghost'; pass --email"):
        _run("--workspace", "acme", "--username", "ghost", "--role", "member")
    assert not get_user_model().objects.filter(username="ghost").exists()


def test_it_names_unknown_workspace_and_role(workspace, outsider):
    with pytest.raises(CommandError, match="--workspace: no workspace with slug 'nope'"):
        _run("--workspace", "nope", "--username", "outsider", "--role", "member")
    with pytest.raises(CommandError, match="--role: unknown role 'boss'; choose one of owner, admin, member, viewer"):
        _run("--workspace", "acme", "--username", "outsider", "--role", "boss")
    assert not Membership.objects.filter(user=outsider, workspace=workspace).exists()


def test_it_refuses_an_invalid_email_for_a_new_user(workspace):
    with pytest.raises(CommandError, match="--email"):
        _run("--workspace", "acme", "--username", "newbie", "--email", "not-an-email", "--role", "member")


def test_it_will_not_demote_the_last_owner(workspace, owner):
    with pytest.raises(CommandError, match="last owner"):
        _run("--workspace", "acme", "--username", "owner", "--role", "member")
    assert workspace.memberships.get(user=owner).role == "owner"
