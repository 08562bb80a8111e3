from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from analytics.pricing import load_pricing
from workspaces.models import Workspace


class Command(BaseCommand):
    help = (
        "Load price overrides (they beat the genai-prices catalogue) from a JSON file: "
        '{"prices": [{"model": "gpt-4o", "input": "2.50", "output": "10", "cache_read": "1.25"}]}, '
        "USD per million tokens; optional rates: cache_read, cache_write, reasoning, audio_input, audio_output."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", help="The JSON file.")
        parser.add_argument("--workspace", metavar="SLUG", help="Overrides for this workspace (default: all).")
        parser.add_argument("--overwrite", action="store_true", help="Replace overrides that already exist.")

    def handle(self, *args, path: str, workspace: str | None, overwrite: bool, **options):
        target = None
        if workspace:
            target = Workspace.objects.filter(slug=workspace).first()
            if target is None:
                raise CommandError(f"No workspace with slug {workspace!r}.")
        try:
            count = load_pricing(path=Path(path), workspace=target, overwrite=overwrite, via="command")
        except (OSError, ValueError, KeyError) as exc:
            raise CommandError(f"{path}: {exc}") from None
        self.stdout.write(f"{count} price override(s) loaded")
