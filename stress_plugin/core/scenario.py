"""Scenario files: loading and validation (ranges as docs/model.md)."""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from stress_hookspecs import LIMIT_NAMES, Limits
from stress_plugin.core.checks import (
    MAX_FILE_BYTES_DEFAULT,
    known_fields,
    number,
    parse_yaml,
    read_text,
    required,
    yaml_problem,
)
from stress_plugin.core.errors import NO_VALUE, ScenarioError
from stress_plugin.core.limits import check_limits, limits_in_force

RECOVERY_TYPES = ("linear", "exponential", "none")
MAX_GRID_POINTS = 10_001
"""Bounds the engine's symbols x time work; 10,000 steps is far finer than any useful grid."""
MAX_SPREAD_MULT = 1000.0
"""Spreads widen at most 1000x: with the book's bounds the spread cost stays finite."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
"""A scenario name, matched whole (``fullmatch``: a trailing newline is not a name)."""
_FIELDS = {
    "scenario_name",
    "description",
    "event_date",
    "source",
    "price_shock_pct",
    "spread_mult",
    "spread_mults",
    "duration_sec",
    "step_sec",
    "ramp_sec",
    "hold_sec",
    "recovery_type",
    "symbol_shocks",
    *LIMIT_NAMES,
}
_PATTERN_CHARS = frozenset("*?[")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class StressScenario:
    """A validated scenario, from a YAML file path or a mapping with the YAML's fields.

    ``StressScenario("flash_crash.yaml")`` raises ``ScenarioError`` naming the file, the field
    and the value for anything that docs/model.md does not allow, unknown fields included.
    """

    def __init__(self, source: str | Path | Mapping[str, Any], *, origin: str | None = None,
                 max_bytes: int = MAX_FILE_BYTES_DEFAULT):
        if isinstance(source, str | Path):
            self.origin = str(source)
            data = _read_yaml(Path(source), max_bytes)
        else:
            self.origin = origin or "<scenario mapping>"
            data = source
        src = self.origin
        data = known_fields(ScenarioError, src, data, _FIELDS)

        name = required(ScenarioError, src, data, "scenario_name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ScenarioError(
                src, "scenario_name", name, "must be 1-100 letters, digits, '_', '.' or '-'"
            )
        self.name: str = name
        self.description: str = _text(src, data, "description")
        self.source: str = _text(src, data, "source")
        self.event_date: str | None = _event_date(src, data.get("event_date"))

        shock = number(ScenarioError, src, "price_shock_pct",
                       required(ScenarioError, src, data, "price_shock_pct"), ge=-0.5, le=0.5)
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
        self.ramp_sec: float = number(ScenarioError, src, "ramp_sec", data.get("ramp_sec", 0),
                                      ge=0)
        self.hold_sec: float = number(ScenarioError, src, "hold_sec", data.get("hold_sec", 0),
                                      ge=0)
        self.ramp_steps: int = _in_steps(src, "ramp_sec", self.ramp_sec, self.step_sec)
        self.hold_steps: int = _in_steps(src, "hold_sec", self.hold_sec, self.step_sec)
        if self.ramp_steps + self.hold_steps > self.steps:
            raise ScenarioError(
                src, "hold_sec", data.get("hold_sec", 0),
                f"ramp_sec + hold_sec = {self.ramp_sec + self.hold_sec:g} must be <= "
                f"duration_sec {self.duration_sec:g}",
            )

        recovery = data.get("recovery_type", "linear")
        if recovery not in RECOVERY_TYPES:
            raise ScenarioError(src, "recovery_type", recovery,
                                f"must be one of {', '.join(RECOVERY_TYPES)}")
        self.recovery_type: str = recovery

        self.symbol_shocks: dict[str, float] = _keyed(
            src, data, "symbol_shocks", "shock", lambda f, v: number(
                ScenarioError, src, f, v, ge=-0.5, le=0.5))
        self.spread_mults: dict[str, float] = _keyed(
            src, data, "spread_mults", "spread multiplier", lambda f, v: number(
                ScenarioError, src, f, v, ge=1.0, le=MAX_SPREAD_MULT))
        if shock == 0 and not any(self.symbol_shocks.values()):
            raise ScenarioError(src, "price_shock_pct", shock,
                                "must not be 0 unless a symbol_shocks entry moves something")
        self._shock_map = SymbolMap(self.symbol_shocks, self.price_shock_pct)
        self._spread_map = SymbolMap(self.spread_mults, self.spread_mult)
        self.limits_given: dict[str, float] = check_limits(
            {k: data[k] for k in LIMIT_NAMES if k in data}, src, ScenarioError)
        """The thresholds this scenario sets itself (the rest are the defaults)."""
        self.thresholds: Limits = limits_in_force(scenario=self.limits_given, host=None,
                                                  live=None)[0]

    def shocks_for(self, symbols: np.ndarray) -> np.ndarray:
        """s_i per symbol (docs/model.md precedence: exact, longest pattern, first in the file)."""
        return self._shock_map.resolve(symbols)

    def spread_mults_for(self, symbols: np.ndarray) -> np.ndarray:
        """k_i per symbol, resolved like ``shocks_for``."""
        return self._spread_map.resolve(symbols)

    @property
    def profile_key(self) -> tuple[str, int, int, int]:
        """What the profile g(t) depends on: recovery, steps, ramp steps, hold steps."""
        return (self.recovery_type, self.steps, self.ramp_steps, self.hold_steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario_name": self.name,
            "description": self.description,
            "event_date": self.event_date,
            "source": self.source,
            "price_shock_pct": self.price_shock_pct,
            "spread_mult": self.spread_mult,
            "spread_mults": dict(self.spread_mults),
            "duration_sec": self.duration_sec,
            "step_sec": self.step_sec,
            "ramp_sec": self.ramp_sec,
            "hold_sec": self.hold_sec,
            "recovery_type": self.recovery_type,
            "symbol_shocks": dict(self.symbol_shocks),
            **self.thresholds.to_dict(),
        }

    def __repr__(self) -> str:
        return f"StressScenario({self.name!r}, origin={self.origin!r})"


def _read_yaml(path: Path, max_bytes: int) -> Any:
    text = read_text(path, ScenarioError, max_bytes)
    try:
        return parse_yaml(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(str(path), None, NO_VALUE, yaml_problem(exc)) from None


class SymbolMap:
    """Values keyed by exact symbols or fnmatch patterns (case-sensitive), resolved with
    docs/model.md's precedence: an exact key, else the longest matching pattern, else the first
    matching one in the file, else ``default``.

    Each distinct symbol is resolved once and remembered, so a run costs at most one
    dictionary look-up per symbol however many patterns the scenario has, and nothing but a
    list comparison when the book's symbols are those of the last run; a scenario with a few
    exact symbols and no patterns keeps the plain column comparisons (each one a pass over
    the book: 1,000 of them at 100,000 symbols cost 25x the run). A new symbol is matched
    only against the patterns whose literal start (what comes before the first ``*``, ``?``
    or ``[``) it starts with, found by one look-up per such length: 1,000 patterns over
    100,000 new symbols are not 100,000,000 matches. A pattern is compiled when a symbol
    first needs it: every run loads every scenario (duplicate names fail), and most of their
    patterns never see a symbol of the book.
    """

    _MEMO_LIMIT = 1_000_000
    """Distinct symbols remembered before the memo starts over (bounds its memory)."""

    def __init__(self, entries: Mapping[str, float], default: float) -> None:
        self.default = default
        self.exact = {k: v for k, v in entries.items() if not _PATTERN_CHARS & set(k)}
        ranked = sorted(((-len(k), i, k, v) for i, (k, v) in enumerate(entries.items())
                         if _PATTERN_CHARS & set(k)))
        self.pattern_count = len(ranked)
        self._by_start: dict[str, list[tuple[int, str, float]]] = {}
        """The patterns by literal start, each list in precedence order (its rank first)."""
        for rank, (_, _, key, value) in enumerate(ranked):
            start = key[:min(key.index(c) for c in _PATTERN_CHARS if c in key)]
            self._by_start.setdefault(start, []).append((rank, key, value))
        self._compiled: dict[str, re.Pattern[str]] = {}
        self._starts = sorted({len(start) for start in self._by_start})
        """The lengths of those starts, shortest first."""
        self._memo: dict[str, float] = {}
        self._last: tuple[list[str], np.ndarray] | None = None
        """The last symbol list resolved and its values: a run on an unchanged book reuses it."""

    def value(self, symbol: str) -> float:
        """The value for one symbol."""
        if symbol in self.exact:
            return self.exact[symbol]
        best, found = self.pattern_count, self.default
        for length in self._starts:
            if length > len(symbol):
                break
            for rank, key, value in self._by_start.get(symbol[:length], ()):
                if rank >= best:
                    break
                pattern = self._compiled.get(key)
                if pattern is None:
                    pattern = self._compiled[key] = re.compile(fnmatch.translate(key))
                if pattern.match(symbol):
                    best, found = rank, value
                    break
        return found

    def resolve(self, symbols: np.ndarray) -> np.ndarray:
        """The value for each symbol, as a float64 column in the same order."""
        out = np.full(len(symbols), self.default, dtype=np.float64)
        if not self.pattern_count and len(self.exact) <= 8:  # a few whole-column comparisons
            for symbol, value in self.exact.items():
                out[symbols == symbol] = value
            return out
        names = symbols.tolist()
        last = self._last
        if last is not None and last[0] == names:  # the same book again: no look-ups at all
            return last[1].copy()
        memo = self._memo
        values: list[float | None] = list(map(memo.get, names))  # one hash per symbol
        if None in values:  # symbols not seen before: resolve each once
            if len(memo) + values.count(None) > self._MEMO_LIMIT:
                memo.clear()
            for i, known in enumerate(values):
                if known is None:
                    values[i] = memo[names[i]] = self.value(names[i])
        out = np.array(values, dtype=np.float64)
        self._last = (names, out.copy())
        return out


def _text(src: str, data: Mapping[str, Any], field: str) -> str:
    value = data.get(field, "")
    if not isinstance(value, str):
        raise ScenarioError(src, field, value, "must be a string")
    return value


def _event_date(src: str, value: Any) -> str | None:
    """YYYY-MM-DD; YAML reads an unquoted date as a ``date``, which is accepted too."""
    if value is None:
        return None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, str) and _DATE.match(value):
        try:
            return dt.date.fromisoformat(value).isoformat()
        except ValueError:
            pass
    raise ScenarioError(src, "event_date", value, "must be a date as YYYY-MM-DD")


def _in_steps(src: str, field: str, seconds: float, step: float) -> int:
    """``seconds`` as a whole number of grid steps, or an error naming ``field``."""
    steps = seconds / step
    if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
        raise ScenarioError(src, field, seconds, f"must be a whole multiple of step_sec {step:g}")
    return round(steps)


def _keyed(src: str, data: Mapping[str, Any], field: str, what: str, check: Any
           ) -> dict[str, float]:
    """A mapping of symbol or pattern -> checked number, keys as strings."""
    entries = data.get(field) or {}
    if not isinstance(entries, Mapping):
        raise ScenarioError(src, field, entries, f"must be a mapping of symbol or pattern: {what}")
    out: dict[str, float] = {}
    for key, value in entries.items():
        name = str(key)
        if not name or len(name) > 64 or not name.isprintable():
            raise ScenarioError(src, field, key, "keys must be symbols or patterns of 1 to 64 "
                                "printable characters")
        out[name] = check(f"{field}.{name}", value)
    return out
