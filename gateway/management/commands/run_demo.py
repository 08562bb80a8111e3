"""Local demo: the mock upstream, the gateway+admin under uvicorn, a demo workspace with a key
and an ``@mock`` provider, a few weeks of seeded history (``seed_demo``, first start only) and a
few live requests, so the dashboard is never empty. Ctrl-C stops all."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from cryptography.fernet import InvalidToken
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from analytics.models import RequestLog
from workspaces import keys, services
from workspaces.models import ApiKey, Membership, Provider, Workspace

DEMO_REQUESTS = [
    {"_user": "alice", "environment": "production", "feature": "chat-assist"},
    {"_user": "bob", "environment": "production", "feature": "summarization"},
    {"_user": "alice", "environment": "staging", "feature": "summarization"},
    {"_user": "carol", "environment": "production", "feature": "search"},
]


class Command(BaseCommand):
    help = "Run the mock upstream and the gateway with a demo workspace (local development)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--mock-port", type=int, default=9100)
        parser.add_argument("--no-traffic", action="store_true", help="Do not send the demo requests.")
        parser.add_argument(
            "--seed-logs", type=int, default=3000, help="Seeded history for an empty demo workspace (0: none)."
        )

    def handle(self, *args, host: str, port: int, mock_port: int, no_traffic: bool, seed_logs: int, **options):
        # Before anything starts: with a port taken, the health check and the demo traffic would
        # reach whatever listens there and the banner would claim a server that never started.
        _require_free_port(host, port, "PORT")
        _require_free_port("127.0.0.1", mock_port, "MOCK_PORT")
        # `kill`, `timeout` and `docker stop` send SIGTERM: stop the children as Ctrl-C does
        # instead of leaving them holding the ports.
        signal.signal(signal.SIGTERM, _interrupt)
        mock_url = f"http://127.0.0.1:{mock_port}/v1"
        workspace, key = self._demo_data(mock_url)
        if seed_logs and not RequestLog.objects.filter(workspace=workspace).exists():
            self.stdout.write(f"Seeding {seed_logs:,} demo logs over the last 30 days ...")
            call_command("seed_demo", logs=seed_logs, workspace=workspace.slug, stdout=io.StringIO())
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(settings.BASE_DIR / "bench" / "mock_upstream.py"),
                    "--port",
                    str(mock_port),
                    "--latency-ms",
                    "120",
                    "--chunk-delay-ms",
                    "40",
                ],
            ),
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "config.asgi:application",
                    "--host",
                    host,
                    "--port",
                    str(port),
                    "--lifespan",
                    "on",
                    "--no-access-log",
                ],
                env={**os.environ, "DEBUG": os.environ.get("DEBUG", "true")},
            ),
        ]
        base = f"http://{host}:{port}"
        try:
            self._wait_for(base + "/healthz", procs)
            if not no_traffic:
                self._send_traffic(base, key)
            self._banner(base, workspace, key)
            while all(p.poll() is None for p in procs):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(timeout=15)

    def _demo_data(self, mock_url: str) -> tuple[Workspace, str]:
        workspace = Workspace.objects.filter(slug="demo").first() or services.workspace_create(
            slug="demo",
            name="Demo workspace",
            metadata_schema={
                "type": "object",
                "properties": {
                    "environment": {
                        "type": "string",
                        "enum": ["production", "staging", "development"],
                        "default": "development",
                    }
                },
            },
            via="command",
        )
        User = get_user_model()
        admin = User.objects.filter(username="admin").first()
        if admin is None:
            admin = User.objects.create_superuser("admin", "admin@example.com", "admin")
        services.membership_add(workspace=workspace, user=admin, role=Membership.Role.OWNER, via="command")
        provider = Provider.objects.filter(workspace=workspace, slug="mock").first()
        if provider is None:
            services.provider_create(
                workspace=workspace, slug="mock", base_url=mock_url, api_key="sk-mock-demo", via="command"
            )
        else:
            changes = {"base_url": mock_url} if provider.base_url != mock_url else {}
            if not self._secret_readable(provider):
                # Encrypted under an earlier development secret (checkouts from before
                # var/dev-secret-key): the mock accepts any key, so store the demo one again.
                changes["secret"] = "sk-mock-demo"
            if changes:
                services.provider_update(provider=provider, via="command", **changes)
        return workspace, self._demo_key(workspace)

    @staticmethod
    def _secret_readable(provider: Provider) -> bool:
        try:
            provider.get_secret()
        except InvalidToken:
            return False
        return True

    def _demo_key(self, workspace: Workspace) -> str:
        # Keys are stored hashed, so the demo key is kept in var/ (local development only)
        # to print the same one on every start.
        path = Path(settings.VAR_DIR) / "demo-api-key.txt"
        if path.exists():
            key = path.read_text().strip()
            api_key = ApiKey.objects.filter(prefix=keys.lookup_prefix(key)).first()
            if api_key and api_key.is_usable and keys.key_matches(key, api_key.hashed_key):
                return key
        _, key = services.api_key_create(
            workspace=workspace, name="demo key", default_metadata={"team": "demo"}, via="command"
        )
        path.write_text(key + "\n")
        path.chmod(0o600)
        return key

    def _wait_for(self, url: str, procs: list[subprocess.Popen], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(proc.poll() is not None for proc in procs):
                raise SystemExit("the mock upstream or the server stopped while starting: see its error above")
            try:
                httpx.get(url, timeout=1).raise_for_status()
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit(f"server did not come up at {url}")

    def _send_traffic(self, base: str, key: str) -> None:
        for i, metadata in enumerate(DEMO_REQUESTS * 3):
            body = {
                "model": ["gpt-4o-mini", "gpt-4o"][i % 2],
                "messages": [{"role": "user", "content": f"demo request {i}"}],
            }
            httpx.post(
                base + "/v1/chat/completions",
                json=body,
                headers={
                    "x-portkey-api-key": key,
                    "x-portkey-provider": "@mock",
                    "x-portkey-metadata": json.dumps(metadata),
                },
                timeout=10,
            )

    def _banner(self, base: str, workspace: Workspace, key: str) -> None:
        self.stdout.write(
            f"""
Portico is running.
  Dashboard:  {base}/   (user admin / password admin)
  Gateway:    {base}/v1   (provider @mock = the local mock upstream)
  Admin:      {base}/admin/
  Workspace:  {workspace.slug}
  API key:    {key}

Try it:
  curl {base}/v1/chat/completions \\
    -H 'content-type: application/json' -H 'x-portkey-api-key: {key}' \\
    -H 'x-portkey-provider: @mock' -H 'x-portkey-metadata: {{"_user": "me", "feature": "readme"}}' \\
    -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "Hello"}}]}}'

Press Ctrl-C to stop.
"""
        )
        self.stdout.flush()


def _require_free_port(host: str, port: int, variable: str) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise SystemExit(
                f"Port {port} on {host} is in use (another `make run`?). Stop what listens there, "
                f"or pick a free port: make run {variable}={port + 1}"
            ) from None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
