"""The stress-plugin hook contract.

A plugin is any module or object with functions named like the hooks below, marked with
``@hookimpl``, and registered under the entry-point group ``stress_plugin``. An implementation
may take fewer arguments than the spec names.

Input hooks fail closed: an exception or an unusable answer from ``stress_book``,
``stress_limits`` or ``stress_evaluate`` fails the run (it is stored, counted and paged as
failed, never reported as passing). Output hooks are isolated: an exception in one
``stress_bus_publish`` or ``stress_alert`` implementation is logged and counted, and the others
still run.

For the first-answer hooks (``stress_book``, ``stress_limits``, ``stress_trading_state``,
``stress_clock``) an implementation marked
``trylast=True`` is a default: it is asked only when no other plugin implements the hook, so a
real host that answers None (or raises) never falls through to it.
"""

from __future__ import annotations

from typing import Any

import pluggy

from stress_hookspecs.types import (
    LIMIT_NAMES,
    ArrayLike,
    Book,
    BookColumns,
    Breach,
    Column,
    Delivery,
    DeliveryDeferred,
    DeliveryRejected,
    EventType,
    KillMode,
    LimitName,
    Limits,
    Metrics,
    Position,
    RiskEvent,
    RunStatus,
    RunTrigger,
    StressResult,
    SymbolMetrics,
    TradingState,
)

__version__ = "0.2.0"
"""The contract's version; see hookspecs/CHANGELOG.md. A dependent pins ``>=0.2,<0.3``."""

PROJECT_NAME = "stress_plugin"
"""The pluggy project name and the entry-point group."""

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = [
    "LIMIT_NAMES",
    "PROJECT_NAME",
    "ArrayLike",
    "Book",
    "BookColumns",
    "Breach",
    "Column",
    "Delivery",
    "DeliveryDeferred",
    "DeliveryRejected",
    "EventType",
    "KillMode",
    "LimitName",
    "Limits",
    "Metrics",
    "Position",
    "RiskEvent",
    "RunStatus",
    "RunTrigger",
    "StressResult",
    "SymbolMetrics",
    "TradingState",
    "__version__",
    "hookimpl",
    "hookspec",
    "stress_alert",
    "stress_book",
    "stress_bus_publish",
    "stress_clock",
    "stress_evaluate",
    "stress_limits",
    "stress_scenarios",
    "stress_trading_state",
]


@hookspec
def stress_scenarios() -> list[Any]:
    """Scenario definitions this plugin provides.

    Called once when the runner looks up scenarios by name. Return a list whose items are each a
    path (``str`` or ``pathlib.Path``) to a scenario YAML file, or a mapping with the YAML's
    fields. All plugins' answers are collected; two scenarios with one name are an error.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def stress_book() -> Book | BookColumns | dict[str, Any] | None:
    """The book to stress now.

    Called at the start of every run that was not given a book. Return a ``Book``, a
    ``BookColumns`` (one array per field: the cheap snapshot of a large book), or a mapping
    in the book file's shape (``equity``, optional ``var``, ``positions``), or None to pass.
    Stops at the first non-None result. Raising, or an answer that is not a valid book, fails
    the run (the next implementation is not asked). The embedded host's demo book is a
    ``trylast`` default, asked only when no other plugin implements this hook. Return a
    snapshot: the runner never mutates it.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       A ``BookColumns`` answer.
    """


@hookspec(firstresult=True)
def stress_limits() -> Limits | dict[str, float] | None:
    """The live risk limits (the RiskAgentV2 integration).

    Called once per run, before the engine. Return a ``Limits`` or a mapping with any of
    ``max_drawdown_pct``, ``max_var_multiplier``, ``max_position_delta``, or None. Per field,
    live limits set through the API win over this answer, which wins over the scenario's
    thresholds, then the defaults. Stops at the first non-None result; raising or an invalid
    answer fails the run.

    .. versionadded:: 0.1
    """


@hookspec
def stress_evaluate(result: StressResult) -> list[Breach] | None:
    """The breaches of one run.

    Called after the engine, with the run's ``result``: metrics filled in, ``result.limits``
    the limits in force, no breaches yet. Return a list of ``Breach`` (empty when within
    limits) or None. The breaches of all evaluators are merged; identical ones count once.
    Raising or answering anything else fails the run: an evaluator that cannot judge never lets
    a run pass. At least one implementation must be loaded.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       The ``limits`` argument is gone: they are ``result.limits``.
    """


@hookspec
def stress_bus_publish(event: RiskEvent) -> None:
    """Deliver a risk event to the host's bus.

    Called with ``event.type == "KILL_SWITCH"`` on a breach (and on a failed run with
    ``STRESS_ON_FAILURE=halt``) before the run is stored or any alert sink runs, so a slow page
    never delays a halt; with ``"RESET"`` when an operator clears the halt. ``event`` carries
    the scenario, symbols, run id, timestamp and, for a KILL_SWITCH, the ``mode``: ``halt``
    (stop all new orders) or ``reduce`` (accept only orders that reduce a position). Every
    implementation is called; raise to report a failed delivery. The runtime then reads the
    state back through ``stress_trading_state``.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def stress_trading_state() -> TradingState | str | None:
    """The host's trading state now: ``ACTIVE``, ``REDUCING`` or ``HALTED``, or None (unknown).

    Called right after a ``KILL_SWITCH`` (and a ``RESET``) has been published, repeatedly with
    a short sleep, until the answer shows what was asked (``HALTED``, or ``REDUCING`` or
    ``HALTED`` for ``mode == "reduce"``; ``ACTIVE`` after a RESET) or ``STRESS_KILL_CONFIRM_S``
    passes. Answer from the trading system itself (what its order checks enforce), not from a
    copy of the last event. Stops at the first non-None result. With no implementation the
    run's ``kill_switch_confirmed`` is None; an exception or an unknown answer counts as not
    confirmed. The embedded host's latch is a ``trylast`` default.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def stress_clock() -> Any:
    """The host's clock, for hosts whose time is not the wall clock (a backtest).

    Called once at the start of every run and of every RESET, to timestamp the result, its run
    id and the risk event. Return a timezone-aware ``datetime`` or an ``int`` of UNIX
    nanoseconds, or None to use the wall clock. Stops at the first non-None result; an
    exception or any other answer is logged and the wall clock is used.

    .. versionadded:: 0.1
    """


@hookspec
def stress_alert(result: StressResult, delivery: Delivery) -> str | None:
    """Deliver a run's report to people (PagerDuty, chat, mail).

    Called for every run, never on the run's path: the runtime writes one pending delivery per
    sink in the same transaction as the run, and a delivery worker calls each sink on its own,
    in order per scenario, after any KILL_SWITCH has gone out. ``result.status`` is
    ``breached`` (announce it), ``failed`` (the check could not run: ``result.error`` says why;
    announce that too) or ``passed`` (a sink that keeps incidents may resolve the ones in
    ``result.resolves``; most sinks simply return). ``delivery`` has the id (the same on every
    retry: de-duplicate by it), the attempt number and the first attempt's time.

    Retries belong to the runtime: raise ``DeliveryDeferred`` to be tried again later
    (optionally with ``retry_after`` seconds), ``DeliveryRejected`` when the report can never
    be delivered; any other exception is retried too, with capped exponential backoff. A call
    that takes longer than the sink timeout is abandoned and retried. Delivery is at least
    once. Return None, or one word for the ``stress_alerts_total`` outcome label (e.g.
    ``disabled``).

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       The first argument is named ``result``, as in ``stress_evaluate`` (it was ``report``).
    """
