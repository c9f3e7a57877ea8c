"""When the stress test runs: slots in New York exchange time, as plain arithmetic.

The runbook's fixed 14:30-21:00 UTC window is right only in winter, so slots are computed in
America/New_York wall-clock time and limited to real XNYS sessions (holidays, early closes).
This module is the one code path for them: ``stress-runner schedule`` and ``status`` list with
it, and the service's scheduler fires and audits by it. It imports no scheduler, and
exchange_calendars (which pulls in pandas) only when a calendar is first needed.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from exchange_calendars import ExchangeCalendar

__all__ = ["NEW_YORK", "Schedule", "check_schedule", "fire_times"]

NEW_YORK = ZoneInfo("America/New_York")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TICK = timedelta(microseconds=1)
_MIN_CALENDAR_DAYS = 400
"""Build at least this much calendar at once: a build costs about 0.1 s, a lookup microseconds."""
_DAYS_PER_SESSION = 1.5
"""Calendar days per session, for sizing a build (252 sessions a year is 1.45)."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """A validated schedule: ``offset_seconds`` past every ``interval_minutes`` boundary of the
    New York hour, with ``market_hours_only`` inside XNYS sessions only."""

    interval_minutes: int = 60
    offset_seconds: int = 5
    market_hours_only: bool = True

    def __post_init__(self) -> None:
        check_schedule(self.interval_minutes, self.offset_seconds, self.market_hours_only)

    def after(self, start: datetime, count: int) -> list[datetime]:
        """The next ``count`` slots strictly after ``start`` (UTC)."""
        return fire_times(start, count, interval_minutes=self.interval_minutes,
                          offset_seconds=self.offset_seconds,
                          market_hours_only=self.market_hours_only)

    def next_after(self, start: datetime) -> datetime:
        """The first slot strictly after ``start``."""
        return self.after(start, 1)[0]

    def between(self, start: datetime, end: datetime) -> list[datetime]:
        """The slots in (``start``, ``end``], oldest first."""
        return list(self._until(start, end))

    def _until(self, start: datetime, end: datetime) -> Iterator[datetime]:
        after, count = start, 8  # usually none or one slot: ask for few, then more
        while after < end:
            chunk = self.after(after, count)
            for slot in chunk:
                if slot > end:
                    return
                yield slot
            after, count = chunk[-1], min(count * 4, 4096)

    def __str__(self) -> str:
        hours = "XNYS session" if self.market_hours_only else "all day"
        return (f"every {self.interval_minutes} min at +{self.offset_seconds} s "
                f"New York time, {hours}")


def fire_times(
    start: datetime,
    count: int,
    *,
    interval_minutes: int = 60,
    offset_seconds: int = 5,
    market_hours_only: bool = True,
    calendar: ExchangeCalendar | str | None = None,
) -> list[datetime]:
    """The next ``count`` fire times strictly after ``start``, as UTC datetimes.

    A fire time is ``offset_seconds`` past an ``interval_minutes`` boundary of the New York hour;
    with ``market_hours_only`` it must also fall inside an exchange session [open, close).
    ``calendar`` is a calendar name (default ``"XNYS"``; built and extended as needed) or an
    ``ExchangeCalendar``, used as given: a request past its range raises ``ValueError``.
    """
    check_schedule(interval_minutes, offset_seconds, market_hours_only)
    if not isinstance(start, datetime) or start.utcoffset() is None:
        raise ValueError(f"start={start!r}: must be a timezone-aware datetime")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count={count!r}: must be an integer >= 0")
    start = start.astimezone(UTC)
    step = timedelta(minutes=interval_minutes)
    offset = timedelta(seconds=offset_seconds)
    if not market_hours_only:
        fire = _boundary(start, interval_minutes) + offset
        while fire <= start:
            fire += step
        # NY offsets are whole hours, so equal UTC steps stay on NY boundaries; across a DST
        # change this fires once per real interval (the repeated 01:xx hour twice, none skipped).
        return [fire + i * step for i in range(count)]
    result: list[datetime] = []
    if count == 0:
        return result
    sessions = _Sessions.for_request(calendar, start, count, interval_minutes)
    index = sessions.first_closing_after(start)
    while True:
        if index >= len(sessions.opens):
            sessions = _Sessions.extended(calendar, sessions)
        open_, close = sessions.session(index)
        # Sessions are daytime, never spanning a DST change, so UTC steps within one are exact.
        fire = _boundary(open_, interval_minutes) + offset
        while fire < open_ or fire <= start:
            fire += step
        while fire < close:
            result.append(fire)
            if len(result) == count:
                return result
            fire += step
        index += 1


INTERVAL_RULE = "must be an integer in 1..60 that divides 60"


def interval_problem(interval_minutes: int) -> str | None:
    """Why ``interval_minutes`` cannot be a schedule's interval, or None: the one rule, used
    by ``check_schedule`` and by the service config's validation."""
    if not 1 <= interval_minutes <= 60 or 60 % interval_minutes:
        return INTERVAL_RULE
    return None


