"""The PagerDuty sink as an ordinary sink, through the runtime's outbox and delivery worker,
against a real HTTP server speaking the Events API v2 contract."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import ROOT, FakePagerDuty
from stress_hookspecs import Breach, Metrics, StressResult
from stress_hookspecs.testing import make_failed_result, make_result
from stress_plugin.cli import main as cli_main
from stress_plugin.core.errors import ConfigError
from stress_plugin.default_plugins import pagerduty
from stress_plugin.delivery import Deliverer
from stress_plugin.plugins import Plugins, build_manager
from stress_plugin.settings import load_settings
from stress_plugin.store import MIGRATIONS, Store, target_kind

pytestmark = pytest.mark.stores

KEY = "R0UT1NGK3Y5ECRET" + "x" * 16
assert len(KEY) == 32


@pytest.fixture
def pd() -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as server:
        yield server


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store(store_url) as s:
        yield s


class Outbox:
    """The runtime's path with PagerDuty as its only sink: ``run`` stores a report with its
    pending delivery, ``deliver`` lets the worker send what is due."""

    def __init__(self, store: Store) -> None:
        pm, _ = build_manager(entry_points=False)
        self.plugins = Plugins(pm)
        self.plugins.register(pagerduty, "pagerduty")
        self.store = store
        self.worker = Deliverer(self.plugins, store, load_settings())

    def run(self, report: StressResult) -> StressResult:
        prices = [1.0] * len(report.symbols) if report.portfolio is not None else None
        return self.store.save_run(report, trigger="manual", prices=prices, sinks=["pagerduty"])

    def deliver(self, timeout_s: float = 5.0, **kwargs: object) -> list:
        left = self.worker.drain(timeout_s, **kwargs)
        self.worker.join(5.0)  # no attempt still in flight when the test moves on
        return self.store.deliveries_pending() if left else left

    def alert(self, report: StressResult) -> StressResult:
        """Store and deliver at once, as a run followed by the worker's pass."""
        saved = self.run(report)
        self.deliver()
        return saved


@pytest.fixture
def outbox(pd: FakePagerDuty, store: Store, monkeypatch: pytest.MonkeyPatch) -> Outbox:
    monkeypatch.setenv("PD_ROUTING_KEY", KEY)
    monkeypatch.setenv("PD_EVENTS_URL", pd.url)
    monkeypatch.setenv("STRESS_ALERT_RETRY_BASE_S", "0.01")
    monkeypatch.setenv("STRESS_ALERT_RETRY_MAX_S", "0.05")
    return Outbox(store)


def result(run_id: str, symbols: list[str] | None = None, scenario: str = "flash_crash_lite",
           ) -> StressResult:
    """A run of ``scenario``; every symbol in ``symbols`` breached the delta limit."""
    symbols = symbols or []
    ok = Metrics(worst_pnl=-100.0, drawdown_pct=0.001, var_ratio=0.5, delta_change=0.01,
                 headroom=5.0)
    bad = Metrics(worst_pnl=-4597.954, drawdown_pct=0.046, var_ratio=1.5, delta_change=0.21555,
                  headroom=0.463929)
    return make_result(
        run_id=run_id, scenario=scenario, portfolio=bad if symbols else ok,
        symbols={s: bad for s in symbols} or {"MES": ok},
        breaches=[Breach(s, "max_position_delta", 0.21555, 0.10) for s in symbols])


def failed(run_id: str, scenario: str = "flash_crash_lite") -> StressResult:
    return make_failed_result(run_id=run_id, scenario=scenario,
                              timestamp="2024-01-15T16:00:05Z")


# -- payload and episodes ---------------------------------------------------------------------


