"""The service's scheduler on a real APScheduler, with an injected clock: which slot a wake-up
runs, and how late, skipped, coalesced, missed and failed slots are logged and counted.

No test waits for a slot in real time: the clock is set, and APScheduler is asked to run the
job now (``Job.modify(next_run_time=...)``, its public way to do so), as it does at a slot.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent

from helpers import BAD_SCHEDULES
from stress_plugin.service.scheduler import HourlyStressScheduler

S = datetime(2026, 1, 14, 15, 0, 5, tzinfo=UTC)
"""The first slot of a winter Wednesday (10:00:05 New York time)."""
HOUR = timedelta(hours=1)


class Clock:
    """The scheduler's clock, set by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def wake(sched: HourlyStressScheduler, *, wait: bool = True) -> None:
    """What APScheduler does at a slot: run the job now; with ``wait``, until it has run."""
    done = threading.Event()

    def listener(event: JobExecutionEvent) -> None:
        done.set()

    aps = sched._scheduler
    aps.add_listener(listener, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    try:
        aps.get_job("stress_test").modify(next_run_time=datetime.now(UTC))
        if wait:
            assert done.wait(10), "APScheduler did not run the job"
    finally:
        aps.remove_listener(listener)


def started(job: Callable[[datetime], object], clock: Clock,
            **kwargs: object) -> HourlyStressScheduler:
    sched = HourlyStressScheduler(job, clock=clock, **kwargs)  # type: ignore[arg-type]
    sched.start()
    return sched


def test_a_slot_runs_with_its_scheduled_time_and_survives_errors(caplog):
    fired: list[datetime] = []

    def job(slot: datetime) -> None:
        fired.append(slot)
        raise RuntimeError("book unavailable")

    clock = Clock(S - timedelta(seconds=1))
    sched = HourlyStressScheduler(job, clock=clock)
    assert sched.next_run_time == S  # before start() too
    with caplog.at_level(logging.WARNING, logger="stress_runner.scheduler"):
        sched.start()
        try:
            assert sched.running and sched.next_run_time == S
            clock.now = S + timedelta(milliseconds=3)
            wake(sched)
            assert fired == [S] and fired[0].utcoffset() == timedelta(0)
            assert sched.last_fire_time == S and sched.failed_runs == 1
            assert sched.running and sched.next_run_time == S + HOUR
            wake(sched)  # a second wake-up in the same slot runs nothing
            assert fired == [S]
        finally:
            sched.shutdown()
    assert not sched.running
    assert "book unavailable" in caplog.text and S.isoformat() in caplog.text
    assert "late" not in caplog.text
    assert sched.counts() == {"missed": 0, "skipped": 0, "failed": 1}


def test_apscheduler_wakes_at_the_next_slot_on_the_wall_clock():
    """Without an injected clock the job is APScheduler's own: the trigger gives the slots."""
    sched = HourlyStressScheduler(lambda _slot: None, interval_minutes=1,
                                  market_hours_only=False, offset_seconds=0)
    sched.start()
    try:
        job = sched._scheduler.get_job("stress_test")
        assert job.next_run_time == sched.next_run_time
        assert job.next_run_time.second == 0 and job.next_run_time > datetime.now(UTC)
        assert str(job.trigger) == "every 1 min at +0 s New York time, all day"
    finally:
        sched.shutdown()


def test_a_run_within_the_grace_is_late_past_it_missed(caplog):
    ran: list[datetime] = []
    clock = Clock(S - timedelta(seconds=1))
    sched = started(ran.append, clock)
    with caplog.at_level(logging.WARNING, logger="stress_runner.scheduler"):
        try:
            clock.now = S + timedelta(seconds=299)  # a stall inside the five-minute grace
            wake(sched)
            assert ran == [S] and sched.late_runs == 1
            assert f"scheduled at {S.isoformat()} started 299 s late" in caplog.text
            clock.now = S + HOUR + timedelta(seconds=301)  # and one past it
            wake(sched)
        finally:
            sched.shutdown()
    assert ran == [S] and sched.missed_runs == 1
    assert (f"scheduled at {(S + HOUR).isoformat()} missed: started 301 s late, past the "
            "300 s grace") in caplog.text
    assert sched.next_run_time == S + 2 * HOUR


def test_a_shorter_grace_is_honoured(caplog):
    clock = Clock(S - timedelta(seconds=1))
    sched = started(lambda _t: pytest.fail("ran"), clock, misfire_grace_s=1)
    with caplog.at_level(logging.WARNING, logger="stress_runner.scheduler"):
        try:
            clock.now = S + timedelta(seconds=1.5)
            wake(sched)
        finally:
            sched.shutdown()
    assert sched.missed_runs == 1 and f"scheduled at {S.isoformat()} missed" in caplog.text


def test_skipped_and_coalesced_runs_are_counted(caplog):
    running, release = threading.Event(), threading.Event()
    ran: list[datetime] = []

    def job(slot: datetime) -> None:
        ran.append(slot)
        running.set()
        assert release.wait(10)

    clock = Clock(S - timedelta(seconds=1))
    sched = started(job, clock)
    with caplog.at_level(logging.WARNING, logger="stress_runner.scheduler"):
        try:
            clock.now = S + timedelta(seconds=0.2)
            wake(sched, wait=False)
            assert running.wait(10)
            # A stall: 16:00:05..18:00:05 are coalesced into 19:00:05, which is skipped
            # because the 15:00:05 run is still going.
            clock.now = S + 4 * HOUR + timedelta(seconds=1)
            wake(sched)
            assert sched.skipped_runs == 1 and sched.missed_runs == 3
            release.set()
        finally:
            release.set()
            sched.shutdown()
    assert ran == [S]
    assert "3 stress runs scheduled 2026-01-14T16:00:05+00:00..2026-01-14T18:00:05+00:00 " \
           "missed: coalesced into the run of 2026-01-14T19:00:05+00:00" in caplog.text
    assert "scheduled at 2026-01-14T19:00:05+00:00 skipped" in caplog.text


def test_slots_with_no_wake_up_are_missed_unless_a_run_is_stored(caplog):
    """The scrape judges slots past their grace that no wake-up reached (the scheduler's
    thread stalled): missed, unless the store has their run (another worker ran them)."""
    asked: list[tuple[datetime, datetime]] = []

    def done(first: datetime, last: datetime) -> set[datetime]:
        asked.append((first, last))
        return {S + HOUR}

    clock = Clock(S - timedelta(seconds=1))
    sched = started(lambda _t: pytest.fail("ran"), clock, done=done)
    try:
        with caplog.at_level(logging.WARNING, logger="stress_runner.scheduler"):
            clock.now = S + 2 * HOUR + timedelta(seconds=200)  # 17:00:05 is within its grace
            assert sched.counts() == {"missed": 1, "skipped": 0, "failed": 0}
            assert asked == [(S, S + HOUR)]
            assert f"scheduled at {S.isoformat()} missed: no run within the 300 s grace" \
                in caplog.text
            clock.now = S + 2 * HOUR + timedelta(seconds=301)
            assert sched.counts()["missed"] == 2
            assert sched.counts()["missed"] == 2  # each slot is judged once
            assert asked == [(S, S + HOUR), (S + 2 * HOUR, S + 2 * HOUR)]
            wake(sched)  # a wake-up that late has nothing left to run
    finally:
        sched.shutdown()
    assert sched.missed_runs == 2


def test_coalesced_slots_another_worker_ran_are_not_missed():
    ran: list[datetime] = []
    clock = Clock(S - timedelta(seconds=1))
    sched = started(ran.append, clock, done=lambda first, last: {S, S + HOUR})
    try:
        clock.now = S + 2 * HOUR + timedelta(seconds=2)
        wake(sched)
    finally:
        sched.shutdown()
    assert ran == [S + 2 * HOUR] and sched.missed_runs == 0


def test_slots_before_the_start_are_not_this_schedulers():
    clock = Clock(S + timedelta(seconds=30))  # started just after a slot, within its grace
    ran: list[datetime] = []
    sched = started(ran.append, clock)
    try:
        wake(sched)
        assert ran == [] and sched.next_run_time == S + HOUR
        clock.now = S + 3 * HOUR  # no wake-up since: 16:00:05 and 17:00:05 are missed,
        assert sched.counts()["missed"] == 2  # 18:00:05 is still within its grace
    finally:
        sched.shutdown()


def test_disabled_and_reschedule(caplog):
    clock = Clock(S - timedelta(seconds=1))
    ran: list[datetime] = []
    sched = HourlyStressScheduler(ran.append, enabled=False, clock=clock)
    assert sched.next_run_time is None
    caplog.set_level(logging.INFO, logger="stress_runner.scheduler")
    sched.start()
    try:
        assert "disabled" in caplog.text and sched.next_run_time is None
        clock.now = S + HOUR
        assert sched.counts()["missed"] == 0  # nothing is due while disabled
        sched.reschedule(enabled=True, market_hours_only=False, interval_minutes=1,
                         offset_seconds=17)
        first = sched.next_run_time
        assert first == S + HOUR + timedelta(seconds=12)  # 16:00:17
        assert "stress schedule changed: every 1 min at +17 s" in caplog.text
        sched.reschedule(offset_seconds=42)
        assert sched.next_run_time == first + timedelta(seconds=25)
        clock.now = first + timedelta(seconds=26)
        wake(sched)
        assert ran == [first + timedelta(seconds=25)]
        sched.reschedule(interval_minutes=60, offset_seconds=5, market_hours_only=True)
        assert sched.next_run_time == S + 2 * HOUR
        with pytest.raises(ValueError, match="offset_seconds=60"):
            sched.reschedule(interval_minutes=1, offset_seconds=60)
        assert sched.schedule.interval_minutes == 60  # unchanged after a rejected change
        sched.reschedule(enabled=False)
        assert sched.next_run_time is None and sched.running
        assert sched._scheduler.get_job("stress_test") is None
    finally:
        sched.shutdown()
    assert sched.missed_runs == 0


def test_a_reschedule_judges_the_old_slots_it_leaves_behind(caplog):
    clock = Clock(S - timedelta(seconds=1))
    sched = started(lambda _t: None, clock)
    try:
        clock.now = S + timedelta(seconds=10)  # 15:00:05 is due, its wake-up not yet come
        with caplog.at_level(logging.WARNING, logger="stress_runner.scheduler"):
            sched.reschedule(offset_seconds=30)
        assert sched.missed_runs == 1 and "the schedule changed before it ran" in caplog.text
        sched.reschedule(offset_seconds=30)  # no change: nothing is judged or replaced
        assert sched.missed_runs == 1
    finally:
        sched.shutdown()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        *BAD_SCHEDULES,
        ({"enabled": 1}, "enabled=1"),
        ({"misfire_grace_s": 0}, "misfire_grace_s=0"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        HourlyStressScheduler(print, **kwargs)  # type: ignore[arg-type]

