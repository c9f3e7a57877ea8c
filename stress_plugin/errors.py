"""User mistakes (bad config, book, scenario or plugin answer), as opposed to bugs.

The CLI turns a ``StressError`` into one line and exit code 2; the API into a 422.
"""

from __future__ import annotations

from typing import Any


class StressError(Exception):
    """Input that cannot be used; the message names where, which field and what value."""

    def __init__(self, source: str, field: str | None, value: Any, problem: str) -> None:
        self.source = source
        self.field = field
        self.value = value
        self.problem = problem
        where = f"{source}: {field}" if field else source
        shown = "" if value is _NO_VALUE else f" (got {value!r})"
        super().__init__(f"{where}: {problem}{shown}")


_NO_VALUE = object()
NO_VALUE: Any = _NO_VALUE
"""Pass as ``value`` when there is no single bad value to show."""


class ConfigError(StressError):
    """A bad environment variable or setting."""


class ScenarioError(StressError):
    """A bad scenario file or an unknown scenario."""


class UnknownScenario(ScenarioError):
    """A scenario name that no pack or file provides (the API answers 404)."""


class BookError(StressError):
    """A bad book file or host book."""


class PluginError(StressError):
    """A plugin answered something that cannot be used."""
