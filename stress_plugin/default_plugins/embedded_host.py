"""The embedded default host: the demo book, and a bus that stands in for a trading system.

It is only a default. Its ``stress_book`` is ``trylast``, which for a first-answer hook means it
is asked only when no other plugin implements ``stress_book``: a real host that cannot produce
a book fails the run instead of falling back to the demo. The halt itself is the runtime's
latch (``STRESS_DB``), whatever plugins are loaded; this bus logs what a trading system would
do with each event and remembers the state it was put in.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from stress_hookspecs import Book, RiskEvent, hookimpl

DEMO_BOOK = Path(__file__).resolve().parent / "demo_book.yaml"
log = logging.getLogger("stress_runner.host")


class EmbeddedHost:
    """Serves the demo book and plays the trading system on the bus."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._demo_book: Book | None = None
        self.trading_state = "ACTIVE"
        """``HALTED`` (``REDUCING`` with mode reduce) after a KILL_SWITCH, ``ACTIVE`` again
        after a RESET."""

    @hookimpl(trylast=True)
    def stress_book(self) -> Book:
        """The demo book, read once: it is package data and never changes."""
        with self._lock:
            if self._demo_book is None:
                from stress_plugin.core.book import load_book

                self._demo_book = load_book(DEMO_BOOK)
            return self._demo_book

    @hookimpl(trylast=True)
    def stress_bus_publish(self, event: RiskEvent) -> None:
        if event.type == "KILL_SWITCH":
            self.trading_state = "REDUCING" if event.mode == "reduce" else "HALTED"
            log.critical("trading %s by KILL_SWITCH: scenario=%s symbols=%s run_id=%s",
                         self.trading_state.lower(), event.scenario, ",".join(event.symbols),
                         event.run_id)
        elif event.type == "RESET":
            self.trading_state = "ACTIVE"
            log.warning("trading resumed after RESET of run %s: %s", event.run_id, event.reason)

    @hookimpl(trylast=True)
    def stress_trading_state(self) -> str:
        """The state this stand-in bus was put in, so a KILL_SWITCH is confirmed by it."""
        return self.trading_state


host = EmbeddedHost()
"""The instance the ``embedded_host`` entry point names."""
