"""The browser-test harness itself: pages report CSP violations and console errors (so a
blocked inline handler fails its test), and a missing Chromium stops the run at once with the
install command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser.conftest import INSTALL_HINT

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_blocked_inline_handler_and_a_console_error_are_reported(open_page, live_server):
    page = open_page()
    page.goto(f"{live_server.url}/login/")
    # What a template with onclick="..." does under our CSP: the handler never runs.
    page.evaluate(
        """() => {
            const b = document.createElement("button");
            b.id = "inline";
            b.setAttribute("onclick", "document.title = 'ran'");
            document.body.append(b);
        }"""
    )
    page.click("#inline")
    page.evaluate("console.error('boom')")
    page.wait_for_function("true")  # let the console events arrive
    messages = list(open_page.problems.messages)
    open_page.problems.messages.clear()  # reported here, so teardown does not fail this test
    assert page.title() != "ran"
    assert any("Content Security Policy" in m for m in messages), messages
    assert any("CSP violation: script-src-attr" in m for m in messages), messages
    assert any(m.startswith("console error: boom") for m in messages), messages


def test_a_missing_chromium_stops_the_run_with_the_install_command():
    env = {**os.environ, "PORTICO_CHROMIUM": "/nonexistent/chromium"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/browser/test_dashboard.py", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert "Chromium at /nonexistent/chromium, which is missing" in output
    assert INSTALL_HINT in output
    assert "no tests ran" in output, output  # one message, not a failure per test
