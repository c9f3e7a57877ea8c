"""The service config, described once by ``ServiceConfig``: its validation names the field and
the value, the API's patch body is derived from it, and the environment's variables are read
off its fields."""

from __future__ import annotations

import logging

import pytest

from stress_plugin.core.errors import ConfigError
from stress_plugin.service.config import (
    ENV_FIELDS,
    ConfigPatch,
    ServiceConfig,
    check_config,
    effective_config,
    from_settings,
)
from stress_plugin.settings import load_settings

KNOWN = {"flash_crash_lite", "gbp_only"}


def defaults() -> dict:
    return from_settings(load_settings())


def test_the_defaults_are_the_documented_ones():
    assert check_config(defaults(), known=KNOWN).to_dict() == {
        "enabled": True, "market_hours_only": True, "interval_minutes": 60,
        "offset_seconds": 5, "max_symbols": 100, "max_runtime_ms": 50.0,
        "scenarios": ["flash_crash_lite"], "kill_mode": "halt"}


@pytest.mark.parametrize(("patch", "field", "problem"), [
    ({"interval_minutes": 7}, "interval_minutes", "divides 60"),
    ({"interval_minutes": 0}, "interval_minutes", "greater than or equal to 1"),
    ({"interval_minutes": 15, "offset_seconds": 900}, "offset_seconds", "0..899"),
    ({"max_runtime_ms": 0}, "max_runtime_ms", "greater than 0"),
    ({"max_runtime_ms": float("nan")}, "max_runtime_ms", "finite"),
    ({"max_symbols": True}, "max_symbols", "integer"),
    ({"enabled": "yes"}, "enabled", "boolean"),
    ({"scenarios": []}, "scenarios", "at least 1"),
    ({"scenarios": ["nope"]}, "scenarios", "unknown scenario nope (known: flash_crash_lite, "
                                           "gbp_only)"),
    ({"kill_mode": "panic"}, "kill_mode", "'halt' or 'reduce'"),
    ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
])
def test_a_bad_value_is_named_by_field_and_value(patch, field, problem):
    with pytest.raises(ConfigError) as caught:
        check_config({**defaults(), **patch}, known=KNOWN)
    assert caught.value.field == field and problem in caught.value.problem
    assert caught.value.value == patch[field] or patch[field] != patch[field]  # NaN


def test_scenarios_are_kept_once_each_in_order():
    config = check_config({**defaults(), "scenarios": ["gbp_only", "flash_crash_lite",
                                                        "gbp_only"]}, known=KNOWN)
    assert config.scenarios == ("gbp_only", "flash_crash_lite")


def test_the_patch_body_has_every_field_optional_with_its_bounds():
    assert set(ConfigPatch.model_fields) == set(ServiceConfig.model_fields)
    assert ConfigPatch().model_dump(exclude_none=True) == {}
    schema = ConfigPatch.model_json_schema()["properties"]["max_symbols"]["anyOf"][0]
    assert schema["minimum"] == 1 and schema["maximum"] == 10_000_000


def test_the_environment_variables_are_read_off_the_fields():
    assert ENV_FIELDS == {"enabled": "STRESS_ENABLED", "market_hours_only": "MARKET_HOURS_ONLY",
                          "max_symbols": "STRESS_MAX_SYMBOLS",
                          "max_runtime_ms": "STRESS_MAX_RUNTIME_MS",
                          "kill_mode": "STRESS_KILL_MODE"}


def test_an_explicit_variable_wins_over_the_stored_config_and_says_so(monkeypatch, caplog):
    stored = {**defaults(), "max_symbols": 7, "interval_minutes": 15}
    assert effective_config(load_settings(), stored)["max_symbols"] == 7  # nothing set: stored
    monkeypatch.setenv("STRESS_MAX_SYMBOLS", "50")
    with caplog.at_level(logging.WARNING, logger="stress_runner.service"):
        merged = effective_config(load_settings(), stored)
    assert merged["max_symbols"] == 50 and merged["interval_minutes"] == 15
    assert "STRESS_MAX_SYMBOLS=50 from the environment overrides the stored max_symbols=7" in \
        caplog.text
