"""``stress-runner validate``: every problem of a scenario or book file in one go.

The loaders stop at the first problem (a run needs nothing more). To list them all without a
second copy of the rules, each field is checked by the same loaders on its own, inside a known
good scenario or position, and the book's ranges by ``BookArrays.problems``, which checks every
position at once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stress_hookspecs import Book
from stress_plugin.core.book import BookArrays, book_from_mapping
from stress_plugin.core.checks import MAX_FILE_BYTES_DEFAULT, parse_yaml, read_text, yaml_problem
from stress_plugin.core.errors import NO_VALUE, BookError, ScenarioError, StressError
from stress_plugin.core.scenario import StressScenario

MAX_SHOWN = 50
_GOOD_SCENARIO = {"scenario_name": "x", "price_shock_pct": -0.03}
_GOOD_POSITION = {"symbol": "X", "quantity": 1.0, "price": 1.0, "spread": 0.0, "multiplier": 1.0}


@dataclass
class Validation:
    """What a file is and, when it is valid, a one-line description; else its problems."""

    path: Path
    kind: str
    summary: str = ""
    problems: list[StressError] = field(default_factory=list)


def validate_file(path: Path, max_bytes: int = MAX_FILE_BYTES_DEFAULT) -> Validation:
    """Read ``path`` (JSON by its ``.json`` suffix, else YAML) and check all of it."""
    source = str(path)
    is_json = path.suffix.lower() == ".json"
    try:  # the loaders' own bounded reading: size, UTF-8, nesting, aliases
        text = read_text(path, StressError, max_bytes)
        data = json.loads(text) if is_json else parse_yaml(text)
    except StressError as exc:
        return Validation(path, "file", problems=[exc])
    except json.JSONDecodeError as exc:
        return Validation(path, "file", problems=[StressError(
            source, None, NO_VALUE, f"invalid JSON at line {exc.lineno}, column {exc.colno}: "
                                    f"{exc.msg}")])
    except RecursionError:
        return Validation(path, "file", problems=[
            StressError(source, None, NO_VALUE, "invalid JSON: nested too deeply")])
    except ValueError as exc:  # an integer of more than 4,300 digits
        return Validation(path, "file", problems=[
            StressError(source, None, NO_VALUE, f"invalid JSON: {exc}")])
    except yaml.YAMLError as exc:
        return Validation(path, "file", problems=[
            StressError(source, None, NO_VALUE, yaml_problem(exc))])
    if isinstance(data, Mapping) and "positions" in data:
        return _book(path, data)
    return _scenario(path, data)


# -- scenarios ------------------------------------------------------------------------------------


def _scenario(path: Path, data: Any) -> Validation:
    source = str(path)
    try:
        scenario = StressScenario(data, origin=source)
    except ScenarioError:
        pass
    else:
        return Validation(path, "scenario", f"scenario {scenario.name} ({path})")
    if not isinstance(data, Mapping):
        return Validation(path, "scenario", problems=[
            ScenarioError(source, None, type(data).__name__, "must be a mapping")])
    found = _Problems()
    good: dict[str, Any] = {}
    alone_bad: dict[str, ScenarioError] = {}
    for name, value in data.items():  # each field alone, in an otherwise valid scenario
        try:
            StressScenario({**_GOOD_SCENARIO, name: value}, origin=source)
        except ScenarioError as exc:
            alone_bad[name] = exc
        else:
            good[name] = value
    for name, alone in alone_bad.items():
        # a rule that spans fields (a zero price_shock_pct with a moving symbol_shocks entry,
        # ramp_sec + hold_sec within duration_sec) is judged with the file's own other fields
        try:
            StressScenario({**_GOOD_SCENARIO, **good, name: data[name]}, origin=source)
        except ScenarioError as in_file:
            found.add(in_file if in_file.field in (name, alone.field) else alone)
        else:
            good[name] = data[name]
    for _ in range(len(good) + len(_GOOD_SCENARIO) + 1):  # then what needs several fields
        try:
            StressScenario(good, origin=source)
            break
        except ScenarioError as exc:
            if exc.field in good:
                found.add(exc)
                del good[exc.field]
            elif exc.field in _GOOD_SCENARIO:  # required: missing, or bad and reported above
                if exc.field not in data:
                    found.add(exc)
                good[exc.field] = _GOOD_SCENARIO[exc.field]
            else:
                found.add(exc)
                break
    return Validation(path, "scenario", problems=found.list)


# -- books ----------------------------------------------------------------------------------------


def _book(path: Path, data: Mapping[str, Any]) -> Validation:
    source = str(path)
    try:
        book = book_from_mapping(data, source)
        BookArrays.from_book(book, source)
    except BookError:
        pass
    else:
        return Validation(path, "book", f"book {path}: {len(book.positions)} positions, "
                                        f"equity {book.equity:,.2f}")
    found = _Problems()
    one = [dict(_GOOD_POSITION)]
    for name, value in data.items():
        if name != "positions":
            _try(found, source, {"equity": 1.0, "positions": one, name: value})
    if "equity" not in data:
        _try(found, source, {"positions": one})
    raw = data["positions"]
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        _try(found, source, {"equity": 1.0, "positions": raw})
        return Validation(path, "book", problems=found.list)
    kept, index = [], []
    for i, item in enumerate(raw):
        try:
            (position,) = book_from_mapping({"equity": 1.0, "positions": [item]}, source).positions
        except BookError:
            for problem in _position_problems(source, item):
                found.add(_renumber(problem, i))
        else:
            kept.append(position)
            index.append(i)
    if not raw:
        _try(found, source, {"equity": 1.0, "positions": []})
    if kept:
        arrays = BookArrays.from_book(Book(equity=1.0, positions=tuple(kept)), source,
                                      check=False)
        for problem in arrays.problems(kept, source, index):
            found.add(problem)
    return Validation(path, "book", problems=sorted(found.list, key=_position_index))


def _position_index(problem: StressError) -> int:
    """The book's own fields first, then position by position."""
    match = re.match(r"positions\[(\d+)\]", problem.field or "")
    return int(match.group(1)) if match else -1


