"""Price summaries: realized volatility worked by hand."""

from __future__ import annotations

import math

import pytest

from stress_plugin.core.prices import price_summary


def test_two_moves_of_one_percent_up_then_back():
    summary = price_summary([100.0, 101.0, 100.0])
    assert summary["samples"] == 3 and summary["last"] == 100.0
    assert summary["high"] == 101.0 and summary["low"] == 100.0
    expected = math.sqrt(math.log(1.01) ** 2 + math.log(100 / 101) ** 2)
    assert summary["realized_volatility"] == pytest.approx(expected, rel=1e-12)


def test_one_price_has_no_volatility_yet():
    assert price_summary([6000.0])["realized_volatility"] is None
