"""StressRunner.run_once: numbers, the KILL_SWITCH path, plugin isolation, cap and limits."""

from __future__ import annotations

import logging
import re
import threading
import time

import pytest

from helpers import book, position
from stress_hookspecs import Breach, Limits, RiskEvent, StressResult, hookimpl
from stress_plugin.core.errors import BookError, PluginError, ScenarioError

WORKED = book(position(var=3000))  # docs/model.md: E 100,000, 5 MES long
BREACHING = book(position(quantity=6, var=3000))  # the same with 6 contracts


class Recorder:
    """A host bus and an alert sink that record the order of calls."""

    def __init__(self, calls: list) -> None:
        self.calls = calls

    @hookimpl
    def stress_bus_publish(self, event: RiskEvent) -> None:
        self.calls.append(("bus", event))

    @hookimpl
    def stress_alert(self, result: StressResult) -> None:
        self.calls.append(("alert", result))


def test_worked_example_result_shape(make_runner):
    result = make_runner().run_once(book=WORKED)
    data = result.to_dict()
    assert set(data) >= {"run_id", "scenario", "timestamp", "symbols_tested", "breach_count",
                         "breached_symbols", "breaches", "kill_switch", "runtime_ms",
                         "portfolio", "symbols", "skipped_symbols", "headroom"}
    assert data["scenario"] == "flash_crash_lite"
    assert data["timestamp"].endswith("Z") and data["timestamp"][10] == "T"
    assert data["symbols_tested"] == 1 and data["breach_count"] == 0
    assert data["kill_switch"] is False
    mes = data["symbols"]["MES"]
    assert mes["worst_pnl"] == pytest.approx(-4509.375)
    assert mes["drawdown_pct"] == pytest.approx(0.04509375)
    assert mes["var_ratio"] == pytest.approx(1.503125)
    assert mes["delta_change"] == 0
    assert mes["headroom"] == pytest.approx(1.109027777, rel=1e-6)
    assert data["portfolio"]["var_ratio"] is None  # no book VaR given
    assert data["headroom"] == pytest.approx(mes["headroom"])


def test_breach_publishes_kill_switch_before_any_alert(make_runner, host, caplog):
    calls: list = []
    runner = make_runner(Recorder(calls))
    with caplog.at_level(logging.INFO, logger="stress_runner"):
        result = runner.run_once(book=BREACHING)
        assert [kind for kind, _ in calls][:1] == ["bus"]  # before the run returned
        assert runner.deliveries.drain(5) == []
    assert result.kill_switch and result.breach_count == 2  # MES and PORTFOLIO
    assert result.breached_symbols == ["MES", "PORTFOLIO"]
    assert Breach("MES", "max_drawdown_pct", pytest.approx(0.0541125), 0.05) in result.breaches
    assert [kind for kind, _ in calls] == ["bus", "alert"]
    event = calls[0][1]
    assert (event.type, event.scenario, event.symbols, event.run_id) == (
        "KILL_SWITCH", "flash_crash_lite", ("MES", "PORTFOLIO"), result.run_id)
    assert runner.halt()["run_id"] == result.run_id and result.halted
    assert host.trading_state == "HALTED"
    assert "KILL_SWITCH triggered" in caplog.text and "MES,PORTFOLIO" in caplog.text
    assert "symbols_tested=1" in caplog.text


def test_a_run_says_whether_a_halt_is_in_force(make_runner, host):
    """``halted`` is read with the live limits when the run starts; a trip latches it."""
    runner = make_runner()
    assert not runner.run_once(book=WORKED).halted
    assert runner.run_once(book=BREACHING).halted  # tripped: latched by this run
    passing = runner.run_once(book=WORKED)
    assert passing.status == "passed" and passing.halted  # an earlier run's halt is in force
    runner.reset("tester", "checked")
    assert not runner.run_once(book=WORKED).halted


def test_passing_run_still_reports_to_sinks_without_kill_switch(make_runner, host):
    calls: list = []
    runner = make_runner(Recorder(calls))
    runner.run_once(book=WORKED)
    assert runner.deliveries.drain(5) == []
    assert [kind for kind, _ in calls] == ["alert"]
    assert calls[0][1].breach_count == 0 and calls[0][1].status == "passed"
    assert runner.halt() is None and host.trading_state == "ACTIVE"


class Raising:
    @hookimpl
    def stress_bus_publish(self, event):
        raise RuntimeError("bus down")

    @hookimpl
    def stress_alert(self, result):
        raise RuntimeError("sink down")


