"""The service's scheduler: APScheduler wakes it at every slot; what a wake-up does is decided
here, on the scheduler's clock, so it is tested without waiting for real time.

The slots themselves are ``schedule.py``'s arithmetic (the same code ``stress-runner schedule``
lists with). Only APScheduler 3's public API is used: a job on a trigger over the schedule,
coalesced, started, paused and removed.

Each slot is judged exactly once: run; late (started over ``LATE_AFTER_S`` after its slot,
within the grace); skipped (the previous run is still going); missed (started past the grace,
coalesced away behind a later slot, or its grace passed with no wake-up at all and no stored
run of it, as ``done`` tells); or failed (the job raised). Every outcome but a plain run is
logged, and all but late are counted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger

from stress_plugin.service.schedule import Schedule

__all__ = ["HourlyStressScheduler", "StressTrigger", "wall_clock"]

log = logging.getLogger("stress_runner.scheduler")

_JOB_ID = "stress_test"
_TICK = timedelta(microseconds=1)
LATE_AFTER_S = 10
"""A run that starts more than this after its slot is logged as late (it still runs)."""

Clock = Callable[[], datetime]
DoneSlots = Callable[[datetime, datetime], Collection[datetime]]
"""``done(first, last)``: the slots in [first, last] whose run is stored (by any process)."""


def wall_clock() -> datetime:
    return datetime.now(UTC)


class StressTrigger(BaseTrigger):
    """APScheduler trigger over a ``Schedule``, so the service fires exactly what the CLI lists."""

    __slots__ = ("schedule",)

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        # With no previous fire, a slot equal to ``now`` is still due (as in CronTrigger).
        after = previous_fire_time if previous_fire_time is not None else now - _TICK
        return self.schedule.next_after(after)

    def __str__(self) -> str:
        return str(self.schedule)

    def __repr__(self) -> str:
        return f"StressTrigger({self.schedule!r})"


class HourlyStressScheduler:
    """Runs ``job(slot)`` for each slot of the schedule, in a background thread; one per
    deployment (several would each run every slot: key runs by the UTC slot passed to the job).

    A wake-up runs the latest slot due on ``clock`` and judges the ones before it; ``counts()``
    also judges the slots whose grace passed without any wake-up. ``done`` tells which slots
    another process ran, so they are not counted missed. The service's job claims each
    (scenario, slot) before it runs it (``StressService.claim_slot``). Not restartable after
    shutdown.
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
        done: DoneSlots | None = None,
        clock: Clock = wall_clock,
    ):
        if not callable(job):
            raise ValueError(f"job={job!r}: must be callable")
        schedule = Schedule(interval_minutes, offset_seconds, market_hours_only)
        _check_bool("enabled", enabled)
        if isinstance(misfire_grace_s, bool) or not isinstance(misfire_grace_s, int) or (
            misfire_grace_s <= 0
        ):
            raise ValueError(f"misfire_grace_s={misfire_grace_s!r}: must be an integer > 0")
        self._job = job
        self._grace_s = misfire_grace_s
        self._grace = timedelta(seconds=misfire_grace_s)
        self._done = done
        self._clock = clock
        self._schedule = schedule
        self._enabled = enabled
        self._lock = threading.Lock()
        """Guards the schedule, the cursor and the counters (wake-ups and scrapes race)."""
        self._running = threading.Lock()
        """Held while the job runs: one run at a time, a wake-up meanwhile is skipped."""
        self._seen = clock() - _TICK
        """Every slot at or before this has been judged (or came before this scheduler)."""
        self.missed_runs = 0
        self.skipped_runs = 0
        self.failed_runs = 0
        self.late_runs = 0
        self.last_fire_time: datetime | None = None
        # Two workers: a wake-up during a long run reaches _wake, which counts it skipped.
        self._scheduler = BackgroundScheduler(
            timezone=UTC, executors={"default": ThreadPoolExecutor(max_workers=2)})
        self._apply()

    @property
    def schedule(self) -> Schedule:
        return self._schedule

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    @property
    def next_run_time(self) -> datetime | None:
        """The next slot not yet judged, at or after now (UTC); None when disabled."""
        if not self._enabled:
            return None
        with self._lock:
            after = max(self._seen, self._clock() - _TICK)
            schedule = self._schedule
        return schedule.next_after(after)

    def start(self) -> None:
        with self._lock:
            self._seen = self._clock() - _TICK  # slots before the start are not this run's
        self._scheduler.start()
        if self._enabled:
            log.info("stress scheduler started: %s; next run %s", self._schedule,
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
        """Change the schedule, live; None keeps a setting. Nothing changes if any is invalid,
        or if nothing is different."""
        old = self._schedule
        schedule = Schedule(
            old.interval_minutes if interval_minutes is None else interval_minutes,
            old.offset_seconds if offset_seconds is None else offset_seconds,
            old.market_hours_only if market_hours_only is None else market_hours_only,
        )
        if enabled is not None:
            _check_bool("enabled", enabled)
        enabled = self._enabled if enabled is None else enabled
        if schedule == old and enabled == self._enabled:
            return
        self._judge_until(self._clock(), "the schedule changed before it ran")
        with self._lock:
            self._schedule, self._enabled = schedule, enabled
            self._seen = self._clock() - _TICK  # the old schedule's slots were judged above
        self._apply()
        log.info("stress schedule changed: %s; next run %s",
                 schedule if enabled else "disabled", _iso(self.next_run_time))

    def counts(self) -> dict[str, int]:
        """Scheduled runs not done, by reason, once the slots past their grace are judged."""
        self._judge_until(self._clock() - self._grace,
                          f"no run within the {self._grace_s} s grace")
        with self._lock:
            return {"missed": self.missed_runs, "skipped": self.skipped_runs,
                    "failed": self.failed_runs}

    def _apply(self) -> None:
        """Replace the job (or drop it when disabled); its next wake-up is computed afresh."""
        if self._scheduler.get_job(_JOB_ID) is not None:
            self._scheduler.remove_job(_JOB_ID)
        if self._enabled:
            # Late wake-ups are judged by _wake on the scheduler's clock, so APScheduler's own
            # misfire check (on the wall clock) is off; it still coalesces after a stall.
            self._scheduler.add_job(
                self._wake, StressTrigger(self._schedule), id=_JOB_ID, name="stress test",
                coalesce=True, max_instances=2, misfire_grace_time=None,
            )

    def _wake(self) -> None:
        """Run the latest slot due, once; the earlier ones not yet judged were coalesced away."""
        now = self._clock()
        with self._lock:
            due = self._schedule.between(self._seen, now) if self._enabled else []
            if not due:
                return  # nothing new: that slot was judged already
            slot = self._seen = due[-1]
        self._judge(due[:-1], f"coalesced into the run of {_iso(slot)}")
        late = (now - slot).total_seconds()
        if late > self._grace.total_seconds():
            self._judge([slot], f"started {late:.0f} s late, past the {self._grace_s} s grace")
            return
        if not self._running.acquire(blocking=False):
            with self._lock:
                self.skipped_runs += 1
            log.warning("stress run scheduled at %s skipped: the previous run is still going",
                        _iso(slot))
            return
        try:
            if late > LATE_AFTER_S:
                with self._lock:
                    self.late_runs += 1
                log.warning("stress run scheduled at %s started %.0f s late (within the "
                            "%d s grace)", _iso(slot), late, self._grace_s)
            self.last_fire_time = slot
            self._job(slot)
        except Exception as exc:
            with self._lock:
                self.failed_runs += 1
            log.error("stress run scheduled at %s failed: %r", _iso(slot), exc, exc_info=exc)
        finally:
            self._running.release()

    def _judge_until(self, end: datetime, why: str) -> None:
        """Judge the slots up to ``end`` that no wake-up reached."""
        with self._lock:
            if not self._enabled or end <= self._seen:
                return
            slots = self._schedule.between(self._seen, end)
            self._seen = end
        self._judge(slots, why)

    def _judge(self, slots: list[datetime], why: str) -> None:
        """Count and log as missed the ``slots`` with no stored run."""
        if not slots:
            return
        if self._done is not None:
            done = set(self._done(slots[0], slots[-1]))
            slots = [slot for slot in slots if slot not in done]
            if not slots:
                return
        with self._lock:
            self.missed_runs += len(slots)
        if len(slots) == 1:
            log.warning("stress run scheduled at %s missed: %s", _iso(slots[0]), why)
        else:
            log.warning("%d stress runs scheduled %s..%s missed: %s", len(slots),
                        _iso(slots[0]), _iso(slots[-1]), why)


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r}: must be True or False")


def _iso(moment: datetime | None) -> str:
    return "none" if moment is None else moment.astimezone(UTC).isoformat()
