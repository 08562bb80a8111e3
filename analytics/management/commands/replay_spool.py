from __future__ import annotations

from django.core.management.base import BaseCommand

from analytics import pipeline


class Command(BaseCommand):
    help = "Write spooled log batches (LOG_SPOOL_DIR) to the database, then delete the spool files."

    def handle(self, *args, **options) -> None:
        written = pipeline.replay_spool()
        self.stdout.write(f"Replayed {written} log record(s).")
