"""The store on both backends: a saved run reads back as the result's to_dict() with exact prices,
the same migrations reach the same schema, and a URL's password never shows."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from helpers import free_port
from stress_hookspecs import Book, Position
from stress_plugin.core.errors import ConfigError
from stress_plugin.store import MIGRATIONS, Store, redact, target_kind


def host_book(n: int) -> Book:
    return Book(equity=1e9, var=1e6, positions=tuple(
        Position(f"S{i}", 1 + i % 7, 100.0 + i / 3, 0.01, 5.0, var=None if i % 5 else 50.0 + i)
        for i in range(n)))


@pytest.mark.parametrize("n", [1, 399, 401, 999, 1000, 1001, 2500])
def test_saved_run_reads_back_as_to_dict_with_every_price(make_runner, store_url, n):
    store = Store(store_url)
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


def test_a_hand_built_result_round_trips_in_to_dict_order(store_url):
    from stress_hookspecs import Breach, Metrics
    from stress_hookspecs.testing import make_result

    result = make_result(
        scenario="s", timestamp="2026-11-25T15:00:05Z",
        portfolio=Metrics(-10.0, 0.1, None, None, 2.0),
        symbols={"A": Metrics(-4.0, 0.04, None, 0.0, 3.0), "B": Metrics(-6.0, 0.06, 3.0, 0.2, 0.5)},
        breaches=(Breach("B", "max_position_delta", 0.2, 0.1),))
    store = Store(store_url)
    saved = store.save_run(result, trigger="cli", prices=[101.0, 202.0])
    assert saved == replace(result, episode="r1")  # the first breach opens an episode
    (stored,) = store.runs_since("2000-01-01T00:00:00Z")
    assert list(stored) == [*saved.to_dict(), "trigger", "scheduled_for"]
    assert stored == {**saved.to_dict(), "trigger": "cli", "scheduled_for": None}
    assert store.report("r1") == saved
    assert store.prices_since("2000-01-01T00:00:00Z") == [("A", 101.0), ("B", 202.0)]


def columns(store: Store) -> dict[str, list[str]]:
    """Every table's columns, as the backend's own catalogue lists them (``rowid`` aside)."""
    if target_kind(store.target) == "postgresql":
        rows = store._query("SELECT table_name, column_name FROM information_schema.columns"
                            " WHERE table_schema = current_schema() AND table_name !="
                            " 'schema_version' ORDER BY table_name, ordinal_position")
        tables: dict[str, list[str]] = {}
        for table, column in rows:
            if column != "rowid":
                tables.setdefault(table, []).append(column)
        return tables
    names = [r[0] for r in store._query("SELECT name FROM sqlite_master WHERE type = 'table'"
                                        " AND name != 'sqlite_sequence' ORDER BY name")]
    return {t: [r[1] for r in store._query(f"PRAGMA table_info({t})")] for t in names}


def test_both_backends_reach_the_same_schema_by_the_same_migrations(store_url, tmp_path):
    with Store(store_url) as store, Store(tmp_path / "reference.db") as reference:
        assert store.schema_version == len(MIGRATIONS)
        assert columns(store) == columns(reference)
    with Store(store_url) as again:  # reopening migrates nothing
        assert again.schema_version == len(MIGRATIONS)


def test_a_sqlite_url_names_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Store("sqlite:///sub/s.db") as store:
        assert type(store).__name__ == "SQLiteStore"
    assert (tmp_path / "sub" / "s.db").exists()


def test_a_password_in_the_url_is_never_shown(postgres):
    port = free_port()  # nothing listens there
    url = f"postgresql://stress:hunter2-pw@127.0.0.1:{port}/db?password=hunter2-pw"
    assert "hunter2" not in redact(url) and "stress:***@127.0.0.1" in redact(url)
    with pytest.raises(ConfigError) as caught:
        Store(url)
    assert "cannot open the store" in str(caught.value)
    assert "hunter2" not in str(caught.value) and "hunter2" not in repr(caught.value)
    with Store(postgres.url().replace("postgres@", "postgres:hunter2-pw@")) as store:
        assert "hunter2" not in store.target
