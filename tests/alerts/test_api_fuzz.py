"""schemathesis against the alert endpoints with an admin-scoped key: generated bodies and
parameters never make the API answer 5xx, and answers match the schema."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.analytics.test_api_schemathesis import CHECKS
from workspaces import services


def test_alert_endpoints_answer_generated_requests_per_their_schema(live_server, transactional_db):
    workspace = services.workspace_create(slug="fuzz", name="Fuzz")
    _, key = services.api_key_create(workspace=workspace, name="fuzz", scopes=["admin"])
    schema = schemathesis.openapi.from_url(live_server.url + "/api/schema/?format=json")
    operations = [r.ok() for r in schema.get_all_operations() if "/alert-" in r.ok().path]
    assert len(operations) == 9
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            case.call_and_validate(base_url=live_server.url, headers={"x-portkey-api-key": key}, checks=CHECKS)

        check()