def test_a_raising_plugin_stops_neither_the_kill_switch_nor_other_sinks(make_runner, host,
                                                                        caplog):
    calls: list = []
    runner = make_runner(Raising(), Recorder(calls))
    result = runner.run_once(book=BREACHING)
    [left] = runner.deliveries.drain(0.5)  # the raising sink's delivery waits for its retry
    assert left.sink == "extra0" and left.last_error == "RuntimeError: sink down"
    assert result.kill_switch
    assert [kind for kind, _ in calls] == ["bus", "alert"]
    assert runner.halt() is not None
    assert runner.plugins.errors["extra0"] == 2
    assert "bus down" in caplog.text and "sink down" in caplog.text


def test_a_hung_sink_is_abandoned_after_its_timeout(make_runner):
    release = threading.Event()

    class Hung:
        @hookimpl
        def stress_alert(self, result):
            release.wait(10)

    calls: list = []
    runner = make_runner(Hung(), Recorder(calls))
    runner.deliveries.timeout_s = 0.2
    started = time.monotonic()
    result = runner.run_once(book=BREACHING)
    assert time.monotonic() - started < 0.5 and result.halted  # nothing waits for a sink
    [left] = runner.deliveries.drain(1.0)
    elapsed = time.monotonic() - started
    release.set()
    assert [kind for kind, _ in calls] == ["bus", "alert"]  # the other sink was not held up
    assert left.sink == "extra0" and left.last_error.startswith("timed out after 0.2 s")
    assert runner.plugins.errors["extra0"] == 1
    assert elapsed < 3  # bounded by the timeout, not by the hung sink


def test_bus_failure_everywhere_is_loud(make_runner, caplog):
    runner = make_runner(Raising())
    runner.plugins.pm.unregister(name="embedded_host")
    runner.run_once(book=BREACHING)
    assert "reached no bus" in caplog.text


def test_host_book_wins_over_the_embedded_demo_book(make_runner):
    class Host:
        @hookimpl
        def stress_book(self):
            return WORKED

    assert make_runner(Host()).run_once().symbols_tested == 1
    assert make_runner().run_once().symbols_tested == 5  # the demo book


def test_bad_host_book_fails_the_run_naming_the_plugin(make_runner):
    class Host:
        @hookimpl
        def stress_book(self):
            return book(position(price=-1))

    result = make_runner(host=Host()).run_once()
    assert result.status == "failed" and result.failure == "book_invalid"
    assert re.match(r"plugin host \(stress_book\): positions\[0\] \(MES\)\.price", result.error)
    assert result.portfolio is None and result.headroom is None and not result.breaches


def test_names_remembered_from_a_good_book_never_let_a_bad_one_pass(make_runner):
    """The runner keeps the last book's valid names (a list comparison instead of the name
    rules): the same names pass again, and a book with one name changed is checked anew."""
    books = iter([book(position("MES"), position("ES")), book(position("MES"), position("ES")),
                  book(position("MES"), position("MES")), book(position("MES"), position("ES"))])

    class Host:
        @hookimpl
        def stress_book(self):
            return next(books)

    runner = make_runner(host=Host())
    assert [runner.run_once().symbols_tested for _ in range(2)] == [2, 2]
    failed = runner.run_once()
    assert failed.failure == "book_invalid" and "duplicate symbol" in failed.error
    assert runner.run_once().symbols_tested == 2


def test_live_limits_from_a_plugin_override_the_scenario(make_runner):
    class RiskAgent:
        @hookimpl
        def stress_limits(self):
            return {"max_drawdown_pct": 0.04}

    result = make_runner(RiskAgent()).run_once(book=WORKED)
    assert result.limits == Limits(0.04, 2.0, 0.10)
    assert result.breached_symbols == ["MES", "PORTFOLIO"]


def test_bad_live_limits_are_named(make_runner):
    class RiskAgent:
        @hookimpl
        def stress_limits(self):
            return {"max_drawdown": 0.04}

    result = make_runner(riskagent=RiskAgent()).run_once(book=WORKED)
    assert result.status == "failed" and result.failure == "limits_invalid"
    assert result.error.startswith("plugin riskagent (stress_limits): max_drawdown: unknown")


def test_implementations_may_take_fewer_arguments(make_runner):
    class Strict:
        @hookimpl
        def stress_evaluate(self, result):
            return [Breach("MES", "house_rule", 1.0, 0.0)]

    result = make_runner(Strict()).run_once(book=WORKED)
    assert result.breaches == (Breach("MES", "house_rule", 1.0, 0.0),)


def test_identical_breaches_from_two_evaluators_count_once(make_runner):
    from stress_plugin.default_plugins import riskagent_v2

    class Twin:
        stress_evaluate = staticmethod(riskagent_v2.stress_evaluate)

    result = make_runner(Twin()).run_once(book=BREACHING)
    assert len(result.breaches) == 2


