"""Scenario files: the pack's file, and every way a scenario can be wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stress_pack_flash_crash import SCENARIO_FILE
from stress_plugin import StressScenario
from stress_plugin.errors import ScenarioError

GOOD = {"scenario_name": "custom", "price_shock_pct": -0.05}


def test_flash_crash_lite_has_the_runbooks_parameters():
    s = StressScenario(SCENARIO_FILE)
    assert (s.name, s.price_shock_pct, s.spread_mult, s.duration_sec, s.recovery_type) == (
        "flash_crash_lite", -0.03, 3.0, 60, "linear")
    assert s.steps == 60  # 61 grid points
    t = s.thresholds
    assert (t.max_drawdown_pct, t.max_var_multiplier, t.max_position_delta) == (0.05, 2.0, 0.10)


def test_defaults_for_optional_fields():
    s = StressScenario(GOOD)
    assert (s.spread_mult, s.duration_sec, s.step_sec, s.recovery_type) == (1.0, 60, 1, "linear")
    assert s.thresholds.max_drawdown_pct == 0.05


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("price_shock_pct", 0, "must not be 0"),
    ("price_shock_pct", -0.6, "must be >= -0.5"),
    ("price_shock_pct", "3%", "must be a number"),
    ("price_shock_pct", float("nan"), "finite"),
    ("spread_mult", 0.5, "must be >= 1"),
    ("duration_sec", 0, "must be > 0"),
    ("step_sec", 7, "whole multiple"),
    ("step_sec", 0.001, "grid points"),
    ("recovery_type", "cubic", "must be one of linear, exponential, none"),
    ("max_drawdown_pct", 0, "must be > 0"),
    ("max_drawdown_pct", 1.5, "must be <= 1"),
    ("max_var_multiplier", -1, "must be > 0"),
    ("max_position_delta", True, "must be a number"),
    ("symbol_shocks", ["MES"], "mapping"),
    ("scenario_name", "bad name!", "letters"),
    ("shock", -0.03, "unknown field"),
])
def test_bad_fields_are_named_with_their_value(tmp_path: Path, field, value, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**GOOD, field: value}))
    with pytest.raises(ScenarioError) as err:
        StressScenario(path)
    message = str(err.value)
    assert str(path) in message and field in message and problem in message


def test_bad_symbol_shock_names_the_symbol():
    with pytest.raises(ScenarioError, match=r"symbol_shocks\.MNQ: must be <= 0.5"):
        StressScenario({**GOOD, "symbol_shocks": {"MNQ": 0.9}})


def test_missing_required_field():
    with pytest.raises(ScenarioError, match="price_shock_pct: is required"):
        StressScenario({"scenario_name": "x"})


def test_unreadable_and_invalid_yaml(tmp_path: Path):
    with pytest.raises(ScenarioError, match="cannot read"):
        StressScenario(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("scenario_name: [unclosed\n")
    with pytest.raises(ScenarioError, match="invalid YAML"):
        StressScenario(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n")
    with pytest.raises(ScenarioError, match="must be a mapping"):
        StressScenario(listed)


def test_runbook_validate_command_works(tmp_path: Path):
    import subprocess
    import sys

    code = f"from stress_plugin import StressScenario; StressScenario({str(SCENARIO_FILE)!r})"
    subprocess.run([sys.executable, "-c", code], check=True)
