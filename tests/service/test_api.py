"""The REST API through httpx against the app (ASGI, in process), on a real SQLite file."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import yaml

from helpers import TOKEN, Api, book, position
from stress_hookspecs import hookimpl

pytestmark = pytest.mark.stores


def test_status_reports_real_state(api: Api):
    status = api("GET", "/api/v1/stress/status").json()
    assert status["enabled"] is True and status["scheduler_running"] is False
    assert status["total_runs"] == 0 and status["last_run"] is None
    assert status["scenarios"] == ["flash_crash_lite"] and status["halted"] is False
    api("POST", "/api/v1/stress/run")
    status = api("GET", "/api/v1/stress/status").json()
    assert status["total_runs"] == 1 and status["last_run"]["trigger"] == "manual"


def test_manual_run_returns_and_keeps_the_result(api: Api):
    result = api("POST", "/api/v1/stress/run").json()
    assert result["symbols"]["MES"]["worst_pnl"] == pytest.approx(-4509.375)
    results = api("GET", "/api/v1/stress/results", params={"hours": 24}).json()
    assert results["hours"] == 24
    assert [r["run_id"] for r in results["results"]] == [result["run_id"]]
    assert results["results"][0]["trigger"] == "manual"


def test_run_with_scenario_and_symbols(api: Api):
    result = api("POST", "/api/v1/stress/run",
                 json={"scenario": "flash_crash_lite", "symbols": ["MNQ"]}).json()
    assert list(result["symbols"]) == ["MNQ"]
    missing = api("POST", "/api/v1/stress/run", json={"scenario": "custom_scenario"})
    assert missing.status_code == 404 and "custom_scenario" in missing.text
    bad = api("POST", "/api/v1/stress/run", json={"symbols": ["NOPE"]})
    assert bad.status_code == 422 and "NOPE" in bad.text
    stray = api("POST", "/api/v1/stress/run", json={"scenarioo": "x"})
    assert stray.status_code == 422 and "scenarioo" in stray.text


@pytest.mark.parametrize("hours", ["0", "-1", "abc"])
def test_results_hours_must_be_positive(api: Api, hours):
    response = api("GET", "/api/v1/stress/results", params={"hours": hours})
    assert response.status_code == 422 and "hours" in response.text


def test_config_update_is_validated_atomic_persisted_and_audited(make_service, book_file):
    api = Api(make_service(book_path=book_file))
    new = api("PUT", "/api/v1/stress/config",
              json={"interval_minutes": 15, "max_symbols": 1}).json()
    assert new["interval_minutes"] == 15 and new["max_symbols"] == 1
    assert new["kill_mode"] == "halt"
    assert api("POST", "/api/v1/stress/run").json()["skipped_symbols"] == ["MNQ"]
    for patch, field in [({"interval_minutes": 7}, "interval_minutes"),
                         ({"offset_seconds": 900}, "offset_seconds"),
                         ({"max_runtime_ms": 0}, "max_runtime_ms"),
                         ({"scenarios": ["nope"]}, "scenarios"),
                         ({"interval_minutes": 30, "enabled": "yes"}, "enabled"),
                         ({"kill_mode": "panic"}, "kill_mode"),
                         ({"colour": "red"}, "colour")]:
        response = api("PUT", "/api/v1/stress/config", json=patch)
        assert response.status_code == 422 and field in response.text, patch
    assert api("GET", "/api/v1/stress/config").json()["interval_minutes"] == 15  # unchanged
    # a new service on the same file starts from the stored config
    again = Api(make_service(book_path=book_file))
    assert again("GET", "/api/v1/stress/config").json()["interval_minutes"] == 15
    history = again.app.state.service.store.config_history()
    assert history[0]["change"] == {"interval_minutes": 15, "max_symbols": 1}
    assert history[0]["actor"] == "loopback@127.0.0.1"


def test_kill_mode_is_config_and_reaches_the_bus(make_service, tmp_path: Path):
    breaching = tmp_path / "breach.yaml"
    breaching.write_text(yaml.safe_dump(book(position(quantity=6, var=3000))))
    api = Api(make_service(book_path=breaching))
    assert api("PUT", "/api/v1/stress/config", json={"kill_mode": "reduce"}).json()[
        "kill_mode"] == "reduce"
    run = api("POST", "/api/v1/stress/run").json()
    host = api.app.state.service.plugins.pm.get_plugin("embedded_host")
    assert host.trading_state == "REDUCING" and run["kill_switch_confirmed"] is True


def test_live_limits_drive_runs_and_keep_history(api: Api):
    assert api("GET", "/api/v1/risk/limits").json()["max_drawdown_pct"] == 0.05
    assert api("POST", "/api/v1/stress/run").json()["breach_count"] == 0
    limits = api("PUT", "/api/v1/risk/limits", json={"max_drawdown_pct": 0.02}).json()
    assert limits == {"max_drawdown_pct": 0.02, "max_var_multiplier": 2.0,
                      "max_position_delta": 0.10, "live": {"max_drawdown_pct": 0.02},
                      "sources": {"max_drawdown_pct": "live", "max_var_multiplier": "scenario",
                                  "max_position_delta": "scenario"}}
    result = api("POST", "/api/v1/stress/run").json()  # MES loses 2.25% of equity
    assert "MES" in result["breached_symbols"] and result["limits"]["max_drawdown_pct"] == 0.02
    history = api("GET", "/api/v1/risk/limits/history").json()["history"]
    assert history[0]["limits"] == {"max_drawdown_pct": 0.02}
    for bad in ({"max_drawdown_pct": 0}, {"max_var_multiplier": -2}, {"max_position_delta": "x"},
                {"max_drawdown_pct": 2}, {"drawdown": 0.1}):
        response = api("PUT", "/api/v1/risk/limits", json=bad)
        assert response.status_code == 422, bad
    assert len(api("GET", "/api/v1/risk/limits/history").json()["history"]) == 1


def test_halt_persists_until_an_audited_reset(make_service, tmp_path: Path):
    breaching = tmp_path / "breach.yaml"
    breaching.write_text(yaml.safe_dump(book(position(quantity=6, var=3000))))
    api = Api(make_service(book_path=breaching))
    run = api("POST", "/api/v1/stress/run").json()
    assert run["kill_switch_confirmed"] is True  # the embedded host showed HALTED
    status = api("GET", "/api/v1/risk/status").json()
    assert status["halted"] is True and status["run_id"] == run["run_id"]
    assert status["symbols"] == ["MES", "PORTFOLIO"] and "max_drawdown_pct" in status["reason"]
    # runs go on while halted, and the first halt's reason is kept
    second = api("POST", "/api/v1/stress/run").json()
    assert api("GET", "/api/v1/risk/status").json()["run_id"] == run["run_id"] != second["run_id"]
    restarted = Api(make_service(book_path=breaching))
    assert restarted("GET", "/api/v1/risk/status").json()["halted"] is True
    reset = restarted("POST", "/api/v1/risk/reset_circuit").json()
    assert reset["cleared"]["run_id"] == run["run_id"]
    assert reset["cleared"]["reset_confirmed"] is True  # read back ACTIVE
    assert restarted("GET", "/api/v1/risk/status").json()["halted"] is False
    audit = restarted.app.state.service.store.audit_log()
    assert [a["action"] for a in audit[:2]] == ["reset_circuit", "halt"]
    assert audit[0]["actor"] == "loopback@127.0.0.1"


def test_token_guards_every_mutating_endpoint(make_service, book_file, monkeypatch):
    monkeypatch.setenv("STRESS_API_TOKEN", TOKEN)
    service = make_service(book_path=book_file)
    anonymous = Api(service)
    wrong = Api(service, headers={"Authorization": "Bearer nope"})
    right = Api(service, client="10.0.0.7", headers={"Authorization": f"Bearer {TOKEN}"})
    mutating = [("POST", "/api/v1/stress/run", None), ("PUT", "/api/v1/stress/config", {}),
                ("POST", "/api/v1/risk/reset_circuit", None),
                ("PUT", "/api/v1/risk/limits", {"max_position_delta": 0.2}),
                ("DELETE", "/api/v1/risk/limits", None)]
    for method, url, body in mutating:
        assert anonymous(method, url, json=body).status_code == 401, url
        assert wrong(method, url, json=body).status_code == 401, url
        response = right(method, url, json=body)
        assert response.status_code == 200, (url, response.text)
        assert TOKEN not in response.text
    assert anonymous("GET", "/api/v1/stress/status").status_code == 200
    assert TOKEN not in anonymous("GET", "/api/v1/stress/status").text


def test_without_a_token_only_loopback_may_change_things(make_service, book_file):
    remote = Api(make_service(book_path=book_file), client="10.0.0.7")
    assert remote("POST", "/api/v1/stress/run").status_code == 403
    assert remote("PUT", "/api/v1/risk/limits", json={}).status_code == 403
    assert remote("GET", "/api/v1/stress/results").status_code == 200


def test_volatility_from_recorded_prices(api: Api, book_file: Path):
    api("POST", "/api/v1/stress/run")
    moved = book(position(price=6060.0, var=3000), position("MNQ", 2, 21000, 0.5, 2),
                 equity=200_000)
    book_file.write_text(yaml.safe_dump(moved))  # the book file is re-read at every run
    api("POST", "/api/v1/stress/run")
    vol = api("GET", "/api/v1/market/volatility", params={"hours": 24}).json()
    mes = vol["symbols"]["MES"]
    assert mes["samples"] == 2 and mes["last"] == 6060.0
    assert (mes["high"], mes["low"]) == (6060.0, 6000.0)
    assert mes["realized_volatility"] == pytest.approx(abs(__import__("math").log(1.01)))
    assert vol["symbols"]["MNQ"]["realized_volatility"] == 0.0
    assert api("GET", "/api/v1/market/volatility", params={"hours": 0}).status_code == 422


def test_metrics_expose_every_documented_series(api: Api):
    api("POST", "/api/v1/stress/run")
    text = api("GET", "/metrics").text
    for name in ("stress_runs_total", "stress_breaches_total", "stress_runtime_seconds_bucket",
                 "stress_symbols_tested", "stress_runner_up", "stress_scheduler_next_run",
                 "stress_last_run_timestamp_seconds", "stress_headroom_ratio",
                 "stress_kill_switch_total", "stress_alerts_total", "stress_halted",
                 "stress_symbols_skipped", "stress_alert_outbox_pending",
                 "stress_scheduler_missed_runs_total"):
        assert name in text, name
    assert 'stress_runs_total{scenario="flash_crash_lite",trigger="manual"} 1.0' in text
    assert "stress_symbols_tested 2.0" in text


def test_plugin_errors_are_counted_in_metrics(make_service, book_file):
    class Broken:
        @hookimpl
        def stress_alert(self, result):
            raise RuntimeError("down")

    api = Api(make_service(Broken(), book_path=book_file))
    api("POST", "/api/v1/stress/run")
    api.app.state.service.runner.deliveries.drain(1.0)  # the worker's first attempt
    text = api("GET", "/metrics").text
    assert 'stress_plugin_errors_total{plugin="extra0"} 1.0' in text
    assert 'stress_alerts_total{outcome="error",sink="extra0"} 1.0' in text


def test_a_slow_run_does_not_block_the_event_loop(make_service, book_file):
    class SlowBook:
        @hookimpl(tryfirst=True)
        def stress_book(self):
            time.sleep(0.6)
            return book(position())

    api = Api(make_service(SlowBook()))

    async def both() -> tuple[float, float]:
        started = time.monotonic()
        run = asyncio.create_task(api.request("POST", "/api/v1/stress/run"))
        await asyncio.sleep(0.05)
        status = await api.request("GET", "/api/v1/stress/status")
        status_done = time.monotonic() - started
        assert status.status_code == 200
        assert (await run).status_code == 200
        return status_done, time.monotonic() - started

    status_done, run_done = asyncio.run(both())
    assert status_done < run_done  # status answered while the run was still going


def test_openapi_is_served(api: Api):
    spec = api("GET", "/openapi.json").json()
    for path in ("/api/v1/stress/status", "/api/v1/stress/run", "/api/v1/stress/results",
                 "/api/v1/stress/config", "/api/v1/risk/reset_circuit", "/api/v1/risk/status",
                 "/api/v1/risk/limits", "/api/v1/risk/limits/history",
                 "/api/v1/market/volatility"):
        assert path in spec["paths"]
    assert api("GET", "/docs").status_code == 200


def test_an_explicit_environment_variable_beats_the_stored_config(make_service, book_file,
                                                                  monkeypatch, caplog):
    Api(make_service(book_path=book_file))("PUT", "/api/v1/stress/config",
                                           json={"max_symbols": 1, "enabled": True})
    monkeypatch.setenv("STRESS_ENABLED", "false")  # the runbook's emergency switch
    service = make_service(book_path=book_file)
    assert service.config.enabled is False
    assert service.config.max_symbols == 1  # not set in the environment: the stored value
    assert "STRESS_ENABLED=False from the environment overrides" in caplog.text


def test_a_scheduled_slot_runs_once_per_scenario(make_service, book_file):
    from datetime import UTC, datetime

    service = make_service(book_path=book_file)
    slot = datetime(2026, 11, 25, 15, 0, 5, tzinfo=UTC)
    service.scheduled_run(slot)
    service.scheduled_run(slot)  # a second worker, or a re-fire, for the same slot
    runs = service.store.runs_since("2000-01-01T00:00:00Z")
    assert [(r["trigger"], r["scheduled_for"]) for r in runs] == [
        ("schedule", "2026-11-25T15:00:05Z")]
    assert service.duplicate_runs == 1


def test_paging_off_is_counted_as_disabled_not_ok(make_service, book_file):
    from stress_plugin.default_plugins import pagerduty

    api = Api(make_service(pagerduty, book_path=book_file))
    text = api("GET", "/metrics").text
    assert 'stress_runs_total{scenario="flash_crash_lite",trigger="schedule"} 0.0' in text
    assert 'stress_alerts_total{outcome="error",sink="extra0"} 0.0' in text
    run = api("POST", "/api/v1/stress/run").json()
    [delivery] = run["deliveries"]  # pending when the run returned (or just sent by the worker)
    assert delivery["sink"] == "extra0" and delivery["status"] in ("pending", "delivered")
    assert api.app.state.service.runner.deliveries.drain(5.0) == []
    text = api("GET", "/metrics").text
    assert 'stress_alerts_total{outcome="disabled",sink="extra0"} 1.0' in text
    assert 'stress_alerts_total{outcome="ok",sink="extra0"} 0.0' in text
    assert 'stress_alert_outbox_pending{sink="extra0"} 0.0' in text


def test_metrics_after_a_restart_show_the_last_stored_run(make_service, book_file):
    from datetime import datetime

    from prometheus_client.parser import text_string_to_metric_families

    first = Api(make_service(book_path=book_file))
    result = first("POST", "/api/v1/stress/run").json()
    restarted = Api(make_service(book_path=book_file))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(restarted("GET", "/metrics").text)
               for s in family.samples}
    assert samples[("stress_last_run_timestamp_seconds", ())] == datetime.fromisoformat(
        result["timestamp"]).timestamp()
    assert samples[("stress_headroom_ratio", (("scenario", "flash_crash_lite"),))] == result[
        "headroom"]
    assert samples[("stress_symbols_tested", ())] == 2


class TwoMoreScenarios:
    """A pack offering two scenarios as mappings: one that breaches this book, one that not."""

    @hookimpl
    def stress_scenarios(self) -> list[dict]:
        return [{"scenario_name": "mnq_gap", "price_shock_pct": 0,
                 "symbol_shocks": {"MNQ*": -0.30}, "ramp_sec": 10, "duration_sec": 60},
                {"scenario_name": "calm", "price_shock_pct": -0.001}]


class CountingBus:
    def __init__(self) -> None:
        self.events: list = []

    @hookimpl
    def stress_bus_publish(self, event) -> None:
        self.events.append(event)


def test_scheduled_scenarios_run_on_one_book_with_one_kill_switch_shown_per_scenario(
        make_service, book_file):
    from datetime import UTC, datetime

    bus = CountingBus()
    service = make_service(TwoMoreScenarios(), bus, book_path=book_file)
    service.update_config({"scenarios": ["flash_crash_lite", "mnq_gap", "calm"]}, "test")
    slot = datetime(2026, 11, 25, 16, 0, 5, tzinfo=UTC)
    service.scheduled_run(slot)
    runs = service.store.runs_since("2000-01-01T00:00:00Z")
    assert sorted((r["scenario"], r["scheduled_for"]) for r in runs) == [
        ("calm", "2026-11-25T16:00:05Z"), ("flash_crash_lite", "2026-11-25T16:00:05Z"),
        ("mnq_gap", "2026-11-25T16:00:05Z")]
    # 2 MNQ x $2 x 6,300 = 25,200 > 5% of 200,000: only mnq_gap breaches; one event
    assert [e.scenario for e in bus.events if e.type == "KILL_SWITCH"] == ["mnq_gap"]
    # episodes are per scenario: only mnq_gap's run opens one
    assert {r["scenario"]: r["episode"] == r["run_id"] for r in runs} == {
        "flash_crash_lite": False, "mnq_gap": True, "calm": False}

    status = Api(service)("GET", "/api/v1/stress/status").json()
    rows = status["scenario_results"]
    assert set(rows) == {"flash_crash_lite", "mnq_gap", "calm"}
    # the book binds first: it adds MES's half spread to MNQ's loss
    assert rows["mnq_gap"]["status"] == "breached"
    assert rows["mnq_gap"]["binding_symbol"] == "PORTFOLIO"
    # the book: 25,200 and both half spreads, MNQ 0.5 x 0.5 x 2 x 2 and MES 0.5 x 0.25 x 5 x 5
    assert rows["mnq_gap"]["worst_pnl"] == pytest.approx(-25200 - 1.0 - 3.125)
    assert rows["calm"]["status"] == "passed" and rows["calm"]["breach_count"] == 0
    text = Api(service)("GET", "/metrics").text
    for name in ("flash_crash_lite", "mnq_gap", "calm"):
        assert f'stress_runs_total{{scenario="{name}",trigger="schedule"}} 1.0' in text
    assert 'stress_breaches_total{scenario="mnq_gap"} 2.0' in text  # MNQ and PORTFOLIO
    assert "stress_kill_switch_total 1.0" in text

    service.scheduled_run(slot)  # the same slot again: every scenario already done
    assert len(service.store.runs_since("2000-01-01T00:00:00Z")) == 3
    assert service.duplicate_runs == 3


def test_two_breaching_scheduled_scenarios_count_one_kill_switch(make_service, book_file):
    from datetime import UTC, datetime

    bus = CountingBus()
    service = make_service(TwoMoreScenarios(), bus, book_path=book_file)
    book_file.write_text(yaml.safe_dump(book(position(quantity=6, var=3000),
                                             position("MNQ", 2, 21000, 0.5, 2))))
    service.update_config({"scenarios": ["flash_crash_lite", "mnq_gap"]}, "test")
    service.scheduled_run(datetime(2026, 11, 25, 17, 0, 5, tzinfo=UTC))
    events = [e for e in bus.events if e.type == "KILL_SWITCH"]
    assert [e.scenario for e in events] == ["flash_crash_lite,mnq_gap"]
    assert "stress_kill_switch_total 1.0" in Api(service)("GET", "/metrics").text
