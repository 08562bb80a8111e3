from __future__ import annotations

import signal
import time

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from analytics import pipeline
from analytics.metrics_listener import start_metrics_listener


class Command(BaseCommand):
    help = (
        "Write log batches from the Redis stream (LOG_STREAM_KEY) to the database until Ctrl-C or "
        "SIGTERM: a dedicated consumer process instead of, or beside, the Celery beat task."
    )

    def handle(self, *args, **options) -> None:
        if not settings.REDIS_URL:
            raise CommandError("REDIS_URL is not set: in embedded mode the gateway writes logs itself.")
        stopping = False

        def stop(signum, frame) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        client = pipeline.redis_client()
        name = pipeline.consumer_name()
        listener = start_metrics_listener()  # with METRICS_BIND: a candidate, like the servers
        self.stdout.write(f"Consuming {settings.LOG_STREAM_KEY} as {name} (Ctrl-C to stop).")
        total = 0
        # Short rounds so a signal is honoured within about a second; a batch being written
        # when it arrives is finished and acknowledged first.
        while not stopping:
            try:
                total += pipeline.consume_log_stream(client=client, consumer=name, max_seconds=1.0)
            except redis.RedisError as exc:
                self.stderr.write(f"Redis unavailable ({type(exc).__name__}); retrying in 1 s.")
                time.sleep(1)
        if listener is not None:
            listener.stop()
        self.stdout.write(f"Stopped after writing {total} log record(s).")
