"""Scenario files: loading and validation (ranges as model.md)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stress_hookspecs import Limits
from stress_plugin.checks import known_fields, number, parse_yaml, required
from stress_plugin.errors import NO_VALUE, ScenarioError
from stress_plugin.limits import LIMIT_FIELDS, check_limits, limits_in_force

RECOVERY_TYPES = ("linear", "exponential", "none")
MAX_GRID_POINTS = 10_001
"""Bounds the engine's symbols x time work; 10,000 steps is far finer than any useful grid."""
MAX_SPREAD_MULT = 1000.0
"""Spreads widen at most 1000x: with the book's bounds the spread cost stays finite."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_FIELDS = {
    "scenario_name",
    "description",
    "price_shock_pct",
    "spread_mult",
    "duration_sec",
    "step_sec",
    "recovery_type",
    "symbol_shocks",
    *LIMIT_FIELDS,
}


class StressScenario:
    """A validated scenario, from a YAML file path or a mapping with the YAML's fields.

    ``StressScenario("flash_crash.yaml")`` raises ``ScenarioError`` naming the file, the field
    and the value for anything that model.md does not allow, unknown fields included.
    """

    def __init__(self, source: str | Path | Mapping[str, Any], *, origin: str | None = None):
        if isinstance(source, str | Path):
            self.origin = str(source)
            data = _read_yaml(Path(source))
        else:
            self.origin = origin or "<scenario mapping>"
            data = source
        src = self.origin
        data = known_fields(ScenarioError, src, data, _FIELDS)

        name = required(ScenarioError, src, data, "scenario_name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ScenarioError(
                src, "scenario_name", name, "must be 1-100 letters, digits, '_', '.' or '-'"
            )
        self.name: str = name
        description = data.get("description", "")
        if not isinstance(description, str):
            raise ScenarioError(src, "description", description, "must be a string")
        self.description: str = description

        shock = number(ScenarioError, src, "price_shock_pct",
                       required(ScenarioError, src, data, "price_shock_pct"), ge=-0.5, le=0.5)
        if shock == 0:
            raise ScenarioError(src, "price_shock_pct", shock, "must not be 0")
        self.price_shock_pct: float = shock
        self.spread_mult: float = number(
            ScenarioError, src, "spread_mult", data.get("spread_mult", 1.0), ge=1.0,
            le=MAX_SPREAD_MULT
        )
        self.duration_sec: float = number(
            ScenarioError, src, "duration_sec", data.get("duration_sec", 60), gt=0
        )
        self.step_sec: float = number(ScenarioError, src, "step_sec", data.get("step_sec", 1), gt=0)
        steps = self.duration_sec / self.step_sec
        if not steps + 1 <= MAX_GRID_POINTS:  # also an overflow to inf (a step of 1e-320)
            raise ScenarioError(
                src, "step_sec", data.get("step_sec", 1),
                f"gives more than {MAX_GRID_POINTS} grid points; at most {MAX_GRID_POINTS}",
            )
        if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
            raise ScenarioError(
                src, "step_sec", data.get("step_sec", 1),
                f"duration_sec {self.duration_sec:g} must be a whole multiple of it",
            )
        self.steps: int = round(steps)

        recovery = data.get("recovery_type", "linear")
        if recovery not in RECOVERY_TYPES:
            raise ScenarioError(src, "recovery_type", recovery,
                                f"must be one of {', '.join(RECOVERY_TYPES)}")
        self.recovery_type: str = recovery

        shocks = data.get("symbol_shocks") or {}
        if not isinstance(shocks, Mapping):
            raise ScenarioError(src, "symbol_shocks", shocks, "must be a mapping of symbol: shock")
        self.symbol_shocks: dict[str, float] = {
            str(sym): number(ScenarioError, src, f"symbol_shocks.{sym}", val, ge=-0.5, le=0.5)
            for sym, val in shocks.items()
        }
        self.limits_given: dict[str, float] = check_limits(
            {k: data[k] for k in LIMIT_FIELDS if k in data}, src, ScenarioError)
        """The thresholds this scenario sets itself (the rest are the defaults)."""
        self.thresholds: Limits = limits_in_force(scenario=self.limits_given, host=None,
                                                  live=None)[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario_name": self.name,
            "description": self.description,
            "price_shock_pct": self.price_shock_pct,
            "spread_mult": self.spread_mult,
            "duration_sec": self.duration_sec,
            "step_sec": self.step_sec,
            "recovery_type": self.recovery_type,
            "symbol_shocks": dict(self.symbol_shocks),
            **self.thresholds.to_dict(),
        }

    def __repr__(self) -> str:
        return f"StressScenario({self.name!r}, origin={self.origin!r})"


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(str(path), None, NO_VALUE, f"cannot read: {exc.strerror}") from None
    try:
        return parse_yaml(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(str(path), None, NO_VALUE, f"invalid YAML: {exc}") from None
