"""The PagerDuty sink against a real HTTP server speaking the Events API v2 contract."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stress_hookspecs import Breach, Limits, Metrics, StressResult
from stress_plugin import cli_alerts
from stress_plugin.errors import ConfigError
from stress_plugin.plugins import pagerduty
from stress_plugin.plugins.pagerduty import PagerDutyAlerter, PagerDutyError
from stress_plugin.settings import Settings
from stress_plugin.store import MIGRATIONS, Store

try:
    from pagerduty_server import FakePagerDuty
except ImportError:  # tests/ is a package
    from tests.pagerduty_server import FakePagerDuty

KEY = "R0UT1NGK3Y5ECRET" + "x" * 16
assert len(KEY) == 32
FAST = {"wait_initial_s": 0.01, "wait_max_s": 0.05, "wait_jitter_s": 0.01, "budget_s": 5.0}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("PD_ROUTING_KEY", "PD_EVENTS_URL", "PD_AUTO_RESOLVE", "PD_RUNBOOK_URL",
                 "PD_DASHBOARD_URL", "STRESS_DB", "STRESS_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    yield
    pagerduty.reset_alerter()


@pytest.fixture
def pd() -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as server:
        yield server


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "state" / "stress.db") as s:
        yield s


def settings(pd: FakePagerDuty | None, key: str | None = KEY, **extra: object) -> Settings:
    url = pd.url if pd else "http://127.0.0.1:9/v2/enqueue"
    return Settings(pd_routing_key=key, pd_events_url=url, **extra)


def make_alerter(pd: FakePagerDuty | None, store: Store, key: str | None = KEY,
                 **extra: object) -> PagerDutyAlerter:
    return PagerDutyAlerter(settings(pd, key, **extra), store, **FAST)


def result(run_id: str, symbols: list[str] | None = None, scenario: str = "flash_crash_lite",
           ) -> StressResult:
    """A run of ``scenario``; every symbol in ``symbols`` breached the delta limit."""
    symbols = symbols or []
    ok = Metrics(worst_pnl=-100.0, drawdown_pct=0.001, var_ratio=0.5, delta_change=0.01,
                 headroom=5.0)
    bad = Metrics(worst_pnl=-4597.954, drawdown_pct=0.046, var_ratio=1.5, delta_change=0.21555,
                  headroom=0.463929)
    return StressResult(
        run_id=run_id,
        scenario=scenario,
        timestamp="2024-01-15T15:00:05Z",
        symbols_tested=max(len(symbols), 1),
        portfolio=bad if symbols else ok,
        symbols={s: bad for s in symbols} or {"MES": ok},
        headroom=0.463929 if symbols else 5.0,
        limits=Limits(),
        breaches=tuple(Breach(s, "max_position_delta", 0.21555, 0.10) for s in symbols),
        kill_switch=bool(symbols),
    )


# -- payload and episodes ---------------------------------------------------------------------


def test_trigger_payload_follows_the_runbook(pd: FakePagerDuty, store: Store) -> None:
    alerter = make_alerter(pd, store, pd_runbook_url="https://wiki/runbook",
                           pd_dashboard_url="https://grafana/stress")
    alerter.alert(result("run-1", ["MES", "MNQ"]))

    [event] = pd.accepted()
    assert event["routing_key"] == KEY
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "stress_runner/flash_crash_lite/run-1"
    payload = event["payload"]
    assert payload["summary"] == "Stress test breach: flash_crash_lite on MES, MNQ"
    assert payload["severity"] == "critical"
    assert payload["source"] == payload["component"] == "stress_runner"
    assert payload["group"] == "flash_crash_lite"
    assert payload["class"] == "stress_breach"
    details = payload["custom_details"]
    assert details["scenario"] == "flash_crash_lite"
    assert details["symbols"] == ["MES", "MNQ"]
    assert details["breach_count"] == 2
    assert details["timestamp"] == "2024-01-15T15:00:05Z"
    assert details["run_id"] == "run-1"
    assert details["breaches"][0] == {"symbol": "MES", "limit": "max_position_delta",
                                      "value": 0.21555, "threshold": 0.10}
    assert details["headroom"] == 0.463929
    assert details["kill_switch"] is True
    assert event["links"] == [{"href": "https://wiki/runbook", "text": "Runbook"},
                              {"href": "https://grafana/stress", "text": "Dashboard"}]
    [row] = store.outbox_list()
    assert row.status == "delivered" and row.attempts == 1 and row.delivered_at
    assert "routing_key" not in row.body


def test_one_incident_per_episode_resolved_by_the_first_pass(pd: FakePagerDuty,
                                                             store: Store) -> None:
    alerter = make_alerter(pd, store)
    alerter.alert(result("r1", ["MES"]))
    alerter.alert(result("r2", ["MES", "MNQ"]))
    alerter.alert(result("r3"))  # passes: resolve
    alerter.alert(result("r4"))  # passes again: nothing to send
    alerter.alert(result("r5", ["M2K"]))  # a new episode

    events = pd.accepted()
    assert [e["event_action"] for e in events] == ["trigger", "trigger", "resolve", "trigger"]
    first = "stress_runner/flash_crash_lite/r1"
    assert [e["dedup_key"] for e in events[:3]] == [first] * 3
    assert events[3]["dedup_key"] == "stress_runner/flash_crash_lite/r5"
    assert pd.opened == [first, "stress_runner/flash_crash_lite/r5"]
    assert pd.alerts == {first: "resolved", "stress_runner/flash_crash_lite/r5": "triggered"}
    [closed, current] = store.episodes("pagerduty")
    assert (closed.opened_run_id, closed.last_run_id, closed.closed_run_id) == ("r1", "r2", "r3")
    assert current.closed_at is None and current.dedup_key.endswith("/r5")


def test_episodes_are_per_scenario(pd: FakePagerDuty, store: Store) -> None:
    alerter = make_alerter(pd, store)
    alerter.alert(result("a1", ["MES"], scenario="flash_crash_lite"))
    alerter.alert(result("b1", ["MES"], scenario="rates_shock"))
    alerter.alert(result("b2", scenario="rates_shock"))
    keys = [(e["event_action"], e["dedup_key"]) for e in pd.accepted()]
    assert keys == [("trigger", "stress_runner/flash_crash_lite/a1"),
                    ("trigger", "stress_runner/rates_shock/b1"),
                    ("resolve", "stress_runner/rates_shock/b1")]


def test_auto_resolve_off_closes_the_episode_silently(pd: FakePagerDuty, store: Store) -> None:
    alerter = make_alerter(pd, store, pd_auto_resolve=False)
    alerter.alert(result("r1", ["MES"]))
    alerter.alert(result("r2"))
    alerter.alert(result("r3", ["MES"]))
    events = pd.accepted()
    assert [e["event_action"] for e in events] == ["trigger", "trigger"]
    assert [e["dedup_key"].rsplit("/", 1)[1] for e in events] == ["r1", "r3"]
    assert len(store.outbox_list()) == 2
    assert store.episodes("pagerduty")[0].closed_run_id == "r2"


def failed(run_id: str, scenario: str = "flash_crash_lite") -> StressResult:
    return StressResult(run_id=run_id, scenario=scenario, timestamp="2024-01-15T16:00:05Z",
                        symbols_tested=0, portfolio=None, symbols={}, headroom=None,
                        limits=None, error="plugin host (stress_book): raised "
                        "ConnectionError('broker down')", failure="book_unavailable",
                        book_source="")


def test_a_failed_run_is_its_own_incident_resolved_by_the_next_completed_run(
        pd: FakePagerDuty, store: Store) -> None:
    alerter = make_alerter(pd, store)
    alerter.alert(result("r1", ["MES"]))  # breach incident opens
    alerter.alert(failed("f1"))  # failure incident opens; the breach one stays open
    alerter.alert(failed("f2"))  # the same failure incident
    alerter.alert(result("r2", ["MES"]))  # completes: failure resolved, breach continues
    alerter.alert(result("r3"))  # passes: breach resolved
    events = pd.accepted()
    breach = "stress_runner/flash_crash_lite/r1"
    failure = "stress_runner/flash_crash_lite/failed/f1"
    assert [(e["event_action"], e["dedup_key"]) for e in events] == [
        ("trigger", breach), ("trigger", failure), ("trigger", failure), ("resolve", failure),
        ("trigger", breach), ("resolve", breach)]
    payload = events[1]["payload"]
    assert payload["severity"] == "error" and payload["class"] == "stress_run_failed"
    assert payload["summary"] == ("Stress run failed: flash_crash_lite: plugin host "
                                  "(stress_book): raised ConnectionError('broker down')")
    assert payload["custom_details"]["failure"] == "book_unavailable"
    assert pd.alerts == {breach: "resolved", failure: "resolved"}


def test_300_symbols_shorten_the_summary(pd: FakePagerDuty, store: Store) -> None:
    symbols = [f"SYMBOL{i:03d}" for i in range(300)]
    make_alerter(pd, store).alert(result("big", symbols))
    [event] = pd.accepted()
    summary = event["payload"]["summary"]
    assert len(summary) <= 1024
    assert summary.startswith("Stress test breach: flash_crash_lite on SYMBOL000, SYMBOL001")
    shown = summary.removeprefix("Stress test breach: flash_crash_lite on ").split(" ... ")[0]
    hidden = 300 - len(shown.split(", "))
    assert summary.endswith(f" ... and {hidden} more") and hidden > 0
    assert len(event["payload"]["custom_details"]["symbols"]) == 300


def test_huge_breach_list_is_trimmed_below_512_kb(pd: FakePagerDuty, store: Store) -> None:
    symbols = [f"S{i:05d}-{'x' * 40}" for i in range(8000)]
    make_alerter(pd, store).alert(result("huge", symbols))
    [request] = pd.requests
    assert request.status == 202
    assert len(request.raw) < 512 * 1024
    details = request.body["payload"]["custom_details"]
    assert 0 < len(details["breaches"]) < 8000
    assert "of 8000 shown" in details["breaches_note"]
    assert details["breach_count"] == 8000


# -- delivery ---------------------------------------------------------------------------------


def test_5xx_is_retried_with_the_same_body_until_accepted(pd: FakePagerDuty,
                                                          store: Store) -> None:
    pd.fail_next(500, 2)
    make_alerter(pd, store).alert(result("r1", ["MES"]))
    assert [r.status for r in pd.requests] == [500, 500, 202]
    assert len({r.raw for r in pd.requests}) == 1  # same body, same dedup_key
    [row] = store.outbox_list()
    assert (row.status, row.attempts) == ("delivered", 3)
    assert row.last_error == "HTTP 500: Scripted failure"


def test_429_waits_for_retry_after(pd: FakePagerDuty, store: Store) -> None:
    pd.fail_next(429, retry_after="0.3")
    make_alerter(pd, store).alert(result("r1", ["MES"]))
    first, second = pd.requests
    assert (first.status, second.status) == (429, 202)
    assert second.at - first.at >= 0.3  # the backoff alone would be about 0.01-0.02 s
    assert first.raw == second.raw


def test_retry_after_beyond_the_budget_leaves_the_event_pending(pd: FakePagerDuty,
                                                                store: Store) -> None:
    pd.fail_next(429, retry_after="120")
    started = time.monotonic()
    with pytest.raises(PagerDutyError, match="pending"):
        make_alerter(pd, store).alert(result("r1", ["MES"]))
    assert time.monotonic() - started < 2
    assert len(pd.requests) == 1
    assert store.outbox_list()[0].status == "pending"


def test_400_is_not_retried_and_is_logged(pd: FakePagerDuty, store: Store,
                                          caplog: pytest.LogCaptureFixture) -> None:
    bad_key = KEY[:31]  # PagerDuty wants 32 characters
    caplog.set_level(logging.INFO)
    with pytest.raises(PagerDutyError, match="failed"):
        make_alerter(pd, store, key=bad_key).alert(result("r1", ["MES"]))
    assert [r.status for r in pd.requests] == [400]
    [row] = store.outbox_list()
    assert (row.status, row.attempts) == ("failed", 1)
    assert "Event object is invalid" in row.last_error
    assert "routing_key" in row.last_error  # PagerDuty's errors[] says what was wrong
    logged = [r for r in caplog.records if r.name == "stress_runner.pagerduty"]
    assert any(r.levelno == logging.ERROR and "Event object is invalid" in r.getMessage()
               and "not 32 characters" in r.getMessage() for r in logged)
    # a failed event is never sent again
    assert make_alerter(pd, store).flush() == pagerduty.FlushResult(0, 0, 0)
    assert len(pd.requests) == 1


def test_outage_then_flush_delivers_each_event_once(pd: FakePagerDuty, store: Store) -> None:
    alerter = make_alerter(pd, store)
    pd.stop()
    with pytest.raises(PagerDutyError, match="pending"):
        alerter.alert(result("r1", ["MES"]))
    with pytest.raises(PagerDutyError):
        alerter.alert(result("r2", ["MES"]))
    with pytest.raises(PagerDutyError):
        alerter.alert(result("r3"))
    rows = store.outbox_pending()
    assert [r.event_action for r in rows] == ["trigger", "trigger", "resolve"]
    # each run retries the oldest event first and stops there, so order is kept
    assert [r.attempts for r in rows] == [3 * alerter.attempts, 0, 0]
    assert "ConnectError" in (rows[0].last_error or "")

    pd.start()  # back on the same port
    restarted = make_alerter(pd, store)  # a new process: the outbox is on disk
    assert restarted.flush() == pagerduty.FlushResult(delivered=3, failed=0, pending=0)
    assert restarted.flush() == pagerduty.FlushResult(0, 0, 0)
    accepted = pd.accepted()
    assert len(accepted) == 3 == len(pd.requests)
    assert [e["event_action"] for e in accepted] == ["trigger", "trigger", "resolve"]
    assert {e["dedup_key"] for e in accepted} == {"stress_runner/flash_crash_lite/r1"}
    assert pd.alerts == {"stress_runner/flash_crash_lite/r1": "resolved"}
    assert all(r.status == "delivered" for r in store.outbox_list())


def test_next_run_delivers_what_an_outage_left(pd: FakePagerDuty, store: Store) -> None:
    alerter = make_alerter(pd, store)
    pd.stop()
    with pytest.raises(PagerDutyError):
        alerter.alert(result("r1", ["MES"]))
    pd.start()
    alerter.alert(result("r2", ["MES"]))
    assert [e["payload"]["custom_details"]["run_id"] for e in pd.accepted()] == ["r1", "r2"]


# -- the routing key stays secret -------------------------------------------------------------


def test_routing_key_never_logged_stored_or_listed(
    pd: FakePagerDuty, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    alerter = make_alerter(pd, store)
    # a 400 whose text echoes the key, a 500, and a full outage
    pd.fail_next(400, body={"status": "invalid event", "message": f"bad key {KEY}",
                            "errors": [f"routing_key {KEY} unknown"]})
    with pytest.raises(PagerDutyError) as rejected:
        alerter.alert(result("r1", ["MES"]))
    pd.fail_next(503, 1, body={"message": f"busy for {KEY}"})
    alerter.alert(result("r2", ["MES"]))
    pd.stop()
    with pytest.raises(PagerDutyError) as pending:
        alerter.alert(result("r3"))
    pd.start()

    monkeypatch.setenv("STRESS_DB", str(store.path))
    monkeypatch.setenv("PD_ROUTING_KEY", KEY)
    monkeypatch.setenv("PD_EVENTS_URL", pd.url)
    for argv in (["list"], ["list", "--json"], ["list", "--status", "failed"], ["flush"],
                 ["test"], ["list", "--json"]):
        assert run_cli(argv) in (0, 1)
    out = capsys.readouterr()

    assert "<redacted>" in caplog.text
    for record in caplog.records:  # extras too (stamina logs the exception it retries on)
        assert KEY not in repr(record.__dict__)
    for text in (caplog.text, out.out, out.err, str(rejected.value), str(pending.value)):
        assert KEY not in text
    assert "R0UT1NGK3Y" not in out.out + caplog.text
    store.close()
    for file in (store.path.parent).iterdir():  # the database, its WAL and shared memory
        assert KEY.encode() not in file.read_bytes(), file
    with sqlite3.connect(store.path) as conn:
        assert KEY not in "\n".join(conn.iterdump())


def test_no_routing_key_warns_on_every_breach(store: Store,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    alerter = make_alerter(None, store, key=None)
    assert not alerter.enabled
    alerter.alert(result("r1", ["MES"]))
    alerter.alert(result("r2"))
    alerter.alert(result("r3", ["MNQ"]))
    warnings = [r for r in caplog.records if r.name == "stress_runner.pagerduty"]
    assert len(warnings) == 2
    assert all(r.levelno == logging.WARNING and "PD_ROUTING_KEY" in r.getMessage()
               for r in warnings)
    assert store.outbox_list() == []
    with pytest.raises(ConfigError, match="PD_ROUTING_KEY"):
        alerter.flush()


# -- test page, CLI and the plugin entry --------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stress-runner")
    cli_alerts.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["alerts", *argv])
    return args.handler(args)


def test_send_test_triggers_and_resolves(pd: FakePagerDuty, store: Store) -> None:
    trigger, resolve = make_alerter(pd, store).send_test()
    assert trigger.status == "delivered" and resolve is not None
    assert resolve.status == "delivered"
    first, second = pd.accepted()
    assert first["payload"]["summary"].startswith("[TEST]")
    assert first["payload"]["severity"] == "info"
    assert (second["event_action"], second["dedup_key"]) == ("resolve", first["dedup_key"])
    assert first["dedup_key"].startswith("stress_runner/test/")
    assert pd.alerts == {first["dedup_key"]: "resolved"}


def test_send_test_during_outage_leaves_nothing_behind(pd: FakePagerDuty, store: Store) -> None:
    pd.stop()
    trigger, resolve = make_alerter(pd, store).send_test()
    assert (trigger.status, resolve) == ("pending", None)
    assert store.outbox_list() == []


def test_cli_list_flush_and_test(pd: FakePagerDuty, store: Store, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STRESS_DB", str(store.path))
    monkeypatch.setenv("PD_ROUTING_KEY", KEY)
    monkeypatch.setenv("PD_EVENTS_URL", pd.url)
    pd.stop()
    with pytest.raises(PagerDutyError):
        make_alerter(pd, store).alert(result("r1", ["MES"]))
    pd.start()

    assert run_cli(["list", "--status", "pending"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["ID", "CREATED", "(UTC)"]
    assert "pending" in table[1] and "trigger" in table[1] and "flash_crash_lite" in table[1]

    assert run_cli(["flush"]) == 0
    assert "delivered 1, failed 0, still pending 0" in capsys.readouterr().out

    assert run_cli(["list", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["status"] == "delivered" and row["body"]["event_action"] == "trigger"

    assert run_cli(["list", "--status", "failed"]) == 0
    assert capsys.readouterr().out.strip() == "no alert events with status failed"

    assert run_cli(["test"]) == 0
    assert "test resolve accepted" in capsys.readouterr().out


def test_hook_builds_one_alerter_from_the_environment(pd: FakePagerDuty, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pagerduty.reset_alerter()
    monkeypatch.setenv("STRESS_DB", str(tmp_path / "hook.db"))
    monkeypatch.setenv("PD_ROUTING_KEY", KEY)
    monkeypatch.setenv("PD_EVENTS_URL", pd.url)
    assert pagerduty._alerter is None
    pagerduty.stress_alert(result("r1", ["MES"]))
    alerter = pagerduty.get_alerter()
    pagerduty.stress_alert(result("r2"))
    assert pagerduty.get_alerter() is alerter
    assert [e["event_action"] for e in pd.accepted()] == ["trigger", "resolve"]
    assert (tmp_path / "hook.db").exists()


# -- store ------------------------------------------------------------------------------------


def test_store_schema_is_versioned(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "stress.db"
    with Store(path) as store:
        assert store.schema_version == len(MIGRATIONS)
        store.outbox_add("pagerduty", "trigger", {"event_action": "trigger"}, dedup_key="k")
        with pytest.raises(ValueError, match="routing key"):
            store.outbox_add("pagerduty", "trigger", {"routing_key": "x"})
        with pytest.raises(RuntimeError), store.transaction():
            store.outbox_add("pagerduty", "trigger", {})
            raise RuntimeError("rolled back")
    with Store(path) as store:  # reopening migrates nothing and keeps the rows
        assert store.schema_version == len(MIGRATIONS)
        assert len(store.outbox_list()) == 1
        assert store._query("PRAGMA journal_mode")[0][0] == "wal"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(ConfigError, match="newer"):
        Store(path)


# -- the example third-party sink -------------------------------------------------------------


def test_example_webhook_sink_posts_only_breaches(pd: FakePagerDuty,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = ROOT / "examples" / "webhook_sink" / "stress_sink_webhook.py"
    spec = importlib.util.spec_from_file_location("stress_sink_webhook", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    module.stress_alert(result("r1", ["MES"]))  # no URL: nothing
    monkeypatch.setenv("STRESS_WEBHOOK_URL", pd.url.replace("/v2/enqueue", "/hook"))
    module.stress_alert(result("r2"))  # passed: nothing
    pd.fail_next(200, body={"ok": True})
    module.stress_alert(result("r3", ["MES", "MNQ"]))
    [request] = pd.requests
    assert request.path == "/hook"
    text = json.loads(request.raw)["text"]
    assert "flash_crash_lite" in text and "MES, MNQ" in text and "r3" in text
    pd.fail_next(500, body={"error": "down"})
    with pytest.raises(RuntimeError, match="HTTP 500") as failed:
        module.stress_alert(result("r4", ["MES"]))
    assert "/hook" not in str(failed.value)  # the URL is a secret
