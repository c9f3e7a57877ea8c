"""A real APScheduler run that must fire (the slots themselves: test_schedule.py)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_SUBMITTED, JobSubmissionEvent

from stress_plugin.service.scheduler import HourlyStressScheduler, fire_times

NY = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _soon_offset() -> int:
    """An offset for a 1-minute schedule whose next fire is 1-2 s from now."""
    return (datetime.now(UTC).second + 2) % 60


def test_scheduled_run_fires_with_its_fire_time_and_survives_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fired: list[datetime] = []
    done = threading.Event()

    def job(fire_time: datetime) -> None:
        fired.append(fire_time)
        done.set()
        raise RuntimeError("book unavailable")

    sched = HourlyStressScheduler(
        job, market_hours_only=False, interval_minutes=1, offset_seconds=_soon_offset()
    )
    expected = sched.next_run_time
    assert expected is not None and expected - datetime.now(UTC) < timedelta(seconds=3)
    with caplog.at_level(logging.ERROR, logger="stress_runner.scheduler"):
        sched.start()
        try:
            assert sched.running
            assert sched.next_run_time == expected
            assert done.wait(timeout=70), "the scheduled run never fired"
            assert fired == [expected] and fired[0].tzinfo is not None
            assert fired[0].utcoffset() == timedelta(0)
            assert sched.last_fire_time == expected
            deadline = time.monotonic() + 5
            while sched.failed_runs == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert sched.failed_runs == 1
            assert sched.running and sched.next_run_time == expected + timedelta(minutes=1)
        finally:
            sched.shutdown()
    assert not sched.running
    assert "book unavailable" in caplog.text and expected.isoformat() in caplog.text


def test_a_late_run_is_counted_missed(caplog: pytest.LogCaptureFixture) -> None:
    ran = threading.Event()
    sched = HourlyStressScheduler(
        lambda _t: ran.set(), market_hours_only=False, interval_minutes=1,
        offset_seconds=_soon_offset(), misfire_grace_s=1,
    )
    due = sched.next_run_time
    assert due is not None
    with caplog.at_level(logging.WARNING, logger="stress_runner.scheduler"):
        sched.start()
        try:
            sched._scheduler.pause()  # a stalled process: the fire time passes unprocessed
            time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 1.5)
            sched._scheduler.resume()
            deadline = time.monotonic() + 5
            while sched.missed_runs == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            sched.shutdown()
    assert sched.missed_runs == 1 and not ran.is_set()
    assert f"scheduled at {due.isoformat()} missed" in caplog.text


def test_skipped_and_coalesced_runs_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    sched = HourlyStressScheduler(lambda _t: None)
    job_id = sched._scheduler.get_job("stress_test").id
    dispatch = sched._scheduler._dispatch_event
    first, later = utc(2026, 1, 14, 15, 0, 5), utc(2026, 1, 14, 19, 0, 5)
    with caplog.at_level(logging.WARNING, logger="stress_runner.scheduler"):
        dispatch(JobSubmissionEvent(EVENT_JOB_SUBMITTED, job_id, "default", [first]))
        assert sched.missed_runs == 0
        # A stall: 16:00:05..18:00:05 were coalesced into 19:00:05, which was skipped.
        dispatch(JobSubmissionEvent(EVENT_JOB_MAX_INSTANCES, job_id, "default", [later]))
    assert sched.missed_runs == 3 and sched.skipped_runs == 1
    assert "2026-01-14T16:00:05+00:00..2026-01-14T18:00:05+00:00 missed" in caplog.text
    assert "scheduled at 2026-01-14T19:00:05+00:00 skipped" in caplog.text


def test_disabled_and_reschedule(caplog: pytest.LogCaptureFixture) -> None:
    sched = HourlyStressScheduler(lambda _t: None, enabled=False)
    assert sched.next_run_time is None
    with caplog.at_level(logging.WARNING, logger="stress_runner.scheduler"):
        sched.start()
    try:
        assert "disabled" in caplog.text
        assert sched.next_run_time is None
        sched.reschedule(enabled=True, market_hours_only=False, interval_minutes=1,
                         offset_seconds=17)
        first = sched.next_run_time
        assert first is not None and first.second == 17
        assert first - datetime.now(UTC) <= timedelta(minutes=1)
        sched.reschedule(offset_seconds=42)
        second = sched.next_run_time
        assert second is not None and second.second == 42 and second != first
        sched.reschedule(interval_minutes=60, offset_seconds=5, market_hours_only=True)
        assert sched.next_run_time == fire_times(datetime.now(UTC), 1)[0]
        with pytest.raises(ValueError, match="offset_seconds=60"):
            sched.reschedule(interval_minutes=1, offset_seconds=60)
        assert sched.trigger.interval_minutes == 60  # unchanged after a rejected change
        sched.reschedule(enabled=False)
        assert sched.next_run_time is None and sched.running
    finally:
        sched.shutdown()
