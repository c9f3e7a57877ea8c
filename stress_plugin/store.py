"""The project's SQLite store: one file, WAL, a versioned schema, and the alert outbox.

One connection guarded by a re-entrant lock serves every thread (the runner's main thread and
the alert worker threads); ``transaction()`` groups several writes atomically. Other processes
(the CLI, a second runner) share the file through WAL and ``busy_timeout``.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stress_hookspecs import StressResult
from stress_hookspecs.types import SymbolMetrics
from stress_plugin.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

OUTBOX_STATUSES = ("pending", "delivered", "failed")
SYMBOL_COLUMNS = ("worst_pnl", "drawdown_pct", "var_ratio", "delta_change", "headroom")
"""The per-symbol metrics a stored run keeps as float64 columns, in this order."""
_RESULT_KEYS = ("run_id", "scenario", "status", "error", "failure", "timestamp", "book_source",
                "symbols_tested", "breach_count", "breached_symbols", "breaches", "kill_switch",
                "halted", "runtime_ms", "headroom", "limits", "limit_sources", "portfolio",
                "symbols", "skipped_symbols")
_RUN_COLUMNS = ("run_id", "timestamp", "scenario", "status", "failure", "trigger",
                "scheduled_for", "breach_count", "kill_switch", "headroom", "runtime_ms",
                "result", "symbols", "symbol_columns", "prices")
_RUNS_V3 = """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        timestamp TEXT NOT NULL,
        scenario TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('passed', 'breached', 'failed')),
        failure TEXT,
        trigger TEXT NOT NULL CHECK (trigger IN ('schedule', 'manual', 'cli')),
        scheduled_for TEXT,
        breach_count INTEGER NOT NULL,
        kill_switch INTEGER NOT NULL,
        headroom REAL,
        runtime_ms REAL NOT NULL,
        result TEXT NOT NULL,
        symbols TEXT NOT NULL,
        symbol_columns BLOB NOT NULL,
        prices BLOB NOT NULL
    );
    CREATE INDEX runs_by_time ON runs (timestamp);
    CREATE UNIQUE INDEX runs_one_per_slot ON runs (scenario, scheduled_for);
