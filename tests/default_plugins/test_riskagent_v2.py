"""The RiskAgentV2 evaluator: the column path gives exactly the per-symbol loop's breaches."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stress_hookspecs import Breach, Limits, Metrics, StressResult
from stress_hookspecs.testing import make_result
from stress_hookspecs.types import SymbolMetrics
from stress_plugin.default_plugins.riskagent_v2 import stress_evaluate

LIMITS = Limits(max_drawdown_pct=0.05, max_var_multiplier=2.0, max_position_delta=0.1)


def result(symbols) -> StressResult:
    return make_result(symbols=symbols, portfolio=Metrics(-1.0, 0.06, None, None, 1.0),
                       limits=LIMITS)


def columns(rng: np.random.Generator, n: int) -> tuple:
    """Values around each threshold, exact ties (never a breach) and NaN VaR ratios."""
    names = np.array([f"S{i}" for i in range(n)], dtype=object)
    drawdown = rng.choice([0.0, 0.04, 0.05, 0.0500001, 0.3], n)
    var_ratio = rng.choice([np.nan, 1.0, 2.0, 2.0000001, 9.0], n)
    delta = rng.choice([0.0, 0.1, 0.1000001, 0.5], n)
    worst = -drawdown * 1e6
    headroom = rng.uniform(0, 100, n)
    return names, worst, drawdown, var_ratio, delta, headroom


def as_dict(cols: tuple) -> dict[str, Metrics]:
    names, w, d, v, c, h = (np.asarray(x).tolist() for x in cols)
    return {s: Metrics(w_, d_, None if math.isnan(v_) else v_, c_, h_)
            for s, w_, d_, v_, c_, h_ in zip(names, w, d, v, c, h, strict=True)}


@pytest.mark.parametrize("seed", range(5))
def test_columns_give_the_loops_breaches_in_the_loops_order(seed):
    cols = columns(np.random.default_rng(seed), 300)
    expected = stress_evaluate(result(as_dict(cols)))
    assert expected  # the data does breach
    from_arrays = stress_evaluate(result(SymbolMetrics(*cols)))
    lists = [c.tolist() for c in cols]
    lists[3] = [None if math.isnan(v) else v for v in lists[3]]
    from_lists = stress_evaluate(result(SymbolMetrics(*lists)))
    assert from_arrays == expected and from_lists == expected
    for breach in from_arrays:
        assert type(breach.symbol) is str and type(breach.value) is float
        assert type(breach.threshold) is float


def test_a_tie_is_not_a_breach_and_no_var_never_breaches():
    cols = (["TIE", "OVER", "NOVAR"], [0.0] * 3, [0.05, 0.05000000001, 0.0],
            [2.0, float("nan"), None], [0.1, 0.0, 0.0], [1.0] * 3)
    breaches = stress_evaluate(result(SymbolMetrics(*cols)))
    assert breaches == [Breach("OVER", "max_drawdown_pct", 0.05000000001, 0.05),
                        Breach("PORTFOLIO", "max_drawdown_pct", 0.06, 0.05)]
