"""Metadata resolution: the normative rules of DESIGN.md in one function, ``resolve_metadata``.

Sources, lowest to highest precedence by default: HEADERS_TO_METADATA headers and W3C baggage,
request metadata (``x-portkey-metadata`` plus ``_user`` from the body), API key defaults,
workspace defaults. ``METADATA_PRECEDENCE=request_first`` reverses the last three.

A refusal (strict format rules, too many keys, a schema) is a 400, raised only once everything
else is resolved: the MetadataError carries the metadata that passed and names each refused key
in ``changes``, so a failed request is logged with its context, not with ``{}``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from urllib.parse import unquote

import orjson

from workspaces.errors import GatewayError
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


class MetadataError(GatewayError):
    """A 400 for refused metadata that still carries what could be resolved (defaults, header
    values, the valid request keys) and what was refused, so the request's log keeps its
    context and metadata filters and rollups count the failure."""

    def __init__(self, message: str, key: str | None, resolved: Resolved) -> None:
        super().__init__(400, message, param=f"{HEADER}.{key}" if key else HEADER, code="invalid_metadata")
        self.resolved = resolved


class _Refusals:
    """What was refused, in the order found: each becomes a ``metadata_changes`` entry in the
    shape lenient mode uses (``<what> '<key>': <reason>``); the first is the client's error."""

    __slots__ = ("changes", "first")

    def __init__(self, changes: list[str]) -> None:
        self.changes = changes
        self.first: tuple[str, str | None] | None = None

    def add(self, key: str | None, message: str, *, change: str | None = None) -> None:
        if change is None:
            change = f"refused '{key}': {message}" if key is not None else f"refused {HEADER}: {message}"
        self.changes.append(change)
        if self.first is None:
            self.first = (message, key or None)


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
        text = "true"  # False was dropped above
    elif isinstance(value, str):
        text = value
    else:  # numbers, lists, objects: their JSON text
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


def _request_metadata(raw: bytes | None, *, strict: bool, max_keys: int, refusals: _Refusals) -> dict[str, str]:
    """The header's metadata; what breaks the rules is refused (strict) or coerced (lenient),
    and the rest kept."""
    if not raw:
        return {}
    changes = refusals.changes
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        if strict:
            refusals.add(None, f"{HEADER} must be a JSON object; the header is not valid JSON")
        else:
            changes.append(f"dropped {HEADER}: not valid JSON")
        return {}
    if not isinstance(parsed, dict):
        if strict:
            refusals.add(None, f"{HEADER} must be a JSON object, got {type(parsed).__name__}")
        else:
            changes.append(f"dropped {HEADER}: not a JSON object")
        return {}
    if len(parsed) > max_keys:
        # Refused in either mode; the log keeps the first max_keys keys.
        extra = len(parsed) - max_keys
        message = f"{HEADER} has {len(parsed)} keys; at most {max_keys} are allowed"
        refusals.add(None, message, change=f"refused the {extra} keys after the first {max_keys}: {message}")
        parsed = dict(itertools.islice(parsed.items(), max_keys))
    if not strict:
        return _lenient(parsed, changes)
    return _valid_part(parsed, format_errors(parsed), refusals, source=None)


def _valid_part(values: dict, problems: list[tuple[str, str]], refusals: _Refusals, *, source: str | None) -> dict:
    if not problems:
        return values
    for key, message in problems:
        refusals.add(key, f"{message} (from {source})" if source else message)
    bad = {key for key, _ in problems}
    return {key: value for key, value in values.items() if key not in bad}


def _check_level(values: dict[str, str], *, strict: bool, source: str, refusals: _Refusals) -> dict[str, str]:
    """Header-derived and body-derived values obey the same format rules."""
    problems = format_errors(values)
    if not problems:
        return values
    if strict:
        return _valid_part(values, problems, refusals, source=source)
    return _lenient(values, refusals.changes)


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
    """The request's metadata; raises MetadataError (a 400 naming the first problem, carrying
    the metadata that could still be resolved) when something was refused."""
    changes: list[str] = []
    refusals = _Refusals(changes)
    request_md = _request_metadata(header_value, strict=strict, max_keys=max_keys, refusals=refusals)

    if not request_md.get("_user") and isinstance(body_user, str) and body_user:
        request_md["_user"] = _check_level(
            {"_user": body_user}, strict=strict, source="body user", refusals=refusals
        ).get("_user", "")
        if not request_md["_user"]:
            del request_md["_user"]

    lowest: dict[str, str] = {}
    if baggage:
        lowest.update(_check_level(parse_baggage(baggage), strict=strict, source="baggage", refusals=refusals))
    if mapped_headers:
        lowest.update(_check_level(mapped_headers, strict=strict, source="HEADERS_TO_METADATA", refusals=refusals))

    if request_first:
        levels = (request_md, lowest, policy.key_defaults, policy.workspace_defaults)
    else:
        levels = (policy.workspace_defaults, policy.key_defaults, request_md, lowest)
    merged = {**levels[3], **levels[2], **levels[1], **levels[0]}
    if len(merged) > max_keys:
        merged = _cap(levels, len(merged), max_keys, refusals)

    apply_defaults(merged, policy.workspace_schema)
    apply_defaults(merged, policy.key_schema)
    problems = list(
        dict.fromkeys(metadata_errors(merged, policy.workspace_schema) + metadata_errors(merged, policy.key_schema))
    )
    if problems:
        _refuse_schema_problems(merged, problems, refusals)
    if refusals.first is not None:
        message, key = refusals.first
        raise MetadataError(message, key, Resolved(merged, changes))
    return Resolved(merged, changes)


def _cap(levels: tuple[dict[str, str], ...], total: int, max_keys: int, refusals: _Refusals) -> dict[str, str]:
    """The max_keys keys of highest precedence (``levels`` is highest first)."""
    kept: dict[str, str] = {}
    for level in levels:
        for key, value in level.items():
            if key not in kept and len(kept) < max_keys:
                kept[key] = value
    message = f"metadata has {total} keys after merging; at most {max_keys} are allowed"
    change = f"refused the {total - max_keys} keys of lowest precedence: {message}"
    refusals.add(None, message, change=change)
    return kept


def _refuse_schema_problems(merged: dict[str, str], problems: list[tuple[str, str]], refusals: _Refusals) -> None:
    """Schema violations: the client hears all of them at once; the log keeps the keys that
    passed and names each refused or missing one."""
    first = refusals.first
    for key, message in problems:
        if key in merged:
            del merged[key]
            refusals.add(key, message)
        else:
            refusals.add(key, message, change=f"missing '{key}': {message}" if key else f"refused metadata: {message}")
    if first is None:
        refusals.first = ("Invalid metadata: " + "; ".join(msg for _, msg in problems), problems[0][0] or None)