def offset_problem(offset_seconds: int, interval_minutes: int) -> str | None:
    """Why ``offset_seconds`` cannot follow each boundary of that interval, or None."""
    if not 0 <= offset_seconds < interval_minutes * 60:
        return f"must be an integer in 0..{interval_minutes * 60 - 1} (within one interval)"
    return None


def check_schedule(interval_minutes: Any, offset_seconds: Any, market_hours_only: Any) -> None:
    """Raise ``ValueError`` naming the first bad schedule setting (for a host's or the
    scheduler's own arguments; the service config applies the same two rules)."""
    def whole(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    problem = interval_problem(interval_minutes) if whole(interval_minutes) else INTERVAL_RULE
    if problem:
        raise ValueError(f"interval_minutes={interval_minutes!r}: {problem}")
    problem = offset_problem(offset_seconds, interval_minutes) if whole(offset_seconds) else \
        "must be an integer"
    if problem:
        raise ValueError(f"offset_seconds={offset_seconds!r}: {problem}")
    if not isinstance(market_hours_only, bool):
        raise ValueError(f"market_hours_only={market_hours_only!r}: must be True or False")


def _boundary(moment: datetime, interval_minutes: int) -> datetime:
    """The interval boundary of the New York wall-clock hour at or before ``moment`` (UTC)."""
    local = moment.astimezone(NEW_YORK)
    minute = local.minute - local.minute % interval_minutes
    return local.replace(minute=minute, second=0, microsecond=0).astimezone(UTC)


def _micros(moment: datetime | date) -> int:
    if not isinstance(moment, datetime):
        moment = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    return (moment - _EPOCH) // _TICK


@dataclass(frozen=True)
class _Sessions:
    """Session opens and closes (UTC microseconds) of one calendar build, searchable in O(log n).

    Plain integer arrays keep a year of fire times to a few milliseconds after the build.
    """

    name: str | None
    first: date
    last: date
    opens: Any
    closes: Any

    _cache: ClassVar[dict[str, _Sessions]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def from_calendar(cls, calendar: ExchangeCalendar, name: str | None) -> _Sessions:
        import numpy as np

        def micros(series: Any) -> Any:
            utc_naive = series.dt.tz_convert(None).to_numpy()
            return utc_naive.astype("datetime64[us]").astype(np.int64)

        return cls(name, calendar.first_session.date(), calendar.last_session.date(),
                   micros(calendar.opens), micros(calendar.closes))

    @classmethod
    def for_request(
        cls, calendar: ExchangeCalendar | str | None, start: datetime, count: int, interval: int
    ) -> _Sessions:
        """Sessions covering ``start`` and, by estimate, the ``count`` fire times after it."""
        if calendar is not None and not isinstance(calendar, str):
            sessions = cls.from_calendar(calendar, None)
            if sessions.first > start.astimezone(NEW_YORK).date():
                raise ValueError(f"start={start.isoformat()}: before the given calendar's first "
                                 f"session {sessions.first}")
            return sessions
        # A normal session holds at least 390 // interval fire times; short ones are rare, and a
        # shortfall only costs an extension.
        days = math.ceil(count / (390 // interval) * _DAYS_PER_SESSION) + 14
        first = start.date() - timedelta(days=7)
        return cls._cached(calendar or "XNYS", first, start.date() + timedelta(days=days))

    @classmethod
    def extended(cls, calendar: ExchangeCalendar | str | None, old: _Sessions) -> _Sessions:
        """A longer build once a request runs past ``old`` (a given calendar cannot grow)."""
        if old.name is None:
            raise ValueError(f"calendar={calendar!r}: its sessions end at {old.last}; "
                             "pass a calendar with a later end")
        return cls._cached(old.name, old.first, old.last + timedelta(days=_MIN_CALENDAR_DAYS))

    @classmethod
    def _cached(cls, name: str, first: date, last: date) -> _Sessions:
        with cls._lock:
            cached = cls._cache.get(name)
            if cached is not None and cached.first <= first and last <= cached.last:
                return cached
            if cached is not None:
                first, last = min(first, cached.first), max(last, cached.last)
            last = max(last, first + timedelta(days=_MIN_CALENDAR_DAYS))
            import exchange_calendars

            # An explicit end: the default range stops about a year ahead and raises past it.
            built = exchange_calendars.get_calendar(name, start=first, end=last)
            cls._cache[name] = sessions = cls.from_calendar(built, name)
            return sessions

    def first_closing_after(self, moment: datetime) -> int:
        return int(self.closes.searchsorted(_micros(moment), side="right"))

    def session(self, index: int) -> tuple[datetime, datetime]:
        return (_EPOCH + timedelta(microseconds=int(self.opens[index])),
                _EPOCH + timedelta(microseconds=int(self.closes[index])))
