"""One real ``stress-runner serve`` process on loopback, killed with SIGKILL and restarted,
and the service's scheduler firing a real run."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from helpers import book, free_port, position, start_serve
from stress_plugin.service.service import StressService
from stress_plugin.settings import load_settings
from stress_plugin.store import Store


def test_serve_survives_kill_minus_nine(tmp_path: Path):
    book_path = tmp_path / "book.yaml"
    book_path.write_text(yaml.safe_dump(book(position(quantity=6, var=3000))))
    port = free_port()
    env = {"STRESS_DB": str(tmp_path / "stress.db"), "STRESS_API_TOKEN": "tok-123"}
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer tok-123"}

    proc = start_serve(port, env, book_path)
    try:
        status = httpx.get(f"{base}/api/v1/stress/status").json()
        assert status["scheduler_running"] is True and status["next_run"].endswith(":00:05Z")
        assert httpx.post(f"{base}/api/v1/stress/run").status_code == 401
        run = httpx.post(f"{base}/api/v1/stress/run", headers=auth).json()
        assert run["kill_switch"] is True
        assert httpx.put(f"{base}/api/v1/stress/config", headers=auth,
                         json={"offset_seconds": 30}).status_code == 200
        metrics = httpx.get(f"{base}/metrics").text
        assert "stress_runner_up 1.0" in metrics and "stress_halted 1.0" in metrics
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)

    proc = start_serve(port, env, book_path)
    try:
        status = httpx.get(f"{base}/api/v1/stress/status").json()
        assert status["total_runs"] == 1 and status["halted"] is True
        assert status["offset_seconds"] == 30 and status["next_run"].endswith(":00:30Z")
        results = httpx.get(f"{base}/api/v1/stress/results?hours=1").json()["results"]
        assert [r["run_id"] for r in results] == [run["run_id"]]
        assert httpx.post(f"{base}/api/v1/risk/reset_circuit", headers=auth).json()[
            "cleared"]["run_id"] == run["run_id"]
        assert httpx.get(f"{base}/api/v1/risk/status").json()["halted"] is False
    finally:
        output = proc.stop()
    assert "tok-123" not in output
    assert "KILL_SWITCH triggered" in output or "Application startup complete" in output


def test_a_scheduled_run_fires_on_a_one_minute_interval(make_plugins, tmp_path: Path):
    settings = load_settings()
    store = Store(settings.db_path)
    service = StressService(settings, plugins=make_plugins(), store=store)
    now = datetime.now(UTC)
    service.update_config({"interval_minutes": 1, "market_hours_only": False,
                           "offset_seconds": (now.second + 3) % 60}, "test")
    service.start_scheduler()
    try:
        expected = service.scheduler.next_run_time
        assert (expected - now).total_seconds() < 5
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and store.run_totals()["runs"] == 0:
            time.sleep(0.1)
    finally:
        service.stop()
    results = store.runs_since("2000-01-01T00:00:00Z")
    assert len(results) == 1
    assert results[0]["trigger"] == "schedule"
    assert results[0]["scheduled_for"] == expected.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_serve_refuses_a_bad_book_at_start(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(book(position(spread=-1))))
    from helpers import cli

    out = cli("serve", "--port", str(free_port()), "--book", str(bad),
              env={"STRESS_DB": str(tmp_path / "s.db")})
    assert out.returncode == 2 and "positions[0] (MES).spread" in out.stderr


@pytest.mark.parametrize("count", [3])
def test_schedule_command_prints_iso_utc_times(count, tmp_path: Path):
    from helpers import cli

    out = cli("schedule", "--from", "2026-11-25T23:00:00Z", "--count", str(count),
              env={"STRESS_DB": str(tmp_path / "s.db")})
    assert out.returncode == 0, out.stderr
    # Thanksgiving is closed; the day after closes at 13:00 New York time
    assert out.stdout.split() == ["2026-11-27T15:00:05Z", "2026-11-27T16:00:05Z",
                                  "2026-11-27T17:00:05Z"]


def test_pending_pages_are_retried_in_the_background(make_plugins, monkeypatch, tmp_path):
    from helpers import FakePagerDuty
    from stress_plugin.default_plugins import pagerduty

    breaching = tmp_path / "breach.yaml"
    breaching.write_text(yaml.safe_dump(book(position(quantity=6, var=3000))))
    pd = FakePagerDuty().start()
    pd.stop()  # PagerDuty is down when the breach happens
    monkeypatch.setenv("PD_ROUTING_KEY", "K" * 32)
    monkeypatch.setenv("PD_EVENTS_URL", pd.url)
    monkeypatch.setenv("STRESS_ALERT_RETRY_BASE_S", "0.05")
    monkeypatch.setenv("STRESS_ALERT_RETRY_MAX_S", "0.2")
    settings = load_settings()
    service = StressService(settings, book_path=breaching, store=Store(settings.db_path),
                            plugins=make_plugins(pagerduty=pagerduty))
    try:
        result = service.run(trigger="manual")
        deadline = time.monotonic() + 10
        while service.store.deliveries_pending()[0].attempts < 2:  # the worker keeps trying
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert "ConnectError" in service.store.deliveries_pending()[0].last_error
        pd.start()  # back on the same port
        while service.store.deliveries_pending():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert [(e["event_action"], e["dedup_key"]) for e in pd.accepted()] == [
            ("trigger", f"stress_runner/flash_crash_lite/{result.run_id}")]
        [done] = service.store.deliveries_list()
        assert done.status == "delivered" and done.last_error is None and done.attempts >= 2
        assert 'stress_alert_outbox_pending{sink="pagerduty"} 0.0' in \
            service.metrics.render().decode()
    finally:
        service.stop()
        pd.stop()


def test_schedule_command_honours_an_explicit_environment_over_stored_config(tmp_path: Path):
    from helpers import cli

    db = str(tmp_path / "s.db")
    Store(db).save_config({"enabled": True, "interval_minutes": 30}, actor="test",
                          change={"interval_minutes": 30})
    out = cli("schedule", "--from", "2026-11-25T14:00:00Z", "--count", "2",
              env={"STRESS_DB": db})
    assert out.stdout.split() == ["2026-11-25T14:30:05Z", "2026-11-25T15:00:05Z"]
    off = cli("schedule", "--count", "2", env={"STRESS_DB": db, "STRESS_ENABLED": "false"})
    assert off.returncode == 0 and off.stdout == "" and "disabled" in off.stderr
