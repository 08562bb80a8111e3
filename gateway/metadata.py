"""Metadata resolution: the normative rules of DESIGN.md in one function, ``resolve_metadata``.

Sources, lowest to highest precedence by default: HEADERS_TO_METADATA headers and W3C baggage,
request metadata (``x-portkey-metadata`` plus ``_user`` from the body), API key defaults,
workspace defaults. ``METADATA_PRECEDENCE=request_first`` reverses the last three.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

import orjson

from gateway.errors import GatewayError
from workspaces.metadata_schema import MAX_VALUE_LENGTH, apply_defaults, format_errors, metadata_errors

HEADER = "x-portkey-metadata"


@dataclass(slots=True)
class MetadataPolicy:
    """What the workspace and API key impose: defaults and schemas."""

    workspace_defaults: dict[str, str] = field(default_factory=dict)
    workspace_schema: dict | None = None
    key_defaults: dict[str, str] = field(default_factory=dict)
    key_schema: dict | None = None


@dataclass(slots=True)
class Resolved:
    metadata: dict[str, str]
    changes: list[str]


def _metadata_error(message: str, key: str | None) -> GatewayError:
    return GatewayError(400, message, param=f"{HEADER}.{key}" if key else HEADER, code="invalid_metadata")


def parse_baggage(value: str) -> dict[str, str]:
    """W3C baggage ``k=v;prop,k2=v2``: properties after ';' dropped, values URL-decoded."""
    result: dict[str, str] = {}
    for member in value.split(","):
        pair = member.split(";", 1)[0]
        if "=" not in pair:
            continue
        key, _, val = pair.partition("=")
        key = key.strip()
        if key:
            result[key] = unquote(val.strip())
    return result


def _lenient_value(key: str, value: object, changes: list[str]) -> str | None:
    """Portkey-hosted coercion: falsy dropped, scalars stringified, long values cut."""
    if value is None or value == "" or value is False:
        changes.append(f"dropped '{key}': empty value")
        return None
    if isinstance(value, bool):
        text = "true"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, int | float):
        text = orjson.dumps(value).decode()
    else:
        text = orjson.dumps(value).decode()
    if not isinstance(value, str):
        changes.append(f"converted '{key}' from {type(value).__name__} to string")
    if len(text) > MAX_VALUE_LENGTH:
        changes.append(f"truncated '{key}' to {MAX_VALUE_LENGTH} characters")
        text = text[:MAX_VALUE_LENGTH]
    return text


def _lenient(raw: object, changes: list[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in raw.items():
        name = str(key)
        if not name.strip():
            changes.append("dropped a key with an empty name")
            continue
        if len(name) > MAX_VALUE_LENGTH:
            changes.append(f"truncated key '{name[:32]}…' to {MAX_VALUE_LENGTH} characters")
            name = name[:MAX_VALUE_LENGTH]
        text = _lenient_value(name, value, changes)
        if text is not None:
            result[name] = text
    return result


def parse_request_metadata(raw: bytes | None, *, strict: bool, max_keys: int, changes: list[str]) -> dict[str, str]:
    if not raw:
        return {}
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        if strict:
            raise _metadata_error(f"{HEADER} must be a JSON object; the header is not valid JSON", None) from None
        changes.append(f"dropped {HEADER}: not valid JSON")
        return {}
    if not isinstance(parsed, dict):
        if strict:
            raise _metadata_error(f"{HEADER} must be a JSON object, got {type(parsed).__name__}", None)
        changes.append(f"dropped {HEADER}: not a JSON object")
        return {}
    if len(parsed) > max_keys:
        raise _metadata_error(f"{HEADER} has {len(parsed)} keys; at most {max_keys} are allowed", None)
    if not strict:
        return _lenient(parsed, changes)
    problems = format_errors(parsed)
    if problems:
        key, message = problems[0]
        raise _metadata_error(message, key)
    return parsed


def _check_level(values: dict[str, str], *, strict: bool, source: str, changes: list[str]) -> dict[str, str]:
    """Header-derived and body-derived values obey the same format rules."""
    problems = format_errors(values)
    if not problems:
        return values
    if strict:
        key, message = problems[0]
        raise _metadata_error(f"{message} (from {source})", key)
    return _lenient(values, changes)


def resolve_metadata(
    *,
    header_value: bytes | None,
    body_user: object,
    mapped_headers: dict[str, str],
    baggage: str | None,
    policy: MetadataPolicy,
    strict: bool = True,
    request_first: bool = False,
    max_keys: int = 64,
) -> Resolved:
    changes: list[str] = []
    request_md = parse_request_metadata(header_value, strict=strict, max_keys=max_keys, changes=changes)

    if not request_md.get("_user") and isinstance(body_user, str) and body_user:
        request_md["_user"] = _check_level(
            {"_user": body_user}, strict=strict, source="body user", changes=changes
        ).get("_user", "")
        if not request_md["_user"]:
            del request_md["_user"]

    lowest: dict[str, str] = {}
    if baggage:
        lowest.update(_check_level(parse_baggage(baggage), strict=strict, source="baggage", changes=changes))
    if mapped_headers:
        lowest.update(_check_level(mapped_headers, strict=strict, source="HEADERS_TO_METADATA", changes=changes))

    if request_first:
        merged = {**policy.workspace_defaults, **policy.key_defaults, **lowest, **request_md}
    else:
        merged = {**lowest, **request_md, **policy.key_defaults, **policy.workspace_defaults}
    if len(merged) > max_keys:
        raise _metadata_error(f"metadata has {len(merged)} keys after merging; at most {max_keys} are allowed", None)

    apply_defaults(merged, policy.workspace_schema)
    apply_defaults(merged, policy.key_schema)
    problems = list(
        dict.fromkeys(metadata_errors(merged, policy.workspace_schema) + metadata_errors(merged, policy.key_schema))
    )
    if problems:
        message = "Invalid metadata: " + "; ".join(msg for _, msg in problems)
        raise _metadata_error(message, problems[0][0] or None)
    return Resolved(merged, changes)
