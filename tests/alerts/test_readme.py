"""The README's Alerts section stays true: its signature check, run as printed, accepts a real
delivery and refuses a tampered one, and its payload example has the real payload's fields."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.utils import timezone

from analytics.alerts import delivery, evaluation
from analytics.alerts.models import AlertEvent
from tests.alerts.conftest import make_rule

README = Path(__file__).resolve().parents[2] / "README.md"
pytestmark = pytest.mark.django_db


def block(title: str, language: str) -> str:
    match = re.search(rf"{re.escape(title)}\n\n```{language}\n(.*?)```", README.read_text(), re.S)
    assert match, f"no {language} block after {title!r} in README.md"
    return match.group(1)


def test_the_readme_signature_check_verifies_a_real_delivery(workspace, receiver):
    rule, secret = make_rule(workspace, per="_user", webhook_urls=[receiver.url])
    now = timezone.now()
    event = evaluation.create_event(rule, AlertEvent.Kind.FIRED, "user-123", 12.48, (now, now), now)
    delivery.send_due(now=now)
    [received] = receiver.requests
    namespace: dict = {}
    exec(compile(block("Verifying the signature:", "python"), "README.md", "exec"), namespace)
    verify = namespace["verify"]
    assert verify(secret, received.message, received.body)
    assert not verify(secret, received.message, received.body.replace(b"12.48", b"1.48"))
    assert not verify("whsec_wrong", received.message, received.body)

    example = json.loads(block("The body:", "json"))
    assert set(example) == set(received.json) and set(example["window"]) == set(received.json["window"])
    assert set(example["rule"]) == set(received.json["rule"])
    assert received.json["scope_value"] == "user-123" and received.json["id"] == str(event.uid)
