"""The RiskAgentV2 limit evaluator: each symbol and the portfolio against the three limits."""

from __future__ import annotations

from stress_hookspecs import Breach, Limits, Metrics, StressResult, hookimpl
from stress_plugin.book import PORTFOLIO


@hookimpl
def stress_evaluate(result: StressResult, limits: Limits) -> list[Breach]:
    """A breach is strictly greater than its threshold (model.md)."""
    breaches = []
    for symbol, metrics in [*result.symbols.items(), (PORTFOLIO, result.portfolio)]:
        breaches += _breaches(symbol, metrics, limits)
    return breaches


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
