"""`make run` (manage.py run_demo) with its port taken: it stops before starting anything and
says which port and how to choose another. It used to health-check and send the demo traffic
to whatever listened there, print "Portico is running" and exit."""

from __future__ import annotations

import socket
import subprocess

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


@pytest.fixture
def busy_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.fixture
def no_processes(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"run_demo started a process: {args[0]}")

    monkeypatch.setattr(subprocess, "Popen", refuse)


@pytest.mark.parametrize(("option", "variable"), [("port", "PORT"), ("mock_port", "MOCK_PORT")])
def test_it_stops_at_once_when_a_port_is_taken(busy_port, no_processes, option, variable):
    free = {"port": 0, "mock_port": 0}  # port 0: any free port, so only the busy one is refused
    with pytest.raises(SystemExit) as stopped:
        call_command("run_demo", **{**free, option: busy_port}, no_traffic=True, seed_logs=0)
    message = str(stopped.value)
    assert f"Port {busy_port} on 127.0.0.1 is in use" in message
    assert f"make run {variable}={busy_port + 1}" in message