def test_symbol_cap_keeps_the_largest_gross_notional(make_runner, monkeypatch, caplog):
    monkeypatch.setenv("STRESS_MAX_SYMBOLS", "2")
    data = book(position("SMALL", 1, 100, 0, 1), position("BIG", 1, 6000, 0, 5),
                position("SHORT", -10, 2400, 0, 5), position("MID", 1, 21000, 0, 1))
    result = make_runner().run_once(book=data)
    assert list(result.symbols) == ["BIG", "SHORT"]  # 30,000 and 120,000; book order kept
    assert result.skipped_symbols == ("MID", "SMALL")
    assert "STRESS_MAX_SYMBOLS=2" in caplog.text


def test_symbols_restrict_the_book(make_runner):
    result = make_runner().run_once(symbols=["MNQ", "MES"])
    assert list(result.symbols) == ["MNQ", "MES"]
    with pytest.raises(BookError, match=r"symbols: not in the book .*'NOPE'"):
        make_runner().run_once(symbols=["NOPE"])


def test_runtime_budget_is_logged_not_fatal(make_runner, monkeypatch, caplog):
    monkeypatch.setenv("STRESS_MAX_RUNTIME_MS", "0.000001")
    result = make_runner().run_once(book=WORKED)
    assert result.runtime_ms > 0
    assert "exceeded max runtime" in caplog.text


def test_scenarios_by_name_path_and_unknown(make_runner, tmp_path):
    runner = make_runner()
    assert list(runner.scenarios()) == ["flash_crash_lite"]
    custom = tmp_path / "deep.yaml"
    custom.write_text("scenario_name: deep\nprice_shock_pct: -0.10\nspread_mult: 3\n")
    result = runner.run_once(book=WORKED, scenario=str(custom))
    assert result.scenario == "deep" and result.breach_count == 2
    with pytest.raises(ScenarioError, match=r"unknown scenario.*flash_crash_lite"):
        runner.run_once(scenario="nope")


def test_scenario_mappings_from_plugins_and_duplicates(make_runner):
    class Pack:
        @hookimpl
        def stress_scenarios(self):
            return [{"scenario_name": "gap_up", "price_shock_pct": 0.05}]

    runner = make_runner(Pack())
    assert runner.run_once(book=WORKED, scenario="gap_up").scenario == "gap_up"

    class Clash:
        @hookimpl
        def stress_scenarios(self):
            return [{"scenario_name": "flash_crash_lite", "price_shock_pct": -0.5}]

    with pytest.raises(ScenarioError, match="also defined by"):
        make_runner(Clash()).scenarios()


def test_hook_wrappers_and_misspelled_hooks_fail_at_registration(make_runner):
    class Typo:
        @hookimpl
        def stress_alerts(self, report):
            pass

    with pytest.raises(PluginError, match=r"plugin extra0: .*stress_alerts"):
        make_runner(Typo())

    class Wrapper:
        @hookimpl(wrapper=True)
        def stress_alert(self, result):
            return (yield)

    with pytest.raises(PluginError, match="wrappers are not supported"):
        make_runner(Wrapper())


# -- many scenarios on one book snapshot --------------------------------------------------------

MILD = {"scenario_name": "mild", "price_shock_pct": -0.01}  # 5 MES: loss 1,509.375
DEEP = {"scenario_name": "deep", "price_shock_pct": -0.06, "spread_mult": 3}
ONLY_6B = {"scenario_name": "only_6b", "price_shock_pct": 0, "symbol_shocks": {"6B*": -0.09}}


class CountingBook:
    """A host book that counts how often it is asked (run_many must ask once)."""

    def __init__(self, data: dict) -> None:
        self.data, self.calls = data, 0

    @hookimpl(tryfirst=True)
    def stress_book(self) -> dict:
        self.calls += 1
        return self.data


