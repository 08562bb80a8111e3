"""workspaces.configs: what a config may say, what it inherits, and the 400 for everything else
(naming the field, never ignoring it)."""

from __future__ import annotations

import pytest

from config.parsing import InvalidParameter
from workspaces.configs import DEFAULT_RETRY_CODES, Group, Target, inline_config, parse_config, parse_inline


def refused(doc: object) -> InvalidParameter:
    with pytest.raises(InvalidParameter) as caught:
        parse_config(doc)
    return caught.value


def test_it_parses_a_fallback_with_inherited_retry_cache_timeout_and_overrides():
    config = parse_config(
        {
            "retry": {"attempts": 2},
            "cache": {"mode": "simple", "max_age": 60},
            "request_timeout": 5000,
            "override_params": {"temperature": 0},
            "strategy": {"mode": "fallback", "on_status_codes": [429, 503]},
            "targets": [
                {"provider": "@primary"},
                {"virtual_key": "backup", "override_params": {"model": "gpt-4o-mini"}, "retry": {"attempts": 0}},
            ],
        }
    )
    root = config.root
    assert isinstance(root, Group) and root.mode == "fallback" and root.fallback_codes == {429, 503}
    first, second = root.options
    assert (first.path, first.provider, first.override_params) == ("config.targets[0]", "@primary", {"temperature": 0})
    assert first.retry.attempts == 2 and first.retry.on_status_codes == DEFAULT_RETRY_CODES
    assert (first.cache_max_age, first.request_timeout_ms) == (60, 5000)
    # A target's own value wins; override_params merge, the deeper key winning.
    assert second.provider == "@backup" and second.retry.attempts == 0
    assert second.override_params == {"temperature": 0, "model": "gpt-4o-mini"}
    assert config.config_id == "inline"


def test_a_root_without_provider_uses_the_request_header():
    config = parse_config({"cache": {"mode": "simple"}})
    assert isinstance(config.root, Target) and config.root.provider == ""
    assert config.root.cache_max_age == 7 * 86400


def test_it_parses_nested_loadbalance_weights():
    config = parse_config(
        {
            "strategy": {"mode": "loadbalance"},
            "targets": [
                {"provider": "@a", "weight": 0.7},
                {"weight": 0.3, "strategy": {"mode": "fallback"}, "targets": [{"provider": "@b"}, {"provider": "@c"}]},
            ],
        }
    )
    assert config.root.weights == (0.7, 0.3) and config.has_loadbalance
    assert config.root.options[1].options[1].path == "config.targets[1].targets[1]"


@pytest.mark.parametrize(
    ("doc", "param", "words"),
    [
        ({"cache": {"mode": "semantic"}}, "x-portkey-config.cache.mode", "semantic caching is not supported"),
        ({"input_guardrails": ["pg-x"]}, "x-portkey-config.input_guardrails", "guardrails are not supported"),
        ({"output_guardrails": ["pg-x"]}, "x-portkey-config.output_guardrails", "guardrails are not supported"),
        ({"before_request_hooks": []}, "x-portkey-config.before_request_hooks", "not supported"),
        (
            {"strategy": {"mode": "conditional", "conditions": []}, "targets": [{"provider": "@a"}]},
            "x-portkey-config.strategy.conditions",
            "unknown field",
        ),
        (
            {"strategy": {"mode": "conditional"}, "targets": [{"provider": "@a"}]},
            "x-portkey-config.strategy.mode",
            "conditional routing is not supported",
        ),
        ({"retries": {"attempts": 1}}, "x-portkey-config.retries", "unknown field"),
        ({"retry": {"attempts": 6}}, "x-portkey-config.retry.attempts", "from 0 to 5"),
        ({"retry": {"attempts": True}}, "x-portkey-config.retry.attempts", "whole number"),
        ({"retry": {"attempts": 1, "on_status_codes": [429, 99]}}, "x-portkey-config.retry.on_status_codes", "100"),
        ({"retry": {}}, "x-portkey-config.retry.attempts", "required"),
        ({"request_timeout": "soon"}, "x-portkey-config.request_timeout", "whole number"),
        ({"cache": {"mode": "simple", "max_age": 0}}, "x-portkey-config.cache.max_age", "from 1"),
        ({"targets": [{"provider": "@a"}]}, "x-portkey-config.strategy", "is required"),
        ({"strategy": {"mode": "fallback"}, "targets": []}, "x-portkey-config.targets", "non-empty"),
        (
            {"strategy": {"mode": "fallback"}, "targets": [{"provider": "@a"}, {"override_params": {}}]},
            "x-portkey-config.targets[1]",
            "needs",
        ),
        (
            {"strategy": {"mode": "fallback"}, "targets": [{"provider": "@a", "input_guardrails": ["x"]}]},
            "x-portkey-config.targets[0].input_guardrails",
            "guardrails",
        ),
        (
            {"strategy": {"mode": "fallback"}, "targets": [{"provider": "@a", "weight": 2}]},
            "x-portkey-config.targets[0].weight",
            "loadbalance",
        ),
        (
            {"strategy": {"mode": "loadbalance"}, "targets": [{"provider": "@a", "weight": 0}]},
            "x-portkey-config.targets",
            "above 0",
        ),
        ({"provider": "@a", "api_key": "sk-x"}, "x-portkey-config.api_key", "workspace"),
        ({"provider": "@a", "virtual_key": "b"}, "x-portkey-config.virtual_key", "not both"),
        ({"provider": "@a", "override_params": []}, "x-portkey-config.override_params", "JSON object"),
        ([], "x-portkey-config", "JSON object"),
    ],
)
def test_it_refuses_what_it_does_not_support_naming_the_field(doc, param, words):
    error = refused(doc)
    assert error.param == param
    assert words in error.message and error.message.startswith(param)


def test_malformed_json_names_the_header():
    with pytest.raises(InvalidParameter) as caught:
        parse_inline('{"retry": ')
    assert caught.value.param == "x-portkey-config" and "not valid JSON" in caught.value.message


def test_inline_configs_are_parsed_once_per_header_value():
    text = '{"retry": {"attempts": 1}}'
    assert inline_config(text) is inline_config(text)
    with pytest.raises(InvalidParameter):
        inline_config('{"nope": 1}')
    with pytest.raises(InvalidParameter):  # a refusal is remembered too, and still raised
        inline_config('{"nope": 1}')
