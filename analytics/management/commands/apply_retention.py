from __future__ import annotations

from django.core.management.base import BaseCommand

from analytics import recompute, retention


class Command(BaseCommand):
    help = (
        "Create the log table's partitions ahead (Postgres), delete logs, bodies and rollups past their "
        "retention, then refresh the metadata key registry. Celery beat runs these periodically; this "
        "command is for cron in the embedded (no Redis) mode and for operators."
    )

    def handle(self, *args, **options) -> None:
        created = retention.maintain_partitions()
        report = retention.apply_retention()
        keys = recompute.refresh_metadata_keys()
        counts = ", ".join(f"{name.replace('_', ' ')}: {count}" for name, count in sorted(report.items()))
        self.stdout.write(f"Partitions created: {len(created)}, {counts}, registry keys refreshed: {keys}.")
