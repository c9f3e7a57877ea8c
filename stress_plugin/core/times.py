"""How moments are written: ISO 8601 UTC to the second with a Z, as every run, schedule and API
answer shows them. Formatting only; the core keeps no clock (callers pass the moment)."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(moment: datetime) -> str:
    """``2024-01-15T15:00:05Z``: the moment in UTC, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_utc_ms(moment: datetime) -> str:
    """``2024-01-15T15:00:05.123Z``: to the millisecond, as the store keeps times (sortable as
    text)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """The aware moment of an ISO 8601 text written with a ``Z`` or an offset."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
