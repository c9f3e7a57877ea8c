"""Scenario files: the pack's file, and every way a scenario can be wrong."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from stress_pack_flash_crash import SCENARIO_FILE
from stress_plugin import StressScenario
from stress_plugin.core.errors import ScenarioError

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


# -- shapes, targeted shocks and metadata (docs/model.md "Shapes and targeted shocks") ------------

SYMBOLS = np.array(["MES", "ES", "ESM6", "MESM6", "6B", "6BZ", "M6B", "NQ", "es"], dtype=object)


def test_exact_beats_longest_pattern_beats_first_in_file():
    s = StressScenario({**GOOD, "price_shock_pct": -0.01, "symbol_shocks": {
        "ES*": -0.02, "MES*": -0.03, "ESM6": -0.04, "6B?": -0.05, "6B*": -0.06, "?6B": -0.07,
        "*6*": -0.08}})
    assert dict(zip(SYMBOLS.tolist(), s.shocks_for(SYMBOLS).tolist(), strict=True)) == {
        "MES": -0.03,  # MES* (4 chars) only
        "ES": -0.02,
        "ESM6": -0.04,  # the exact key beats ES* and *6*
        "MESM6": -0.03,  # MES* is longer than ES* and *6*
        "6B": -0.06,  # 6B? needs a third character; 6B* and *6* are both 3 long: first wins
        "6BZ": -0.05,  # 6B? and 6B* are both 3 long: the first in the file wins
        "M6B": -0.07,  # ?6B and *6* are both 3 long: first in the file
        "NQ": -0.01,  # nothing matches: price_shock_pct
        "es": -0.01,  # case-sensitive
    }


@pytest.mark.parametrize("seed", range(3))
def test_patterns_by_literal_start_resolve_as_the_precedence_rule_says(seed):
    """A new symbol is matched only against the patterns it could match by their literal
    start; the answer is model.md's rule written plainly: the exact key, else the longest
    matching pattern, else the first of those in the file, else the default."""
    import fnmatch
    import random

    rng = random.Random(seed)

    def key() -> str:
        parts = [rng.choice(["A", "B", "1", "*", "?", "[AB]", "[!1]", "["]) for _ in range(
            rng.randint(1, 5))]
        return "".join(parts)

    for _ in range(100):
        entries = {key(): round(rng.uniform(-0.3, 0.3), 4) for _ in range(rng.randint(1, 25))}
        s = StressScenario({**GOOD, "symbol_shocks": entries})
        names = np.array(["".join(rng.choice("AB1[") for _ in range(rng.randint(1, 6)))
                          for _ in range(60)])
        expected = []
        for name in names.tolist():
            matching = [(-len(k), i, v) for i, (k, v) in enumerate(entries.items())
                        if fnmatch.fnmatchcase(name, k)]
            exact = name in entries and not set("*?[") & set(name)  # "[A" is a pattern
            expected.append(entries[name] if exact else
                            min(matching)[2] if matching else GOOD["price_shock_pct"])
        assert s.shocks_for(names).tolist() == expected, entries


def test_the_same_symbols_resolve_the_same_on_every_call():
    s = StressScenario({**GOOD, "symbol_shocks": {"ES*": -0.02, "[6M]*B": -0.09}})
    first = s.shocks_for(SYMBOLS)
    assert first.tolist() == [-0.05, -0.02, -0.02, -0.05, -0.09, -0.05, -0.09, -0.05, -0.05]
    assert np.array_equal(s.shocks_for(SYMBOLS[::-1]), first[::-1])  # memo keyed by symbol


def test_spread_mults_per_symbol_and_pattern_default_spread_mult():
    s = StressScenario({**GOOD, "spread_mult": 2, "spread_mults": {"ES*": 26, "MES": 5}})
    assert s.spread_mults_for(SYMBOLS[:4]).tolist() == [5.0, 26.0, 26.0, 2.0]


def test_zero_price_shock_is_allowed_when_a_symbol_shock_moves_something():
    s = StressScenario({**GOOD, "price_shock_pct": 0, "symbol_shocks": {"6B*": -0.09}})
    assert s.shocks_for(SYMBOLS[4:7]).tolist() == [-0.09, -0.09, 0.0]
    with pytest.raises(ScenarioError, match="must not be 0 unless a symbol_shocks entry"):
        StressScenario({**GOOD, "price_shock_pct": 0, "symbol_shocks": {"6B*": 0}})


def test_metadata_and_shape_fields_round_trip(tmp_path: Path):
    path = tmp_path / "event.yaml"
    path.write_text(textwrap.dedent("""\
        scenario_name: gbp_event
        event_date: 2016-10-07
        source: "BIS Markets Committee Papers No 9"
        description: "sterling down about 9%"
        price_shock_pct: 0
        symbol_shocks: {"6B*": -0.09}
        spread_mults: {"6B*": 4}
        duration_sec: 720
        ramp_sec: 120
        hold_sec: 0
        recovery_type: exponential
    """))
    s = StressScenario(path)
    assert (s.event_date, s.source, s.ramp_sec, s.hold_sec, s.ramp_steps) == (
        "2016-10-07", "BIS Markets Committee Papers No 9", 120, 0, 120)
    assert s.profile_key == ("exponential", 720, 120, 0)
    again = StressScenario(s.to_dict())
    assert again.to_dict() == s.to_dict()


def test_defaults_keep_the_old_shape():
    s = StressScenario(GOOD)
    assert (s.ramp_sec, s.hold_sec, s.event_date, s.source, s.spread_mults) == (
        0, 0, None, "", {})
    assert s.profile_key == ("linear", 60, 0, 0)


@pytest.mark.parametrize(("extra", "field", "problem"), [
    ({"ramp_sec": 2.5}, "ramp_sec", "whole multiple of step_sec 1"),
    ({"hold_sec": -1}, "hold_sec", "must be >= 0"),
    ({"ramp_sec": 40, "hold_sec": 30}, "hold_sec", "ramp_sec + hold_sec = 70 must be <= "
                                                   "duration_sec 60"),
    ({"step_sec": 5, "ramp_sec": 12}, "ramp_sec", "whole multiple of step_sec 5"),
    ({"spread_mults": {"ES*": 0.5}}, "spread_mults.ES*", "must be >= 1"),
    ({"spread_mults": ["ES"]}, "spread_mults", "mapping"),
    ({"symbol_shocks": {"6B?": "-9%"}}, "symbol_shocks.6B?", "must be a number"),
    ({"event_date": "6 May 2010"}, "event_date", "YYYY-MM-DD"),
    ({"event_date": "2010-02-30"}, "event_date", "YYYY-MM-DD"),
    ({"source": 42}, "source", "must be a string"),
])
def test_bad_shape_and_targeting_fields_are_named(tmp_path: Path, extra, field, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**GOOD, **extra}))
    with pytest.raises(ScenarioError) as err:
        StressScenario(path)
    message = str(err.value)
    assert str(path) in message and f": {field}:" in message and problem in message
