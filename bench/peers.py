"""Peer gateways for bench/gateway_overhead.py --peers: LiteLLM's proxy (PyPI) and Portkey's
open-source gateway (npm), installed on demand into a folder of their own and pointed at the
same mock upstream as Portico. Nothing here touches the project's virtualenv.

- LiteLLM: ``pip install 'litellm[proxy]'`` into ``<dir>/litellm-venv``; run as
  ``litellm --config <yaml> --port P --num_workers N`` with one model (``openai/`` provider,
  ``api_base`` = the mock's /v1), a master key, no database, no telemetry, the bundled model
  cost map (no network fetch at start-up).
- Portkey: ``npm install @portkey-ai/gateway`` into ``<dir>/portkey``; run as
  ``node <pkg>/build/start-server.js --port=P --headless`` (what ``npx @portkey-ai/gateway``
  runs) and called with ``x-portkey-provider: openai`` + ``x-portkey-custom-host: <mock>/v1``.
  The install pins ``@hono/node-server`` to 1.13.5 through an npm override: the version
  Portkey's own repository patches and locks. With the newest 1.19.x that npm picks by
  default, every streaming request fails (``TypeError: immutable`` in Portkey's
  ``updateHeaders``: the newer server's Response hands back the upstream's immutable headers);
  non-streaming calls work with either.

Installs are reused when present (``--peers-dir``; default: a folder under the system temp
directory), so only the first ``--peers`` run downloads anything.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import venv
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DIR = Path(tempfile.gettempdir()) / "portico-bench-peers"
LITELLM_SPEC = "litellm[proxy]"
PORTKEY_PACKAGE = "@portkey-ai/gateway"
PORTKEY_NODE_SERVER_OVERRIDE = "1.13.5"
MODEL = "gpt-4o-mini"


class PeerUnavailable(RuntimeError):
    """A peer could not be installed or started here; the message says why."""


@dataclass
class Peer:
    """How to start one peer and how to call it."""

    name: str
    version: str
    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    health_path: str
    workers: int
    headers: dict[str, str] = field(default_factory=dict)
    notes: str = ""


def _run(cmd: list[str], log: Path, cwd: Path | None = None, env: dict | None = None, timeout: float = 1800) -> None:
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PeerUnavailable(f"{cmd[0]} failed: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise PeerUnavailable(f"`{' '.join(cmd)}` exited with {proc.returncode}:\n{tail}")


# --------------------------------------------------------------------------- LiteLLM


def install_litellm(base: Path, log: Path) -> tuple[Path, str]:
    """(litellm executable, version), installing into ``base/litellm-venv`` if needed."""
    env_dir = base / "litellm-venv"
    exe = env_dir / "bin" / "litellm"
    python = env_dir / "bin" / "python"
    if not exe.exists():
        print(f"  installing {LITELLM_SPEC} into {env_dir} (first run only; a few minutes)", flush=True)
        if env_dir.exists():
            shutil.rmtree(env_dir)
        venv.EnvBuilder(with_pip=True).create(env_dir)
        _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", LITELLM_SPEC], log)
    if not exe.exists():
        raise PeerUnavailable(f"pip installed {LITELLM_SPEC} but {exe} is missing")
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return exe, version or "unknown"


def litellm_peer(base: Path, log: Path, port: int, mock_v1: str, workers: int, run_dir: Path) -> Peer:
    exe, version = install_litellm(base, log)
    master_key = "sk-bench-" + secrets.token_hex(16)
    config = run_dir / "litellm.yaml"  # per run (it holds the run's master key)
    # YAML is a superset of JSON: no PyYAML needed on our side.
    config.write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": MODEL,
                        "litellm_params": {"model": f"openai/{MODEL}", "api_base": mock_v1, "api_key": "sk-mock-bench"},
                    }
                ],
                "litellm_settings": {"telemetry": False},
                "general_settings": {"master_key": master_key},
            },
            indent=2,
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "VIRTUAL_ENV", "PYTHONPATH")}
    env.update(LITELLM_TELEMETRY="False", LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR")
    env["PATH"] = f"{exe.parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--num_workers", str(workers)]
    return Peer(
        name="litellm",
        version=f"litellm {version}",
        cmd=cmd,
        env=env,
        cwd=run_dir,
        health_path="/health/liveliness",
        workers=workers,
        headers={"authorization": f"Bearer {master_key}"},
        notes=f"LiteLLM proxy {version}, {workers} uvicorn worker(s), no database, master key auth",
    )


# --------------------------------------------------------------------------- Portkey


def install_portkey(base: Path, log: Path) -> tuple[Path, str]:
    """(build/start-server.js, version), installing into ``base/portkey`` if needed."""
    pkg_dir = base / "portkey"
    script = pkg_dir / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if not script.exists():
        npm = shutil.which("npm")
        if npm is None or shutil.which("node") is None:
            raise PeerUnavailable("node/npm not found on PATH (Portkey's gateway is a Node.js package)")
        print(f"  installing {PORTKEY_PACKAGE} into {pkg_dir} (first run only)", flush=True)
        pkg_dir.mkdir(parents=True, exist_ok=True)
        manifest = {
            "name": "portico-bench-portkey",
            "version": "1.0.0",
            "private": True,
            "dependencies": {PORTKEY_PACKAGE: "latest"},
            "overrides": {"@hono/node-server": PORTKEY_NODE_SERVER_OVERRIDE},
        }
        (pkg_dir / "package.json").write_text(json.dumps(manifest, indent=2))
        _run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], log, cwd=pkg_dir)
    if not script.exists():
        raise PeerUnavailable(f"npm installed {PORTKEY_PACKAGE} but {script} is missing")
    meta = json.loads((script.parent.parent / "package.json").read_text())
    return script, meta.get("version", "unknown")


def portkey_peer(base: Path, log: Path, port: int, mock_v1: str) -> Peer:
    script, version = install_portkey(base, log)
    node = shutil.which("node")
    if node is None:
        raise PeerUnavailable("node not found on PATH")
    node_version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    env = dict(os.environ, NODE_ENV="production")
    return Peer(
        name="portkey",
        version=f"@portkey-ai/gateway {version} (node {node_version})",
        cmd=[node, str(script), f"--port={port}", "--headless"],
        env=env,
        cwd=script.parent,
        health_path="/",
        workers=1,
        headers={
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": mock_v1,
            "authorization": "Bearer sk-mock-bench",
        },
        notes=f"@portkey-ai/gateway {version} on node {node_version}, one process (as shipped),"
        f" @hono/node-server {PORTKEY_NODE_SERVER_OVERRIDE}",
    )


def make_peers(
    names: list[str], base: Path, log: Path, ports: dict[str, int], mock_v1: str, workers: int, run_dir: Path
) -> tuple[list[Peer], dict[str, str]]:
    """The peers that could be prepared, and for the others the reason they could not.
    ``base`` keeps the installs between runs; ``run_dir`` gets this run's config files."""
    base.mkdir(parents=True, exist_ok=True)
    peers: list[Peer] = []
    failed: dict[str, str] = {}
    for name in names:
        try:
            if name == "litellm":
                peers.append(litellm_peer(base, log, ports[name], mock_v1, workers, run_dir))
            elif name == "portkey":
                peers.append(portkey_peer(base, log, ports[name], mock_v1))
            else:
                raise PeerUnavailable(f"unknown peer {name!r}")
        except PeerUnavailable as exc:
            failed[name] = str(exc)
            print(f"!!! peer {name} unavailable: {exc}", file=sys.stderr, flush=True)
    return peers, failed
