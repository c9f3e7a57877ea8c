"""The embedded default host: the demo book and a persisted trading halt.

It answers ``trylast``, so a real host's ``stress_book`` always wins and a real bus hears
KILL_SWITCH first. Its halt lives in the store (``STRESS_DB``), so it survives a restart or a
kill -9, and only ``POST /api/v1/risk/reset_circuit`` clears it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stress_hookspecs import Book, RiskEvent, hookimpl

if TYPE_CHECKING:
    from stress_plugin.store import Store

DEMO_BOOK = Path(__file__).resolve().parent.parent / "demo_book.yaml"
log = logging.getLogger("stress_runner.host")


class EmbeddedHost:
    """Serves the demo book and holds the halt until ``reset()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._store: Store | None = None
        self._demo_book: Book | None = None

    def use_store(self, store: Store) -> None:
        """Share the service's store instead of opening STRESS_DB on first use."""
        self._store = store

    @property
    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                from stress_plugin.settings import load_settings
                from stress_plugin.store import Store

                self._store = Store(load_settings().db_path)
            return self._store

    @hookimpl(trylast=True)
    def stress_book(self) -> Book:
        """The demo book, read once: it is package data and never changes."""
        if self._demo_book is None:
            from stress_plugin.book import load_book

            self._demo_book = load_book(DEMO_BOOK)
        return self._demo_book

    @hookimpl(trylast=True)
    def stress_bus_publish(self, event: RiskEvent) -> None:
        if event.type != "KILL_SWITCH":
            return
        self.store.halt_set({"reason": event.reason, "since": event.timestamp,
                             "run_id": event.run_id, "scenario": event.scenario,
                             "symbols": list(event.symbols)})
        log.critical("trading halted by KILL_SWITCH: scenario=%s symbols=%s run_id=%s",
                     event.scenario, ",".join(event.symbols), event.run_id)

    def status(self) -> dict[str, Any] | None:
        """The active halt (reason, since, run_id, scenario, symbols), or None."""
        return self.store.halt_get()

    def reset(self, actor: str) -> dict[str, Any] | None:
        """Clear the halt (audited with ``actor``); returns the one cleared."""
        return self.store.halt_clear(actor)


host = EmbeddedHost()
"""The instance the ``embedded_host`` entry point names."""
