"""Values for plugin authors' tests: a result, a failed result, a book, a delivery, built with
sensible defaults so a test names only what it is about.

    from stress_hookspecs.testing import make_result, make_metrics
    result = make_result(symbols={"MES": make_metrics(drawdown_pct=0.06)})

.. versionadded:: 0.2
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stress_hookspecs.types import Book, Breach, Delivery, Limits, Metrics, Position, StressResult

TIMESTAMP = "2024-01-15T15:00:05Z"
"""A regular-session slot (10:00:05 New York time, winter)."""


def make_metrics(worst_pnl: float = -100.0, drawdown_pct: float = 0.001,
                 var_ratio: float | None = 0.5, delta_change: float | None = 0.01,
                 headroom: float = 5.0) -> Metrics:
    """One symbol's (or the portfolio's) metrics, well within the default limits."""
    return Metrics(worst_pnl=worst_pnl, drawdown_pct=drawdown_pct, var_ratio=var_ratio,
                   delta_change=delta_change, headroom=headroom)


def make_result(*, run_id: str = "r1", scenario: str = "flash_crash_lite",
                timestamp: str = TIMESTAMP, symbols: Mapping[str, Metrics] | None = None,
                portfolio: Metrics | None = None, breaches: Sequence[Breach] = (),
                limits: Limits | None = None, **fields: Any) -> StressResult:
    """A completed run: ``breached`` when ``breaches`` are given (and then ``kill_switch``),
    else ``passed``. The headroom is the smallest of the portfolio's and the symbols'; any other
    ``StressResult`` field can be given by name."""
    symbols = dict(symbols) if symbols is not None else {"MES": make_metrics()}
    portfolio = portfolio if portfolio is not None else make_metrics(delta_change=None)
    values: dict[str, Any] = {
        "symbols_tested": len(symbols),
        "headroom": min([portfolio.headroom, *(m.headroom for m in symbols.values())]),
        "kill_switch": bool(breaches),
        **fields,
    }
    return StressResult(run_id=run_id, scenario=scenario, timestamp=timestamp,
                        portfolio=portfolio, symbols=symbols, breaches=tuple(breaches),
                        limits=limits if limits is not None else Limits(), **values)


def make_failed_result(*, run_id: str = "f1", scenario: str = "flash_crash_lite",
                       timestamp: str = TIMESTAMP, failure: str = "book_unavailable",
                       error: str = "plugin host (stress_book): raised "
                                    "ConnectionError('broker down')",
                       **fields: Any) -> StressResult:
    """A run that could not check the book: no metrics, no limits, ``error`` says why."""
    values: dict[str, Any] = {"symbols_tested": 0, "headroom": None, "limits": None, **fields}
    return StressResult(run_id=run_id, scenario=scenario, timestamp=timestamp, portfolio=None,
                        symbols={}, error=error, failure=failure, **values)


def make_position(symbol: str = "MES", quantity: float = 5, price: float = 6000.0,
                  spread: float = 0.25, multiplier: float = 5, **fields: Any) -> Position:
    """One micro E-mini S&P line by default: 5 contracts at 6000, a quarter-point spread."""
    return Position(symbol=symbol, quantity=quantity, price=price, spread=spread,
                    multiplier=multiplier, **fields)


def make_book(*positions: Position, equity: float = 100_000.0,
              var: float | None = None) -> Book:
    """A book of ``positions`` (one ``make_position()`` when none are given)."""
    return Book(equity=equity, positions=positions or (make_position(),), var=var)


def make_delivery(id: int = 1, attempt: int = 1, test: bool = False,
                  first_attempt_at: str = TIMESTAMP) -> Delivery:
    """A sink's first delivery attempt of a report."""
    return Delivery(id=id, attempt=attempt, first_attempt_at=first_attempt_at, test=test)
