"""The store on both backends: a saved run reads back as the result's to_dict() with exact prices,
the same migrations reach the same schema, and a URL's password never shows."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from helpers import cli, free_port
from stress_hookspecs import Book, Position
from stress_plugin.core.errors import ConfigError
from stress_plugin.store import MIGRATIONS, WORKER, Store, redact, target_kind, utc_in


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


def test_a_big_books_metrics_are_written_from_the_engines_block_as_they_read_back(
        make_runner, store_url, monkeypatch):
    """A book in passes (here of 64 symbols) has its five metric columns as the rows of one
    block, which the store writes without a copy; the run still reads back exactly."""
    from stress_plugin.core import engine
    from stress_plugin.store.base import _symbol_columns

    monkeypatch.setattr(engine, "CHUNK", 64)
    store = Store(store_url)
    runner = make_runner()
    runner.store = store
    runner.settings = runner.settings.model_copy(update={"stress_max_symbols": 10_000})
    result = runner.run_once(book=host_book(301))
    block = _symbol_columns(result)[1]
    assert block is result.symbols.worst_pnl.base and block.shape == (5, 301)
    (stored,) = store.runs_since("2000-01-01T00:00:00Z")
    assert stored == {**json.loads(json.dumps(result.to_dict())), "trigger": "manual",
                      "scheduled_for": None}
    monkeypatch.setattr(engine, "CHUNK", 8192)  # one pass: the block holds the portfolio too
    small = runner.run_once(book=host_book(301))
    copy = _symbol_columns(small)[1]  # the five rows, in order, copied
    assert not np.shares_memory(copy, small.symbols.worst_pnl)
    np.testing.assert_array_equal(copy, block, strict=True)  # NaN (no VaR) in both


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


def test_a_wal_grown_by_runs_back_to_back_is_cut_back_when_it_starts_again(
        make_runner, tmp_path, monkeypatch):
    """Runs back to back grow the WAL past the limit (the checkpointer cannot finish a pass
    between them); after a checkpoint that copies every frame, the next run starts the WAL
    again and truncates the file to the limit."""
    import sqlite3

    from stress_plugin.store import sqlite as backend

    monkeypatch.setattr(backend, "WAL_SIZE_LIMIT", 200_000)
    path = tmp_path / "stress.db"
    store = Store(str(path))
    store._checkpointer = None  # no checkpoint between the runs: the WAL only grows
    runner = make_runner()
    runner.store = store
    data = host_book(400)
    wal = tmp_path / "stress.db-wal"
    for _ in range(20):
        runner.run_once(book=data)
    grown = wal.stat().st_size
    assert grown > 500_000
    with sqlite3.connect(path) as other:  # what the checkpointer does, to the end
        busy, frames, copied = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert (busy, copied) == (0, frames)
    runner.run_once(book=data)
    assert wal.stat().st_size <= 200_000 < grown
    assert len(store.runs_since("2000-01-01T00:00:00Z")) == 21
    store.close()


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


def test_a_run_reads_the_live_limits_and_the_halt_in_one_statement(store_url):
    """``run_state`` gives what ``live_limits`` and ``halt_get`` give, set or not."""
    with Store(store_url) as store:
        assert store.run_state() == ({}, None)
        store.save_limits({"max_drawdown_pct": 0.04}, actor="tester")
        assert store.run_state() == ({"max_drawdown_pct": 0.04}, None)
        store.halt_set({"reason": "MES drawdown", "since": "2026-01-05T15:00:00Z",
                        "run_id": "r1", "scenario": "flash_crash_lite", "symbols": ["MES"]})
        live, halt = store.run_state()
        assert (live, halt) == (store.live_limits(), store.halt_get())
        assert halt == {"reason": "MES drawdown", "since": "2026-01-05T15:00:00Z",
                        "run_id": "r1", "scenario": "flash_crash_lite", "symbols": ["MES"]}
        store.save_limits({}, actor="tester")  # removed: the file's limits again
        store.halt_clear("tester")
        assert store.run_state() == ({}, None)


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


def test_a_slot_is_claimed_once_then_taken_over_after_its_lease(store_url):
    from stress_hookspecs.testing import make_result

    slot = "2026-12-01T15:00:05.000Z"
    with Store(store_url) as a, Store(store_url) as b:
        assert a.claim_slot("s", slot, 60, replica="a").state == "claimed"
        held = b.claim_slot("s", slot, 60, replica="b")
        assert (held.state, held.replica, held.attempt) == ("held", "a", 1)
        assert a.renew_claim("s", slot, 0.0, replica="a")  # a's lease runs out now
        time.sleep(0.01)
        taken = b.claim_slot("s", slot, 60, replica="b")
        assert (taken.state, taken.replica, taken.attempt) == ("claimed", "b", 2)
        assert not a.renew_claim("s", slot, 60, replica="a")  # a lost it: it must stop
        assert not a.holds_claim("s", slot, replica="a") and b.holds_claim("s", slot, "b")
        b.save_run(make_result(run_id="r1", scenario="s"), trigger="schedule", prices=None,
                   scheduled_for=slot)
        assert a.claim_slot("s", slot, 0.0, replica="a").state == "done"
        assert a.last_slot() == {"scenario": "s", "scheduled_for": slot, "replica": "b",
                                 "attempt": 2, "run_id": "r1"}


def test_two_replicas_racing_for_each_slot_win_it_once(store_url):
    slots = [f"2026-12-01T15:{m:02d}:05.000Z" for m in range(20)]
    won: dict[str, list[str]] = {}
    with Store(store_url) as a, Store(store_url) as b:
        def race(store: Store, name: str) -> None:
            for slot in slots:
                if store.claim_slot("s", slot, 60, replica=name).state == "claimed":
                    won.setdefault(slot, []).append(name)

        threads = [threading.Thread(target=race, args=(s, n)) for s, n in ((a, "a"), (b, "b"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(won) == slots and all(len(names) == 1 for names in won.values())


def test_replicas_seen_recently(store_url):
    with Store(store_url) as store:
        store.replica_seen("a")
        store.replica_seen("b")
        store.replica_seen("a")
        seen = store.replicas_seen("2000-01-01T00:00:00Z")
        assert {r["replica"] for r in seen} == {"a", "b"}
        assert store.replica_count("2000-01-01T00:00:00Z") == 2
        assert store.replica_count("2999-01-01T00:00:00Z") == 0


def test_the_cli_names_an_unreachable_database_without_its_password():
    url = f"postgresql://stress:hunter2-pw@127.0.0.1:{free_port()}/db"
    out = cli("status", env={"STRESS_DB": url})
    assert out.returncode == 2 and "STRESS_DB" in out.stderr and "cannot open" in out.stderr
    assert "hunter2" not in out.stderr + out.stdout and "stress:***@" in out.stderr


def test_a_delivery_claimed_by_a_replica_elsewhere_waits_for_its_lease(store_url):
    from stress_hookspecs.testing import make_result

    with Store(store_url) as store:
        store.save_run(make_result(run_id="r1", scenario="s"), trigger="cli", prices=None,
                       sinks=["pagerduty"])
        [row] = store.deliveries_pending()
        with store.transaction() as conn:  # another host's replica holds it, lease live
            conn.execute("UPDATE deliveries SET claimed_by = 'other-pod:7', claimed_until = ?",
                         (utc_in(60),))
        assert store.release_dead_claims() == 0  # not a process of this host: its lease holds
        assert store.delivery_claim(row.id, 10) is None
        with store.transaction() as conn:  # that replica died: its lease ran out
            conn.execute("UPDATE deliveries SET claimed_until = ?", (utc_in(-1),))
        claimed = store.delivery_claim(row.id, 10)
        assert claimed is not None and claimed.claimed_by == WORKER


def test_paths_stored_before_version_8_still_read_back(store_url, monkeypatch):
    """8 keeps a run's paths in its row: a run saved at version 7 with its paths in run_paths
    reads back the same paths after the migration, and a run without paths still has none."""
    import numpy as np

    import stress_plugin.store.base as base
    from stress_hookspecs.testing import make_result

    coef = np.arange(12, dtype=np.float64).reshape(4, 3) - 5.5
    profile = np.array([1.0, 0.5, 0.0])
    monkeypatch.setattr(base, "MIGRATIONS", base.MIGRATIONS[:7])
    with Store(store_url) as store:
        assert store.schema_version == 7
        for run_id in ("r1", "r2"):
            store.save_run(make_result(run_id=run_id, scenario="s"), trigger="cli", prices=None)
        with store.transaction() as conn:  # what version 7's save_run wrote beside r1
            conn.execute("INSERT INTO run_paths (run_id, step_sec, equity, book_var, profile,"
                         " coefficients) VALUES (?, ?, ?, ?, ?, ?)",
                         ("r1", 30.0, 1e6, None, profile.tobytes(), coef.tobytes()))
    monkeypatch.undo()
    with Store(store_url) as store:
        assert store.schema_version == len(MIGRATIONS) >= 8
        paths = store.run_paths("r1")
        assert paths is not None and (paths.step_sec, paths.equity, paths.book_var) == (
            30.0, 1e6, None)
        assert paths.profile.tolist() == profile.tolist()
        assert np.stack([paths.coef.a, paths.coef.b, paths.coef.c0, paths.coef.e]
                        ).tolist() == coef.tolist()
        assert store.run_paths("r2") is None
        assert [r["run_id"] for r in store.runs_since("2000-01-01T00:00:00Z")] == ["r2", "r1"]


def test_a_runs_symbols_are_stored_once_while_they_do_not_change(store_url, monkeypatch):
    """A run with the last run's symbols refers to its list; new symbols, a write rolled back
    and another process writing in between each still read back exactly, as do the runs a
    version 8 store wrote with their own names."""
    import stress_plugin.store.base as base
    from stress_hookspecs import Metrics
    from stress_hookspecs.testing import make_result

    def run(run_id: str, *names: str):
        return make_result(run_id=run_id, scenario="s", timestamp=f"2026-12-01T15:00:0{run_id[1]}Z",
                           symbols={n: Metrics(-1.0, 0.01, None, 0.0, 3.0) for n in names})

    def read_back(store: Store) -> dict[str, list[str]]:
        return {r["run_id"]: list(r["symbols"]) for r in store.runs_since("2000-01-01")}

    monkeypatch.setattr(base, "MIGRATIONS", base.MIGRATIONS[:8])
    with Store(store_url) as store:
        store.save_run(run("r0", "OLD"), trigger="cli", prices=[1.0])
    monkeypatch.undo()
    with Store(store_url) as store, Store(store_url) as other:
        store.save_run(run("r1", "A", "B"), trigger="cli", prices=[1.0, 2.0])
        store.save_run(run("r2", "A", "B"), trigger="cli", prices=[1.5, 2.5])
        assert store._query("SELECT COUNT(*) FROM symbol_lists")[0][0] == 1
        with pytest.raises(RuntimeError), store.transaction():  # a caller's write that fails
            store.save_run(run("r3", "C"), trigger="cli", prices=[3.0])
            raise RuntimeError
        store.save_run(run("r4", "C"), trigger="cli", prices=[3.0])
        other.save_run(run("r5", "A", "B"), trigger="cli", prices=[1.0, 2.0])
        store.save_run(run("r6", "C"), trigger="cli", prices=[3.5])
        assert read_back(store) == read_back(other) == {
            "r6": ["C"], "r5": ["A", "B"], "r4": ["C"], "r2": ["A", "B"], "r1": ["A", "B"],
            "r0": ["OLD"]}
        assert store.report("r2").symbols == run("r2", "A", "B").symbols
        assert store.prices_since("2000-01-01") == [("A", 1.0), ("A", 1.5), ("A", 1.0),
                                                    ("B", 2.0), ("B", 2.5), ("B", 2.0),
                                                    ("C", 3.0), ("C", 3.5), ("OLD", 1.0)]
        assert store._query("SELECT COUNT(*) FROM symbol_lists")[0][0] == 3
        with store.transaction() as conn:  # a server that lost its last commits lost the list
            conn.execute("DELETE FROM runs WHERE run_id IN ('r4', 'r6')")
            conn.execute("DELETE FROM symbol_lists WHERE symbols = '[\"C\"]'")
        with pytest.raises(Exception, match=r"(?i)foreign key"):  # never a run without names
            store.save_run(run("r7", "C"), trigger="cli", prices=[4.0])
        store.save_run(run("r8", "C"), trigger="cli", prices=[4.5])  # with a list of its own
        assert read_back(store)["r8"] == ["C"] and "r7" not in read_back(store)


def test_postgresql_keeps_a_runs_float_columns_uncompressed(postgres):
    """pglz spent most of a 10,000-symbol run's write compressing its float64 blobs: the
    tenth migration stores them as they are (EXTERNAL), and they still read back."""
    from stress_hookspecs.testing import make_result

    with Store(postgres.url("uncompressed")) as store:
        storage = dict(store._query(
            "SELECT a.attname, a.attstorage FROM pg_attribute AS a JOIN pg_class AS c"
            " ON c.oid = a.attrelid WHERE c.relname = 'runs' AND c.relnamespace ="
            " current_schema()::regnamespace AND a.attnum > 0"))
        assert {c: storage[c] for c in ("symbol_columns", "prices", "profile", "coefficients",
                                        "result")} == {
            "symbol_columns": "e", "prices": "e", "profile": "e", "coefficients": "e",
            "result": "x"}
        result = make_result(run_id="r1", scenario="s")
        saved = store.save_run(result, trigger="cli", prices=None)
        assert store.report("r1") == saved