"""


def _runs_with_status(conn: sqlite3.Connection) -> None:
    """3: runs get a status (passed, breached, failed), and rows an older version stored with
    NaN or Infinity (invalid JSON that broke every start-up) become failed runs."""
    import numpy as np

    old = [dict(r) for r in conn.execute("SELECT * FROM runs ORDER BY rowid")]
    conn.execute("DROP TABLE runs")
    for statement in _statements(_RUNS_V3):
        conn.execute(statement)
    for row in old:
        result = json.loads(row["result"])  # Python's reader takes the NaN an old writer wrote
        count = len(json.loads(row["symbols"]))
        columns = np.frombuffer(row["symbol_columns"]).reshape(len(SYMBOL_COLUMNS), count)
        finite = _all_finite(result) and bool(np.isfinite(np.delete(columns, 2, axis=0)).all())
        result.setdefault("book_source", "")
        result.setdefault("limit_sources", {})
        result.setdefault("halted", False)
        result.setdefault("error", None)
        result.setdefault("failure", None)
        if finite:
            result["status"] = "breached" if row["breach_count"] else "passed"
        else:
            result.update(status="failed", failure="non_finite", portfolio=None, headroom=None,
                          error="the engine produced a NaN or an infinity (stored by an older "
                                "version, which reported it as a pass)")
            row.update(symbols="[]", symbol_columns=b"", headroom=None)
        row.update(status=result["status"], failure=result["failure"],
                   result=_json(_without_non_finite(result)))
        conn.execute(f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) VALUES "
                     f"({', '.join('?' * len(_RUN_COLUMNS))})",
                     tuple(row[c] for c in _RUN_COLUMNS))


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(map(_all_finite, value.values()))
    if isinstance(value, list):
        return all(map(_all_finite, value))
    return True


def _without_non_finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: such a number becomes null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _without_non_finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_non_finite(v) for v in value]
    return value


MIGRATIONS: list[str | Callable[[sqlite3.Connection], None]] = [
    # 1: the alert outbox and the alert episodes (one open incident per sink and scenario).
    """
    CREATE TABLE alert_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at TEXT NOT NULL,
        sink TEXT NOT NULL,
        dedup_key TEXT,
        event_action TEXT NOT NULL,
        body TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'delivered', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        last_attempt_at TEXT,
        delivered_at TEXT,
        scenario TEXT,
        run_id TEXT
    );
    CREATE INDEX alert_outbox_by_status ON alert_outbox (status, sink, id);

    CREATE TABLE alert_episodes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sink TEXT NOT NULL,
        scenario TEXT NOT NULL,
        dedup_key TEXT NOT NULL,
        opened_at TEXT NOT NULL,
        opened_run_id TEXT NOT NULL,
        last_run_id TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        closed_at TEXT,
        closed_run_id TEXT
    );
    CREATE UNIQUE INDEX alert_episodes_one_open
        ON alert_episodes (sink, scenario) WHERE closed_at IS NULL;
    """,
    # 2: the service: every run with the prices it saw, the halt, live limits, config, audit.
    """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        timestamp TEXT NOT NULL,
        scenario TEXT NOT NULL,
        trigger TEXT NOT NULL CHECK (trigger IN ('schedule', 'manual', 'cli')),
        scheduled_for TEXT,
        breach_count INTEGER NOT NULL,
        kill_switch INTEGER NOT NULL,
        headroom REAL NOT NULL,
        runtime_ms REAL NOT NULL,
        result TEXT NOT NULL,
        symbols TEXT NOT NULL,
        symbol_columns BLOB NOT NULL,
        prices BLOB NOT NULL
    );
    CREATE INDEX runs_by_time ON runs (timestamp);
    CREATE UNIQUE INDEX runs_one_per_slot ON runs (scenario, scheduled_for);

    CREATE TABLE halt (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        reason TEXT NOT NULL,
        since TEXT NOT NULL,
        run_id TEXT NOT NULL,
        scenario TEXT NOT NULL,
        symbols TEXT NOT NULL
    );

    CREATE TABLE limits_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        limits TEXT NOT NULL
    );

    CREATE TABLE config_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        change TEXT NOT NULL,
        config TEXT NOT NULL
    );

    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        details TEXT NOT NULL
    );
    """,
    _runs_with_status,
]
"""Schema scripts (or functions, where rows must be rewritten) in order; ``PRAGMA user_version``
is how many have been applied. Append new ones; never edit one that has shipped.
"""


def utc_now() -> str:
    """ISO 8601 UTC with a ``Z``, to the millisecond: sortable as text."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements (``executescript`` would commit our transaction)."""
    buffer = ""
    for part in script.split(";"):
        buffer += part + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                yield buffer
            buffer = ""


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One row of the alert outbox; ``body`` is the event without any secret."""

    id: int
    created_at: str
    sink: str
    dedup_key: str | None
    event_action: str
    body: dict[str, Any]
    status: str
    attempts: int
    last_error: str | None
    last_attempt_at: str | None
    delivered_at: str | None
    scenario: str | None
    run_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> OutboxEvent:
        data = dict(row)
        data["body"] = json.loads(data["body"])
        return cls(**data)


@dataclass(frozen=True, slots=True)
class Episode:
    """A run of breaches of one scenario that one sink reports as one incident."""

    id: int
    sink: str
    scenario: str
    dedup_key: str
    opened_at: str
    opened_run_id: str
    last_run_id: str
    updated_at: str
    closed_at: str | None
    closed_run_id: str | None


class Store:
    """The SQLite file at ``path`` (created with its parent folders), migrated on open."""

    def __init__(self, path: Path | str, *, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._depth = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            self._conn.execute("PRAGMA foreign_keys=ON")
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError("environment", "STRESS_DB", str(self.path),
                              f"cannot open the store: {exc}") from None
        self._migrate()

    # -- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All writes inside commit together or not at all; nesting joins the outer one."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
            finally:
                self._depth = 0

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _migrate(self) -> None:
        """Apply each missing script in its own transaction, so a crash leaves a known version."""
        while True:
            with self.transaction() as conn:
                version = int(conn.execute("PRAGMA user_version").fetchone()[0])
                if version > len(MIGRATIONS):
                    raise ConfigError(
                        "store",
                        str(self.path),
                        version,
                        f"schema version is newer than this program knows ({len(MIGRATIONS)})",
                    )
                if version == len(MIGRATIONS):
                    return
                migration = MIGRATIONS[version]
                if callable(migration):
                    migration(conn)
                else:
                    for statement in _statements(migration):
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")

    # -- alert outbox -----------------------------------------------------------------------

    def outbox_add(
        self,
        sink: str,
        event_action: str,
        body: dict[str, Any],
        *,
        dedup_key: str | None = None,
        scenario: str | None = None,
        run_id: str | None = None,
    ) -> int:
        """Queue an event before it is sent; the body must not carry a secret."""
        if "routing_key" in body:
            raise ValueError("the outbox never stores a routing key; add it at send time")
        with self.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO alert_outbox (created_at, sink, dedup_key, event_action, body,"
                " scenario, run_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    utc_now(),
                    sink,
                    dedup_key,
                    event_action,
                    json.dumps(body, separators=(",", ":"), allow_nan=False),
                    scenario,
                    run_id,
                ),
            )
            return int(cursor.lastrowid or 0)

    def outbox_get(self, event_id: int) -> OutboxEvent | None:
        rows = self._query("SELECT * FROM alert_outbox WHERE id = ?", (event_id,))
        return OutboxEvent._from_row(rows[0]) if rows else None

    def outbox_pending(self, sink: str | None = None) -> list[OutboxEvent]:
        """Pending events, oldest first: the order they must reach the sink in."""
        return self.outbox_list("pending", sink=sink, newest_first=False)

    def outbox_list(
        self,
        status: str | None = None,
        *,
        sink: str | None = None,
        limit: int | None = None,
        newest_first: bool = True,
    ) -> list[OutboxEvent]:
        if status is not None and status not in OUTBOX_STATUSES:
            raise ValueError(f"status must be one of {', '.join(OUTBOX_STATUSES)}: {status!r}")
        where, params = [], []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if sink is not None:
            where.append("sink = ?")
            params.append(sink)
        sql = "SELECT * FROM alert_outbox"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC" if newest_first else " ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [OutboxEvent._from_row(row) for row in self._query(sql, tuple(params))]

    def outbox_record_attempt(self, event_id: int, error: str | None = None) -> None:
        """Count one send attempt; ``error`` (already redacted) says why it did not land."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE alert_outbox SET attempts = attempts + 1, last_attempt_at = ?,"
                " last_error = COALESCE(?, last_error) WHERE id = ?",
                (utc_now(), error, event_id),
            )

    def outbox_mark_delivered(self, event_id: int) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE alert_outbox SET status = 'delivered', delivered_at = ? WHERE id = ?",
                (utc_now(), event_id),
            )

    def outbox_mark_failed(self, event_id: int, error: str) -> None:
        """A permanent failure (the sink rejected the event): never sent again."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE alert_outbox SET status = 'failed', last_error = ? WHERE id = ?",
                (error, event_id),
            )

    # -- alert episodes ---------------------------------------------------------------------

    def episode_current(self, sink: str, scenario: str) -> Episode | None:
        rows = self._query(
            "SELECT * FROM alert_episodes WHERE sink = ? AND scenario = ? AND closed_at IS NULL",
            (sink, scenario),
        )
        return Episode(**dict(rows[0])) if rows else None

    def episode_open(self, sink: str, scenario: str, dedup_key: str, run_id: str) -> Episode:
        """Start an episode; fails if one is already open for this sink and scenario."""
        now = utc_now()
        with self.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO alert_episodes (sink, scenario, dedup_key, opened_at, opened_run_id,"
                " last_run_id, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sink, scenario, dedup_key, now, run_id, run_id, now),
            )
            episode_id = int(cursor.lastrowid or 0)
        return Episode(episode_id, sink, scenario, dedup_key, now, run_id, run_id, now, None, None)

    def episode_touch(self, episode_id: int, run_id: str) -> None:
        """Note another breaching run of an open episode."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE alert_episodes SET last_run_id = ?, updated_at = ? WHERE id = ?",
                (run_id, utc_now(), episode_id),
            )

    def episode_close(self, episode_id: int, run_id: str) -> None:
        now = utc_now()
        with self.transaction() as conn:
            conn.execute(
                "UPDATE alert_episodes SET closed_at = ?, closed_run_id = ?, updated_at = ?"
                " WHERE id = ?",
                (now, run_id, now, episode_id),
            )

    def episodes(self, sink: str | None = None, *, open_only: bool = False) -> list[Episode]:
        sql, params = "SELECT * FROM alert_episodes WHERE 1 = 1", []
        if sink is not None:
            sql += " AND sink = ?"
            params.append(sink)
        if open_only:
            sql += " AND closed_at IS NULL"
        return [Episode(**dict(r)) for r in self._query(sql + " ORDER BY id", tuple(params))]

    # -- runs ---------------------------------------------------------------------------------

    def save_run(self, result: StressResult, *, trigger: str, prices: Any,
                 scheduled_for: str | None = None) -> None:
        """The run and the mid price of each tested symbol (``prices``, in result order; None
        for a failed run), in one transaction: one write per run.

        The per-symbol metrics and prices are kept as float64 columns (``SYMBOL_COLUMNS``),
        not as JSON: a 10,000-symbol run is then a 0.5 MB blob written in one call instead of
        1.6 MB of JSON and 10,000 price rows. ``runs_since`` gives back ``to_dict()`` exactly.
        No NaN or Infinity is ever written as JSON. A run is committed with
        ``synchronous=NORMAL``: under WAL it survives a crash or kill -9 and costs no fsync;
        only a power cut can lose the latest runs. The halt and the alert outbox keep full fsync.
        """
        import numpy as np  # here, not at import: the alerts commands need no numpy

        names, columns = _symbol_columns(result)
        price_blob = b"" if prices is None else np.asarray(prices, dtype=np.float64).tobytes()
        row = (result.run_id, result.timestamp, result.scenario, result.status, result.failure,
               trigger, scheduled_for, result.breach_count, int(result.kill_switch),
               result.headroom, result.runtime_ms, _json(result.to_dict(symbols=False)),
               _json(names), columns.tobytes(), price_blob)
        with self._lock:
            self._conn.execute("PRAGMA synchronous=NORMAL")
            try:
                with self.transaction() as conn:
                    conn.execute(f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) VALUES "
                                 f"({', '.join('?' * len(_RUN_COLUMNS))})", row)
            finally:
                self._conn.execute("PRAGMA synchronous=FULL")

    def has_scheduled_run(self, scenario: str, scheduled_for: str) -> bool:
        """Whether this scenario's run for this fire time is already stored (by any worker)."""
        return bool(self._query("SELECT 1 FROM runs WHERE scenario = ? AND scheduled_for = ?",
                                (scenario, scheduled_for)))

    def runs_since(self, since: str) -> list[dict[str, Any]]:
        """Results of runs at or after ``since`` (ISO UTC), newest first, with their trigger."""
        rows = self._query("SELECT trigger, scheduled_for, result, symbols, symbol_columns"
                           " FROM runs WHERE timestamp >= ? ORDER BY timestamp DESC, rowid DESC",
                           (since,))
        import numpy as np

        results = []
        for r in rows:
            names = json.loads(r["symbols"])
            columns = np.frombuffer(r["symbol_columns"]).reshape(len(SYMBOL_COLUMNS), -1)
            data = json.loads(r["result"])
            data["symbols"] = SymbolMetrics(names, *columns).to_dict() if names else {}
            # to_dict()'s key order, then where the run came from
            results.append({**{k: data[k] for k in _RESULT_KEYS}, "trigger": r["trigger"],
                            "scheduled_for": r["scheduled_for"]})
        return results

    def run_totals(self) -> dict[str, int]:
        row = self._query("SELECT COUNT(*) AS runs, COALESCE(SUM(breach_count), 0) AS breaches,"
                          " COALESCE(SUM(breach_count > 0), 0) AS breaching_runs FROM runs")[0]
        return {"runs": row["runs"], "breaches": row["breaches"],
                "breaching_runs": row["breaching_runs"]}

    def last_run_summary(self) -> dict[str, Any] | None:
        rows = self._query("SELECT run_id, timestamp, scenario, status, failure, trigger,"
                           " breach_count, kill_switch, headroom, runtime_ms FROM runs"
                           " ORDER BY timestamp DESC, rowid DESC LIMIT 1")
        if not rows:
            return None
        summary = dict(rows[0])
        summary["kill_switch"] = bool(summary["kill_switch"])
        return summary

    def latest_runs(self) -> list[dict[str, Any]]:
        """The newest run of each scenario, oldest first: what the metrics show after a restart."""
        rows = self._query(
            "SELECT scenario, timestamp, headroom,"
            " json_extract(result, '$.symbols_tested') AS symbols_tested,"
            " json_array_length(result, '$.skipped_symbols') AS symbols_skipped"
            " FROM runs AS r WHERE rowid = (SELECT rowid FROM runs WHERE scenario = r.scenario"
            " AND status != 'failed' ORDER BY timestamp DESC, rowid DESC LIMIT 1)"
            " ORDER BY timestamp, rowid")
        return [dict(r) for r in rows]

    def prices_since(self, since: str) -> list[tuple[str, float]]:
        """(symbol, price) of every run at or after ``since``, per symbol in time order."""
        rows = self._query("SELECT symbols, prices FROM runs WHERE timestamp >= ?"
                           " AND status != 'failed' ORDER BY timestamp, rowid", (since,))
        import numpy as np

        series: dict[str, list[float]] = {}
        for r in rows:
            for symbol, price in zip(json.loads(r["symbols"]),
                                     np.frombuffer(r["prices"]).tolist(), strict=True):
                series.setdefault(symbol, []).append(price)
        return [(symbol, price) for symbol in sorted(series) for price in series[symbol]]

    # -- halt ---------------------------------------------------------------------------------

    def halt_get(self) -> dict[str, Any] | None:
        rows = self._query("SELECT reason, since, run_id, scenario, symbols FROM halt")
        if not rows:
            return None
        return {**dict(rows[0]), "symbols": json.loads(rows[0]["symbols"])}

    def halt_set(self, halt: dict[str, Any]) -> bool:
        """Record a halt unless one is active (the first KILL_SWITCH's reason is kept)."""
        with self.transaction() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO halt (id, reason, since, run_id, scenario, symbols)"
                " VALUES (1, ?, ?, ?, ?, ?)",
                (halt["reason"], halt["since"], halt["run_id"], halt["scenario"],
                 _json(list(halt["symbols"]))),
            )
            if cursor.rowcount:
                self._audit(conn, "stress_runner", "halt", halt)
            return bool(cursor.rowcount)

    def halt_clear(self, actor: str, reason: str | None = None) -> dict[str, Any] | None:
        """Clear the halt, audited with who and why; returns the halt that was cleared."""
        with self.transaction() as conn:
            halt = self.halt_get()
            conn.execute("DELETE FROM halt")
            self._audit(conn, actor, "reset_circuit", {"cleared": halt, "reason": reason})
        return halt

    # -- live limits and config --------------------------------------------------------------

    def live_limits(self) -> dict[str, float]:
        """The live limits set through the API (the newest history row; empty once removed)."""
        rows = self._query("SELECT limits FROM limits_history ORDER BY id DESC LIMIT 1")
        return json.loads(rows[0]["limits"]) if rows else {}

    def save_limits(self, limits: dict[str, float], *, actor: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO limits_history (at, actor, limits) VALUES (?, ?, ?)",
                         (utc_now(), actor, _json(limits)))

    def limits_history(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT at, actor, limits FROM limits_history ORDER BY id DESC")
        return [{"at": r["at"], "actor": r["actor"], "limits": json.loads(r["limits"])}
                for r in rows]

    def current_config(self) -> dict[str, Any] | None:
        rows = self._query("SELECT config FROM config_history ORDER BY id DESC LIMIT 1")
        return json.loads(rows[0]["config"]) if rows else None

    def save_config(self, config: dict[str, Any], *, actor: str, change: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO config_history (at, actor, change, config) VALUES (?, ?, ?, ?)",
                (utc_now(), actor, _json(change), _json(config)),
            )

    def config_history(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT at, actor, change, config FROM config_history"
                           " ORDER BY id DESC")
        return [{"at": r["at"], "actor": r["actor"], "change": json.loads(r["change"]),
                 "config": json.loads(r["config"])} for r in rows]

    def audit_log(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT at, actor, action, details FROM audit_log ORDER BY id DESC")
        return [{**dict(r), "details": json.loads(r["details"])} for r in rows]

    def _audit(self, conn: sqlite3.Connection, actor: str, action: str,
               details: dict[str, Any]) -> None:
        conn.execute("INSERT INTO audit_log (at, actor, action, details) VALUES (?, ?, ?, ?)",
                     (utc_now(), actor, action, _json(details)))


def _symbol_columns(result: StressResult) -> tuple[list[str], np.ndarray]:
    """The symbol names and a (SYMBOL_COLUMNS x symbols) float64 array; NaN for no VaR."""
    import numpy as np

    if isinstance(result.symbols, SymbolMetrics):
        names, *columns = result.symbols.columns
    else:  # a result built by hand with a dict of Metrics
        names = list(result.symbols)
        columns = [[getattr(m, field) for m in result.symbols.values()]
                   for field in SYMBOL_COLUMNS]
    array = np.array([[np.nan if v is None else v for v in c] if isinstance(c, list) else c
                      for c in columns], dtype=np.float64).reshape(len(SYMBOL_COLUMNS), -1)
    names = names.tolist() if hasattr(names, "tolist") else list(names)
    return names, array


def _json(value: Any) -> str:
    """Compact JSON; a NaN or Infinity is a bug here, never written (it broke start-ups)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)
