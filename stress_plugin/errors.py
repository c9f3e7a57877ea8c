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


FAILURE_REASONS = {
    "book_unavailable": "no book: the book hook raised, or nothing supplied one",
    "book_invalid": "the book (hook answer or file) is not a valid book",
    "limits_unavailable": "the stress_limits hook raised",
    "limits_invalid": "the stress_limits answer is not valid limits",
    "evaluator_failed": "a stress_evaluate implementation raised or answered something invalid",
    "no_evaluator": "no stress_evaluate implementation is loaded",
    "non_finite": "the engine produced a NaN or an infinity",
}
"""Why a run can fail: the ``reason`` label of ``stress_runs_failed_total``."""
UNAVAILABLE_REASONS = frozenset({"book_unavailable", "limits_unavailable", "evaluator_failed",
                                 "no_evaluator"})
"""Failures of something the run depends on (the API answers 503), not of the input (422)."""


class RunFailure(StressError):
    """What a run needs (book, limits, evaluators, finite numbers) could not be had.

    The runner turns it into a stored, counted and alerted ``failed`` run; it never passes.
    """

    def __init__(self, reason: str, source: str, field: str | None, value: Any,
                 problem: str) -> None:
        assert reason in FAILURE_REASONS, reason
        self.reason = reason
        super().__init__(source, field, value, problem)

    @classmethod
    def wrap(cls, reason: str, exc: StressError) -> RunFailure:
        """The same message as ``exc``, labelled with ``reason``."""
        return cls(reason, exc.source, exc.field, exc.value, exc.problem)


class UnknownRun(StressError):
    """A run id that the store does not hold (the API answers 404)."""
