from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from workspaces import services
from workspaces.management.cli import parse_json_object, validation_failed

OPTIONS = {
    "slug": "SLUG",
    "name": "--name",
    "default_metadata": "--metadata",
    "metadata_schema": "--schema",
    "log_retention_days": "--retention-days",
}


class Command(BaseCommand):
    help = "Create a workspace. Prints its slug as the last line of stdout."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="Lower-case letters, digits, '-' and '_'.")
        parser.add_argument("--name", default="", help="Display name (default: the slug).")
        parser.add_argument("--metadata", help='Default metadata as a JSON object, e.g. \'{"environment": "prod"}\'.')
        parser.add_argument("--schema", help="Metadata schema as a JSON object (JSON Schema subset).")
        parser.add_argument("--retention-days", type=int, default=30, help="Days to keep request logs.")
        parser.add_argument("--no-store-bodies", action="store_true", help="Do not store request/response bodies.")
        parser.add_argument("--allow-custom-hosts", action="store_true", help="Allow x-portkey-custom-host requests.")
        parser.add_argument("--owner", help="Username made owner of the workspace.")

    def handle(self, *args, **options):
        if options["retention_days"] < 1:
            raise CommandError("--retention-days must be at least 1.")
        owner = None
        if options["owner"]:
            try:
                owner = get_user_model().objects.get_by_natural_key(options["owner"])
            except get_user_model().DoesNotExist:
                raise CommandError(f"--owner: no user named '{options['owner']}'.") from None
        try:
            workspace = services.workspace_create(
                slug=options["slug"],
                name=options["name"],
                default_metadata=parse_json_object(options["metadata"], "--metadata"),
                metadata_schema=parse_json_object(options["schema"], "--schema"),
                log_retention_days=options["retention_days"],
                store_bodies=not options["no_store_bodies"],
                allow_custom_hosts=options["allow_custom_hosts"],
                owner=owner,
                via="command",
            )
        except ValidationError as exc:
            raise validation_failed(exc, OPTIONS) from None
        self.stderr.write(f"Created workspace '{workspace.name}'.")
        self.stdout.write(workspace.slug)
