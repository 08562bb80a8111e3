"""The OpenAPI schema (/api/schema/), the docs page (/api/docs/, assets from the sidecar
package, no CDN), and a contract check: real responses of every endpoint, success and
error, validate against the schema the endpoint declares."""

from __future__ import annotations

import re

import pytest
import yaml
from jsonschema import Draft7Validator

from tests.analytics.api_helpers import write
from workspaces import services

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    from drf_spectacular.generators import SchemaGenerator

    with django_db_blocker.unblock():
        return SchemaGenerator().get_schema(request=None, public=True)


def to_json_schema(node, components):
    """OpenAPI 3.0 -> JSON Schema: inline $refs, `nullable` as a null alternative."""
    if isinstance(node, list):
        return [to_json_schema(item, components) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return to_json_schema(components[node["$ref"].rsplit("/", 1)[1]], components)
    result = {key: to_json_schema(value, components) for key, value in node.items() if key != "nullable"}
    if node.get("nullable"):
        result = {"anyOf": [result, {"type": "null"}]}
    return result


def check(schema, path: str, method: str, response) -> None:
    operation = schema["paths"][path][method]
    declared = operation["responses"].get(str(response.status_code))
    assert declared, f"{method.upper()} {path}: status {response.status_code} is not documented"
    content_type = response["Content-Type"].split(";")[0]
    assert content_type in declared["content"], f"{path}: {content_type} not documented"
    if content_type != "application/json":
        return
    body_schema = to_json_schema(declared["content"][content_type]["schema"], schema["components"]["schemas"])
    errors = sorted(Draft7Validator(body_schema).iter_errors(response.json()), key=str)
    assert not errors, f"{method.upper()} {path} {response.status_code}: {errors[0].message} at {list(errors[0].path)}"


def test_the_schema_is_served_and_lists_every_endpoint(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    paths = yaml.safe_load(response.content)["paths"]
    assert set(paths) == {
        "/api/v1/logs",
        "/api/v1/logs/export",
        "/api/v1/logs/{log_id}",
        "/api/v1/analytics/graphs/{metric}",
        "/api/v1/analytics/groups/metadata/{key}",
        "/api/v1/analytics/groups/users",
        "/api/v1/analytics/groups/models",
        "/api/v1/analytics/groups/providers",
        "/api/v1/analytics/groups/api-keys",
        "/api/v1/analytics/metadata-keys",
        "/api/v1/alert-rules/",
        "/api/v1/alert-rules/{rule_id}/",
        "/api/v1/alert-rules/{rule_id}/test/",
        "/api/v1/alert-events/",
        "/api/v1/alert-deliveries/",
        "/api/v1/policies/",
        "/api/v1/policies/{policy_id}/",
        "/api/v1/policies/{policy_id}/usage/",
        "/v1/logs",
        "/v1/feedback",
    }
    names = {p["name"] for p in paths["/api/v1/logs"]["get"]["parameters"]}
    assert {"start", "metadata", "cost_min", "api_key_ids", "cursor", "limit", "workspace"} <= names


def test_the_docs_page_uses_vendored_assets(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "cdn" not in html.lower() and "unpkg" not in html.lower()
    bundle = re.search(r'src="(/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle[.\w]*\.js)"', html)
    assert bundle, "the docs page loads Swagger UI from our own static files"
    served = client.get(bundle[1])
    assert served.status_code == 200
    assert b"SwaggerUIBundle" in b"".join(served.streaming_content if served.streaming else [served.content])


def test_read_responses_match_the_schema(client, schema, workspace, api_key):
    log = write(workspace, api_key[0], metadata={"feature": "chat", "_user": "alice"})
    headers = {"x-portkey-api-key": api_key[1]}
    calls = [
        ("/api/v1/logs", "/api/v1/logs", {}),
        ("/api/v1/logs", "/api/v1/logs", {"limit": "1"}),
        ("/api/v1/logs", "/api/v1/logs", {"start": "nope"}),
        ("/api/v1/logs/{log_id}", f"/api/v1/logs/{log['id']}", {}),
        ("/api/v1/logs/{log_id}", "/api/v1/logs/missing", {}),
        ("/api/v1/logs/export", "/api/v1/logs/export", {"format": "jsonl"}),
        ("/api/v1/logs/export", "/api/v1/logs/export", {"format": "x"}),
        ("/api/v1/analytics/metadata-keys", "/api/v1/analytics/metadata-keys", {}),
        ("/api/v1/analytics/groups/metadata/{key}", "/api/v1/analytics/groups/metadata/feature", {}),
        ("/api/v1/analytics/groups/api-keys", "/api/v1/analytics/groups/api-keys", {"ordering": "-p95_latency_ms"}),
        ("/api/v1/analytics/groups/users", "/api/v1/analytics/groups/users", {"provider": "openai"}),
        ("/api/v1/analytics/graphs/{metric}", "/api/v1/analytics/graphs/nope", {}),
    ]
    for metric in ("requests", "cost", "tokens", "latency", "errors", "error-rate", "users"):
        calls.append(("/api/v1/analytics/graphs/{metric}", f"/api/v1/analytics/graphs/{metric}", {}))
        calls.append(("/api/v1/analytics/graphs/{metric}", f"/api/v1/analytics/graphs/{metric}", {"group_by": "model"}))
    for template, path, params in calls:
        check(schema, template, "get", client.get(path, params, headers=headers))
    check(schema, "/api/v1/logs", "get", client.get("/api/v1/logs"))
    limited = services.api_key_create(workspace=workspace, name="k", scopes=["inference"])[1]
    check(schema, "/api/v1/logs", "get", client.get("/api/v1/logs", headers={"x-portkey-api-key": limited}))


def test_write_responses_match_the_schema(client, schema, api_key):
    headers = {"x-portkey-api-key": api_key[1]}
    log = {"request": {"url": "https://api.openai.com/v1/chat/completions"}, "response": {"status": 200}}
    for payload in (log, [log, log], {"request": {}}, "x"):
        response = client.post("/v1/logs", payload, content_type="application/json", headers=headers)
        check(schema, "/v1/logs", "post", response)
    for payload in ({"trace_id": "t", "value": 3}, {"trace_id": "t", "value": 30}):
        response = client.post("/v1/feedback", payload, content_type="application/json", headers=headers)
        check(schema, "/v1/feedback", "post", response)
    check(schema, "/v1/feedback", "post", client.post("/v1/feedback", {}, content_type="application/json"))
