from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from workspaces import services
from workspaces.management.cli import get_workspace, parse_json_object, validation_failed
from workspaces.models import ApiKey

OPTIONS = {
    "name": "--name",
    "scopes": "--scopes",
    "default_metadata": "--metadata",
    "metadata_schema": "--schema",
    "expires_at": "--expires-in-days",
}


class Command(BaseCommand):
    help = (
        "Create an API key. The full key is printed alone on the last line of stdout and cannot be "
        "shown again; details go to stderr."
    )

    def add_arguments(self, parser):
        parser.add_argument("--workspace", required=True, help="Workspace slug.")
        parser.add_argument("--name", required=True, help="Name shown in the dashboard and admin.")
        parser.add_argument("--metadata", help="Default metadata as a JSON object.")
        parser.add_argument("--schema", help="Metadata schema as a JSON object (JSON Schema subset).")
        parser.add_argument(
            "--scopes",
            nargs="+",
            choices=ApiKey.Scope.values,
            help=f"Default: {' '.join(ApiKey.DEFAULT_SCOPES)}.",
        )
        parser.add_argument("--expires-in-days", type=int, help="Default: never expires.")

    def handle(self, *args, **options):
        workspace = get_workspace(options["workspace"])
        expires_at = None
        if options["expires_in_days"] is not None:
            if options["expires_in_days"] < 1:
                raise CommandError("--expires-in-days must be at least 1.")
            expires_at = timezone.now() + timedelta(days=options["expires_in_days"])
        try:
            api_key, full_key = services.api_key_create(
                workspace=workspace,
                name=options["name"],
                scopes=options["scopes"],
                default_metadata=parse_json_object(options["metadata"], "--metadata"),
                metadata_schema=parse_json_object(options["schema"], "--schema"),
                expires_at=expires_at,
                via="command",
            )
        except ValidationError as exc:
            raise validation_failed(exc, OPTIONS) from None
        expiry = f", expires {api_key.expires_at:%Y-%m-%d %H:%M} UTC" if api_key.expires_at else ""
        self.stderr.write(
            f"Created API key '{api_key.name}' ({api_key.prefix}…) in workspace '{workspace.slug}', "
            f"scopes: {' '.join(api_key.scopes) or '(none)'}{expiry}. Store the key now: it cannot be shown again."
        )
        self.stdout.write(full_key)