def test_run_many_takes_the_book_once_and_kills_once_naming_every_breaching_scenario(
        make_runner, host, caplog):
    from stress_plugin.core.scenario import StressScenario

    calls: list = []
    counting = CountingBook(book(position(quantity=5, var=3000), position(
        symbol="6BZ6", quantity=2, price=1.27, spread=0.0001, multiplier=62500),
        equity=200_000))
    runner = make_runner(Recorder(calls), counting)
    scenarios = [StressScenario(s) for s in (MILD, DEEP, ONLY_6B)] + ["flash_crash_lite"]
    with caplog.at_level(logging.INFO, logger="stress_runner"):
        results = runner.run_many(scenarios=scenarios)
        assert [kind for kind, _ in calls][:1] == ["bus"]  # before the runs returned
        assert runner.deliveries.drain(5) == []
    assert counting.calls == 1
    assert [r.scenario for r in results] == ["mild", "deep", "only_6b", "flash_crash_lite"]
    assert len({r.run_id for r in results}) == 4
    # limit 10,000 (5% of 200,000). deep: MES loses 9,009.375, 3x its VaR, and the book 18,553;
    # only_6b: 6B loses 2 x 62,500 x 1.27 x 0.09 = 14,287.5; flash_crash_lite: the book 9,290
    assert [r.breach_count > 0 for r in results] == [False, True, True, False]
    assert results[2].symbols["6BZ6"].worst_pnl == pytest.approx(-14287.5 - 6.25)
    assert results[2].symbols["MES"].worst_pnl == pytest.approx(-0.5 * 0.25 * 5 * 5)
    kinds = [kind for kind, _ in calls]
    assert kinds == ["bus", "alert", "alert", "alert", "alert"]  # one halt, before any page
    event = calls[0][1]
    assert event.scenario == "deep,only_6b"
    assert event.symbols == ("MES", "PORTFOLIO", "6BZ6")
    assert event.run_id == results[1].run_id
    assert f"only_6b (run {results[2].run_id}): 6BZ6 max_drawdown_pct" in event.reason
    assert [r.scenario for _, r in calls[1:]] == ["mild", "deep", "only_6b", "flash_crash_lite"]
    assert runner.halt()["scenario"] == "deep,only_6b" and host.trading_state == "HALTED"
    assert all(r.halted for r in results)
    assert [r.kill_switch for r in results] == [False, True, True, False]
    assert caplog.text.count("KILL_SWITCH triggered") == 1
    # each run is stored on its own: a breach opens its own scenario's episode
    assert [r.episode for r in results] == [None, results[1].run_id, results[2].run_id, None]
    assert [r.episode for _, r in calls[1:]] == [r.episode for r in results]


def test_run_many_passing_publishes_nothing_and_a_duplicate_name_runs_once(make_runner, host):
    calls: list = []
    runner = make_runner(Recorder(calls))
    results = runner.run_many(book=WORKED, scenarios=["flash_crash_lite", "flash_crash_lite"])
    assert runner.deliveries.drain(5) == []
    assert len(results) == 1 and results[0].breach_count == 0
    assert [kind for kind, _ in calls] == ["alert"]
    assert runner.halt() is None


def test_run_many_rejects_an_unknown_scenario_before_taking_the_book(make_runner):
    counting = CountingBook(WORKED)
    with pytest.raises(ScenarioError, match="unknown scenario"):
        make_runner(counting).run_many(scenarios=["flash_crash_lite", "nope"])
    assert counting.calls == 0
    with pytest.raises(ScenarioError, match="no scenario to run"):
        make_runner().run_many(scenarios=[])


def test_run_many_stores_each_run(make_plugins, store_url):
    from stress_plugin.runner import StressRunner, summary
    from stress_plugin.settings import load_settings
    from stress_plugin.store import Store

    store = Store(store_url)
    runner = StressRunner(plugins=make_plugins(), settings=load_settings(), store=store)
    results = runner.run_many(book=BREACHING, scenarios=["flash_crash_lite", "flash_crash_lite"])
    stored = store.runs_since("2000-01-01T00:00:00Z")
    assert [r["run_id"] for r in stored] == [results[0].run_id]
    row = summary(stored[0])
    assert (row["status"], row["breach_count"], row["binding_symbol"]) == ("breached", 2, "MES")
    assert row["worst_pnl"] == pytest.approx(-5411.25)


class BrokenBook:
    @hookimpl(tryfirst=True)
    def stress_book(self) -> dict:
        raise RuntimeError("position server down")


def test_run_many_without_a_book_fails_every_scenario_and_passes_none(make_runner):
    from stress_plugin.core.scenario import StressScenario
    from stress_plugin.runner import summary

    calls: list = []
    runner = make_runner(Recorder(calls), BrokenBook())
    results = runner.run_many(scenarios=["flash_crash_lite", StressScenario(ONLY_6B)])
    assert runner.deliveries.drain(5) == []
    assert [r.status for r in results] == ["failed", "failed"]
    assert all("position server down" in r.error for r in results)
    assert [kind for kind, _ in calls] == ["alert", "alert"]  # failed reports, no halt
    assert runner.halt() is None
    row = summary(results[0].to_dict())
    assert (row["status"], row["worst_pnl"], row["binding_symbol"]) == ("failed", None, None)