def _position_problems(source: str, item: Any) -> Iterator[BookError]:
    """Each field of one position alone in an otherwise valid position, ranges included."""
    if not isinstance(item, Mapping):
        yield from _errors(source, {"equity": 1.0, "positions": [item]})
        return
    symbol = item.get("symbol") if isinstance(item.get("symbol"), str) else "X"
    base = {**_GOOD_POSITION, "symbol": symbol or "X"}
    for name, value in item.items():
        yield from _errors(source, {"equity": 1.0, "positions": [{**base, name: value}]})
    for name in _GOOD_POSITION:
        if name not in item:
            rest = {k: v for k, v in base.items() if k != name}
            yield from _errors(source, {"equity": 1.0, "positions": [rest]})


def _errors(source: str, data: Any) -> Iterator[BookError]:
    try:
        BookArrays.from_book(book_from_mapping(data, source), source)
    except BookError as exc:
        yield exc


def _try(found: _Problems, source: str, data: Any) -> None:
    for problem in _errors(source, data):
        found.add(problem)


def _renumber(problem: BookError, index: int) -> BookError:
    field_name = problem.field
    if field_name and field_name.startswith("positions[0]"):
        field_name = f"positions[{index}]" + field_name[len("positions[0]"):]
    return BookError(problem.source, field_name, problem.value, problem.problem)


class _Problems:
    """Problems in the order found, each once."""

    def __init__(self) -> None:
        self.list: list[StressError] = []
        self._seen: set[str] = set()

    def add(self, problem: StressError) -> None:
        if str(problem) not in self._seen:
            self._seen.add(str(problem))
            self.list.append(problem)
