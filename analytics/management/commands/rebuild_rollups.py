from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from analytics import recompute
from config.parsing import InvalidParameter, parse_timestamp
from workspaces.models import Workspace


class Command(BaseCommand):
    help = (
        "Delete the hourly rollups in scope (whole hours from --since's hour) and rebuild them, and the "
        "metadata key registry, from the stored request logs. Log writers wait while it runs."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--workspace", metavar="SLUG", help="Only this workspace (default: all).")
        parser.add_argument(
            "--since", metavar="ISO", help="Only hours from this time on, e.g. 2026-11-01T00:00Z (naive = UTC)."
        )
        parser.add_argument("--chunk-size", type=int, default=5000, help="Logs read per query (default 5000).")

    def handle(self, *args, **options) -> None:
        workspace_id = None
        if options["workspace"]:
            workspace = Workspace.objects.filter(slug=options["workspace"]).first()
            if workspace is None:
                raise CommandError(f"No workspace with slug {options['workspace']!r}.")
            workspace_id = workspace.id
        since = None
        if options["since"]:
            try:  # the same reading of times as recompute_cost and the dashboard (naive = UTC)
                since = parse_timestamp(options["since"], param="--since")
            except InvalidParameter as exc:
                raise CommandError(exc.message) from None
        if options["chunk_size"] < 1:
            raise CommandError("--chunk-size must be at least 1.")
        result = recompute.rebuild_rollups(workspace_id=workspace_id, since=since, chunk_size=options["chunk_size"])
        self.stdout.write(
            f"Rebuilt rollups from {result.logs} log(s): {result.metadata_rows} metadata row(s), "
            f"{result.dimension_rows} dimension row(s), {result.pair_rows} pair row(s)."
        )
