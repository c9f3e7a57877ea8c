"""Kill confirmation: after KILL_SWITCH (and RESET) the runner reads the host's trading state
back through ``stress_trading_state``; an unconfirmed switch is logged, counted and paged."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

import pytest

import stress_pack_flash_crash
from helpers import book, position
from stress_hookspecs import Delivery, RiskEvent, StressResult, hookimpl
from stress_hookspecs.testing import make_failed_result
from stress_plugin.core.errors import ConfigError
from stress_plugin.default_plugins import riskagent_v2
from stress_plugin.plugins import Plugins, build_manager
from stress_plugin.runner import StressRunner
from stress_plugin.service.metrics import PrometheusMetrics
from stress_plugin.service.service import StressService
from stress_plugin.settings import load_settings
from stress_plugin.store import Store

BREACHING = book(position(quantity=6, var=3000))
WITHIN = book(position(var=3000))


class StuckHost:
    """A trading system whose bus accepts events but whose state never changes (a halt that
    did not take), or changes only after ``delay_s`` on its own thread (an asynchronous ack)."""

    def __init__(self, state: str = "ACTIVE", *, delay_s: float | None = None) -> None:
        self.state = state
        self.delay_s = delay_s
        self.events: list[RiskEvent] = []
        self.reads = 0

    @hookimpl
    def stress_bus_publish(self, event: RiskEvent) -> None:
        self.events.append(event)
        if self.delay_s is not None:
            target = {"KILL_SWITCH": "HALTED", "RESET": "ACTIVE"}[event.type]
            threading.Timer(self.delay_s, setattr, (self, "state", target)).start()

    @hookimpl
    def stress_trading_state(self) -> str | None:
        self.reads += 1
        return self.state


class Sink:
    def __init__(self) -> None:
        self.reports: list[StressResult] = []

    @hookimpl
    def stress_alert(self, result: StressResult, delivery: Delivery) -> None:
        self.reports.append(result)


def plugins_without_host(*extra: object) -> Plugins:
    pm, _ = build_manager(entry_points=False)
    plugins = Plugins(pm)
    plugins.register(riskagent_v2, "riskagent_v2")
    plugins.register(stress_pack_flash_crash, "flash_crash")
    for i, plugin in enumerate(extra):
        plugins.register(plugin, f"extra{i}")
    return plugins


def test_embedded_host_confirms_the_halt(make_runner, host):
    result = make_runner().run_once(book=BREACHING)
    assert result.kill_switch and host.trading_state == "HALTED"
    assert result.kill_switch_confirmed is True
    assert result.to_dict()["kill_switch_confirmed"] is True


def test_no_kill_switch_no_confirmation(make_runner):
    assert make_runner().run_once(book=WITHIN).kill_switch_confirmed is None


def test_a_halt_that_did_not_take_is_unconfirmed_logged_latched_and_paged(
        monkeypatch, caplog, store_url):
    monkeypatch.setenv("STRESS_KILL_CONFIRM_S", "0.3")
    host, sink = StuckHost("ACTIVE"), Sink()
    runner = StressRunner(plugins=plugins_without_host(host, sink), settings=load_settings(),
                          store=Store(store_url), deliver_in_background=False)
    started = time.monotonic()
    with caplog.at_level(logging.CRITICAL, logger="stress_runner"):
        result = runner.run_once(book=BREACHING)
    elapsed = time.monotonic() - started
    assert result.kill_switch_confirmed is False
    assert 0.3 <= elapsed < 1.0  # waited the deadline, not longer
    assert host.reads >= 3  # polled, not read once
    assert any("KILL_SWITCH UNCONFIRMED" in r.getMessage() and result.run_id in r.getMessage()
               for r in caplog.records)
    assert runner.halt() is not None and result.halted  # the latch does not wait for the host
    # stored with the run and delivered to the sinks like any field
    assert runner.store.report(result.run_id).kill_switch_confirmed is False
    assert runner.deliveries.drain(5) == []
    assert [r.kill_switch_confirmed for r in sink.reports] == [False]


def test_an_asynchronous_ack_is_waited_for(monkeypatch):
    monkeypatch.setenv("STRESS_KILL_CONFIRM_S", "5")
    host = StuckHost("ACTIVE", delay_s=0.15)
    runner = StressRunner(plugins=plugins_without_host(host), settings=load_settings())
    started = time.monotonic()
    result = runner.run_once(book=BREACHING)
    assert result.kill_switch_confirmed is True
    assert 0.15 <= time.monotonic() - started < 2.0  # returned once confirmed, not at 5 s


def test_no_host_that_can_answer_is_none_without_waiting(monkeypatch):
    monkeypatch.setenv("STRESS_KILL_CONFIRM_S", "5")
    runner = StressRunner(plugins=plugins_without_host(), settings=load_settings())
    started = time.monotonic()
    result = runner.run_once(book=BREACHING)
    assert result.kill_switch and result.kill_switch_confirmed is None
    assert time.monotonic() - started < 1.0


def test_a_raising_or_nonsense_state_is_not_a_confirmation(monkeypatch):
    monkeypatch.setenv("STRESS_KILL_CONFIRM_S", "0.1")

    class Broken:
        @hookimpl
        def stress_trading_state(self):
            return "STOPPED"

    runner = StressRunner(plugins=plugins_without_host(Broken()), settings=load_settings())
    assert runner.run_once(book=BREACHING).kill_switch_confirmed is False
    assert runner.plugins.errors["extra0"] >= 1


def test_reduce_mode_is_published_and_confirmed_by_reducing(monkeypatch, make_runner, host):
    monkeypatch.setenv("STRESS_KILL_MODE", "reduce")
    events: list[RiskEvent] = []

    class Bus:
        @hookimpl
        def stress_bus_publish(self, event):
            events.append(event)

    result = make_runner(Bus()).run_once(book=BREACHING)
    assert [e.mode for e in events] == ["reduce"]
    assert host.trading_state == "REDUCING" and result.kill_switch_confirmed is True


def test_reduce_is_not_confirmed_by_active(monkeypatch):
    monkeypatch.setenv("STRESS_KILL_MODE", "reduce")
    monkeypatch.setenv("STRESS_KILL_CONFIRM_S", "0.1")
    runner = StressRunner(plugins=plugins_without_host(StuckHost("ACTIVE")),
                          settings=load_settings())
    assert runner.run_once(book=BREACHING).kill_switch_confirmed is False


def test_reset_is_read_back_to_active(monkeypatch, make_runner, host, caplog):
    runner = make_runner()
    runner.run_once(book=BREACHING)
    cleared = runner.reset("tester", "checked")
    assert host.trading_state == "ACTIVE" and cleared["reset_confirmed"] is True

    monkeypatch.setenv("STRESS_KILL_CONFIRM_S", "0.1")
    stuck = StuckHost("ACTIVE")
    runner = StressRunner(plugins=plugins_without_host(stuck), settings=load_settings())
    runner.run_once(book=BREACHING)
    stuck.state = "HALTED"  # now the host halted, and a RESET will not take
    with caplog.at_level(logging.CRITICAL, logger="stress_runner"):
        cleared = runner.reset("tester")
    assert cleared["reset_confirmed"] is False
    assert [e.type for e in stuck.events] == ["KILL_SWITCH", "RESET"]
    assert any("RESET UNCONFIRMED" in r.getMessage() for r in caplog.records)


def test_the_host_clock_timestamps_the_run():
    class Clock:
        def __init__(self, answer):
            self.answer = answer

        @hookimpl
        def stress_clock(self):
            return self.answer

    simulated = datetime(2024, 1, 15, 15, 0, 5, tzinfo=UTC)
    runner = StressRunner(plugins=plugins_without_host(Clock(simulated)),
                          settings=load_settings())
    result = runner.run_once(book=WITHIN)
    assert result.timestamp == "2024-01-15T15:00:05Z"
    assert result.run_id.startswith("20240115T150005Z-")

    nanos = int(simulated.timestamp()) * 10**9 + 3600 * 10**9
    runner = StressRunner(plugins=plugins_without_host(Clock(nanos)), settings=load_settings())
    assert runner.run_once(book=WITHIN).timestamp == "2024-01-15T16:00:05Z"

    naive = StressRunner(plugins=plugins_without_host(Clock(datetime(2024, 1, 15))),
                         settings=load_settings())
    result = naive.run_once(book=WITHIN)  # a naive datetime is refused: the wall clock
    assert result.timestamp[:4] == str(datetime.now(UTC).year)
    assert naive.plugins.errors["extra0"] == 1


def test_unconfirmed_is_counted():
    metrics = PrometheusMetrics()
    base = make_failed_result(run_id="r", error="x", kill_switch=True)
    metrics.observe_run(base, "manual", 0.0)
    from dataclasses import replace

    metrics.observe_run(replace(base, kill_switch_confirmed=False), "manual", 0.0)
    metrics.observe_run(replace(base, kill_switch_confirmed=True), "manual", 0.0)
    text = metrics.render().decode()
    assert "stress_kill_switch_unconfirmed_total 1.0" in text


def test_kill_mode_is_service_config(make_plugins, monkeypatch, tmp_path):
    monkeypatch.setenv("STRESS_KILL_MODE", "reduce")
    service = StressService(load_settings(), plugins=make_plugins(),
                            store=Store(tmp_path / "svc.db"))
    assert service.config.kill_mode == "reduce"
    assert service.runner.settings.stress_kill_mode == "reduce"
    monkeypatch.delenv("STRESS_KILL_MODE")
    service = StressService(load_settings(), plugins=make_plugins(),
                            store=Store(tmp_path / "svc2.db"))
    service.update_config({"kill_mode": "halt"}, actor="t")
    assert service.runner.settings.stress_kill_mode == "halt"
    with pytest.raises(ConfigError, match="kill_mode"):
        service.update_config({"kill_mode": "panic"}, actor="t")


def test_one_kill_switch_for_many_scenarios_is_confirmed_once_for_all(monkeypatch):
    from stress_plugin.core.scenario import StressScenario

    monkeypatch.setenv("STRESS_KILL_CONFIRM_S", "0.2")
    host = StuckHost("ACTIVE")
    runner = StressRunner(plugins=plugins_without_host(host), settings=load_settings())
    deep = StressScenario({"scenario_name": "deep", "price_shock_pct": -0.10, "spread_mult": 2,
                           "duration_sec": 60, "recovery_type": "linear"}, origin="test")
    started = time.monotonic()
    results = runner.run_many(scenarios=["flash_crash_lite", deep], book=BREACHING)
    assert time.monotonic() - started < 0.2 + 0.5  # one wait for the one event, not two
    assert [e.type for e in host.events] == ["KILL_SWITCH"]
    assert [r.kill_switch_confirmed for r in results] == [False, False]


def test_one_unconfirmed_event_for_many_scenarios_counts_once():
    from dataclasses import replace

    metrics = PrometheusMetrics()
    base = make_failed_result(run_id="r", scenario="a", error="x", kill_switch=True,
                              kill_switch_confirmed=False)
    metrics.observe_runs([base, replace(base, run_id="s", scenario="b")], "schedule", 0.0)
    text = metrics.render().decode()
    assert "stress_kill_switch_unconfirmed_total 1.0" in text
    assert "stress_kill_switch_total 1.0" in text
