"""The RiskAgentV2 limit evaluator: each symbol and the portfolio against the three limits."""

from __future__ import annotations

import numpy as np

from stress_hookspecs import (
    LIMIT_NAMES,
    Breach,
    Limits,
    Metrics,
    StressResult,
    SymbolMetrics,
    hookimpl,
)
from stress_plugin.core.book import PORTFOLIO


@hookimpl
def stress_evaluate(result: StressResult) -> list[Breach]:
    """A breach is strictly greater than its threshold (docs/model.md, "The three limits")."""
    limits = result.limits
    if limits is None or result.portfolio is None:  # a failed run is never judged as passing
        raise ValueError(f"run {result.run_id} has no metrics or limits to judge")
    if isinstance(result.symbols, SymbolMetrics):
        breaches = _column_breaches(result.symbols, limits)
    else:  # a result built by hand with a dict of Metrics
        breaches = []
        for symbol, metrics in result.symbols.items():
            breaches += _breaches(symbol, metrics, limits)
    return breaches + _breaches(PORTFOLIO, result.portfolio, limits)


def _breaches(symbol: str, m: Metrics, limits: Limits) -> list[Breach]:
    values = (m.drawdown_pct, m.var_ratio, m.delta_change)  # in LIMIT_NAMES order
    return [
        Breach(symbol=symbol, limit=name, value=value, threshold=getattr(limits, name))
        for name, value in zip(LIMIT_NAMES, values, strict=True)
        if value is not None and value > getattr(limits, name)
    ]


def _column_breaches(symbols: SymbolMetrics, limits: Limits) -> list[Breach]:
    """The same breaches in the same order as ``_breaches`` per symbol, from whole columns.

    One comparison per column instead of a Python loop over 100,000 symbols, and no copy of
    the columns (stacking them cost 0.2 ms at 10,000 symbols on a run that breaches nothing);
    a NaN or None (no VaR) never breaches. The hits are put in book order, then limit order.
    """
    thresholds = [getattr(limits, name) for name in LIMIT_NAMES]
    columns = [np.asarray(c, dtype=np.float64) for c in (
        symbols.drawdown_pct, symbols.var_ratio, symbols.delta_change)]
    with np.errstate(invalid="ignore"):
        hits = [(c > t).nonzero()[0] for c, t in zip(columns, thresholds, strict=True)]
    if not any(map(len, hits)):
        return []
    rows = np.concatenate(hits)
    cols = np.repeat(np.arange(len(hits)), list(map(len, hits)))
    order = np.lexsort((cols, rows))  # by symbol, then by limit
    names = symbols.symbols
    return [Breach(symbol=names[r], limit=LIMIT_NAMES[c], value=float(columns[c][r]),
                   threshold=thresholds[c])
            for r, c in zip(rows[order].tolist(), cols[order].tolist(), strict=True)]
