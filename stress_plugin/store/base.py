"""The store's interface and everything the two backends share: the versioned schema and its
migrations, runs, the alert outbox, the halt latch and approvals, live limits, config, audit.

The SQL is the subset SQLite and PostgreSQL read alike (``?`` placeholders, ``ON CONFLICT DO
NOTHING``, text timestamps, JSON kept as text and read in Python); each backend
(``sqlite.py``, ``postgres.py``) supplies the connection, the writer's transaction and the
schema version, and writes a migration's column types as its engine spells them.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from stress_hookspecs import RunTrigger, StressResult, SymbolMetrics
from stress_plugin.core.errors import ConfigError
from stress_plugin.core.times import iso_utc_ms

if TYPE_CHECKING:
    import numpy as np

    from stress_plugin.core.engine import PathInputs

OUTBOX_STATUSES = ("pending", "delivered", "failed")
SYMBOL_COLUMNS = ("worst_pnl", "drawdown_pct", "var_ratio", "delta_change", "headroom")
"""The per-symbol metrics a stored run keeps as float64 columns, in this order."""
_RESULT_KEYS = tuple(StressResult(run_id="", scenario="", timestamp="", symbols_tested=0,
                                  portfolio=None, symbols={}, headroom=None, limits=None
                                  ).to_dict())
"""The result JSON's keys in ``StressResult.to_dict()``'s order, read off it."""
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


def _runs_with_status(conn: Any, script: Callable[[str], Iterable[str]]) -> None:
    """3: runs get a status (passed, breached, failed), and rows an older version stored with
    NaN or Infinity (invalid JSON that broke every start-up) become failed runs."""
    import numpy as np

    old = [dict(r) for r in conn.execute("SELECT * FROM runs ORDER BY rowid")]
    conn.execute("DROP TABLE runs")
    for statement in script(_RUNS_V3):
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


_RUN_COLUMNS_V4 = (*_RUN_COLUMNS, "breach_episode", "failure_episode")
_SYMBOLS = ("COALESCE((SELECT l.symbols FROM symbol_lists AS l WHERE l.id = symbol_list),"
            " symbols) AS symbols")
"""A stored run's symbol names (JSON), from its list or, stored before version 9, its row."""
_PATH_COLUMNS = ("step_sec", "equity", "book_var", "profile", "coefficients")
"""A run's paths (``engine.PathInputs``), in its row since version 8; NULL for a failed run."""


@functools.cache
def _insert_run(columns: tuple[str, ...]) -> str:
    return f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


_DELIVERIES = """
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL REFERENCES runs (run_id),
        sink TEXT NOT NULL,
        scenario TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'delivered', 'failed')),
        created_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        first_attempt_at TEXT,
        last_attempt_at TEXT,
        next_attempt_at TEXT NOT NULL,
        claimed_until TEXT,
        claimed_by TEXT,
        delivered_at TEXT,
        outcome TEXT,
        last_error TEXT,
        UNIQUE (run_id, sink)
    );
    CREATE INDEX deliveries_by_status ON deliveries (status, sink, id);
    ALTER TABLE runs ADD COLUMN breach_episode TEXT;
    ALTER TABLE runs ADD COLUMN failure_episode TEXT;
"""


def _one_outbox_for_every_sink(conn: Any, script: Callable[[str], Iterable[str]]) -> None:
    """4: the runtime's outbox (one delivery per sink per run) replaces PagerDuty's own outbox
    and episodes. Each run gets the scenario's episodes, replayed in time order (an incident
    open at PagerDuty keeps its dedup_key); a page an older version left pending becomes a
    pending delivery of its run."""
    for statement in script(_DELIVERIES):
        conn.execute(statement)
    open_episodes: dict[str, tuple[str | None, str | None]] = {}
    for row in conn.execute("SELECT rowid, scenario, result FROM runs ORDER BY rowid").fetchall():
        data = json.loads(row["result"])
        result = StressResult.from_dict({**data, "symbols": {}})
        result, breach, failure = next_episodes(result, *open_episodes.get(row["scenario"],
                                                                           (None, None)))
        open_episodes[row["scenario"]] = (breach, failure)
        data.update(episode=result.episode, resolves=list(result.resolves))
        conn.execute("UPDATE runs SET result = ?, breach_episode = ?, failure_episode = ?"
                     " WHERE rowid = ?", (_json(data), breach, failure, row["rowid"]))
    conn.execute(
        "INSERT INTO deliveries (run_id, sink, scenario, created_at, next_attempt_at,"
        " attempts, last_error) SELECT o.run_id, 'pagerduty', r.scenario, o.created_at,"
        " o.created_at, o.attempts, o.last_error FROM alert_outbox AS o"
        " JOIN runs AS r ON r.run_id = o.run_id"
        " WHERE o.status = 'pending' AND o.sink = 'pagerduty' ON CONFLICT DO NOTHING")
    conn.execute("DROP TABLE alert_outbox")
    conn.execute("DROP TABLE alert_episodes")


def _float_columns_uncompressed(conn: Any, script: Callable[[str], Iterable[str]]) -> None:
    """10: PostgreSQL stores a run's float64 columns as they are, not compressed: pglz took
    ~24 ms of a 30 ms 10,000-symbol run's write to save a fifth of their bytes. SQLite never
    compresses: nothing to do there."""
    if isinstance(conn, sqlite3.Connection):
        return
    for column in ("symbol_columns", "prices", "profile", "coefficients"):
        conn.execute(f"ALTER TABLE runs ALTER COLUMN {column} SET STORAGE EXTERNAL")


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


