"""Fire times against the real XNYS calendar, and a real APScheduler run that must fire."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_SUBMITTED, JobSubmissionEvent

from stress_plugin.service import scheduler
from stress_plugin.service.scheduler import HourlyStressScheduler, fire_times

NY = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def on_day(day: date, **kwargs: object) -> list[datetime]:
    """All fire times whose New York date is ``day``."""
    start = datetime(day.year, day.month, day.day, tzinfo=NY) - timedelta(microseconds=1)
    times = fire_times(start, 200, **kwargs)  # type: ignore[arg-type]
    return [t for t in times if t.astimezone(NY).date() == day]


def ny_clock(times: list[datetime]) -> list[str]:
    return [t.astimezone(NY).strftime("%H:%M:%S") for t in times]


FULL_DAY = ["10:00:05", "11:00:05", "12:00:05", "13:00:05", "14:00:05", "15:00:05"]


def test_winter_weekday_is_1500_to_2000_utc() -> None:
    times = on_day(date(2026, 1, 14))
    assert times == [utc(2026, 1, 14, h, 0, 5) for h in range(15, 21)]
    assert ny_clock(times) == FULL_DAY
    assert all(t.tzinfo is UTC for t in times)


def test_summer_weekday_is_1400_to_1900_utc() -> None:
    times = on_day(date(2026, 7, 15))
    assert times == [utc(2026, 7, 15, h, 0, 5) for h in range(14, 20)]
    assert ny_clock(times) == FULL_DAY


def test_strictly_after_start() -> None:
    assert fire_times(utc(2026, 1, 14, 15, 0, 5), 1) == [utc(2026, 1, 14, 16, 0, 5)]
    assert fire_times(utc(2026, 1, 14, 15, 0, 4), 1) == [utc(2026, 1, 14, 15, 0, 5)]
    # Any timezone in, UTC out.
    assert fire_times(datetime(2026, 1, 14, 14, 30, tzinfo=NY), 1) == [utc(2026, 1, 14, 20, 0, 5)]
    assert fire_times(datetime(2026, 1, 14, 15, 30, tzinfo=NY), 1) == [utc(2026, 1, 15, 15, 0, 5)]
    assert fire_times(utc(2026, 1, 14), 0) == []


def test_march_dst_change() -> None:
    times = fire_times(utc(2026, 3, 6), 12)
    assert times[:6] == [utc(2026, 3, 6, h, 0, 5) for h in range(15, 21)]  # Fri, EST
    assert times[6:] == [utc(2026, 3, 9, h, 0, 5) for h in range(14, 20)]  # Mon, EDT
    assert ny_clock(times) == FULL_DAY * 2


def test_november_dst_change() -> None:
    times = fire_times(utc(2026, 10, 30), 12)
    assert times[:6] == [utc(2026, 10, 30, h, 0, 5) for h in range(14, 20)]  # Fri, EDT
    assert times[6:] == [utc(2026, 11, 2, h, 0, 5) for h in range(15, 21)]  # Mon, EST
    assert ny_clock(times) == FULL_DAY * 2


def test_holidays_early_closes_and_weekends() -> None:
    assert on_day(date(2026, 11, 26)) == []  # Thanksgiving
    assert ny_clock(on_day(date(2026, 11, 27))) == ["10:00:05", "11:00:05", "12:00:05"]
    assert ny_clock(on_day(date(2026, 12, 24))) == ["10:00:05", "11:00:05", "12:00:05"]
    assert on_day(date(2026, 7, 3)) == []  # Independence Day observed
    assert on_day(date(2026, 3, 7)) == [] and on_day(date(2026, 3, 8)) == []
    # From Friday's close the next run is Monday's first.
    assert fire_times(utc(2026, 1, 16, 21), 1) == [utc(2026, 1, 20, 15, 0, 5)]  # Mon 19th: MLK


def test_a_year_of_fire_times_is_fast() -> None:
    started = time.perf_counter()
    times = fire_times(utc(2026, 1, 1), 1_600)
    elapsed = time.perf_counter() - started
    assert sum(t.year == 2026 for t in times) == 1_500
    assert times == sorted(set(times))
    assert elapsed < 1.0, elapsed  # includes importing pandas and building the calendar
    started = time.perf_counter()
    fire_times(utc(2026, 1, 1), 1_600)
    assert time.perf_counter() - started < 0.1


def test_far_future_rebuilds_the_calendar() -> None:
    times = fire_times(utc(2028, 11, 22), 9)  # Thanksgiving 2028 is Thursday 11-23
    assert [t.astimezone(NY).date() for t in times] == (
        [date(2028, 11, 22)] * 6 + [date(2028, 11, 24)] * 3
    )
    assert len(fire_times(utc(2026, 1, 1), 6 * 252 * 4)) == 6 * 252 * 4  # runs past any build


def test_an_undersized_build_is_extended(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = fire_times(utc(2026, 1, 1), 4_000)
    monkeypatch.setattr(scheduler, "_DAYS_PER_SESSION", 0.0)  # size every build at the minimum
    monkeypatch.setattr(scheduler._Sessions, "_cache", {})
    assert fire_times(utc(2026, 1, 1), 4_000) == expected
    assert scheduler._Sessions._cache["XNYS"].last > date(2028, 6, 1)


def test_an_explicit_calendar_is_used_as_given() -> None:
    import exchange_calendars

    calendar = exchange_calendars.get_calendar("XNYS", start="2026-01-01", end="2026-01-31")
    assert fire_times(utc(2026, 1, 14), 6, calendar=calendar) == on_day(date(2026, 1, 14))
    with pytest.raises(ValueError, match="calendar"):
        fire_times(utc(2026, 1, 30), 10, calendar=calendar)


def test_all_day_schedule_is_hourly_every_day() -> None:
    saturday = on_day(date(2026, 1, 17), market_hours_only=False)
    assert ny_clock(saturday) == [f"{h:02d}:00:05" for h in range(24)]
    # Across both DST changes: one run per real hour (23 on the spring day, 25 in autumn).
    for start, runs in ((utc(2026, 3, 8, 5), 23), (utc(2026, 11, 1, 4), 25)):
        times = fire_times(start - timedelta(seconds=1), 26, market_hours_only=False)
        assert all(b - a == timedelta(hours=1) for a, b in pairwise(times))
        day = times[0].astimezone(NY).date()
        assert sum(t.astimezone(NY).date() == day for t in times) == runs


def test_quarter_hour_interval_in_session() -> None:
    times = on_day(date(2026, 1, 14), interval_minutes=15, offset_seconds=30)
    assert len(times) == 26  # 09:30:30 .. 15:45:30
    assert ny_clock(times)[:5] == ["09:30:30", "09:45:30", "10:00:30", "10:15:30", "10:30:30"]
    assert ny_clock(times)[-1] == "15:45:30"
    ten = [t for t in times if t.astimezone(NY).hour == 10]
    assert len(ten) == 4


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"interval_minutes": 7}, "interval_minutes=7"),
        ({"interval_minutes": 0}, "interval_minutes=0"),
        ({"interval_minutes": 90}, "interval_minutes=90"),
        ({"offset_seconds": 3600}, "offset_seconds=3600"),
        ({"offset_seconds": -1}, "offset_seconds=-1"),
        ({"interval_minutes": 15, "offset_seconds": 900}, "offset_seconds=900"),
        ({"market_hours_only": "yes"}, "market_hours_only='yes'"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        fire_times(utc(2026, 1, 14), 1, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=name):
        HourlyStressScheduler(print, **kwargs)  # type: ignore[arg-type]


def test_naive_start_and_bad_count_rejected() -> None:
    with pytest.raises(ValueError, match=r"start=.*timezone-aware"):
        fire_times(datetime(2026, 1, 14), 1)
    with pytest.raises(ValueError, match="count=-1"):
        fire_times(utc(2026, 1, 14), -1)


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
