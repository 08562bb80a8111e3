"""Evaluation and the log writer share the workspace row: the writer holds KEY SHARE locks on
it per batch, and an evaluation must neither wait for nor skip a rule because of that."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from analytics.alerts import evaluation
from tests.alerts.conftest import make_rule, write_logs


@pytest.mark.postgres
def test_a_writer_holding_the_workspace_row_does_not_stop_evaluation(transactional_db, workspace):
    write_logs(workspace, {"created_at": timezone.now(), "cost": "3"})
    rule, _ = make_rule(workspace, window="5m")
    locked, release = threading.Event(), threading.Event()

    def writer() -> None:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT id FROM workspaces_workspace WHERE id = %s FOR KEY SHARE", [workspace.pk])
                locked.set()
                release.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert locked.wait(10)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")  # waiting on the writer would fail, not hang
        assert evaluation.evaluate_rule(rule.pk, now=timezone.now()) == (1, 0)
    finally:
        release.set()
        thread.join(10)