MIGRATIONS: list[str | Callable[[Any, Callable[[str], Iterable[str]]], None]] = [
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
    _one_outbox_for_every_sink,
    # 5: what each run's P&L paths are made of, for its report (engine.PathInputs).
    """
    CREATE TABLE run_paths (
        run_id TEXT PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
        step_sec REAL NOT NULL,
        equity REAL NOT NULL,
        book_var REAL,
        profile BLOB NOT NULL,
        coefficients BLOB NOT NULL
    );
    """,
    # 6: each run reads its scenario's previous run (its episodes) by the newest rowid: an
    # index on scenario (rowid is its last column) makes that a seek, not a scan of every run.
    """
    CREATE INDEX runs_by_scenario ON runs (scenario);
    """,
    # 7: replicas: each scheduled (scenario, slot) is claimed by one replica under a lease it
    # renews while it runs (another takes over once the lease expired and no run is stored),
    # and every replica says it is alive.
    """
    CREATE TABLE slot_claims (
        scenario TEXT NOT NULL,
        scheduled_for TEXT NOT NULL,
        replica TEXT NOT NULL,
        claimed_at TEXT NOT NULL,
        lease_until TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (scenario, scheduled_for)
    );
    CREATE INDEX slot_claims_by_time ON slot_claims (scheduled_for);

    CREATE TABLE replicas (
        replica TEXT PRIMARY KEY,
        started_at TEXT NOT NULL,
        seen_at TEXT NOT NULL
    );
    """,
    # 8: a run's paths live in its own row: one INSERT per run instead of two, and two fewer
    # B-tree pages (run_paths and its key) written to the WAL by every run. Older runs' paths
    # stay in run_paths (moving them would rewrite every stored run at start-up).
    """
    ALTER TABLE runs ADD COLUMN step_sec REAL;
    ALTER TABLE runs ADD COLUMN equity REAL;
    ALTER TABLE runs ADD COLUMN book_var REAL;
    ALTER TABLE runs ADD COLUMN profile BLOB;
    ALTER TABLE runs ADD COLUMN coefficients BLOB;
    """,
    # 9: the symbol names are stored once per list, not once per run: a run whose symbols are
    # the last run's (the everyday case) refers to that list (12 MB less per run at 1,000,000
    # symbols, ~11% of its bytes). Older rows keep their own list in ``symbols``.
    """
    CREATE TABLE symbol_lists (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        symbols TEXT NOT NULL
    );
    ALTER TABLE runs ADD COLUMN symbol_list INTEGER REFERENCES symbol_lists (id);
    """,
    _float_columns_uncompressed,
]
"""Schema scripts (or functions of the connection and the backend's script reader, where rows
must be rewritten) in order, the same on both backends; the schema version (``PRAGMA
user_version`` on SQLite, the ``schema_version`` table on PostgreSQL) is how many have been
applied. Append new ones; never edit one that has shipped.
"""


WORKER = f"{os.uname().nodename}:{os.getpid()}"  # the host name, without importing socket
"""This replica: who holds a delivery or slot claim (this host and process; in Kubernetes the
host name is the pod's)."""


def target_kind(target: Path | str) -> str:
    """``postgresql`` for a ``postgresql://`` (or ``postgres://``) URL, else ``sqlite`` (a
    path, or ``sqlite:///path``)."""
    text = str(target)
    return "postgresql" if text.startswith(("postgresql://", "postgres://")) else "sqlite"


def redact(target: Path | str) -> str:
    """The target with any password in a URL replaced, safe for logs, answers and errors."""
    from urllib.parse import urlsplit, urlunsplit

    text = str(target)
    if "://" not in text:
        return text
    parts = urlsplit(text)
    if parts.password is not None:
        user, host = parts.netloc.rsplit("@", 1)
        parts = parts._replace(netloc=f"{user.split(':', 1)[0]}:***@{host}")
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return urlunsplit(parts._replace(query=query))


def utc_now() -> str:
    """ISO 8601 UTC with a ``Z``, to the millisecond: sortable as text."""
    return iso_utc_ms(datetime.now(UTC))


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements (``executescript`` would commit our transaction)."""
    buffer = ""
    for part in script.split(";"):
        buffer += part + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                yield buffer
            buffer = ""


class DeliveryRow(NamedTuple):
    """One pending, delivered or failed delivery of one run's report to one alert sink."""

    id: int
    run_id: str
    sink: str
    scenario: str
    status: str
    created_at: str
    attempts: int
    first_attempt_at: str | None
    last_attempt_at: str | None
    next_attempt_at: str
    claimed_until: str | None
    claimed_by: str | None
    """``host:pid`` of the worker holding the claim."""
    delivered_at: str | None
    outcome: str | None
    last_error: str | None

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


class SlotClaim(NamedTuple):
    """What ``claim_slot`` found: ``claimed`` (this replica runs the slot), ``held`` (another
    replica's lease is live) or ``done`` (the slot's run is stored)."""

    state: str
    scenario: str
    scheduled_for: str
    replica: str | None
    """Who holds (or held) the claim; None for a run stored without one."""
    lease_until: str | None
    attempt: int
    """1 for the first claim, +1 per take-over."""


