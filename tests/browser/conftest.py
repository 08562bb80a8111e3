"""Browser tests: Playwright (Python) drives Debian's chromium against pytest-django's live
server. Screenshots of every page land in test-artifacts/screenshots/ (gitignored).

Chromium is the Debian package at /usr/bin/chromium (CI installs it when missing); Playwright's
own browser downloads are never used."""

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
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
PASSWORD = "browser-pass-123"


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install chromium (browser tests never skip).")
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
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme="light")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(10_000)
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def shot():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> None:
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    return take


@pytest.fixture
def demo(django_user_model, settings):
    """An owner with a workspace, an API key, a provider and logs of the last hours."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
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
    page.wait_for_url(f"{live_server.url}/w/**")
