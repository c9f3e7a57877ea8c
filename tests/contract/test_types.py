"""The contract's types: the runner's column-backed symbols read exactly like a dict."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from helpers import book, position
from stress_hookspecs import Metrics
from stress_hookspecs.types import SymbolMetrics


def test_symbol_metrics_reads_like_a_dict_of_metrics():
    symbols = SymbolMetrics(np.array(["A", "B"], dtype=object), np.array([-1.0, -2.0]),
                            np.array([0.01, 0.02]), np.array([np.nan, 1.5]),
                            np.array([0.0, 0.07]), np.array([100.0, 1.2]))
    plain = {"A": Metrics(-1.0, 0.01, None, 0.0, 100.0), "B": Metrics(-2.0, 0.02, 1.5, 0.07, 1.2)}
    assert symbols == plain and plain == dict(symbols)
    assert len(symbols) == 2 and list(symbols) == ["A", "B"] and "B" in symbols
    assert "C" not in symbols and symbols.get("C") is None
    assert symbols["A"].var_ratio is None  # NaN means no VaR given
    assert type(symbols["B"].worst_pnl) is float
    assert list(symbols.items()) == list(plain.items())
    assert list(symbols.values()) == list(plain.values())
    assert repr(symbols) == repr(plain)
    assert symbols.to_dict() == {name: m.to_dict() for name, m in plain.items()}


def test_runner_result_json_is_the_same_as_with_a_plain_dict(make_runner):
    data = book(position(var=3000), position("MNQ", -2, 21000, 0.5, 2),
                position("OPT", -4, 6000, 1.0, 5, var=1200, delta=-0.15, gamma=0.0004), var=9000)
    result = make_runner().run_once(book=data)
    assert isinstance(result.symbols, SymbolMetrics)
    plain = replace(result, symbols=dict(result.symbols.items()))
    assert json.dumps(result.to_dict()) == json.dumps(plain.to_dict())
    assert result.to_dict()["symbols"]["MNQ"]["var_ratio"] is None


def test_the_limit_names_are_the_fields_of_limits_in_order():
    from dataclasses import fields

    from stress_hookspecs import LIMIT_NAMES, Limits

    assert tuple(f.name for f in fields(Limits)) == LIMIT_NAMES
    assert list(Limits().to_dict()) == list(LIMIT_NAMES)


def test_the_testing_helpers_build_results_a_plugin_can_rely_on():
    from stress_hookspecs import Breach
    from stress_hookspecs.testing import make_book, make_failed_result, make_metrics, make_result

    passed = make_result()
    assert passed.status == "passed" and passed.symbols_tested == 1 and not passed.kill_switch
    breached = make_result(symbols={"MES": make_metrics(headroom=0.4)},
                           breaches=[Breach("MES", "max_drawdown_pct", 0.06, 0.05)])
    assert breached.status == "breached" and breached.kill_switch and breached.headroom == 0.4
    failed = make_failed_result()
    assert failed.status == "failed" and failed.portfolio is None and failed.limits is None
    assert json.loads(json.dumps(failed.to_dict()))["failure"] == "book_unavailable"
    assert make_book().positions[0].symbol == "MES"