class Store:
    """The service's store: one interface, two backends (``sqlite.SQLiteStore``, the embedded
    default, and ``postgres.PostgresStore``, shared by replicas). ``Store(target)`` opens the
    backend ``target`` names (``target_kind``) and migrates it.

    One connection guarded by a re-entrant lock serves every thread (the runner's main thread
    and the alert worker threads); ``transaction()`` groups several writes atomically, one
    writer at a time across processes on either backend. The SQL here is the subset both
    engines read alike; a backend supplies the connection, the transaction and the schema
    version.
    """

    target: str
    """Where the store is, safe to show (a URL's password is redacted)."""

    def __new__(cls, target: Path | str = "", **kwargs: Any) -> Store:
        if cls is not Store:
            return super().__new__(cls)
        if target_kind(target) == "postgresql":
            from stress_plugin.store.postgres import PostgresStore

            return super().__new__(PostgresStore)
        from stress_plugin.store.sqlite import SQLiteStore

        return super().__new__(SQLiteStore)

    def __init__(self, target: Path | str, **kwargs: Any) -> None:
        raise NotImplementedError  # each backend opens its own connection

    # -- plumbing ---------------------------------------------------------------------------

    _conn: Any
    """The open connection: ``execute(sql, params)`` with ``?`` placeholders gives a cursor
    (``fetchone``, ``fetchall``, ``rowcount``) of rows read by name or position."""
    _lock: threading.RLock
    _depth: int
    _checkpointer: Any = None
    """SQLite's WAL checkpoint thread (``sqlite._Checkpointer``); None on PostgreSQL."""
    _last_names: tuple[Any, str] = ((), "[]")
    """The symbols of the last run saved and their JSON: the next run's are most often
    the same (1,000,000 names: ~90 ms of JSON saved for a ~10 ms comparison)."""
    _schema = 0
    """The schema version the store was migrated to (a store opened by an older MIGRATIONS,
    as tests do, is written in its own schema)."""
    _last_list: tuple[str, int] | None = None
    """That JSON (the very object) and its ``symbol_lists`` id, once a run that refers to it
    committed; forgotten when a write fails or the connection is opened again."""

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            return self._version(self._conn)

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Any]:
        """All writes inside commit together or not at all; nesting joins the outer one.

        ``durable=False`` commits without waiting for the disk (SQLite: synchronous=NORMAL, no
        fsync, under WAL safe against a crash or kill -9, not a power cut; PostgreSQL:
        synchronous_commit off); the outer transaction decides. The setting is sent only when
        the mode changes, so a run after a run costs no extra round trip."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            self._durability(durable)
            self._begin()
            self._depth = 1
            try:
                yield self._conn
            except BaseException:
                self._last_list = None  # gone, should a lost commit have taken it: write anew
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
            finally:
                self._depth = 0

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def ping(self) -> None:
        """One round trip; raises when the store cannot be reached (``/healthz``)."""
        self._query("SELECT 1")

    # what a backend supplies

    def _begin(self) -> None:
        """Start a write transaction that excludes every other writer until it ends."""
        raise NotImplementedError

    def _version(self, conn: Any) -> int:
        """How many migrations have been applied."""
        raise NotImplementedError

    def _set_version(self, conn: Any, version: int) -> None:
        raise NotImplementedError

    def _script(self, script: str) -> Iterator[str]:
        """A migration script's statements, as this engine writes them."""
        return _statements(script)

    def _durability(self, durable: bool) -> None:
        """Before a transaction: whether its commit waits for the disk (sent on a change)."""
        raise NotImplementedError

    def _migrate(self) -> None:
        """Apply each missing script in its own transaction, so a crash leaves a known version."""
        while True:
            with self.transaction() as conn:
                version = self._version(conn)
                if version > len(MIGRATIONS):
                    raise ConfigError(
                        "store",
                        self.target,
                        version,
                        f"schema version is newer than this program knows ({len(MIGRATIONS)})",
                    )
                if version == len(MIGRATIONS):
                    self._schema = version  # what save_run writes
                    return
                migration = MIGRATIONS[version]
                if callable(migration):
                    migration(conn, self._script)
                else:
                    for statement in self._script(migration):
                        conn.execute(statement)
                self._set_version(conn, version + 1)

    # -- the alert outbox: one delivery per sink per run ---------------------------------------

    def deliveries_pending(self, sink: str | None = None) -> list[DeliveryRow]:
        """Pending deliveries, oldest first: the order they must reach each sink in."""
        return self.deliveries_list("pending", sink=sink, newest_first=False)

    def deliveries_list(self, status: str | None = None, *, sink: str | None = None,
                        limit: int | None = None, newest_first: bool = True,
                        since: str | None = None, run_id: str | None = None
                        ) -> list[DeliveryRow]:
        if status is not None and status not in OUTBOX_STATUSES:
            raise ValueError(f"status must be one of {', '.join(OUTBOX_STATUSES)}: {status!r}")
        where, params = [], []
        for column, value in (("status = ?", status), ("sink = ?", sink),
                              ("created_at >= ?", since), ("run_id = ?", run_id)):
            if value is not None:
                where.append(column)
                params.append(value)
        sql = "SELECT * FROM deliveries" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id DESC" if newest_first else " ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [DeliveryRow(**dict(row)) for row in self._query(sql, tuple(params))]

    def delivery_get(self, delivery_id: int) -> DeliveryRow | None:
        rows = self._query("SELECT * FROM deliveries WHERE id = ?", (delivery_id,))
        return DeliveryRow(**dict(rows[0])) if rows else None

    def delivery_claim(self, delivery_id: int, lease_s: float) -> DeliveryRow | None:
        """Take a pending delivery for one attempt (counted), unless another worker holds it;
        the lease lets another process take it over if this one dies mid-attempt."""
        now = utc_now()
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE deliveries SET claimed_until = ?, claimed_by = ?,"
                " attempts = attempts + 1, first_attempt_at = COALESCE(first_attempt_at, ?),"
                " last_attempt_at = ? WHERE id = ? AND status = 'pending'"
                " AND (claimed_until IS NULL OR claimed_until < ?)",
                (utc_in(lease_s), WORKER, now, now, delivery_id, now))
            return self.delivery_get(delivery_id) if cursor.rowcount else None

    def release_dead_claims(self) -> int:
        """Free the claims of processes on this host that are gone (a kill -9 mid-attempt),
        so a restart need not wait for their lease; the number freed."""
        host = WORKER.rsplit(":", 1)[0]
        rows = self._query("SELECT id, claimed_by FROM deliveries WHERE status = 'pending'"
                           " AND claimed_until IS NOT NULL AND claimed_by LIKE ?", (host + ":%",))
        dead = [r["id"] for r in rows if not _alive(int(r["claimed_by"].rsplit(":", 1)[1]))]
        with self.transaction() as conn:
            conn.executemany("UPDATE deliveries SET claimed_until = NULL, claimed_by = NULL"
                             " WHERE id = ?", [(i,) for i in dead])
        return len(dead)

    def delivery_done(self, delivery_id: int, outcome: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE deliveries SET status = 'delivered', delivered_at = ?,"
                         " outcome = ?, last_error = NULL, claimed_until = NULL, claimed_by = NULL"
                         " WHERE id = ?",
                         (utc_now(), outcome, delivery_id))

    def delivery_later(self, delivery_id: int, error: str, delay_s: float) -> None:
        """A failed attempt to retry after ``delay_s``; ``error`` must hold no secret."""
        with self.transaction() as conn:
            conn.execute("UPDATE deliveries SET last_error = ?, next_attempt_at = ?,"
                         " claimed_until = NULL, claimed_by = NULL WHERE id = ?",
                         (error, utc_in(delay_s), delivery_id))

    def delivery_failed(self, delivery_id: int, error: str) -> None:
        """Rejected by the sink: never sent again unless queued again by hand."""
        with self.transaction() as conn:
            conn.execute("UPDATE deliveries SET status = 'failed', last_error = ?,"
                         " claimed_until = NULL, claimed_by = NULL WHERE id = ?",
                         (error, delivery_id))

    def delivery_requeue(self, delivery_id: int) -> DeliveryRow | None:
        """A failed (or waiting) delivery due again now; None if there is no such delivery."""
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = ?,"
                " claimed_until = NULL WHERE id = ? AND status != 'delivered'",
                (utc_now(), delivery_id))
            return self.delivery_get(delivery_id) if cursor.rowcount else None

    def outbox_stats(self) -> dict[str, tuple[int, str | None]]:
        """Per sink: pending deliveries and when the oldest was created (one cheap query)."""
        rows = self._query("SELECT sink, COUNT(*) AS pending, MIN(created_at) AS oldest"
                           " FROM deliveries WHERE status = 'pending' GROUP BY sink")
        return {r["sink"]: (r["pending"], r["oldest"]) for r in rows}

    def report(self, run_id: str) -> StressResult:
        """A stored run as the ``StressResult`` its sinks get."""
        rows = self._query(f"SELECT result, {_SYMBOLS}, symbol_columns FROM runs WHERE run_id = ?",
                           (run_id,))
        if not rows:
            raise KeyError(run_id)
        return StressResult.from_dict(json.loads(rows[0]["result"]), symbols=_stored_symbols(
            rows[0]))

    # -- runs ---------------------------------------------------------------------------------

    def _names_json(self, names: Any) -> str:
        """The JSON list of ``names`` (a list, or a numpy array of str), from the last run's
        when they are the same symbols in the same order."""
        import numpy as np

        last, text = self._last_names
        if len(last) == len(names) and (last is names or bool(np.array_equal(
                np.asarray(last, dtype=object), np.asarray(names, dtype=object)))):
            return text
        text = _json(names.tolist() if hasattr(names, "tolist") else list(names))
        self._last_names = (names, text)
        return text

    def _symbol_list(self, conn: Any, text: str) -> int:
        """The ``symbol_lists`` id of the names ``text``: the last run's list while the
        symbols are unchanged, else a new row (inside the run's transaction, which is the only
        writer: the largest id is its own)."""
        if self._last_list is not None and self._last_list[0] is text:
            return self._last_list[1]
        conn.execute("INSERT INTO symbol_lists (symbols) VALUES (?)", (text,))
        return int(conn.execute("SELECT MAX(id) FROM symbol_lists").fetchone()[0])

    def save_run(self, result: StressResult, *, trigger: RunTrigger, prices: Any,
                 scheduled_for: str | None = None, sinks: Sequence[str] = (),
                 paths: PathInputs | None = None) -> StressResult:
        """The run, the mid price of each tested symbol (``prices``, in result order; None for
        a failed run) and one pending delivery per alert sink in ``sinks``, in one transaction:
        a crash loses no delivery. Returns the result with its ``episode`` and ``resolves``,
        which the store keeps per scenario (the previous run's episodes carry on). ``paths``
        (what the P&L paths are made of; None for a failed run) is kept in the run's row, for
        its report: a run is one INSERT.

        The per-symbol metrics and prices are kept as float64 columns (``SYMBOL_COLUMNS``),
        not as JSON: a 10,000-symbol run is then a 0.5 MB blob written in one call instead of
        1.6 MB of JSON and 10,000 price rows. ``runs_since`` gives back ``to_dict()`` exactly.
        No NaN or Infinity is ever written as JSON. A run is committed with
        ``synchronous=NORMAL``: under WAL it survives a crash or kill -9 and costs no fsync;
        only a power cut can lose the latest runs. The halt and the alert outbox keep full fsync.
        """
        import numpy as np  # here, not at import: the alerts commands need no numpy

        names, columns = _symbol_columns(result)
        names_json = self._names_json(names)
        # blobs as views of the arrays (no copy: SQLite reads the buffer; 80 MB less at the
        # peak of a 1,000,000-symbol run)
        price_blob = b"" if prices is None else _blob(np.asarray(prices, dtype=np.float64))
        path_values: tuple[Any, ...] = ()
        if paths is not None:
            path_values = (paths.step_sec, paths.equity, paths.book_var,
                           np.asarray(paths.profile, dtype=np.float64).tobytes(),
                           # (4 x symbols) in row order, as the reader reshapes it
                           _blob(paths.coef.block))
        # a run with deliveries must survive a power cut with them: full fsync then (inside a
        # caller's transaction the caller's commit decides)
        with self.transaction(durable=bool(sinks)) as conn:
            owned = self._depth == 1  # not a caller's transaction: it commits at this block's end
            lists = self._schema >= 9  # the names in symbol_lists
            list_id = self._symbol_list(conn, names_json) if lists else None
            last = conn.execute(
                "SELECT breach_episode, failure_episode FROM runs WHERE scenario = ?"
                " ORDER BY rowid DESC LIMIT 1",  # the order sinks get them in
                (result.scenario,)).fetchone()
            result, breach, failure = next_episodes(
                result, *(tuple(last) if last else (None, None)))
            # one row: the run, its metrics and prices, its episodes and its paths
            conn.execute(_insert_run((*_RUN_COLUMNS_V4, *("symbol_list",) * lists,
                                      *_PATH_COLUMNS * bool(path_values))), (
                result.run_id, result.timestamp, result.scenario, result.status,
                result.failure, trigger, scheduled_for, result.breach_count,
                int(result.kill_switch), result.headroom, result.runtime_ms,
                _json(result.to_dict(symbols=False)), "" if lists else names_json,
                _blob(columns), price_blob, breach, failure, *(list_id,) * lists,
                *path_values))
            if sinks:
                now = utc_now()
                conn.executemany(
                    "INSERT INTO deliveries (run_id, sink, scenario, created_at,"
                    " next_attempt_at) VALUES (?, ?, ?, ?, ?)",
                    [(result.run_id, sink, result.scenario, now, now) for sink in sinks])
        if owned and list_id is not None:
            self._last_list = (names_json, list_id)
        if self._checkpointer is not None:  # runs are most of the writes: they pace checkpoints
            self._checkpointer.wake()
        return result

    def run(self, run_id: str) -> dict[str, Any] | None:
        """One stored run's result (as ``runs_since`` gives it), or None."""
        rows = self._query(f"SELECT trigger, scheduled_for, result, {_SYMBOLS}, symbol_columns"
                           " FROM runs WHERE run_id = ?", (run_id,))
        return _stored_result(rows[0]) if rows else None

    def run_paths(self, run_id: str) -> PathInputs | None:
        """What the run's P&L paths are made of; None for a run stored without them."""
        import numpy as np

        from stress_plugin.core.engine import Coefficients, PathInputs

        rows = self._query("SELECT step_sec, equity, book_var, profile, coefficients FROM runs"
                           " WHERE run_id = ? AND coefficients IS NOT NULL", (run_id,)) or (
            self._query("SELECT step_sec, equity, book_var, profile, coefficients"
                        " FROM run_paths WHERE run_id = ?", (run_id,)))  # stored before 8
        if not rows:
            return None
        r = rows[0]
        return PathInputs(Coefficients(np.frombuffer(r["coefficients"]).reshape(4, -1)),
                          np.frombuffer(r["profile"]),
                          r["step_sec"], r["equity"], r["book_var"])

    def recent_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest runs' summaries, newest first (the service's index page)."""
        rows = self._query(
            "SELECT run_id, timestamp, scenario, status, trigger, breach_count, kill_switch,"
            " headroom, runtime_ms, result FROM runs"
            " ORDER BY timestamp DESC, rowid DESC LIMIT ?", (limit,))
        return [{**{k: r[k] for k in r.keys() if k != "result"},  # noqa: SIM118 (a row)
                 "kill_switch": bool(r["kill_switch"]),
                 "symbols_tested": json.loads(r["result"])["symbols_tested"]} for r in rows]

    def has_scheduled_run(self, scenario: str, scheduled_for: str) -> bool:
        """Whether this scenario's run for this fire time is already stored (by any worker)."""
        return bool(self._query("SELECT 1 FROM runs WHERE scenario = ? AND scheduled_for = ?",
                                (scenario, scheduled_for)))

    def scheduled_slots(self, first: str, last: str) -> set[str]:
        """The scheduled times in [first, last] (ISO UTC) that have a stored run, any scenario."""
        rows = self._query("SELECT DISTINCT scheduled_for FROM runs"
                           " WHERE scheduled_for BETWEEN ? AND ?", (first, last))
        return {r["scheduled_for"] for r in rows}

    def runs_since(self, since: str) -> list[dict[str, Any]]:
        """Results of runs at or after ``since`` (ISO UTC), newest first, with their trigger."""
        rows = self._query(f"SELECT trigger, scheduled_for, result, {_SYMBOLS}, symbol_columns"
                           " FROM runs WHERE timestamp >= ? ORDER BY timestamp DESC, rowid DESC",
                           (since,))
        return [_stored_result(r) for r in rows]

    def latest_results(self) -> dict[str, dict[str, Any]]:
        """The newest run of each scenario, as ``runs_since`` gives it, by scenario name."""
        rows = self._query(
            f"SELECT scenario, trigger, scheduled_for, result, {_SYMBOLS}, symbol_columns"
            " FROM runs AS r WHERE rowid = (SELECT rowid FROM runs WHERE scenario = r.scenario"
            " ORDER BY timestamp DESC, rowid DESC LIMIT 1) ORDER BY scenario")
        return {r["scenario"]: _stored_result(r) for r in rows}

    def run_totals(self) -> dict[str, int]:
        row = self._query("SELECT COUNT(*) AS runs, COALESCE(SUM(breach_count), 0) AS breaches,"
                          " COALESCE(SUM(CASE WHEN breach_count > 0 THEN 1 ELSE 0 END), 0)"
                          " AS breaching_runs FROM runs")[0]
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
            "SELECT run_id, scenario, timestamp, headroom, result"
            " FROM runs AS r WHERE rowid = (SELECT rowid FROM runs WHERE scenario = r.scenario"
            " AND status != 'failed' ORDER BY timestamp DESC, rowid DESC LIMIT 1)"
            " ORDER BY timestamp, rowid")
        runs = []
        for r in rows:
            result = json.loads(r["result"])
            runs.append({"run_id": r["run_id"], "scenario": r["scenario"],
                         "timestamp": r["timestamp"], "headroom": r["headroom"],
                         "symbols_tested": result["symbols_tested"],
                         "symbols_skipped": len(result["skipped_symbols"])})
        return runs

    def prices_since(self, since: str) -> list[tuple[str, float]]:
        """(symbol, price) of every run at or after ``since``, per symbol in time order."""
        rows = self._query(f"SELECT {_SYMBOLS}, prices FROM runs WHERE timestamp >= ?"
                           " AND status != 'failed' ORDER BY timestamp, rowid", (since,))
        import numpy as np

        series: dict[str, list[float]] = {}
        for r in rows:
            for symbol, price in zip(json.loads(r["symbols"]),
                                     np.frombuffer(r["prices"]).tolist(), strict=True):
                series.setdefault(symbol, []).append(price)
        return [(symbol, price) for symbol in sorted(series) for price in series[symbol]]

    # -- replicas: each scheduled slot runs once -----------------------------------------------

    def claim_slot(self, scenario: str, scheduled_for: str, lease_s: float,
                   replica: str = WORKER) -> SlotClaim:
        """Try to take (scenario, slot) for ``replica``, in one transaction: ``claimed`` (run
        it, renewing the lease while it runs), ``done`` (its run is stored) or ``held`` (another
        replica's lease is live until ``lease_until``: ask again then). A claim whose lease
        expired with no stored run is taken over, its ``attempt`` counted."""
        now = utc_now()
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE scenario = ? AND scheduled_for = ?",
                            (scenario, scheduled_for)).fetchone() is not None:
                return self._claim(conn, scenario, scheduled_for, "done")
            inserted = conn.execute(
                "INSERT INTO slot_claims (scenario, scheduled_for, replica, claimed_at,"
                " lease_until) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (scenario, scheduled_for, replica, now, utc_in(lease_s))).rowcount
            taken = inserted or conn.execute(
                "UPDATE slot_claims SET replica = ?, claimed_at = ?, lease_until = ?,"
                " attempt = attempt + 1 WHERE scenario = ? AND scheduled_for = ?"
                " AND lease_until < ?",
                (replica, now, utc_in(lease_s), scenario, scheduled_for, now)).rowcount
            return self._claim(conn, scenario, scheduled_for, "claimed" if taken else "held")

    def renew_claim(self, scenario: str, scheduled_for: str, lease_s: float,
                    replica: str = WORKER) -> bool:
        """Extend ``replica``'s lease (the heartbeat of a slot being run); False once the claim
        is another replica's (it expired and was taken over)."""
        with self.transaction() as conn:
            return bool(conn.execute(
                "UPDATE slot_claims SET lease_until = ? WHERE scenario = ? AND scheduled_for = ?"
                " AND replica = ?", (utc_in(lease_s), scenario, scheduled_for, replica)).rowcount)

    def holds_claim(self, scenario: str, scheduled_for: str, replica: str = WORKER) -> bool:
        """Whether ``replica`` still holds the claim (checked before a side effect)."""
        return bool(self._query("SELECT 1 FROM slot_claims WHERE scenario = ? AND"
                                " scheduled_for = ? AND replica = ?",
                                (scenario, scheduled_for, replica)))

    def last_slot(self) -> dict[str, Any] | None:
        """The newest scheduled slot with a stored run, and the replica whose claim ran it."""
        rows = self._query(
            "SELECT c.scenario, c.scheduled_for, c.replica, c.attempt, r.run_id"
            " FROM slot_claims AS c JOIN runs AS r ON r.scenario = c.scenario"
            " AND r.scheduled_for = c.scheduled_for"
            " ORDER BY c.scheduled_for DESC, c.scenario LIMIT 1")
        return {k: rows[0][k] for k in rows[0].keys()} if rows else None  # noqa: SIM118

    def replica_seen(self, replica: str = WORKER) -> None:
        """``replica`` is alive now (its heartbeat)."""
        now = utc_now()
        with self.transaction() as conn:
            conn.execute("INSERT INTO replicas (replica, started_at, seen_at) VALUES (?, ?, ?)"
                         " ON CONFLICT (replica) DO UPDATE SET seen_at = excluded.seen_at",
                         (replica, now, now))

    def replicas_seen(self, since: str) -> list[dict[str, Any]]:
        """The replicas seen at or after ``since`` (ISO UTC), newest heartbeat first."""
        rows = self._query("SELECT replica, started_at, seen_at FROM replicas"
                           " WHERE seen_at >= ? ORDER BY seen_at DESC, replica", (since,))
        return [{"replica": r["replica"], "started_at": r["started_at"],
                 "seen_at": r["seen_at"]} for r in rows]

    def replica_count(self, since: str) -> int:
        """How many replicas were seen at or after ``since`` (one cheap read, for a gauge)."""
        return int(self._query("SELECT COUNT(*) FROM replicas WHERE seen_at >= ?",
                               (since,))[0][0])

    def _claim(self, conn: Any, scenario: str, scheduled_for: str, state: str) -> SlotClaim:
        row = conn.execute("SELECT replica, lease_until, attempt FROM slot_claims"
                           " WHERE scenario = ? AND scheduled_for = ?",
                           (scenario, scheduled_for)).fetchone()
        return SlotClaim(state, scenario, scheduled_for, row["replica"] if row else None,
                         row["lease_until"] if row else None, row["attempt"] if row else 0)

    # -- halt ---------------------------------------------------------------------------------

    def halted(self) -> bool:
        """Whether a halt is in force (one cheap read, for the metrics)."""
        return bool(self._query("SELECT COUNT(*) FROM halt")[0][0])

    def halt_get(self) -> dict[str, Any] | None:
        rows = self._query(f"SELECT {', '.join(_HALT_FIELDS)} FROM halt")
        return _halt(rows[0]) if rows else None

    def run_state(self) -> tuple[dict[str, float], dict[str, Any] | None]:
        """The live limits (``live_limits``) and the halt in force (``halt_get``) as a run
        reads them when it starts, in one statement: one round trip, not two."""
        row = self._query(
            f"SELECT ({_LIVE_LIMITS}) AS limits,"
            f" h.id AS halt, {', '.join(f'h.{f}' for f in _HALT_FIELDS)}"
            " FROM (SELECT 1 AS one) AS one LEFT JOIN halt AS h ON 1 = 1")[0]
        return _live(row["limits"]), None if row["halt"] is None else _halt(row)

    def halt_set(self, halt: dict[str, Any]) -> bool:
        """Record a halt unless one is active (the first KILL_SWITCH's reason is kept)."""
        with self.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO halt (id, reason, since, run_id, scenario, symbols)"
                " VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (halt["reason"], halt["since"], halt["run_id"], halt["scenario"],
                 _json(list(halt["symbols"]))),
            )
            if cursor.rowcount:
                self._audit(conn, "stress_runner", "halt", halt)
            return bool(cursor.rowcount)

    def halt_clear(self, actor: str, reason: str | None = None) -> dict[str, Any] | None:
        """Clear the halt, audited with who and why; returns the halt that was cleared."""
        return self.reset_approve(actor, actor, reason, required=1, window_s=0)["cleared"]

    def reset_approve(self, operator: str, actor: str, reason: str | None, *, required: int,
                      window_s: float) -> dict[str, Any]:
        """One approval to clear the halt, in one transaction: the halt clears when ``required``
        distinct operators (``operator`` and those who approved this halt in the last
        ``window_s`` seconds) have approved, else the approval is recorded (audited as
        ``reset_approval``). Returns ``cleared`` (the halt cleared, or None), ``approvals``
        (operator, actor, at, reason) and ``required``."""
        with self.transaction() as conn:
            halt = self.halt_get()
            mine = {"operator": operator, "actor": actor, "at": utc_now(), "reason": reason}
            if halt is None:
                self._audit(conn, actor, "reset_circuit",
                            {"cleared": None, "reason": reason, "operator": operator})
                return {"cleared": None, "approvals": [], "required": required}
            others = [a for a in self._approvals(conn, halt["run_id"], window_s)
                      if a["operator"] != operator]
            approvals = [*others, mine]
            if len(approvals) >= required:
                conn.execute("DELETE FROM halt")
                self._audit(conn, actor, "reset_circuit", {
                    "cleared": halt, "reason": reason, "operator": operator,
                    "approvals": approvals if required > 1 else []})
                return {"cleared": halt, "approvals": approvals, "required": required}
            self._audit(conn, actor, "reset_approval", {
                "run_id": halt["run_id"], "operator": operator, "reason": reason})
            return {"cleared": None, "approvals": approvals, "required": required}

    def reset_approvals(self, window_s: float) -> list[dict[str, Any]]:
        """The approvals, one per operator (the newest), of the halt in force within the
        window; empty when not halted."""
        with self._lock:
            halt = self.halt_get()
            return [] if halt is None else self._approvals(self._conn, halt["run_id"], window_s)

    def _approvals(self, conn: Any, run_id: str, window_s: float) -> list[dict[str, Any]]:
        rows = conn.execute(
            "SELECT at, actor, details FROM audit_log WHERE action = 'reset_approval'"
            " AND at >= ? ORDER BY id", (utc_in(-window_s),)).fetchall()
        newest: dict[str, dict[str, Any]] = {}
        for r in rows:
            details = json.loads(r["details"])
            if details["run_id"] != run_id:
                continue
            newest.pop(details["operator"], None)
            newest[details["operator"]] = {"operator": details["operator"], "actor": r["actor"],
                                           "at": r["at"], "reason": details["reason"]}
        return list(newest.values())

    # -- live limits and config --------------------------------------------------------------

    def live_limits(self) -> dict[str, float]:
        """The live limits set through the API (the newest history row; empty once removed)."""
        rows = self._query(_LIVE_LIMITS)
        return _live(rows[0]["limits"] if rows else None)

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

    def audit_log(self, since: str = "") -> list[dict[str, Any]]:
        """Audit entries at or after ``since`` (ISO UTC; all by default), newest first."""
        rows = self._query("SELECT at, actor, action, details FROM audit_log WHERE at >= ?"
                           " ORDER BY id DESC", (since,))
        return [{**dict(r), "details": json.loads(r["details"])} for r in rows]

    def _audit(self, conn: Any, actor: str, action: str,
               details: dict[str, Any]) -> None:
        conn.execute("INSERT INTO audit_log (at, actor, action, details) VALUES (?, ?, ?, ?)",
                     (utc_now(), actor, action, _json(details)))


