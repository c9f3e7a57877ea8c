"""Store.save_run: one write per run that reads back as the result's to_dict(), prices exact."""

from __future__ import annotations

import json

import pytest

from stress_hookspecs import Book, Position
from stress_plugin.store import Store, _json, _result_json


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
    assert json.loads(_result_json(expected)) == json.loads(_json(expected))  # any slicing
    (stored,) = store.runs_since("2000-01-01T00:00:00Z")
    assert stored == {**json.loads(json.dumps(expected)), "trigger": "manual",
                      "scheduled_for": None}
    assert store.prices_since("2000-01-01T00:00:00Z") == sorted(
        (p.symbol, p.price) for p in data.positions)
