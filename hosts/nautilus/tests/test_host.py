"""The host's hooks against a real BacktestEngine: the book it reads, the runs it fails, the
state it sets and reads back, the schedule it keeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import ModuleType
from typing import Any

import pytest
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.config import LoggingConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import Bar, BarType, QuoteTick
from nautilus_trader.model.enums import (
    AccountType,
    AssetClass,
    OmsType,
    OptionKind,
    OrderSide,
    TradingState,
)
from nautilus_trader.model.greeks_data import GreeksData
from nautilus_trader.model.identifiers import InstrumentId, Symbol, TraderId
from nautilus_trader.model.instruments import FuturesContract, OptionContract
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.trading.strategy import Strategy, StrategyConfig

from stress_host_nautilus import BookUnavailable, StressActorConfig, attach
from stress_plugin.service.schedule import fire_times


class Engine:
    """A backtest day of the example (venue, account, MES, quotes, the buying strategy)."""

    def __init__(self, example: ModuleType, config: StressActorConfig, **attach_kw: Any
                 ) -> None:
        self.example = example
        self.engine = BacktestEngine(BacktestEngineConfig(
            trader_id=TraderId("TEST-001"), logging=LoggingConfig(log_level="ERROR")))
        self.engine.add_venue(venue=example.CME, oms_type=OmsType.NETTING,
                              account_type=AccountType.MARGIN,
                              starting_balances=[Money(100_000, USD)], base_currency=USD)
        self.engine.add_instrument(example.mes_future())
        self.engine.add_data(example.synthetic_quotes())
        self.strategy = example.BuyEveryTenMinutes(example.BuyEveryTenMinutesConfig())
        self.engine.add_strategy(self.strategy)
        self.sink = example.RecordingSink()
        self.actor = attach(self.engine, config, extra_plugins={"sink": self.sink}, **attach_kw)

    def run(self, minutes: int) -> None:
        self.engine.run(start=self.example.OPEN,
                        end=self.example.OPEN + timedelta(minutes=minutes))

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def day(example: ModuleType):
    engines: list[Engine] = []

    def make(**config: Any) -> Engine:
        engine = Engine(example, StressActorConfig(**config))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def test_book_is_read_from_the_cache_and_the_account(day, example) -> None:
    e = day(market_hours_only=False, interval_minutes=15, var={"MESH4.XCME": 2500.0,
                                                               "PORTFOLIO": 4000.0})
    e.run(50)  # buys at 14:30, 14:40, 14:50, 15:00, 15:10, 15:20 UTC
    book = e.actor.host.stress_book()
    [position] = book.positions
    quote = e.engine.cache.quote_tick(example.MES)
    assert position.symbol == "MESH4.XCME"
    assert position.quantity == 6.0
    assert position.multiplier == 5.0
    assert position.spread == 0.25
    assert position.price == (quote.bid_price.as_double() + quote.ask_price.as_double()) / 2
    assert position.var == 2500.0 and book.var == 4000.0
    account = e.engine.portfolio.account(example.CME)
    unrealized = e.engine.portfolio.unrealized_pnl(example.MES).as_double()
    assert book.equity == pytest.approx(account.balance_total(USD).as_double() + unrealized)
    assert 99_000 < book.equity < 101_000


def test_slots_follow_serve_schedule_on_the_engine_clock(day, example) -> None:
    e = day(market_hours_only=False, interval_minutes=15)
    e.run(80)
    expected = fire_times(example.OPEN, 6, interval_minutes=15, market_hours_only=False)
    assert [r.timestamp for r in e.actor.results] == \
        [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in expected[:len(e.actor.results)]]
    assert len(e.actor.results) == 6  # 14:30:05 ... 15:45:05; the run ends at 15:50
    assert e.actor.last_result is e.actor.results[-1]
    assert e.actor.last_result.book_source == "plugin nautilus_host"
    assert all(r.run_id.startswith(r.timestamp[:19].replace("-", "").replace(":", ""))
               for r in e.actor.results)  # run ids from the simulated clock too


def test_no_slot_outside_the_session_with_market_hours_only(day, example) -> None:
    e = day()  # 10:00:05 New York is 15:00:05 UTC in January
    e.run(29)
    assert e.actor.results == [] and e.actor.slots_run == 0
    assert e.actor.next_slots(1)[0] == datetime(2024, 1, 17, 15, 0, 5, tzinfo=UTC)


def test_reset_sets_active_and_is_confirmed(day) -> None:
    e = day()
    e.run(120)  # through the breach at 16:00:05 UTC
    assert e.actor.last_result.kill_switch_confirmed is True
    risk = e.engine.kernel.risk_engine
    assert risk.trading_state == TradingState.HALTED
    cleared = e.actor.reset("tester", "flattened by hand")
    assert cleared["reset_confirmed"] is True
    assert risk.trading_state == TradingState.ACTIVE
    assert e.actor.host.stress_trading_state() == "ACTIVE"
    assert e.actor.runner.halt() is None


def test_a_halt_set_elsewhere_is_seen_on_events_risk(day) -> None:
    e = day()
    e.run(10)
    e.engine.kernel.risk_engine.set_trading_state(TradingState.REDUCING)
    assert TradingState(e.actor.trading_state_events[-1].state) == TradingState.REDUCING
    assert e.actor.host.stress_trading_state() == "REDUCING"


def test_bad_config_is_refused(example) -> None:
    with pytest.raises(ValueError, match="mode"):
        attach(_Bare(), StressActorConfig(mode="panic"))
    with pytest.raises(ValueError, match="interval_minutes"):
        attach(_Bare(), StressActorConfig(interval_minutes=7))


class _Bare:
    """Just enough of an engine for attach to reach the config checks."""

    class kernel:
        risk_engine = None


# -- what cannot be stressed fails the run ------------------------------------------------------

MNQ = InstrumentId(Symbol("MNQH4"), InstrumentId.from_str("MESH4.XCME").venue)


class BuyMnqOnBars(Strategy):
    def on_start(self) -> None:
        self.subscribe_bars(BarType.from_str("MNQH4.XCME-1-MINUTE-LAST-EXTERNAL"))
        self.bought = False

    def on_bar(self, bar: Bar) -> None:
        if not self.bought:
            self.bought = True
            self.submit_order(self.order_factory.market(MNQ, OrderSide.BUY,
                                                        Quantity.from_int(1)))


def mnq_future() -> FuturesContract:
    return FuturesContract(
        instrument_id=MNQ, raw_symbol=MNQ.symbol, asset_class=AssetClass.INDEX, currency=USD,
        price_precision=2, price_increment=Price.from_str("0.25"),
        multiplier=Quantity.from_int(2), lot_size=Quantity.from_int(1), underlying="NQ",
        activation_ns=0, expiration_ns=2_000_000_000 * 10**9, ts_event=0, ts_init=0,
        margin_init=Decimal("0.05"), margin_maint=Decimal("0.04"), exchange="XCME")


def test_a_position_without_a_quote_fails_the_run_naming_it(day, example) -> None:
    e = day(market_hours_only=False, interval_minutes=15)
    e.engine.add_instrument(mnq_future())
    bar_type = BarType.from_str("MNQH4.XCME-1-MINUTE-LAST-EXTERNAL")
    bars = []
    for i in range(60):
        ts = example._ns(example.OPEN + timedelta(minutes=i + 1))
        px = Price(16800.0, 2)
        bars.append(Bar(bar_type, px, px, px, px, Quantity.from_int(100), ts, ts))
    e.engine.add_data(bars)
    e.engine.add_strategy(BuyMnqOnBars(StrategyConfig(strategy_id="BuyMnqOnBars-001")))
    e.run(20)
    assert e.engine.cache.positions_open(instrument_id=MNQ), "the bar strategy has a position"
    result = e.actor.last_result
    assert result.status == "failed" and result.failure == "book_unavailable"
    assert "MNQH4.XCME: an open position with no quote" in result.error
    assert result.kill_switch is False  # STRESS_ON_FAILURE=page: it pages, it does not halt
    e.actor.runner.deliveries.drain(5)
    assert any(r.status == "failed" for r in e.sink.reports)


def test_an_option_uses_the_cached_greeks_or_fails(day, example) -> None:
    e = day()
    e.run(5)
    cache = e.engine.cache
    put = OptionContract(
        instrument_id=InstrumentId.from_str("MESH4P4700.XCME"), raw_symbol=Symbol("MESH4P4700"),
        asset_class=AssetClass.INDEX, currency=USD, price_precision=2,
        price_increment=Price.from_str("0.05"), multiplier=Quantity.from_int(5),
        lot_size=Quantity.from_int(1), underlying="MESH4", option_kind=OptionKind.PUT,
        strike_price=Price(4700.0, 2), activation_ns=0, expiration_ns=2_000_000_000 * 10**9,
        ts_event=0, ts_init=0)
    cache.add_instrument(put)
    now = e.engine.kernel.clock.timestamp_ns()
    cache.add_quote_tick(QuoteTick(put.id, Price(40.0, 2), Price(40.5, 2), Quantity.from_int(10),
                                   Quantity.from_int(10), now, now))
    with pytest.raises(BookUnavailable, match=r"MESH4P4700\.XCME: an option with no greeks"):
        e.actor.host._position(put.id, -10.0)
    # NautilusTrader's greeks are per contract (times the multiplier); the book's per unit
    cache.add_greeks(GreeksData(now, now, instrument_id=put.id, is_call=False, strike=4700.0,
                                multiplier=5.0, quantity=1.0, underlying_price=4800.0,
                                delta=-2.0, gamma=0.006))
    position = e.actor.host._position(put.id, -10.0)
    assert position.price == 4800.0 and position.spread == pytest.approx(0.5)
    assert position.delta == pytest.approx(-0.4) and position.gamma == pytest.approx(0.0012)
    assert position.multiplier == 5.0 and position.quantity == -10.0


def test_attach_to_a_live_trading_node_schedules_on_its_clock() -> None:
    import asyncio
    import threading
    import time

    from nautilus_trader.config import TradingNodeConfig
    from nautilus_trader.live.node import TradingNode

    node = TradingNode(TradingNodeConfig(logging=LoggingConfig(log_level="ERROR"),
                                         timeout_disconnection=1.0, timeout_post_stop=0.0))
    actor = attach(node, StressActorConfig(market_hours_only=False, interval_minutes=1))
    assert actor in node.trader.actors()
    node.build()
    thread = threading.Thread(target=node.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while actor.runner is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert actor.runner is not None, "the actor did not start on the node"
        [slot] = actor.next_slots(1)
        now = datetime.now(UTC)
        assert now < slot <= now + timedelta(minutes=1, seconds=5)
        assert slot.second == 5 and slot.microsecond == 0
        assert actor.host.stress_trading_state() == "ACTIVE"
    finally:  # node.stop() from another thread only schedules it; wait for the stop itself
        asyncio.run_coroutine_threadsafe(node.stop_async(), node.kernel.loop).result(10)
        thread.join(10)
        node.dispose()



def test_several_scenarios_share_one_snapshot_and_one_kill_switch(day, tmp_path,
                                                                  monkeypatch) -> None:
    deep = tmp_path / "deep_crash.yaml"
    deep.write_text('scenario_name: "deep_crash"\nprice_shock_pct: -0.05\nspread_mult: 2.0\n'
                    'duration_sec: 60\nrecovery_type: "linear"\n')
    monkeypatch.setenv("STRESS_SCENARIOS", str(deep))
    e = day(scenarios=("flash_crash_lite", "deep_crash"), market_hours_only=False)
    e.run(95)  # slots 15:00:05 (4 contracts: deep loses 4,805, both pass), 16:00:05 (10)
    assert [(r.timestamp, r.scenario, r.status) for r in e.actor.results] == [
        ("2024-01-17T15:00:05Z", "flash_crash_lite", "passed"),
        ("2024-01-17T15:00:05Z", "deep_crash", "passed"),
        ("2024-01-17T16:00:05Z", "flash_crash_lite", "breached"),
        ("2024-01-17T16:00:05Z", "deep_crash", "breached"),
    ]
    assert all(r.kill_switch_confirmed is True for r in e.actor.results[2:])
    assert e.actor.last_result.scenario == "deep_crash"
    halt = e.actor.runner.halt()
    assert halt["scenario"] == "flash_crash_lite,deep_crash"  # one event named both
    changes = [TradingState(ev.state) for ev in e.actor.trading_state_events]
    assert changes == [TradingState.HALTED]


def test_a_latched_halt_survives_a_restart_of_the_node(example, tmp_path) -> None:
    store = str(tmp_path / "stress.db")
    first = Engine(example, StressActorConfig(store=store))
    try:
        first.run(120)  # the breach at 16:00:05 UTC halts
        assert first.actor.runner.halt() is not None
    finally:
        first.close()
    # a new engine starts ACTIVE; the latch in the store puts the halt back at start
    second = Engine(example, StressActorConfig(store=store))
    try:
        second.run(15)
        risk = second.engine.kernel.risk_engine
        assert risk.trading_state == TradingState.HALTED
        assert second.strategy.filled == []  # the very first buy of the day was denied
        assert [e.reason for e in second.strategy.denied][:1] == ["TradingState.HALTED"]
        cleared = second.actor.reset("tester", "risk reviewed")
        assert cleared["reset_confirmed"] is True and risk.trading_state == TradingState.ACTIVE
    finally:
        second.close()