def _stored_symbols(row: Any) -> SymbolMetrics:
    import numpy as np

    names = json.loads(row["symbols"])
    columns = np.frombuffer(row["symbol_columns"]).reshape(len(SYMBOL_COLUMNS), len(names))
    return SymbolMetrics(names, *columns)


def next_episodes(result: StressResult, breach: str | None, failure: str | None
                  ) -> tuple[StressResult, str | None, str | None]:
    """The result with its ``episode`` and ``resolves``, and the scenario's open (breach,
    failure) episodes after it, from the ones open before it.

    A breach continues (or opens) the breach episode and ends a failure episode; a failed run
    continues (or opens) the failure episode and leaves a breach episode open (nothing says it
    is over); a passed run ends both."""
    if result.status == "failed":
        failure = failure or f"failed/{result.run_id}"
        return _with_episode(result, failure, ()), breach, failure
    ended = (failure,) if result.status == "breached" else (breach, failure)
    resolves = tuple(e for e in ended if e is not None)
    if result.status == "breached":
        breach = breach or result.run_id
        return _with_episode(result, breach, resolves), breach, None
    return _with_episode(result, None, resolves), None, None


def _with_episode(result: StressResult, episode: str | None, resolves: tuple[str, ...]
                  ) -> StressResult:
    """The result with this episode and resolves; itself when it has them already (a passed
    run after a passed run: a dataclass copy is ~10 us of a 100-symbol run's store write)."""
    from dataclasses import replace

    if result.episode == episode and result.resolves == resolves:
        return result
    return replace(result, episode=episode, resolves=resolves)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def utc_in(seconds: float) -> str:
    """``utc_now()`` plus ``seconds``, in the same sortable text form."""
    return iso_utc_ms(datetime.now(UTC) + timedelta(seconds=seconds))


