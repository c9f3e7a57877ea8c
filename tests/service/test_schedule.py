"""Slots against the real XNYS calendar: New York time, daylight saving, holidays, early
closes, intervals and offsets; and the CLI lists them without loading the scheduler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from helpers import BAD_SCHEDULES
from stress_plugin.service import schedule
from stress_plugin.service.schedule import Schedule, fire_times

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
    monkeypatch.setattr(schedule, "_DAYS_PER_SESSION", 0.0)  # size every build at the minimum
    monkeypatch.setattr(schedule._Sessions, "_cache", {})
    assert fire_times(utc(2026, 1, 1), 4_000) == expected
    assert schedule._Sessions._cache["XNYS"].last > date(2028, 6, 1)


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
    BAD_SCHEDULES,
)
def test_bad_settings_are_named(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        fire_times(utc(2026, 1, 14), 1, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=name):
        Schedule(**kwargs)  # type: ignore[arg-type]


def test_naive_start_and_bad_count_rejected() -> None:
    with pytest.raises(ValueError, match=r"start=.*timezone-aware"):
        fire_times(datetime(2026, 1, 14), 1)
    with pytest.raises(ValueError, match="count=-1"):
        fire_times(utc(2026, 1, 14), -1)




def test_a_schedule_lists_its_slots_after_and_between():
    hourly = Schedule()
    day = on_day(date(2026, 1, 14))
    assert hourly.after(utc(2026, 1, 14), 6) == day
    assert hourly.next_after(utc(2026, 1, 14, 15, 0, 5)) == utc(2026, 1, 14, 16, 0, 5)
    # (start, end]: the slot at the start is excluded, the one at the end included
    assert hourly.between(day[0], day[3]) == day[1:4]
    assert hourly.between(day[3], day[3]) == [] and hourly.between(day[3], day[0]) == []
    # over a weekend and a holiday, and far more slots than one step asks for
    assert hourly.between(utc(2026, 1, 16, 20, 30), utc(2026, 1, 20, 15, 0, 5)) == [
        utc(2026, 1, 20, 15, 0, 5)]  # Monday the 19th is Martin Luther King Jr. Day
    minutes = Schedule(interval_minutes=1, offset_seconds=0, market_hours_only=False)
    assert len(minutes.between(utc(2026, 1, 14), utc(2026, 1, 15))) == 1440
    assert str(Schedule(15, 30, False)) == "every 15 min at +30 s New York time, all day"


PROBE = """
import contextlib, io, json, sys
from stress_plugin.cli import main as cli
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = cli.main(sys.argv[1:])
heavy = ("apscheduler", "exchange_calendars", "pandas", "fastapi", "uvicorn")
print(json.dumps([code, out.getvalue().split(), [m for m in heavy if m in sys.modules]]))
"""


def probe(tmp_path: Path, *args: str, **env: str) -> tuple[int, list[str], list[str]]:
    """Run the CLI in a fresh interpreter: its exit code, output words and heavy imports."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PD_", "STRESS_"))}
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                         env={**base, "STRESS_DB": str(tmp_path / "s.db"), **env}, timeout=120)
    assert out.returncode == 0, out.stderr
    code, words, modules = json.loads(out.stdout.splitlines()[-1])
    return code, words, modules


def test_the_schedule_and_status_commands_load_no_scheduler(tmp_path):
    code, words, modules = probe(tmp_path, "schedule", "--from", "2026-11-25T23:00:00Z",
                                 "--count", "2")
    assert (code, words) == (0, ["2026-11-27T15:00:05Z", "2026-11-27T16:00:05Z"])
    assert modules == ["exchange_calendars", "pandas"]  # the calendar, lazily: no scheduler
    code, words, modules = probe(tmp_path, "status")
    assert code == 0 and "Next" in words and "apscheduler" not in modules


def test_an_all_day_schedule_needs_no_calendar(tmp_path):
    code, words, modules = probe(tmp_path, "schedule", "--from", "2026-11-26T03:00:00Z",
                                 "--count", "2", MARKET_HOURS_ONLY="false")
    assert (code, words) == (0, ["2026-11-26T03:00:05Z", "2026-11-26T04:00:05Z"])
    assert modules == []
