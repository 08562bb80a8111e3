"""The log writer with OpenTelemetry export off and on, in the same run and database.

Every measurement points the bench workspace's export at an OTLP/HTTP receiver on loopback in a
separate process (as a collector would be) that decodes every request with opentelemetry-proto
and counts the spans; export is disabled for the "off" measurement and enabled for "on", back to
back in each round.

``--mode writer`` (default): each round writes ``--batches`` x ``--batch-size`` gateway-shaped
records (bench_ingest's ``make_records``) with ``analytics.ingest.write_log_batch`` in this
process, the writer's transaction (default 5,000 records: LOG_WRITER_BATCH_RECORDS).

``--mode celery``: the production writer. A fresh Redis stream is pre-filled with
``--stream-records`` records the way the gateway fills it (``--entry-size`` per entry) and
drained by a real ``celery -A config worker -B --concurrency N`` (bench_ingest's ``celery``
method: DEBUG off, production settings; ``--celery-concurrency``, default 2 as in
docker-compose.yml), whose pool processes each run their own exporter thread. The clock runs
from the worker's first read of the stream to the stream being empty with nothing pending.

- ``writer logs/s`` is the writer's own rate: the clock stops when the last batch is committed.
  With export on, the exporter thread shares the process (and its GIL) with the writer, so what
  encoding and sending costs the writer is in this number.
- ``exported/s`` is records / time until the receiver has every span (or the exporter gave up):
  whether the exporter keeps up. Spans that never arrive (dropped: queue full, failures) are
  printed; a measurement with drops is not a pass.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portico_bench .venv/bin/python bench/bench_otel_export.py
    [--mode writer|celery] [--batches 8] [--batch-size 5000] [--rounds 3]
    [--stream-records 40000] [--entry-size 50] [--celery-concurrency 2] [--redis-url redis://...]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "true")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from analytics import otel_export, pipeline  # noqa: E402
from analytics.ingest import write_log_batch  # noqa: E402
from analytics.models import RequestLog  # noqa: E402
from bench import stack  # noqa: E402
from bench.bench_ingest import _check_drained, clean_workspace, make_records, prefill_stream, timed  # noqa: E402
from workspaces import services  # noqa: E402
from workspaces.models import ApiKey, Workspace  # noqa: E402


def _serve(port: int, spans: multiprocessing.Value, ready: multiprocessing.Event) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as collectors do

        def do_POST(self) -> None:
            request = ExportTraceServiceRequest.FromString(self.rfile.read(int(self.headers["Content-Length"])))
            count = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
            with spans.get_lock():
                spans.value += count
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    ready.set()
    server.serve_forever()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _round(workspace: Workspace, api_key: ApiKey | None, args, received) -> tuple[float, float | None]:
    batches = [make_records(workspace, api_key, args.batch_size) for _ in range(args.batches)]
    total = args.batches * args.batch_size
    before = received.value
    started, cpu_started = time.perf_counter(), time.process_time()
    elapsed = timed(write_log_batch, batches)
    args.cpu_us = (time.process_time() - cpu_started) / total * 1e6
    if received is None or not args.exporting:
        return total / elapsed, None
    otel_export.exporter().flush(timeout=120)
    while received.value - before < total and time.perf_counter() - started < 120:
        if otel_export.export_counters["dropped_queue_full"] + otel_export.export_counters["dropped_failed"]:
            break
        time.sleep(0.005)
    return total / elapsed, (received.value - before) / (time.perf_counter() - started)


def _celery_round(client, workspace: Workspace, api_key: ApiKey | None, args, received) -> tuple[float, float | None]:
    """A real Celery worker drains a pre-filled stream; (writer logs/s, exported spans/s or None)."""
    key = f"portico:bench:otel:{uuid.uuid4()}"
    total = args.stream_records
    records = make_records(workspace, api_key, total)
    log_dir = Path(tempfile.mkdtemp(prefix="portico-bench-otel-"))
    env = stack.portico_env(
        database_url=os.environ["DATABASE_URL"],
        redis_url=args.redis_url,
        var_dir=log_dir,
        keys=stack.new_secrets(),
        stream_key=key,
    )
    worker = stack.CeleryWorker(env, log_dir, name="bench-otel-celery", concurrency=args.celery_concurrency)
    try:
        prefill_stream(client, key, records, args.entry_size)
        pipeline.ensure_group(client, key)
        rows_before = RequestLog.objects.filter(workspace=workspace).count()
        before = received.value
        worker.start()
        started = finished = all_reading = None
        give_up = time.monotonic() + 60 + total / 1000
        while finished is None:
            worker.process.check_alive(" while draining the stream")
            if time.monotonic() > give_up:
                raise SystemExit(f"celery: stream not drained in time; worker log {worker.process.log_path}")
            if started is None:
                group = client.xinfo_groups(key)[0]
                if group.get("entries-read") or group.get("pending"):
                    started = time.monotonic()
            elif client.xlen(key) == 0 and client.xpending(key, pipeline.CONSUMER_GROUP)["pending"] == 0:
                finished = time.monotonic()
            readers = client.xinfo_consumers(key, pipeline.CONSUMER_GROUP) if started and not all_reading else []
            if len(readers) >= args.celery_concurrency:
                all_reading = time.monotonic()
            time.sleep(0.005)
        _check_drained(client, key, workspace, rows_before, total, None)
        # Which pool processes read the stream, and how soon: with N pool processes all N should.
        readers = len(client.xinfo_consumers(key, pipeline.CONSUMER_GROUP))
        when = f", all {args.celery_concurrency} by {all_reading - started:.2f} s" if all_reading else ""
        print(f"  stream read by {readers} consumer(s) (pool processes){when}; drained in {finished - started:.2f} s")
        if not args.exporting:
            return total / (finished - started), None
        # Spans still queued in the pool processes' exporters arrive after the drain; a span
        # that never arrives within the retry budget was dropped.
        deadline = time.monotonic() + 45
        while received.value - before < total and time.monotonic() < deadline:
            time.sleep(0.005)
        got = received.value - before
        if got < total:
            print(f"  celery export on: only {got:,} of {total:,} spans arrived (dropped)", flush=True)
        return total / (finished - started), got / (time.monotonic() - started)
    finally:
        worker.stop()
        client.delete(key, f"{key}:dead")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mode", choices=("writer", "celery"), default="writer")
    parser.add_argument("--stream-records", type=int, default=40_000, help="celery mode: records per measurement")
    parser.add_argument("--entry-size", type=int, default=50, help="celery mode: records per stream entry")
    parser.add_argument("--celery-concurrency", type=int, default=2)
    parser.add_argument("--redis-url", default=settings.REDIS_URL or "redis://127.0.0.1:6379/15")
    args = parser.parse_args()
    client = None
    if args.mode == "celery":
        if not os.environ.get("DATABASE_URL"):
            parser.error("--mode celery needs DATABASE_URL (the worker is a separate process)")
        client = pipeline.redis_client(args.redis_url)
        client.ping()

    call_command("migrate", verbosity=0)
    workspace, _ = Workspace.objects.get_or_create(slug="bench-otel", defaults={"name": "Bench OTel export"})
    api_key = ApiKey.objects.filter(workspace=workspace).first()
    clean_workspace(workspace)
    port = _free_port()
    received = multiprocessing.Value("q", 0)
    ready = multiprocessing.Event()
    receiver = multiprocessing.Process(target=_serve, args=(port, received, ready), daemon=True)
    receiver.start()
    ready.wait(10)
    services.otel_export_update(workspace=workspace, endpoint=f"http://127.0.0.1:{port}/v1/traces", enabled=False)
    if args.mode == "celery":
        per = (
            f"{args.stream_records:,} records through a Redis stream ({args.entry_size}/entry) and a Celery worker, "
            f"concurrency {args.celery_concurrency}"
        )
    else:
        per = f"{args.batches} x {args.batch_size} records written in this process"
    print(f"{connection.vendor}; {per} per measurement; {args.rounds} round(s)")

    results: dict[str, list[float]] = {"off": [], "on": []}
    exported: list[float] = []
    try:
        for round_no in range(1, args.rounds + 1):
            for mode in ("off", "on"):
                services.otel_export_update(workspace=workspace, enabled=mode == "on")
                otel_export.exporter().refresh_soon()
                write_log_batch(make_records(workspace, api_key, 10))  # loads the settings
                otel_export.exporter().flush(timeout=10)
                time.sleep(0.2)
                args.exporting = mode == "on"
                if args.mode == "celery":
                    rate, export_rate = _celery_round(client, workspace, api_key, args, received)
                else:
                    rate, export_rate = _round(workspace, api_key, args, received)
                results[mode].append(rate)
                line = f"round {round_no} export {mode:3}: writer {rate:>9,.0f} logs/s"
                if args.mode == "writer":
                    # This process's CPU (writer and exporter thread) per log, until the last commit.
                    line += f" ({args.cpu_us:.1f} us CPU/log)"
                if export_rate is not None:
                    exported.append(export_rate)
                    line += f", exported {export_rate:>9,.0f} spans/s"
                print(line, flush=True)
    finally:
        clean_workspace(workspace)
        receiver.terminate()
    off, on = max(results["off"]), max(results["on"])
    counters = dict(otel_export.export_counters)
    print()
    writer = "Celery worker (stream drained)" if args.mode == "celery" else "writer (write_log_batch)"
    print(f"| {writer} | logs/s (best) | median |")
    print("| --- | ---: | ---: |")
    print(f"| export off | {off:,.0f} | {statistics.median(results['off']):,.0f} |")
    print(f"| export on (loopback receiver) | {on:,.0f} | {statistics.median(results['on']):,.0f} |")
    print(
        f"| exporter delivery (spans/s, to the receiver) | {max(exported):,.0f} | {statistics.median(exported):,.0f} |"
    )
    print()
    # Paired per round (off then on, back to back): steadier than best/best on a busy machine.
    paired = [o / f for o, f in zip(results["on"], results["off"], strict=True)]
    median_ratio = statistics.median(results["on"]) / statistics.median(results["off"])
    print(f"on/off ratio: best {on / off:.2f}, medians {median_ratio:.2f}, per round {statistics.median(paired):.2f}")
    print("per-round ratios: " + ", ".join(f"{r:.2f}" for r in paired))
    if args.mode == "writer":
        print(f"exporter counters: {counters}")  # the Celery worker's are in its own processes


if __name__ == "__main__":
    main()
