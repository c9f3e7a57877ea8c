"""When the stress test runs: fire times in New York exchange time, and the service scheduler.

The runbook's fixed 14:30-21:00 UTC window is right only in winter, so fire times are computed in
America/New_York wall-clock time and limited to real XNYS sessions (holidays, early closes).
``fire_times`` is the one code path: the CLI lists with it and the scheduler's trigger calls it.
exchange_calendars pulls in pandas, so it is imported only when a calendar is first needed.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar
from zoneinfo import ZoneInfo

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger

if TYPE_CHECKING:
    from apscheduler.job import Job
    from exchange_calendars import ExchangeCalendar

__all__ = ["HourlyStressScheduler", "StressTrigger", "check_schedule", "fire_times"]

log = logging.getLogger("stress_runner.scheduler")

NEW_YORK = ZoneInfo("America/New_York")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TICK = timedelta(microseconds=1)
_JOB_ID = "stress_test"
_MIN_CALENDAR_DAYS = 400
"""Build at least this much calendar at once: a build costs about 0.1 s, a lookup microseconds."""
_DAYS_PER_SESSION = 1.5
"""Calendar days per session, for sizing a build (252 sessions a year is 1.45)."""


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


def check_schedule(interval_minutes: Any, offset_seconds: Any, market_hours_only: Any) -> None:
    """Raise ``ValueError`` naming the first bad schedule setting (shared with the scheduler)."""
    if (
        isinstance(interval_minutes, bool)
        or not isinstance(interval_minutes, int)
        or not 1 <= interval_minutes <= 60
        or 60 % interval_minutes
    ):
        raise ValueError(
            f"interval_minutes={interval_minutes!r}: must be an integer in 1..60 that divides 60"
        )
    if (
        isinstance(offset_seconds, bool)
        or not isinstance(offset_seconds, int)
        or not 0 <= offset_seconds < interval_minutes * 60
    ):
        raise ValueError(
            f"offset_seconds={offset_seconds!r}: must be an integer in "
            f"0..{interval_minutes * 60 - 1} (within one interval)"
        )
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


class StressTrigger(BaseTrigger):
    """APScheduler trigger over ``fire_times``, so the service fires exactly what the CLI lists."""

    __slots__ = ("interval_minutes", "market_hours_only", "offset_seconds")

    def __init__(self, interval_minutes: int, offset_seconds: int, market_hours_only: bool):
        check_schedule(interval_minutes, offset_seconds, market_hours_only)
        self.interval_minutes = interval_minutes
        self.offset_seconds = offset_seconds
        self.market_hours_only = market_hours_only

    def fire_times(self, after: datetime, count: int) -> list[datetime]:
        return fire_times(after, count, interval_minutes=self.interval_minutes,
                          offset_seconds=self.offset_seconds,
                          market_hours_only=self.market_hours_only)

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        # With no previous fire, a fire time equal to ``now`` is still due (as in CronTrigger).
        after = previous_fire_time if previous_fire_time is not None else now - _TICK
        times = self.fire_times(after, 1)
        return times[0] if times else None

    def __str__(self) -> str:
        hours = "XNYS session" if self.market_hours_only else "all day"
        return (f"every {self.interval_minutes} min at +{self.offset_seconds} s "
                f"New York time, {hours}")

    def __repr__(self) -> str:
        return (f"StressTrigger(interval_minutes={self.interval_minutes}, "
                f"offset_seconds={self.offset_seconds}, "
                f"market_hours_only={self.market_hours_only})")


class _FiredJob:
    """The job as ``run_job`` sees it, with its scheduled fire time as the one argument.

    APScheduler 3 calls jobs without their scheduled time; runs are keyed by it, so it is passed.
    """

    __slots__ = ("_job", "args")

    def __init__(self, job: Job, fire_time: datetime):
        self._job = job
        self.args = (fire_time,)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._job, name)

    def __str__(self) -> str:
        return str(self._job)


class _FireTimeExecutor(ThreadPoolExecutor):
    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        # The job coalesces, so only the latest due time runs (earlier ones are counted missed).
        super()._do_submit_job(_FiredJob(job, run_times[-1]), run_times[-1:])


class HourlyStressScheduler:
    """Runs ``job(fire_time)`` at every fire time, in a background thread; one per deployment.

    Several schedulers (e.g. one per web worker) would each run the test; run one, and key runs
    by the UTC fire time passed to the job. Missed, skipped and failed runs are logged and counted:
    APScheduler itself drops a late run with a single log line. Not restartable after shutdown.
    """

    def __init__(
        self,
        job: Callable[[datetime], object],
        *,
        interval_minutes: int = 60,
        offset_seconds: int = 5,
        market_hours_only: bool = True,
        enabled: bool = True,
        misfire_grace_s: int = 300,
    ):
        if not callable(job):
            raise ValueError(f"job={job!r}: must be callable")
        check_schedule(interval_minutes, offset_seconds, market_hours_only)
        _check_bool("enabled", enabled)
        if isinstance(misfire_grace_s, bool) or not isinstance(misfire_grace_s, int) or (
            misfire_grace_s <= 0
        ):
            raise ValueError(f"misfire_grace_s={misfire_grace_s!r}: must be an integer > 0")
        self._job = job
        self._misfire_grace_s = misfire_grace_s
        self._trigger = StressTrigger(interval_minutes, offset_seconds, market_hours_only)
        self._enabled = enabled
        self._lock = threading.Lock()
        self._last_due: datetime | None = None
        self.missed_runs = 0
        self.skipped_runs = 0
        self.failed_runs = 0
        self.last_fire_time: datetime | None = None
        self._scheduler = BackgroundScheduler(
            timezone=UTC, executors={"default": _FireTimeExecutor(max_workers=1)}
        )
        self._scheduler.add_listener(
            self._on_event,
            EVENT_JOB_SUBMITTED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED | EVENT_JOB_ERROR,
        )
        self._apply()

    @property
    def trigger(self) -> StressTrigger:
        return self._trigger

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    @property
    def next_run_time(self) -> datetime | None:
        """The next fire time (UTC), or None when disabled; also before ``start()``."""
        if not self._enabled:
            return None
        job = self._scheduler.get_job(_JOB_ID) if self.running else None
        if job is not None:
            return job.next_run_time
        return self._trigger.get_next_fire_time(None, datetime.now(UTC))

    def start(self) -> None:
        self._scheduler.start()
        if self._enabled:
            log.info("stress scheduler started: %s; next run %s", self._trigger,
                     _iso(self.next_run_time))
        else:
            log.warning("stress scheduler started but disabled: no stress runs are scheduled")

    def shutdown(self, wait: bool = True) -> None:
        """Stop scheduling; with ``wait``, let a run in progress finish first."""
        if self.running:
            self._scheduler.shutdown(wait=wait)

    def reschedule(
        self,
        interval_minutes: int | None = None,
        offset_seconds: int | None = None,
        market_hours_only: bool | None = None,
        enabled: bool | None = None,
    ) -> None:
        """Change the schedule, live; None keeps a setting. Nothing changes if any is invalid."""
        old = self._trigger
        trigger = StressTrigger(
            old.interval_minutes if interval_minutes is None else interval_minutes,
            old.offset_seconds if offset_seconds is None else offset_seconds,
            old.market_hours_only if market_hours_only is None else market_hours_only,
        )
        if enabled is not None:
            _check_bool("enabled", enabled)
        with self._lock:
            self._trigger = trigger
            self._enabled = self._enabled if enabled is None else enabled
            self._last_due = None  # fire times under the old schedule are no longer comparable
        self._apply()
        log.info("stress schedule changed: %s; next run %s",
                 trigger if self._enabled else "disabled", _iso(self.next_run_time))

    def _apply(self) -> None:
        """Replace the job (or drop it when disabled); its next run is computed afresh."""
        if self._scheduler.get_job(_JOB_ID) is not None:
            self._scheduler.remove_job(_JOB_ID)
        if self._enabled:
            self._scheduler.add_job(
                self._run, self._trigger, id=_JOB_ID, name="stress test",
                coalesce=True, max_instances=1, misfire_grace_time=self._misfire_grace_s,
            )

    def _run(self, fire_time: datetime | None = None) -> object:
        self.last_fire_time = fire_time
        return self._job(fire_time)

    def _on_event(self, event: JobEvent) -> None:
        if event.job_id != _JOB_ID:
            return
        if event.code == EVENT_JOB_SUBMITTED:
            self._note_due(event.scheduled_run_times[-1])
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            self._note_due(event.scheduled_run_times[-1])
            with self._lock:
                self.skipped_runs += len(event.scheduled_run_times)
            log.warning("stress run scheduled at %s skipped: the previous run is still going",
                        ", ".join(_iso(t) for t in event.scheduled_run_times))
        elif event.code == EVENT_JOB_MISSED:
            with self._lock:
                self.missed_runs += 1
            log.warning("stress run scheduled at %s missed: started more than %d s late",
                        _iso(event.scheduled_run_time), self._misfire_grace_s)
        elif event.code == EVENT_JOB_ERROR:
            with self._lock:
                self.failed_runs += 1
            log.error("stress run scheduled at %s failed: %r", _iso(event.scheduled_run_time),
                      event.exception, exc_info=event.exception)

    def _note_due(self, fire_time: datetime) -> None:
        """Count the fire times coalesced away before ``fire_time`` (dropped without a log)."""
        with self._lock:
            previous, self._last_due = self._last_due, fire_time
            trigger = self._trigger
        if previous is None or fire_time <= previous:
            return
        dropped: list[datetime] = []
        after = previous
        while times := [t for t in trigger.fire_times(after, 64) if t < fire_time]:
            dropped += times
            if len(times) < 64:
                break
            after = times[-1]
        if dropped:
            with self._lock:
                self.missed_runs += len(dropped)
            log.warning("%d stress run(s) scheduled %s..%s missed: the scheduler was stalled",
                        len(dropped), _iso(dropped[0]), _iso(dropped[-1]))


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r}: must be True or False")


def _iso(moment: datetime | None) -> str:
    return "none" if moment is None else moment.astimezone(UTC).isoformat()
