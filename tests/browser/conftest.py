"""Browser tests: Playwright (Python) drives Debian's chromium against pytest-django's live
server. Screenshots of every page land in test-artifacts/screenshots/ (gitignored).

Chromium is the Debian package at /usr/bin/chromium (PORTICO_CHROMIUM overrides the path);
Playwright's own browser downloads are never used. When it is missing, the run stops before
any test with the one command that installs it.

Every page a test opens fails that test at teardown on a console error, an uncaught exception
or a Content-Security-Policy violation: a handler the CSP blocks does nothing visible, so
only the browser's report shows it."""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from analytics.ingest import write_log_batch
from tests.analytics.records import log_record
from workspaces import services

CHROMIUM = os.environ.get("PORTICO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INSTALL_HINT = "sudo apt-get install chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
PASSWORD = "browser-pass-123"

# The browser reports CSP violations to the console itself ("Refused to execute inline event
# handler ..."); the securitypolicyviolation event is a second witness in case a Chromium
# version logs them at another level.
REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", function (e) {
  console.error("CSP violation: " + e.violatedDirective + " blocked " + (e.blockedURI || "inline code") + " at " + e.sourceFile + ":" + e.lineNumber);
});
"""


def chromium_missing() -> bool:
    return not (shutil.which(CHROMIUM) or Path(CHROMIUM).is_file())


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: make test-fast needs no Chromium
def pytest_collection_modifyitems(session, config, items):
    # One clear stop instead of an error per test: browser tests never skip, and a newcomer
    # running `make test` needs the install command, not a wall of fixture failures.
    if config.option.collectonly or not chromium_missing():
        return
    if any(item.get_closest_marker("browser") for item in items):
        pytest.exit(
            f"Browser tests need Chromium at {CHROMIUM}, which is missing. "
            f"Install it with: {INSTALL_HINT}   (Debian/Ubuntu; the tests never download browsers)",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


class PageProblems:
    """Console errors, uncaught exceptions and CSP violations of the pages it watches."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.allowed: list[str] = []

    def allow(self, text: str) -> None:
        """A console message containing ``text`` is expected by the test (e.g. Chromium's
        "Failed to load resource: ... status of 400" when the test asks for a refused page)."""
        self.allowed.append(text)

    def unexpected(self) -> list[str]:
        return [m for m in self.messages if not any(text in m for text in self.allowed)]

    def watch(self, page) -> None:
        page.add_init_script(REPORT_CSP_VIOLATIONS)
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.messages.append(f"uncaught exception: {exc}"))

    def _on_console(self, message) -> None:
        if (
            message.type == "error"
            or message.text.startswith("Refused to")
            or "Content Security Policy" in message.text
        ):
            self.messages.append(f"console {message.type}: {message.text} ({message.location.get('url', '')})")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on this thread while it runs; the tests' own
    # ORM calls (fixtures, assertions) are plain synchronous code, which Django would refuse
    # there. Allowed for this module only; the loop is gone when the module ends.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def open_page(browser):
    """Opens watched pages: open_page(width=1280, color_scheme="dark"). The test fails at
    teardown if any of them logged an error or hit the CSP."""
    problems = PageProblems()
    contexts = []

    def open_(*, width: int = 1440, height: int = 900, color_scheme: str = "light"):
        context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=color_scheme)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        problems.watch(page)
        return page

    open_.problems = problems
    yield open_
    for context in contexts:
        context.close()
    unexpected = problems.unexpected()
    assert not unexpected, "The browser reported problems:\n" + "\n".join(unexpected)


@pytest.fixture
def page(open_page):
    return open_page()


@pytest.fixture
def shot():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> None:
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    return take


@pytest.fixture
def demo(django_user_model):
    """An owner with a workspace, an API key, a provider and logs of the last hours."""
    user = django_user_model.objects.create_user("dana", "dana@example.com", PASSWORD)
    workspace = services.workspace_create(slug="acme", name="Acme", owner=user)
    api_key, _ = services.api_key_create(workspace=workspace, name="web-app")
    services.provider_create(
        workspace=workspace, slug="mock", base_url="https://upstream.example.com/v1", api_key="sk-demo"
    )
    now = timezone.now()
    pairs = [
        ("production", "chat"),
        ("production", "search"),
        ("staging", "chat"),
        ("production", "chat"),
        ("development", "summarize"),
        ("production", "chat"),
        ("staging", "search"),
    ]
    records = []
    for i, (environment, feature) in enumerate(pairs * 3):
        user_name = ["alice", "bob", "carol"][i % 3]
        records.append(
            log_record(
                workspace,
                api_key,
                created_at=(now - timedelta(minutes=7 * i + 1)).isoformat(),
                metadata={"_user": user_name, "environment": environment, "feature": feature},
                user=user_name,
                model=["gpt-4o-mini", "gpt-4o"][i % 2],
                status_code=500 if i % 9 == 4 else 200,
                success=i % 9 != 4,
                finish_reasons=None if i % 9 == 4 else ["stop"],
                latency_ms=150.0 + 37 * i,
                body={
                    "request_headers": {},
                    "request_body": '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}',
                    "response_body": '{"id": "chatcmpl-1", "choices": [{"message": {"content": "Hello there"}}]}',
                },
            )
        )
    write_log_batch(records)
    return {"user": user, "workspace": workspace, "api_key": api_key, "records": records}


def login(page, live_server, username: str = "dana") -> None:
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    # One workspace: its overview; several: the chooser at /.
    page.wait_for_url(lambda url: "/login/" not in url)
