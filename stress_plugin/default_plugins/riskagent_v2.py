"""The RiskAgentV2 limit evaluator: each symbol and the portfolio against the three limits."""

from __future__ import annotations

import numpy as np

from stress_hookspecs import Breach, Limits, Metrics, StressResult, hookimpl
from stress_hookspecs.types import SymbolMetrics
from stress_plugin.core.book import PORTFOLIO

_LIMITS = ("max_drawdown_pct", "max_var_multiplier", "max_position_delta")


@hookimpl
def stress_evaluate(result: StressResult, limits: Limits) -> list[Breach]:
    """A breach is strictly greater than its threshold (model.md)."""
    if isinstance(result.symbols, SymbolMetrics):
        breaches = _column_breaches(result.symbols, limits)
    else:  # a result built by hand with a dict of Metrics
        breaches = []
        for symbol, metrics in result.symbols.items():
            breaches += _breaches(symbol, metrics, limits)
    return breaches + _breaches(PORTFOLIO, result.portfolio, limits)


def _breaches(symbol: str, m: Metrics, limits: Limits) -> list[Breach]:
    checks = (
        ("max_drawdown_pct", m.drawdown_pct, limits.max_drawdown_pct),
        ("max_var_multiplier", m.var_ratio, limits.max_var_multiplier),
        ("max_position_delta", m.delta_change, limits.max_position_delta),
    )
    return [
        Breach(symbol=symbol, limit=name, value=value, threshold=threshold)
        for name, value, threshold in checks
        if value is not None and value > threshold
    ]


def _column_breaches(symbols: SymbolMetrics, limits: Limits) -> list[Breach]:
    """The same breaches in the same order as ``_breaches`` per symbol, from whole columns.

    One comparison per column instead of a Python loop over 100,000 symbols; a NaN or None
    (no VaR) never breaches. Row-major ``nonzero`` keeps book order, then limit order.
    """
    names, _, drawdown, var_ratio, delta_change, _ = symbols.columns
    values = np.column_stack([np.asarray(c, dtype=np.float64)
                              for c in (drawdown, var_ratio, delta_change)])
    thresholds = [getattr(limits, name) for name in _LIMITS]
    with np.errstate(invalid="ignore"):
        rows, cols = np.nonzero(values > np.array(thresholds, dtype=np.float64))
    return [Breach(symbol=names[r], limit=_LIMITS[c], value=v, threshold=thresholds[c])
            for r, c, v in zip(rows.tolist(), cols.tolist(), values[rows, cols].tolist(),
                               strict=True)]
