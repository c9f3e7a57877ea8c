"""The service scheduler: APScheduler over the slots of ``schedule.py`` (the one code path for
them: the CLI lists with it and this scheduler's trigger calls it)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

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

from stress_plugin.service.schedule import check_schedule, fire_times

if TYPE_CHECKING:
    from apscheduler.job import Job

__all__ = ["HourlyStressScheduler", "StressTrigger", "check_schedule", "fire_times"]

log = logging.getLogger("stress_runner.scheduler")

_TICK = timedelta(microseconds=1)
_JOB_ID = "stress_test"


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
