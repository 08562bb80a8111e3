"""Model validation: the metadata schema subset and default metadata checked against it."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from workspaces import services
from workspaces.models import ApiKey, Workspace

# full_clean checks the slug is unique, which needs the database.
pytestmark = pytest.mark.django_db

ENV_SCHEMA = {
    "type": "object",
    "properties": {
        "environment": {"type": "string", "enum": ["dev", "staging", "prod"]},
        "team": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8},
    },
}


def _errors(obj) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as info:
        obj.full_clean()
    return info.value.message_dict


def _workspace(**fields) -> Workspace:
    return Workspace(name="Acme", slug="acme", **fields)


def test_it_accepts_the_schema_subset():
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Acme metadata",
        "type": "object",
        "properties": {
            "environment": {"type": "string", "enum": ["dev", "prod"], "default": "dev", "description": "Where"},
            "team": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 16, "minLength": 2},
        },
        "required": ["team"],
        "additionalProperties": True,
    }
    _workspace(metadata_schema=schema, default_metadata={"environment": "prod"}).full_clean()


def test_it_accepts_an_empty_schema_and_empty_defaults():
    _workspace().full_clean()


def test_it_rejects_unknown_property_keywords():
    schema = {"type": "object", "properties": {"email": {"type": "string", "format": "email"}}}
    errors = _errors(_workspace(metadata_schema=schema))
    assert "metadata_schema" in errors
    assert "properties/email" in errors["metadata_schema"][0]
    assert "'format'" in errors["metadata_schema"][0]


def test_it_rejects_unknown_top_level_keywords():
    errors = _errors(_workspace(metadata_schema={"type": "object", "oneOf": []}))
    assert "(root)" in errors["metadata_schema"][0]
    assert "'oneOf'" in errors["metadata_schema"][0]


def test_it_rejects_non_string_properties():
    schema = {"type": "object", "properties": {"count": {"type": "integer"}}}
    errors = _errors(_workspace(metadata_schema=schema))
    assert "properties/count/type" in errors["metadata_schema"][0]


def test_it_rejects_a_schema_that_is_not_an_object():
    errors = _errors(_workspace(metadata_schema=["environment"]))
    assert errors["metadata_schema"] == ["metadata schema must be a JSON object"]


def test_it_rejects_bad_patterns_naming_the_property():
    schema = {"type": "object", "properties": {"team": {"type": "string", "pattern": "[a-z"}}}
    errors = _errors(_workspace(metadata_schema=schema))
    assert "property 'team': pattern is not a valid regular expression" in errors["metadata_schema"][0]


def test_it_rejects_a_default_outside_its_enum():
    schema = {"type": "object", "properties": {"environment": {"type": "string", "enum": ["dev"], "default": "qa"}}}
    errors = _errors(_workspace(metadata_schema=schema))
    assert "property 'environment' default" in errors["metadata_schema"][0]


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"environment": "qa"}, "metadata key 'environment'"),
        ({"team": "Search"}, "metadata key 'team'"),
        ({"team": "searchteam"}, "metadata key 'team'"),
    ],
    ids=["enum", "pattern", "maxLength"],
)
def test_it_rejects_default_metadata_that_breaks_the_schema(metadata, expected):
    errors = _errors(_workspace(metadata_schema=ENV_SCHEMA, default_metadata=metadata))
    assert list(errors) == ["default_metadata"]
    assert expected in errors["default_metadata"][0]
    assert "(workspace schema)" in errors["default_metadata"][0]


def test_it_does_not_require_required_keys_in_defaults():
    # Required keys may come with each request; defaults only have to be valid where present.
    schema = {**ENV_SCHEMA, "required": ["team"]}
    _workspace(metadata_schema=schema, default_metadata={"environment": "dev"}).full_clean()


def test_it_rejects_non_string_metadata_values():
    errors = _errors(_workspace(default_metadata={"environment": "prod", "replicas": 3}))
    assert errors["default_metadata"] == ["metadata key 'replicas' must have a string value, got int"]


def test_it_rejects_metadata_values_over_128_characters():
    errors = _errors(_workspace(default_metadata={"note": "x" * 129}))
    assert "metadata key 'note' value is longer than 128 characters" in errors["default_metadata"]


def test_it_rejects_default_metadata_that_is_not_an_object():
    errors = _errors(_workspace(default_metadata=["prod"]))
    assert "must be a JSON object" in errors["default_metadata"][0]


def test_it_rejects_key_defaults_that_break_the_workspace_schema(workspace):
    services.workspace_update(workspace=workspace, metadata_schema=ENV_SCHEMA)
    api_key = ApiKey(workspace=workspace, name="ci", prefix="pk-x", hashed_key="h", scopes=["inference"])
    api_key.default_metadata = {"environment": "qa"}
    errors = _errors(api_key)
    assert "metadata key 'environment'" in errors["default_metadata"][0]
    assert "(workspace schema)" in errors["default_metadata"][0]


def test_it_rejects_key_defaults_that_break_the_keys_own_schema(workspace):
    api_key = ApiKey(workspace=workspace, name="ci", prefix="pk-x", hashed_key="h", scopes=["inference"])
    api_key.metadata_schema = ENV_SCHEMA
    api_key.default_metadata = {"team": "A-Team"}
    errors = _errors(api_key)
    assert "metadata key 'team'" in errors["default_metadata"][0]
    assert "(API key schema)" in errors["default_metadata"][0]


def test_it_rejects_unknown_scopes(workspace):
    api_key = ApiKey(workspace=workspace, name="ci", prefix="pk-x", hashed_key="h", scopes=["inference", "root"])
    errors = _errors(api_key)
    assert "scopes" in errors


def test_it_rejects_a_workspace_schema_that_would_strand_key_defaults(workspace):
    services.api_key_create(workspace=workspace, name="ci-runner", default_metadata={"environment": "qa"})
    workspace.metadata_schema = ENV_SCHEMA
    errors = _errors(workspace)
    assert "API key 'ci-runner'" in errors["metadata_schema"][0]
    assert "metadata key 'environment'" in errors["metadata_schema"][0]
    workspace.refresh_from_db()
    assert workspace.metadata_schema == {}


def test_it_accepts_a_workspace_schema_the_keys_satisfy(workspace):
    services.api_key_create(workspace=workspace, name="ci-runner", default_metadata={"environment": "prod"})
    services.workspace_update(workspace=workspace, metadata_schema=ENV_SCHEMA)
    workspace.refresh_from_db()
    assert workspace.metadata_schema == ENV_SCHEMA
