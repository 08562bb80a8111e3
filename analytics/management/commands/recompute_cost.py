from django.core.management.base import BaseCommand, CommandError

from analytics import recompute
from config.parsing import InvalidParameter, parse_timestamp
from workspaces.models import Workspace


class Command(BaseCommand):
    help = (
        "Price a workspace's logs of a time window again with today's prices (after a price override "
        "was added or changed, or a newer catalogue), update their cost and price version, rebuild the "
        "rollups from --since's hour and record the change in the audit trail."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--workspace", metavar="SLUG", required=True)
        parser.add_argument("--since", metavar="ISO", required=True, help="e.g. 2026-11-01T00:00Z (naive = UTC).")
        parser.add_argument("--until", metavar="ISO", help="Exclusive end (default: now).")
        parser.add_argument("--chunk-size", type=int, default=5000, help="Logs read per query (default 5000).")

    def handle(self, *args, **options) -> None:
        workspace = Workspace.objects.filter(slug=options["workspace"]).first()
        if workspace is None:
            raise CommandError(f"No workspace with slug {options['workspace']!r}.")
        try:
            since = parse_timestamp(options["since"], param="--since")
            until = parse_timestamp(options["until"], param="--until") if options["until"] else None
        except InvalidParameter as exc:
            raise CommandError(str(exc)) from None
        if until is not None and until <= since:
            raise CommandError("--until must be after --since.")
        if options["chunk_size"] < 1:
            raise CommandError("--chunk-size must be at least 1.")
        result = recompute.recompute_cost(
            workspace=workspace, since=since, until=until, chunk_size=options["chunk_size"]
        )
        self.stdout.write(
            f"Priced {result.logs} log(s) again: {result.changed} changed; "
            f"cost {result.cost_before} -> {result.cost_after} USD."
        )
