"""Shared parsing and error reporting for the workspace management commands: every failure
becomes a CommandError that names the option to fix, so scripts and people know what to change."""

from __future__ import annotations

import json

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.management.base import CommandError

from workspaces.models import Workspace


def parse_json_object(raw: str | None, option: str) -> dict | None:
    """The JSON object given to ``option``, or None when the option was not given."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CommandError(f'{option} must be a JSON object, e.g. \'{{"environment": "production"}}\'.')
    return value


def get_workspace(slug: str) -> Workspace:
    try:
        return Workspace.objects.get(slug=slug)
    except Workspace.DoesNotExist:
        raise CommandError(f"--workspace: no workspace with slug '{slug}'.") from None


def validation_failed(exc: ValidationError, options: dict[str, str]) -> CommandError:
    """A CommandError listing each model error under the command-line option it came from."""
    if not hasattr(exc, "error_dict"):
        return CommandError("; ".join(exc.messages))
    lines = []
    for field, messages in exc.message_dict.items():
        where = options.get(field, "error" if field == NON_FIELD_ERRORS else field)
        lines += [f"{where}: {message}" for message in messages]
    return CommandError("\n".join(lines))