def _symbol_columns(result: StressResult) -> tuple[Any, np.ndarray]:
    """The symbol names (a list or a numpy array) and a (SYMBOL_COLUMNS x symbols) float64
    array; NaN for no VaR."""
    import numpy as np

    if isinstance(result.symbols, SymbolMetrics):
        names = result.symbols.symbols
        columns = [getattr(result.symbols, field) for field in SYMBOL_COLUMNS]
        block = _rows_of(columns)
        if block is not None:  # the engine's (a big book's): 40 MB not copied at 1,000,000
            return names, block
    else:  # a result built by hand with a dict of Metrics
        names = list(result.symbols)
        columns = [[getattr(m, field) for m in result.symbols.values()]
                   for field in SYMBOL_COLUMNS]
    if any(isinstance(c, list) for c in columns):
        columns = [[np.nan if v is None else v for v in c] if isinstance(c, list) else c
                   for c in columns]
    return names, np.array(columns, dtype=np.float64).reshape(len(SYMBOL_COLUMNS), -1)


def _rows_of(columns: list[Any]) -> np.ndarray | None:
    """The one C-ordered float64 block whose rows ``columns`` are, in order, or None."""
    import numpy as np

    block = getattr(columns[0], "base", None)
    if not (isinstance(block, np.ndarray) and block.dtype == np.float64
            and block.shape == (len(columns), len(columns[0])) and block.flags.c_contiguous):
        return None
    start, row = block.__array_interface__["data"][0], block.strides[0]
    for i, column in enumerate(columns):
        if not (isinstance(column, np.ndarray) and column.base is block
                and column.__array_interface__["data"][0] == start + i * row
                and column.shape == block.shape[1:] and column.strides == block.strides[1:]):
            return None
    return block


