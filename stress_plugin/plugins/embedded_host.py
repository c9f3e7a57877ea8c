"""The embedded default host: the demo book and an in-process trading halt.

It answers ``trylast``, so a real host's ``stress_book`` always wins and a real bus hears
KILL_SWITCH first. Its halt is what ``stress-runner`` reports when no real host is present.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from stress_hookspecs import Book, RiskEvent, hookimpl

DEMO_BOOK = Path(__file__).resolve().parent.parent / "demo_book.yaml"
log = logging.getLogger("stress_runner.host")


@dataclass(frozen=True, slots=True)
class Halt:
    """Why trading stopped: the KILL_SWITCH event that stopped it."""

    reason: str
    since: str
    run_id: str
    scenario: str
    symbols: tuple[str, ...]


class EmbeddedHost:
    """Serves the demo book and holds the halt until ``reset()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.halt: Halt | None = None
        self._demo_book: Book | None = None

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
        with self._lock:
            if self.halt is None:
                self.halt = Halt(event.reason, event.timestamp, event.run_id, event.scenario,
                                 tuple(event.symbols))
        log.critical("trading halted by KILL_SWITCH: scenario=%s symbols=%s run_id=%s",
                     event.scenario, ",".join(event.symbols), event.run_id)

    def reset(self) -> Halt | None:
        """Clear the halt; returns the one cleared."""
        with self._lock:
            cleared, self.halt = self.halt, None
        return cleared


host = EmbeddedHost()
"""The instance the ``embedded_host`` entry point names."""
