"""User mistakes (bad config, book, scenario or plugin answer), as opposed to bugs.

The CLI turns a ``StressError`` into one line and exit code 2; the API into a 422.
"""

from __future__ import annotations

import reprlib
from typing import Any

ECHO_CHARS = 100
"""At most this many characters of a bad value are shown in a message or a response."""


class StressError(Exception):
    """Input that cannot be used; the message names where, which field and what value.

    ``from_request``: the value came from the caller (an API body, a CLI argument), so the API
    may echo it; values read from files are never echoed over HTTP.
    """

    def __init__(self, source: str, field: str | None, value: Any, problem: str, *,
                 from_request: bool = False) -> None:
        self.source = source
        self.field = field
        self.value = value
        self.problem = problem
        self.from_request = from_request
        super().__init__(self.describe(echo=True))

    def describe(self, *, echo: bool) -> str:
        """The message, with the bad value (truncated) only when ``echo``."""
        where = f"{self.source}: {self.field}" if self.field else self.source
        shown = "" if self.value is _NO_VALUE or not echo else f" (got {shown_value(self.value)})"
        return f"{where}: {self.problem}{shown}"


_REPR = reprlib.Repr()  # attributes, not keywords: Python 3.11's Repr() takes none
_REPR.maxlevel, _REPR.maxstring, _REPR.maxlong, _REPR.maxother = 3, ECHO_CHARS, 40, ECHO_CHARS
_REPR.maxdict = _REPR.maxlist = _REPR.maxtuple = _REPR.maxset = 8


def shown_value(value: Any) -> str:
    """A bounded repr: an alias bomb's expansion or a 100 MB string is never walked whole."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int past Python's 4,300-digit str() limit
        text = f"<int of {value.bit_length()} bits>" if isinstance(value, int) else "<value>"
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS - 3] + "..."


def log_safe(text: str) -> str:
    """``text`` with control, format (bidi) and line-separator characters escaped, so what a
    user typed cannot start a new log line or hide text (``KILL_SWITCH triggered`` forgeries)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


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
                 problem: str, *, from_request: bool = False) -> None:
        assert reason in FAILURE_REASONS, reason
        self.reason = reason
        super().__init__(source, field, value, problem, from_request=from_request)

    @classmethod
    def wrap(cls, reason: str, exc: StressError) -> RunFailure:
        """The same message as ``exc``, labelled with ``reason``."""
        return cls(reason, exc.source, exc.field, exc.value, exc.problem,
                   from_request=exc.from_request)


class UnknownRun(StressError):
    """A run id that the store does not hold (the API answers 404)."""
