"""Store.save_run: one write per run that reads back as the result's to_dict(), prices exact."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from stress_hookspecs import Book, Position
from stress_plugin.store import Store


def host_book(n: int) -> Book:
    return Book(equity=1e9, var=1e6, positions=tuple(
        Position(f"S{i}", 1 + i % 7, 100.0 + i / 3, 0.01, 5.0, var=None if i % 5 else 50.0 + i)
        for i in range(n)))


@pytest.mark.parametrize("n", [1, 399, 401, 999, 1000, 1001, 2500])
def test_saved_run_reads_back_as_to_dict_with_every_price(make_runner, tmp_path, n):
    store = Store(tmp_path / "s.db")
    runner = make_runner()
    runner.store = store
    runner.settings = runner.settings.model_copy(update={"stress_max_symbols": 10_000})
    data = host_book(n)
    result = runner.run_once(book=data)
    expected = result.to_dict()
    (stored,) = store.runs_since("2000-01-01T00:00:00Z")
    assert stored == {**json.loads(json.dumps(expected)), "trigger": "manual",
                      "scheduled_for": None}
    assert store.prices_since("2000-01-01T00:00:00Z") == sorted(
        (p.symbol, p.price) for p in data.positions)


def test_a_hand_built_result_round_trips_in_to_dict_order(tmp_path):
    from stress_hookspecs import Breach, Metrics
    from stress_hookspecs.testing import make_result

    result = make_result(
        scenario="s", timestamp="2026-11-25T15:00:05Z",
        portfolio=Metrics(-10.0, 0.1, None, None, 2.0),
        symbols={"A": Metrics(-4.0, 0.04, None, 0.0, 3.0), "B": Metrics(-6.0, 0.06, 3.0, 0.2, 0.5)},
        breaches=(Breach("B", "max_position_delta", 0.2, 0.1),))
    store = Store(tmp_path / "s.db")
    saved = store.save_run(result, trigger="cli", prices=[101.0, 202.0])
    assert saved == replace(result, episode="r1")  # the first breach opens an episode
    (stored,) = store.runs_since("2000-01-01T00:00:00Z")
    assert list(stored) == [*saved.to_dict(), "trigger", "scheduled_for"]
    assert stored == {**saved.to_dict(), "trigger": "cli", "scheduled_for": None}
    assert store.report("r1") == saved
    assert store.prices_since("2000-01-01T00:00:00Z") == [("A", 101.0), ("B", 202.0)]
