"""The stress-plugin hook contract.

A plugin is any module or object with functions named like the hooks below, marked with
``@hookimpl``, and registered under the entry-point group ``stress_plugin``. An implementation
may take fewer arguments than the spec names. Every call is isolated: an exception in one plugin
is logged and counted, and the others still run.
"""

from __future__ import annotations

from typing import Any

import pluggy

from stress_hookspecs.types import Book, Breach, Limits, Metrics, Position, RiskEvent, StressResult

PROJECT_NAME = "stress_plugin"
"""The pluggy project name and the entry-point group."""

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = [
    "PROJECT_NAME",
    "Book",
    "Breach",
    "Limits",
    "Metrics",
    "Position",
    "RiskEvent",
    "StressResult",
    "hookimpl",
    "hookspec",
    "stress_alert",
    "stress_book",
    "stress_bus_publish",
    "stress_evaluate",
    "stress_limits",
    "stress_scenarios",
]


@hookspec
def stress_scenarios() -> list[Any]:
    """Scenario definitions this plugin provides.

    Called once when the runner looks up scenarios by name. Return a list whose items are each a
    path (``str`` or ``pathlib.Path``) to a scenario YAML file, or a mapping with the YAML's
    fields. All plugins' answers are collected; two scenarios with one name are an error.
    """


@hookspec(firstresult=True)
def stress_book() -> Book | dict[str, Any] | None:
    """The book to stress now.

    Called at the start of every run that was not given a book. Return a ``Book``, or a mapping
    in the book file's shape (``equity``, optional ``var``, ``positions``), or None to pass.
    Stops at the first non-None result; the embedded host answers last (``trylast``) with the
    demo book, so a real host always wins. Return a snapshot: the runner never mutates it.
    """


@hookspec(firstresult=True)
def stress_limits() -> Limits | dict[str, float] | None:
    """The live risk limits (the RiskAgentV2 integration).

    Called once per run, before the engine. Return a ``Limits`` or a mapping with any of
    ``max_drawdown_pct``, ``max_var_multiplier``, ``max_position_delta`` (missing ones come from
    the scenario's thresholds), or None to use the scenario's thresholds. Stops at the first
    non-None result.
    """


@hookspec
def stress_evaluate(result: StressResult, limits: Limits) -> list[Breach] | None:
    """The breaches of one run.

    Called after the engine, with the run's ``result`` (metrics filled in, no breaches yet) and
    the ``limits`` in force. Return a list of ``Breach`` (empty when within limits) or None. The
    breaches of all evaluators are merged; identical ones count once.
    """


@hookspec
def stress_bus_publish(event: RiskEvent) -> None:
    """Deliver a risk event to the host's bus.

    Called on a breach with ``event.type == "KILL_SWITCH"`` before any alert sink runs, so a slow
    page never delays a halt. ``event`` carries the scenario, breached symbols, run id and
    timestamp. Every implementation is called; raise to report a failed delivery.
    """


@hookspec
def stress_alert(report: StressResult) -> str | None:
    """Deliver a run's report to people (PagerDuty, chat, mail).

    Called after every run, once any KILL_SWITCH has been published. ``report`` is the run's
    result with its breaches: ``report.breach_count > 0`` is a breach to announce; 0 means the
    scenario passed, so a sink that keeps incidents may resolve the one it opened for that
    scenario (most sinks simply return). Every implementation is called, each in its own worker
    with a timeout; raise to report a failed delivery. Keep anything slow behind a queue.
    Return None, or one word for the ``stress_alerts_total`` outcome label (e.g. ``disabled``).
    """