def test_trigger_payload_follows_the_runbook(pd: FakePagerDuty, outbox: Outbox,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PD_RUNBOOK_URL", "https://wiki/runbook")
    monkeypatch.setenv("PD_DASHBOARD_URL", "https://grafana/stress")
    outbox.alert(result("run-1", ["MES", "MNQ"]))

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
    [row] = outbox.store.deliveries_list()
    assert row.status == "delivered" and row.attempts == 1 and row.delivered_at
    assert row.outcome == "ok" and row.last_error is None


def test_one_incident_per_episode_resolved_by_the_first_pass(pd: FakePagerDuty,
                                                             outbox: Outbox) -> None:
    outbox.alert(result("r1", ["MES"]))
    outbox.alert(result("r2", ["MES", "MNQ"]))
    outbox.alert(result("r3"))  # passes: resolve
    outbox.alert(result("r4"))  # passes again: nothing to send
    outbox.alert(result("r5", ["M2K"]))  # a new episode

    events = pd.accepted()
    assert [e["event_action"] for e in events] == ["trigger", "trigger", "resolve", "trigger"]
    first = "stress_runner/flash_crash_lite/r1"
    assert [e["dedup_key"] for e in events[:3]] == [first] * 3
    assert events[3]["dedup_key"] == "stress_runner/flash_crash_lite/r5"
    assert pd.opened == [first, "stress_runner/flash_crash_lite/r5"]
    assert pd.alerts == {first: "resolved", "stress_runner/flash_crash_lite/r5": "triggered"}
    # the episodes are the runtime's: every sink sees them in the report
    assert [(r.episode, r.resolves) for r in map(outbox.store.report, ["r2", "r3", "r4"])] == [
        ("r1", ()), (None, ("r1",)), (None, ())]


def test_episodes_are_per_scenario(pd: FakePagerDuty, outbox: Outbox) -> None:
    outbox.alert(result("a1", ["MES"], scenario="flash_crash_lite"))
    outbox.alert(result("b1", ["MES"], scenario="rates_shock"))
    outbox.alert(result("b2", scenario="rates_shock"))
    keys = [(e["event_action"], e["dedup_key"]) for e in pd.accepted()]
    assert keys == [("trigger", "stress_runner/flash_crash_lite/a1"),
                    ("trigger", "stress_runner/rates_shock/b1"),
                    ("resolve", "stress_runner/rates_shock/b1")]


def test_auto_resolve_off_closes_the_episode_silently(pd: FakePagerDuty, outbox: Outbox,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PD_AUTO_RESOLVE", "false")
    outbox.alert(result("r1", ["MES"]))
    outbox.alert(result("r2"))
    outbox.alert(result("r3", ["MES"]))
    events = pd.accepted()
    assert [e["event_action"] for e in events] == ["trigger", "trigger"]
    assert [e["dedup_key"].rsplit("/", 1)[1] for e in events] == ["r1", "r3"]
    assert [r.status for r in outbox.store.deliveries_list()] == ["delivered"] * 3


def test_a_failed_run_is_its_own_incident_resolved_by_the_next_completed_run(
        pd: FakePagerDuty, outbox: Outbox) -> None:
    outbox.alert(result("r1", ["MES"]))  # breach incident opens
    outbox.alert(failed("f1"))  # failure incident opens; the breach one stays open
    outbox.alert(failed("f2"))  # the same failure incident
    outbox.alert(result("r2", ["MES"]))  # completes: failure resolved, breach continues
    outbox.alert(result("r3"))  # passes: breach resolved
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


def test_300_symbols_shorten_the_summary(pd: FakePagerDuty, outbox: Outbox) -> None:
    symbols = [f"SYMBOL{i:03d}" for i in range(300)]
    outbox.alert(result("big", symbols))
    [event] = pd.accepted()
    summary = event["payload"]["summary"]
    assert len(summary) <= 1024
    assert summary.startswith("Stress test breach: flash_crash_lite on SYMBOL000, SYMBOL001")
    shown = summary.removeprefix("Stress test breach: flash_crash_lite on ").split(" ... ")[0]
    hidden = 300 - len(shown.split(", "))
    assert summary.endswith(f" ... and {hidden} more") and hidden > 0
    assert len(event["payload"]["custom_details"]["symbols"]) == 300


def test_huge_breach_list_is_trimmed_below_512_kb(pd: FakePagerDuty, outbox: Outbox) -> None:
    symbols = [f"S{i:05d}-{'x' * 40}" for i in range(8000)]
    outbox.alert(result("huge", symbols))
    [request] = pd.requests
    assert request.status == 202
    assert len(request.raw) < 512 * 1024
    details = request.body["payload"]["custom_details"]
    assert 0 < len(details["breaches"]) < 8000
    assert "of 8000 shown" in details["breaches_note"]
    assert details["breach_count"] == 8000


# -- delivery: the runtime retries, the sink says later or never --------------------------------


def test_5xx_is_retried_with_the_same_body_until_accepted(pd: FakePagerDuty, outbox: Outbox,
                                                          caplog: pytest.LogCaptureFixture):
    pd.fail_next(503, 2)
    outbox.alert(result("r1", ["MES"]))
    assert [r.status for r in pd.requests] == [503, 503, 202]
    assert len({r.raw for r in pd.requests}) == 1  # same body, same dedup_key
    [row] = outbox.store.deliveries_list()
    assert (row.status, row.attempts, row.last_error) == ("delivered", 3, None)
    lines = [r.getMessage() for r in caplog.records if r.name == "stress_runner.alerts"]
    assert any(f"delivery {row.id} to pagerduty (run r1, attempt 1) deferred: PagerDuty "
               "trigger: HTTP 503: Scripted failure, next attempt in" in line
               for line in lines), lines
    assert "Traceback" not in caplog.text


def test_429_waits_for_retry_after(pd: FakePagerDuty, outbox: Outbox) -> None:
    pd.fail_next(429, retry_after="0.3")
    outbox.alert(result("r1", ["MES"]))
    first, second = pd.requests
    assert (first.status, second.status) == (429, 202)
    assert second.at - first.at >= 0.3  # the backoff alone would be about 0.01 s
    assert first.raw == second.raw


def test_400_is_rejected_kept_as_failed_and_not_retried(pd: FakePagerDuty, outbox: Outbox,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture):
    monkeypatch.setenv("PD_ROUTING_KEY", KEY[:31])  # PagerDuty wants 32 characters
    outbox.alert(result("r1", ["MES"]))
    assert [r.status for r in pd.requests] == [400]
    [row] = outbox.store.deliveries_list()
    assert (row.status, row.attempts) == ("failed", 1)
    assert "Event object is invalid" in row.last_error and "routing_key" in row.last_error
    assert any(r.levelno == logging.ERROR and "rejected, not retried" in r.getMessage()
               and "not 32 characters" in r.getMessage() for r in caplog.records)
    assert outbox.deliver(force=True) == []  # a failed delivery is never sent again by itself
    assert len(pd.requests) == 1
    monkeypatch.setenv("PD_ROUTING_KEY", KEY)  # fixed: retried by hand
    assert outbox.worker.retry(row.id).status == "delivered"
    assert len(pd.accepted()) == 1


def test_outage_keeps_order_and_a_new_process_delivers_each_event_once(
        pd: FakePagerDuty, outbox: Outbox) -> None:
    pd.stop()
    for report in (result("r1", ["MES"]), result("r2", ["MES"]), result("r3")):
        outbox.run(report)
    left = outbox.deliver(0.3)
    assert [(r.run_id, r.status) for r in left] == [("r1", "pending"), ("r2", "pending"),
                                                     ("r3", "pending")]
    # only the head of the scenario is tried, so no later event overtakes it
    assert [r.attempts for r in left][1:] == [0, 0] and left[0].attempts >= 1
    assert "ConnectError" in (left[0].last_error or "")

    pd.start()  # back on the same port
    restarted = Outbox(outbox.store)  # a new process: the outbox is on disk
    assert restarted.deliver(5, force=True) == []
    accepted = pd.accepted()
    assert [e["event_action"] for e in accepted] == ["trigger", "trigger", "resolve"]
    assert {e["dedup_key"] for e in accepted} == {"stress_runner/flash_crash_lite/r1"}
    assert pd.alerts == {"stress_runner/flash_crash_lite/r1": "resolved"}
    assert all(r.status == "delivered" for r in outbox.store.deliveries_list())


def test_a_second_worker_does_not_send_a_claimed_delivery(pd: FakePagerDuty,
                                                          outbox: Outbox) -> None:
    outbox.run(result("r1", ["MES"]))
    [row] = outbox.store.deliveries_pending()
    assert outbox.store.delivery_claim(row.id, lease_s=60) is not None  # another worker has it
    assert outbox.worker.deliver(force=True).attempts == []
    assert pd.requests == []
    assert outbox.store.delivery_claim(row.id, lease_s=60) is None  # and nobody else gets it


# -- the routing key stays secret -------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    """``stress-runner alerts ARGV`` in this process (the outbox fixture's store and sinks)."""
    args = cli_main._parser("alerts").parse_args(["alerts", *argv])
    return args.handler(args)


def test_routing_key_never_logged_stored_or_listed(
    pd: FakePagerDuty, outbox: Outbox, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    # a 400 whose text echoes the key, a 503 likewise, and a full outage
    pd.fail_next(400, body={"status": "invalid event", "message": f"bad key {KEY}",
                            "errors": [f"routing_key {KEY} unknown"]})
    outbox.alert(result("r1", ["MES"]))
    pd.fail_next(503, 1, body={"message": f"busy for {KEY}"})
    outbox.alert(result("r2", ["MES"]))
    pd.stop()
    outbox.run(result("r3"))
    outbox.deliver(0.2)
    pd.start()

    for argv in (["list"], ["list", "--json"], ["list", "--status", "failed"], ["flush"],
                 ["test"], ["list", "--json"]):
        assert run_cli(argv) in (0, 1)
    out = capsys.readouterr()

    assert "<redacted>" in caplog.text
    for record in caplog.records:
        assert KEY not in repr(record.__dict__)
    for text in (caplog.text, out.out, out.err):
        assert KEY not in text
    assert "R0UT1NGK3Y" not in out.out + caplog.text
    if target_kind(os.environ["STRESS_DB"]) == "postgresql":  # every row of every table
        tables = outbox.store._query("SELECT table_name FROM information_schema.tables"
                                     " WHERE table_schema = current_schema()")
        for (table,) in tables:
            rows = outbox.store._query(f"SELECT row_to_json(t)::text FROM {table} AS t")
            assert KEY not in "\n".join(r[0] for r in rows), table
        return
    outbox.store.close()
    for file in outbox.store.path.parent.iterdir():  # the database, its WAL and shared memory
        assert KEY.encode() not in file.read_bytes(), file
    with sqlite3.connect(outbox.store.path) as conn:
        assert KEY not in "\n".join(conn.iterdump())


def test_no_routing_key_answers_disabled_and_warns_on_breaches_and_failures(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    box = Outbox(store)
    for report in (result("r1", ["MES"]), result("r2"), failed("f1"), result("r3", ["MNQ"])):
        box.alert(report)
    warnings = [r for r in caplog.records if r.name == "stress_runner.pagerduty"]
    assert len(warnings) == 3
    assert all(r.levelno == logging.WARNING and "PD_ROUTING_KEY" in r.getMessage()
               for r in warnings)
    assert {(r.status, r.outcome) for r in store.deliveries_list()} == {("delivered",
                                                                          "disabled")}


# -- test page and the CLI ----------------------------------------------------------------------


def test_alerts_test_triggers_and_resolves_a_test_page(pd: FakePagerDuty, outbox: Outbox,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]):
    assert run_cli(["test", "--sink", "pagerduty"]) == 0
    assert "pagerduty: test accepted (ok)" in capsys.readouterr().out
    first, second = pd.accepted()
    assert first["payload"]["summary"].startswith("[TEST]")
    assert first["payload"]["severity"] == "info"
    assert (second["event_action"], second["dedup_key"]) == ("resolve", first["dedup_key"])
    assert first["dedup_key"].startswith("stress_runner/test/")
    assert pd.alerts == {first["dedup_key"]: "resolved"}
    assert outbox.store.deliveries_list() == []  # a test is not kept in the outbox
    pd.stop()
    assert run_cli(["test"]) == 1
    assert "pagerduty: test NOT accepted (deferred)" in capsys.readouterr().out
    assert run_cli(["test", "--sink", "nope"]) == 2


def test_cli_list_flush_and_retry(pd: FakePagerDuty, outbox: Outbox,
                                  monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    pd.stop()
    outbox.run(result("20261201T150005Z-0123abcd", ["MES"]))
    outbox.deliver(0.2)
    pd.start()

    assert run_cli(["list", "--status", "pending"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:6] == ["ID", "SINK", "RUN", "SCENARIO", "STATUS", "TRIES"]
    assert "20261201T150005Z-0123abcd" in table[1]  # ids whole, never cut
    assert "pending" in table[1] and "pagerduty" in table[1] and "ConnectError" in table[1]

    assert run_cli(["flush"]) == 0
    assert "delivered 1, failed 0, still pending 0" in capsys.readouterr().out

    assert run_cli(["list", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["status"] == "delivered" and row["last_error"] is None  # cleared once delivered

    assert run_cli(["list", "--status", "failed"]) == 0
    assert capsys.readouterr().out.strip() == "no deliveries with status failed"
    assert run_cli(["retry", str(row["id"])]) == 2  # delivered: nothing to retry


# -- store ------------------------------------------------------------------------------------


def test_store_schema_is_versioned_and_a_delivery_commits_with_its_run(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "stress.db"
    with Store(path) as store:
        assert store.schema_version == len(MIGRATIONS)
        store.save_run(result("r1", ["MES"]), trigger="cli", prices=[1.0], sinks=["pagerduty"])
        with pytest.raises(RuntimeError), store.transaction():
            store.save_run(result("r2"), trigger="cli", prices=[1.0], sinks=["pagerduty"])
            raise RuntimeError("rolled back")
        assert [r.run_id for r in store.deliveries_list()] == ["r1"]
    with Store(path) as store:  # reopening migrates nothing and keeps the rows
        assert store.schema_version == len(MIGRATIONS)
        assert len(store.deliveries_pending()) == 1
        assert store._query("PRAGMA journal_mode")[0][0] == "wal"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(ConfigError, match="newer"):
        Store(path)


def test_a_page_an_older_version_left_pending_is_still_delivered(tmp_path: Path) -> None:
    """Version 0.1.0 kept PagerDuty's own outbox; migration 4 turns its pending page into a
    pending delivery of its run, with the episode (and so the dedup_key) it had."""
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as conn:
        for script in MIGRATIONS[:2]:
            conn.executescript(script)
        conn.execute("PRAGMA user_version = 2")
        data = result("old1", ["MES"]).to_dict(symbols=False)
        for key in ("status", "error", "failure", "book_source", "halted", "limit_sources",
                    "episode", "resolves"):
            data.pop(key)
        conn.execute("INSERT INTO runs VALUES (?, ?, ?, 'schedule', NULL, 1, 1, 0.46, 0.4, ?,"
                     " '[\"MES\"]', ?, ?)", ("old1", "2024-01-15T15:00:05Z", "flash_crash_lite",
                                             json.dumps(data), b"\x00" * 40, b"\x00" * 8))
        conn.execute("INSERT INTO alert_outbox (created_at, sink, dedup_key, event_action, body,"
                     " scenario, run_id) VALUES ('2024-01-15T15:00:06Z', 'pagerduty',"
                     " 'stress_runner/flash_crash_lite/old1', 'trigger', '{}',"
                     " 'flash_crash_lite', 'old1')")
    with Store(path) as store:
        [row] = store.deliveries_pending()
        assert (row.run_id, row.sink) == ("old1", "pagerduty")
        report = store.report("old1")
        assert report.status == "breached" and report.episode == "old1"


# -- the example third-party sink -------------------------------------------------------------


def test_example_webhook_sink_posts_breaches_and_failures(pd: FakePagerDuty,
                                                          monkeypatch: pytest.MonkeyPatch):
    path = ROOT / "examples" / "webhook_sink" / "stress_sink_webhook.py"
    spec = importlib.util.spec_from_file_location("stress_sink_webhook", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from stress_hookspecs import Delivery

    delivery = Delivery(id=1, attempt=1, first_attempt_at="2024-01-15T15:00:06Z")
    module.stress_alert(result("r1", ["MES"]), delivery)  # no URL: nothing
    monkeypatch.setenv("STRESS_WEBHOOK_URL", pd.url.replace("/v2/enqueue", "/hook"))
    module.stress_alert(result("r2"), delivery)  # passed: nothing
    assert pd.requests == []
    with pytest.raises(module.WebhookError, match="HTTP 404"):  # the runtime retries it
        module.stress_alert(result("r3", ["MES"]), delivery)
    [request] = pd.requests
    assert "Stress test breach" in json.loads(request.raw)["text"]
    assert "/hook" not in str(module.WebhookError("x"))  # the secret URL is never in errors
    with pytest.raises(module.WebhookError):
        module.stress_alert(failed("f1"), delivery)
    assert "Stress run failed" in json.loads(pd.requests[-1].raw)["text"]


def test_unconfirmed_kill_switch_is_its_own_critical_page(pd: FakePagerDuty,
                                                          outbox: Outbox) -> None:
    from dataclasses import replace

    outbox.alert(replace(result("run-9", ["MES"]), kill_switch_confirmed=False, halted=True))

    unconfirmed, breach = pd.accepted()
    assert unconfirmed["dedup_key"] == "stress_runner/flash_crash_lite/unconfirmed/run-9"
    assert unconfirmed["payload"]["summary"] == \
        "KILL_SWITCH UNCONFIRMED: flash_crash_lite on MES (run run-9)"
    assert unconfirmed["payload"]["severity"] == "critical"
    assert unconfirmed["payload"]["class"] == "stress_kill_switch_unconfirmed"
    assert unconfirmed["payload"]["custom_details"]["kill_switch_confirmed"] is False
    assert breach["dedup_key"] == "stress_runner/flash_crash_lite/run-9"  # the episode's own


def test_a_confirmed_kill_switch_sends_no_extra_page(pd: FakePagerDuty, outbox: Outbox) -> None:
    from dataclasses import replace

    outbox.alert(replace(result("run-10", ["MES"]), kill_switch_confirmed=True))
    assert [e["dedup_key"] for e in pd.accepted()] == ["stress_runner/flash_crash_lite/run-10"]


def test_page_links_the_run_report_when_the_public_url_is_set(
        pd: FakePagerDuty, outbox: Outbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRESS_PUBLIC_URL", "https://stress.example.com/")
    monkeypatch.setenv("PD_RUNBOOK_URL", "https://wiki/runbook")
    outbox.alert(result("run 1", ["MES"]))
    [event] = pd.accepted()
    assert event["links"] == [
        {"href": "https://stress.example.com/api/v1/stress/results/run%201/report",
         "text": "Run report"},
        {"href": "https://wiki/runbook", "text": "Runbook"}]
    outbox.alert(failed("run 2"))  # a failed run's page links its report (with the error)
    page = pd.accepted()[-1]
    assert page["payload"]["class"] == "stress_run_failed"
    assert page["links"] == [
        {"href": "https://stress.example.com/api/v1/stress/results/run%202/report",
         "text": "Run report"},
        {"href": "https://wiki/runbook", "text": "Runbook"}]
    from dataclasses import replace

    outbox.alert(replace(result("run 3", ["MES"], scenario="other"),
                         kill_switch_confirmed=False, halted=True))
    unconfirmed = next(e for e in pd.accepted() if "unconfirmed" in e["dedup_key"])
    assert unconfirmed["links"][0] == {
        "href": "https://stress.example.com/api/v1/stress/results/run%203/report",
        "text": "Run report"}


def test_a_public_url_without_a_scheme_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRESS_PUBLIC_URL", "stress.example.com")
    with pytest.raises(ConfigError, match="STRESS_PUBLIC_URL"):
        load_settings()
