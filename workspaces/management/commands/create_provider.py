import os

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand

from workspaces import services
from workspaces.management.cli import get_workspace, validation_failed

OPTIONS = {
    "slug": "--slug",
    "base_url": "--base-url",
    "name": "--name",
    "kind": "--kind",
    "api_version": "--api-version",
    "deployment": "--deployment",
    "__all__": "--slug",
}


class Command(BaseCommand):
    help = (
        "Create a provider (upstream credentials) in a workspace. Prints '@slug', the value clients "
        "send in x-portkey-provider, as the last line of stdout."
    )

    def add_arguments(self, parser):
        parser.add_argument("--workspace", required=True, help="Workspace slug.")
        parser.add_argument("--slug", required=True, help="Clients select the provider with x-portkey-provider: @slug.")
        parser.add_argument("--base-url", required=True, help="e.g. https://api.openai.com/v1")
        parser.add_argument(
            "--api-key",
            help="Upstream API key, stored encrypted. Default: the PROVIDER_API_KEY environment variable, "
            "which keeps the key out of shell history.",
        )
        parser.add_argument("--name", default="", help="Display name (default: the slug).")
        parser.add_argument(
            "--kind", default="openai", help="openai (default, and compatible), azure-openai, anthropic or google."
        )
        parser.add_argument(
            "--api-version", default="", help="Azure api-version, or Anthropic's default anthropic-version."
        )
        parser.add_argument("--deployment", default="", help="Azure only: the deployment every request goes to.")

    def handle(self, *args, **options):
        workspace = get_workspace(options["workspace"])
        secret = options["api_key"] if options["api_key"] is not None else os.environ.get("PROVIDER_API_KEY", "")
        try:
            provider = services.provider_create(
                workspace=workspace,
                slug=options["slug"],
                base_url=options["base_url"],
                api_key=secret.strip(),
                name=options["name"],
                kind=options["kind"],
                api_version=options["api_version"],
                deployment=options["deployment"],
                via="command",
            )
        except ValidationError as exc:
            raise validation_failed(exc, OPTIONS) from None
        stored = "with an encrypted API key" if provider.has_secret else "without an API key"
        self.stderr.write(f"Created provider '{provider.name}' in workspace '{workspace.slug}' {stored}.")
        self.stdout.write(f"@{provider.slug}")
