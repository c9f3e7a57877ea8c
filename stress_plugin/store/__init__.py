"""The store: one interface (``base.Store``), two backends. ``Store(target)`` opens SQLite for
a path or ``sqlite:///...`` (the embedded default) and PostgreSQL for ``postgresql://...``
(replicas sharing one database)."""

from stress_plugin.store.base import (
    MIGRATIONS,
    OUTBOX_STATUSES,
    SYMBOL_COLUMNS,
    WORKER,
    DeliveryRow,
    SlotClaim,
    Store,
    next_episodes,
    redact,
    target_kind,
    utc_in,
    utc_now,
)

__all__ = ["MIGRATIONS", "OUTBOX_STATUSES", "SYMBOL_COLUMNS", "WORKER", "DeliveryRow", "SlotClaim",
           "Store", "next_episodes", "redact", "target_kind", "utc_in", "utc_now"]
