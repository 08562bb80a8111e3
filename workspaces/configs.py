"""Portkey routing configs (``x-portkey-config``): parsed and validated into a tree of frozen
objects once, then executed by ``gateway.routing`` on every request that names them.

A config is a JSON object. Supported, at any level (a level's own value wins over the one it
inherits from above, like Portkey; ``override_params`` are merged, the deeper key winning):
``retry`` {attempts 0..5, on_status_codes, use_retry_after_header}, ``cache`` {mode: simple,
max_age}, ``request_timeout`` (ms), ``override_params`` (merged into the JSON body). A level
either names a provider (``provider: "@slug"`` or ``virtual_key: "slug"``: a provider of the
workspace; ``provider: "openai"`` is the built-in one) or groups ``targets`` under a
``strategy`` {mode: fallback | loadbalance | single, on_status_codes}; a target of a
loadbalance group may carry a ``weight``. The root may name neither: then the request's
``x-portkey-provider`` header is the provider (e.g. ``{"cache": {"mode": "simple"}}``).

Everything else is refused with the path of the offending field (``param`` of the 400), never
ignored: a config that asks for guardrails or semantic caching must not appear to work.

Pure Python on purpose (no Django): the workspace model validates saved configs with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import orjson

from config.parsing import InvalidParameter, parse_int

HEADER = "x-portkey-config"
MAX_ATTEMPTS = 5
MAX_TARGETS = 50
MAX_DEPTH = 4
MAX_CACHE_AGE_S = 90 * 86400
DEFAULT_CACHE_AGE_S = 7 * 86400
MAX_REQUEST_TIMEOUT_MS = 600_000
DEFAULT_RETRY_CODES = frozenset((429, 500, 502, 503, 504))
BUILTIN_PROVIDERS = frozenset(("openai",))

# Portkey features Portico does not implement, with the reason given to the caller.
_UNSUPPORTED = {
    "input_guardrails": "guardrails are not supported by Portico",
    "output_guardrails": "guardrails are not supported by Portico",
    "default_input_guardrails": "guardrails are not supported by Portico",
    "default_output_guardrails": "guardrails are not supported by Portico",
    "before_request_hooks": "hooks (guardrails) are not supported by Portico",
    "after_request_hooks": "hooks (guardrails) are not supported by Portico",
    "input_mutators": "mutators are not supported by Portico",
    "output_mutators": "mutators are not supported by Portico",
    "api_key": 'inline provider keys are not supported: add the provider to the workspace and use "provider": "@slug"',
    "custom_host": 'custom hosts in configs are not supported: use a workspace provider ("@slug")',
    "forward_headers": "forward_headers is not supported by Portico",
    "strict_open_ai_compliance": "strict_open_ai_compliance is not supported by Portico",
}
_NODE_KEYS = frozenset(
    ("strategy", "targets", "provider", "virtual_key", "override_params", "retry", "cache", "request_timeout", "weight")
)
_MODES = frozenset(("fallback", "loadbalance", "single"))
_UNSUPPORTED_MODES = {"conditional": "conditional routing", "sample": "the sample strategy"}


@dataclass(frozen=True, slots=True)
class Retry:
    attempts: int  # retries after the first try, as Portkey counts them
    on_status_codes: frozenset[int]
    use_retry_after: bool


@dataclass(frozen=True, slots=True)
class Target:
    """A provider to call, with everything inherited from the levels above resolved."""

    path: str  # Portkey's option index: "config.targets[1].targets[0]"
    provider: str  # "@slug", "openai", or "" for the request's x-portkey-provider
    override_params: dict
    retry: Retry | None
    cache_max_age: int | None  # seconds; None: no cache
    request_timeout_ms: int | None


@dataclass(frozen=True, slots=True)
class Group:
    path: str
    mode: str  # fallback | loadbalance | single
    options: tuple[Target | Group, ...]
    weights: tuple[float, ...]
    fallback_codes: frozenset[int] | None  # None: any status outside 2xx


@dataclass(frozen=True, slots=True)
class Config:
    root: Target | Group
    config_id: str = ""  # a saved config's public id ("pc-..."), "inline" otherwise
    # Loadbalance groups need a random choice; everything else is deterministic.
    has_loadbalance: bool = field(default=False, compare=False)


def _error(path: str, message: str) -> InvalidParameter:
    param = HEADER if path == "config" else f"{HEADER}.{path.removeprefix('config.')}"
    return InvalidParameter(param, f"{param}: {message}")


def _codes(raw: object, path: str) -> frozenset[int]:
    if not isinstance(raw, list):
        raise _error(path, "must be a list of HTTP status codes, e.g. [429, 503].")
    return frozenset(parse_int(code, param=_error(path, "").param, minimum=100, maximum=599) for code in raw)


def _whole(raw: object, path: str, minimum: int, maximum: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise _error(path, f"enter a whole number from {minimum} to {maximum}.")
    return parse_int(raw, param=_error(path, "").param, minimum=minimum, maximum=maximum)


def _check_keys(doc: dict, allowed: frozenset[str], path: str) -> None:
    for key in doc:
        where = f"{path}.{key}"
        if key in _UNSUPPORTED:
            raise _error(where, _UNSUPPORTED[key] + ".")
        if key not in allowed:
            raise _error(where, f"unknown field; supported here: {', '.join(sorted(allowed))}.")


def _object(raw: object, path: str) -> dict:
    if not isinstance(raw, dict):
        raise _error(path, "must be a JSON object.")
    return raw


def _retry(raw: object, path: str) -> Retry:
    doc = _object(raw, path)
    _check_keys(doc, frozenset(("attempts", "on_status_codes", "use_retry_after_header")), path)
    if "attempts" not in doc:
        raise _error(f"{path}.attempts", "is required (0 to 5 retries).")
    attempts = _whole(doc["attempts"], f"{path}.attempts", 0, MAX_ATTEMPTS)
    codes = _codes(doc["on_status_codes"], f"{path}.on_status_codes") if "on_status_codes" in doc else None
    use_retry_after = doc.get("use_retry_after_header", True)
    if not isinstance(use_retry_after, bool):
        raise _error(f"{path}.use_retry_after_header", "must be true or false.")
    return Retry(attempts, DEFAULT_RETRY_CODES if codes is None else codes, use_retry_after)


def _cache(raw: object, path: str) -> int:
    doc = _object(raw, path)
    _check_keys(doc, frozenset(("mode", "max_age")), path)
    mode = doc.get("mode")
    if mode == "semantic":
        raise _error(f"{path}.mode", 'semantic caching is not supported by Portico; use "simple".')
    if mode != "simple":
        raise _error(f"{path}.mode", 'must be "simple" (exact-match cache).')
    if "max_age" not in doc:
        return DEFAULT_CACHE_AGE_S
    return _whole(doc["max_age"], f"{path}.max_age", 1, MAX_CACHE_AGE_S)


def _provider(doc: dict, path: str) -> str:
    if "provider" in doc and "virtual_key" in doc:
        raise _error(f"{path}.virtual_key", 'name the provider once: "provider" or "virtual_key", not both.')
    key = "provider" if "provider" in doc else "virtual_key"
    name = doc[key]
    if not isinstance(name, str) or not name.strip() or len(name) > 64:
        raise _error(f"{path}.{key}", 'must name a provider of the workspace, e.g. "@openai-prod".')
    name = name.strip()
    if key == "virtual_key":
        return "@" + name.removeprefix("@")
    if name.lower() in BUILTIN_PROVIDERS:
        return name.lower()
    return "@" + name.removeprefix("@")


@dataclass(slots=True)
class _Inherited:
    override_params: dict
    retry: Retry | None
    cache_max_age: int | None
    request_timeout_ms: int | None


class _Parser:
    def __init__(self) -> None:
        self.has_loadbalance = False

    def node(self, raw: object, path: str, inherited: _Inherited, depth: int, *, root: bool) -> Target | Group:
        doc = _object(raw, path)
        _check_keys(doc, _NODE_KEYS, path)
        if root and "weight" in doc:
            raise _error(f"{path}.weight", "applies to targets of a loadbalance strategy only.")
        here = self._inherit(doc, path, inherited)
        names_provider = "provider" in doc or "virtual_key" in doc
        if "targets" in doc or "strategy" in doc:
            if names_provider:
                key = "provider" if "provider" in doc else "virtual_key"
                raise _error(f"{path}.{key}", "a level has either a provider or strategy and targets, not both.")
            return self._group(doc, path, here, depth)
        if not names_provider and not root:
            raise _error(path, 'a target needs "provider": "@slug" (or "virtual_key"), or "strategy" and "targets".')
        return Target(
            path=path,
            provider=_provider(doc, path) if names_provider else "",
            override_params=here.override_params,
            retry=here.retry,
            cache_max_age=here.cache_max_age,
            request_timeout_ms=here.request_timeout_ms,
        )

    def _inherit(self, doc: dict, path: str, inherited: _Inherited) -> _Inherited:
        overrides = inherited.override_params
        if "override_params" in doc:
            overrides = {**overrides, **_object(doc["override_params"], f"{path}.override_params")}
        timeout = inherited.request_timeout_ms
        if "request_timeout" in doc:
            timeout = _whole(doc["request_timeout"], f"{path}.request_timeout", 1, MAX_REQUEST_TIMEOUT_MS)
        return _Inherited(
            override_params=overrides,
            retry=_retry(doc["retry"], f"{path}.retry") if "retry" in doc else inherited.retry,
            cache_max_age=_cache(doc["cache"], f"{path}.cache") if "cache" in doc else inherited.cache_max_age,
            request_timeout_ms=timeout,
        )

    def _group(self, doc: dict, path: str, here: _Inherited, depth: int) -> Group:
        if depth >= MAX_DEPTH:
            raise _error(f"{path}.targets", f"targets nest at most {MAX_DEPTH} levels deep.")
        if "strategy" not in doc:
            raise _error(f"{path}.strategy", 'is required with targets, e.g. {"mode": "fallback"}.')
        strategy = _object(doc["strategy"], f"{path}.strategy")
        _check_keys(strategy, frozenset(("mode", "on_status_codes")), f"{path}.strategy")
        mode = strategy.get("mode")
        if mode in _UNSUPPORTED_MODES:
            raise _error(f"{path}.strategy.mode", f"{_UNSUPPORTED_MODES[mode]} is not supported by Portico.")
        if mode not in _MODES:
            raise _error(f"{path}.strategy.mode", "must be one of fallback, loadbalance, single.")
        codes = None
        if "on_status_codes" in strategy:
            if mode != "fallback":
                raise _error(f"{path}.strategy.on_status_codes", "applies to the fallback mode only.")
            codes = _codes(strategy["on_status_codes"], f"{path}.strategy.on_status_codes")
        targets = doc.get("targets")
        if not isinstance(targets, list) or not targets:
            raise _error(f"{path}.targets", "must be a non-empty list of targets.")
        if len(targets) > MAX_TARGETS:
            raise _error(f"{path}.targets", f"at most {MAX_TARGETS} targets.")
        options, weights = [], []
        for index, target in enumerate(targets):
            where = f"{path}.targets[{index}]"
            options.append(self.node(target, where, here, depth + 1, root=False))
            weights.append(self._weight(target, where, mode))
        if mode == "loadbalance":
            if not sum(weights) > 0:
                raise _error(f"{path}.targets", "loadbalance needs at least one target with a weight above 0.")
            self.has_loadbalance = True
        return Group(path=path, mode=mode, options=tuple(options), weights=tuple(weights), fallback_codes=codes)

    @staticmethod
    def _weight(target: dict, path: str, mode: str) -> float:
        if "weight" not in target:
            return 1.0
        if mode != "loadbalance":
            raise _error(f"{path}.weight", "applies to targets of a loadbalance strategy only.")
        weight = target["weight"]
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
            raise _error(f"{path}.weight", "must be a number of at least 0.")
        return float(weight)


def parse_config(raw: object, *, config_id: str = "inline") -> Config:
    """The validated config; raises InvalidParameter naming the offending field."""
    parser = _Parser()
    root = parser.node(raw, "config", _Inherited({}, None, None, None), 0, root=True)
    return Config(root=root, config_id=config_id, has_loadbalance=parser.has_loadbalance)


def parse_inline(text: str) -> Config:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidParameter(HEADER, f"{HEADER}: not valid JSON ({exc}).") from None
    return parse_config(doc)


_inline_configs: dict[str, Config | InvalidParameter] = {}
_INLINE_MAX = 1024


def inline_config(text: str) -> Config:
    """``parse_inline``, memoised per header value: SDK clients send the same config on every
    request, and parsing it again would cost more than the rest of the routing."""
    parsed = _inline_configs.get(text)
    if parsed is None:
        try:
            parsed = parse_inline(text)
        except InvalidParameter as exc:
            parsed = exc
        if len(_inline_configs) >= _INLINE_MAX:
            _inline_configs.clear()
        _inline_configs[text] = parsed
    if isinstance(parsed, InvalidParameter):
        raise parsed
    return parsed


def is_inline(value: str) -> bool:
    """Inline JSON (starts with ``{``) rather than the id or slug of a saved config."""
    return value.lstrip()[:1] == "{"


def provider_slugs(config: Config) -> list[tuple[str, str]]:
    """(path, slug) of every workspace provider the config names, for checks at save time."""
    found, stack = [], [config.root]
    while stack:
        node = stack.pop()
        if isinstance(node, Group):
            stack.extend(reversed(node.options))
        elif node.provider.startswith("@"):
            found.append((node.path, node.provider[1:]))
    return found
