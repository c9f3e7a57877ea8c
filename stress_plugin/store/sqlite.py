"""The embedded backend: one SQLite file, WAL, ``PRAGMA user_version`` as the schema version.

Other processes (the CLI, a second runner on the same host) share the file through WAL and
``busy_timeout``; ``BEGIN IMMEDIATE`` makes each write transaction the only writer.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import suppress
from pathlib import Path
from typing import Any

from stress_plugin.core.errors import ConfigError
from stress_plugin.store.base import Store


def sqlite_path(target: Path | str) -> Path:
    """The file a target names: a path, or ``sqlite:///path`` as SQLAlchemy reads it (three
    slashes then a relative path, four for an absolute one)."""
    text = str(target)
    return Path(text.removeprefix("sqlite:///")) if text.startswith("sqlite:///") else Path(text)


class SQLiteStore(Store):
    """The SQLite file at ``target`` (created with its parent folders), migrated on open."""

    def __init__(self, target: Path | str, *, busy_timeout: float = 5.0) -> None:
        self.path = sqlite_path(target)
        self.target = str(self.path)
        self._lock = threading.RLock()
        self._depth = 0
        self._full_sync = True
        """Whether the connection is at synchronous=FULL (set only when it changes)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._conn.row_factory = sqlite3.Row
            wal = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
            self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA synchronous=FULL")
            if wal:  # checkpoints off the writers' path: see _Checkpointer
                self._conn.execute("PRAGMA wal_autocheckpoint=0")
                # a WAL that grew (runs back to back) is cut back when it starts again
                self._conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
                self._checkpointer = _Checkpointer(self.path, busy_timeout)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError("environment", "STRESS_DB", self.target,
                              f"cannot open the store: {exc}") from None
        self._migrate()

    def _begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def _version(self, conn: Any) -> int:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def _set_version(self, conn: Any, version: int) -> None:
        conn.execute(f"PRAGMA user_version = {int(version)}")

    def _durability(self, durable: bool) -> None:
        if durable != self._full_sync:
            self._conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._full_sync = durable


WAL_SIZE_LIMIT = 64 * 1024 * 1024
"""Bytes of WAL file kept when the WAL starts again from its beginning: what runs back to
back grew is given back to the disk at the next pause (SQLite keeps the largest size
otherwise)."""


class _Checkpointer:
    """WAL checkpoints on a connection and thread of their own, never inside a commit.

    SQLite's automatic checkpoint runs in the commit that crosses 1,000 WAL pages: every so
    often a run's store write paid a checkpoint (a p99 of ~10 ms against a 0.4 ms p50 at
    1,000 symbols). The store turns it off and wakes this thread after each commit; the
    thread runs a PASSIVE checkpoint (it never blocks a writer or waits for a reader) at
    most every ``period_s``, so no run waits for one. The last connection to close
    checkpoints what is left, as SQLite always does.

    The WAL starts again from its beginning only after a pass that copied every frame, so
    runs back to back (a benchmark's loop: a commit every 0.5 ms) grow it without end
    (~120 KB per 1,000-symbol run). A FULL checkpoint would bound it but holds every writer
    for the copy and the fsync (8 to 90 ms measured): a stall inside a run, so it is not done;
    any pause longer than one pass lets the next run start the WAL again, and that run cuts the
    file back to ``WAL_SIZE_LIMIT``."""

    def __init__(self, path: Path, busy_timeout: float, period_s: float = 0.5) -> None:
        self.path, self.busy_timeout, self.period_s = path, busy_timeout, period_s
        self._due = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def wake(self) -> None:
        """A run was committed: checkpoint soon (starts the thread on the first run)."""
        if not self._due.is_set():  # set() takes a lock and notifies: once is enough
            self._due.set()
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, daemon=True,
                                                    name="stress-store-checkpoint")
                    self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._due.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            while not self._stopping.is_set():
                self._due.wait()
                self._due.clear()
                if self._stopping.is_set():
                    break
                with suppress(sqlite3.Error):  # busy or gone: the next run asks again
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                self._stopping.wait(self.period_s)
        finally:
            conn.close()
