"""The metadata schema subset (DESIGN.md): object, string properties, required, enum, pattern,
maxLength, default. Schemas are checked against a meta-schema with ``jsonschema`` so admins get
an error naming the bad keyword; instances are checked with a compiled Draft 7 validator."""

from __future__ import annotations

import re
from functools import lru_cache

import orjson
from jsonschema import Draft7Validator

MAX_VALUE_LENGTH = 128

_PROPERTY_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"const": "string"},
        "enum": {"type": "array", "items": {"type": "string", "maxLength": MAX_VALUE_LENGTH}, "minItems": 1},
        "pattern": {"type": "string"},
        "maxLength": {"type": "integer", "minimum": 1, "maximum": MAX_VALUE_LENGTH},
        "minLength": {"type": "integer", "minimum": 0, "maximum": MAX_VALUE_LENGTH},
        "default": {"type": "string", "maxLength": MAX_VALUE_LENGTH},
        "title": {"type": "string"},
        "description": {"type": "string"},
    },
    "additionalProperties": False,
}

META_SCHEMA = {
    "type": "object",
    "properties": {
        "$schema": {"type": "string"},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "type": {"const": "object"},
        "properties": {"type": "object", "additionalProperties": _PROPERTY_SCHEMA},
        "required": {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True},
        "additionalProperties": {"type": "boolean"},
    },
    "additionalProperties": False,
}
_META_VALIDATOR = Draft7Validator(META_SCHEMA)


def schema_errors(schema: object) -> list[str]:
    """Problems with a metadata schema document, each naming where it is."""
    if schema in (None, {}):
        return []
    if not isinstance(schema, dict):
        return ["metadata schema must be a JSON object"]
    errors = []
    for err in sorted(_META_VALIDATOR.iter_errors(schema), key=lambda e: list(e.path)):
        where = "/".join(str(p) for p in err.path) or "(root)"
        errors.append(f"metadata schema at {where}: {err.message}")
    for key, prop in (schema.get("properties") or {}).items():
        if not isinstance(prop, dict):
            continue
        if not key:
            errors.append("metadata schema: property names must be non-empty")
        pattern = prop.get("pattern")
        if isinstance(pattern, str):
            try:
                re.compile(pattern)
            except re.error as exc:
                errors.append(f"metadata schema property '{key}': pattern is not a valid regular expression ({exc})")
    if errors:
        return errors
    # A default must satisfy its own property's constraints.
    for key, prop in (schema.get("properties") or {}).items():
        if "default" in prop:
            errors += [f"metadata schema property '{key}' default: {e}" for e in _value_errors(prop["default"], prop)]
    return errors


def _value_errors(value: str, prop: dict) -> list[str]:
    return [e.message for e in Draft7Validator({**prop, "type": "string"}).iter_errors(value)]


@lru_cache(maxsize=1024)
def _compiled(schema_json: bytes) -> Draft7Validator:
    return Draft7Validator(orjson.loads(schema_json))


def compile_schema(schema: dict | None) -> Draft7Validator | None:
    """A validator for a (valid) schema; cached by content so hot-path callers share it."""
    if not schema:
        return None
    return _compiled(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))


def apply_defaults(metadata: dict[str, str], schema: dict | None) -> dict[str, str]:
    """Fill keys the schema gives a default for and the metadata lacks."""
    if not schema:
        return metadata
    for key, prop in (schema.get("properties") or {}).items():
        if "default" in prop and key not in metadata:
            metadata[key] = prop["default"]
    return metadata


def metadata_errors(metadata: dict, schema: dict | None, *, check_required: bool = True) -> list[tuple[str, str]]:
    """(key, message) pairs for metadata that breaks the schema; empty when it conforms.

    ``check_required=False`` is used when saving defaults: required keys may legitimately come
    with each request, so only the constraints of the keys that are present are enforced.
    """
    validator = compile_schema(schema)
    if validator is None:
        return []
    problems: list[tuple[str, str]] = []
    for err in validator.iter_errors(metadata):
        if err.validator == "required":
            if not check_required:
                continue
            for key in schema.get("required", []):
                if key not in metadata:
                    problems.append((key, f"metadata key '{key}' is required"))
        elif err.validator == "additionalProperties":
            allowed = set(schema.get("properties") or {})
            for key in metadata:
                if key not in allowed:
                    problems.append((key, f"metadata key '{key}' is not allowed by the schema"))
        elif err.path:
            key = str(err.path[0])
            problems.append((key, f"metadata key '{key}': {err.message}"))
        else:
            problems.append(("", f"metadata: {err.message}"))
    # Deduplicate while keeping order (several validators can name the same missing key).
    return list(dict.fromkeys(problems))


def format_errors(metadata: object) -> list[tuple[str, str]]:
    """Portico's metadata format rules: non-empty string keys, string values of <= 128 chars."""
    if not isinstance(metadata, dict):
        return [("", "metadata must be a JSON object of string keys to string values")]
    problems = []
    for key, value in metadata.items():
        if not isinstance(key, str) or not key.strip():
            problems.append((str(key), "metadata keys must be non-empty strings"))
        elif not isinstance(value, str):
            problems.append((key, f"metadata key '{key}' must have a string value, got {type(value).__name__}"))
        elif len(value) > MAX_VALUE_LENGTH:
            problems.append((key, f"metadata key '{key}' value is longer than {MAX_VALUE_LENGTH} characters"))
    return problems