def _blob(array: np.ndarray) -> memoryview | bytes:
    """The bytes of a float64 array as SQLite reads a blob, without copying them."""
    import numpy as np

    return np.ascontiguousarray(array).data.cast("B") if array.size else b""


_LIVE_LIMITS = "SELECT limits FROM limits_history ORDER BY id DESC LIMIT 1"
"""The live limits' JSON: the newest history row (``live_limits``, ``run_state``)."""


def _live(text: str | None) -> dict[str, float]:
    """The live limits of their stored JSON; none when no row was ever written."""
    return json.loads(text) if text is not None else {}


_HALT_FIELDS = ("reason", "since", "run_id", "scenario", "symbols")
"""The halt's columns, in the order ``halt_get`` gives them."""


def _halt(row: Any) -> dict[str, Any]:
    """The halt of a row that holds its columns (``_HALT_FIELDS``), symbols as a list."""
    return {**{f: row[f] for f in _HALT_FIELDS}, "symbols": json.loads(row["symbols"])}


_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
"""Compact JSON; a NaN or Infinity is a bug here, never written (it broke start-ups). One
encoder for every call: ``json.dumps`` with options builds a new one each time (~5 us of a
100-symbol run's store write)."""


def _stored_result(row: Any) -> dict[str, Any]:
    """A stored run as ``to_dict()`` gave it, then where the run came from."""
    data = json.loads(row["result"])
    data["symbols"] = _stored_symbols(row).to_dict()
    data.setdefault("kill_switch_confirmed", None)  # stored before it was checked
    # to_dict()'s key order, then where the run came from
    return {**{k: data[k] for k in _RESULT_KEYS}, "trigger": row["trigger"],
            "scheduled_for": row["scheduled_for"]}
