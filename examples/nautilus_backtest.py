"""Flash-Crash Lite inside a NautilusTrader backtest: a real book, a real halt, confirmed.

One day (2024-01-17, XNYS regular session) of synthetic MES quotes on a simulated CME venue with
a USD 100,000 margin account. A strategy buys one contract every 10 minutes. The stress actor
runs at serve's slots (10:00:05 ... 15:00:05 New York time) on the backtest's clock; at the first
slot where the book breaches it trips KILL_SWITCH, the risk engine goes HALTED (or REDUCING with
``--mode reduce``), the runner reads that back (``kill_switch_confirmed``), and a sink gets the
page. Later buys are denied by the risk engine (``OrderDenied``); in reduce mode a sell that
reduces the position is still accepted.

    python examples/nautilus_backtest.py [--mode halt|reduce]

Needs ``pip install -e ./hookspecs -e ./scenario_packs/flash_crash -e . -e ./hosts/nautilus``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.config import LoggingConfig, StrategyConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import AccountType, AssetClass, OmsType, OrderSide
from nautilus_trader.model.events import OrderDenied, OrderFilled
from nautilus_trader.model.identifiers import InstrumentId, Symbol, TraderId, Venue
from nautilus_trader.model.instruments import FuturesContract
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.trading.strategy import Strategy

from stress_hookspecs import Delivery, StressResult, hookimpl
from stress_host_nautilus import StressActor, StressActorConfig, attach

DAY = datetime(2024, 1, 17, tzinfo=UTC)
OPEN, CLOSE = DAY + timedelta(hours=14, minutes=30), DAY + timedelta(hours=21)  # EST session
CME = Venue("XCME")
MES = InstrumentId(Symbol("MESH4"), CME)


def mes_future() -> FuturesContract:
    """Micro E-mini S&P 500, March 2024: $5 x index, tick 0.25."""
    return FuturesContract(
        instrument_id=MES, raw_symbol=MES.symbol, asset_class=AssetClass.INDEX, currency=USD,
        price_precision=2, price_increment=Price.from_str("0.25"),
        multiplier=Quantity.from_int(5), lot_size=Quantity.from_int(1), underlying="ES",
        activation_ns=_ns(datetime(2023, 6, 16, tzinfo=UTC)),
        expiration_ns=_ns(datetime(2024, 3, 15, 13, 30, tzinfo=UTC)),
        ts_event=0, ts_init=0, margin_init=Decimal("0.05"), margin_maint=Decimal("0.04"),
        exchange="XCME",
    )


def synthetic_quotes(step_s: int = 30) -> list[QuoteTick]:
    """A quiet day around 4,800 (a slow swing of +-6 points), one tick wide, every step_s."""
    quotes = []
    moment = OPEN
    while moment < CLOSE:
        minutes = (moment - OPEN).total_seconds() / 60
        bid = round((4800 + 6 * math.sin(minutes / 45)) * 4) / 4
        quotes.append(QuoteTick(
            instrument_id=MES, bid_price=Price(bid, 2), ask_price=Price(bid + 0.25, 2),
            bid_size=Quantity.from_int(50), ask_size=Quantity.from_int(50),
            ts_event=_ns(moment), ts_init=_ns(moment)))
        moment += timedelta(seconds=step_s)
    return quotes


class BuyEveryTenMinutesConfig(StrategyConfig, frozen=True):
    instrument_id: InstrumentId = MES
    sell_when_denied: bool = False
    """Reduce mode's proof: after the first denied buy, send one sell that reduces the long."""


class BuyEveryTenMinutes(Strategy):
    """Buys one contract at the first quote and every 10 minutes after; records denials."""

    def __init__(self, config: BuyEveryTenMinutesConfig) -> None:
        super().__init__(config)
        self.denied: list[OrderDenied] = []
        self.filled: list[OrderFilled] = []
        self.sells_sent = 0
        self._started = False

    def on_start(self) -> None:
        self.subscribe_quote_ticks(self.config.instrument_id)

    def on_quote_tick(self, tick: QuoteTick) -> None:
        if not self._started:
            self._started = True
            self._buy(None)
            self.clock.set_timer("buy", timedelta(minutes=10), callback=self._buy)

    def _buy(self, _event: Any) -> None:
        self._submit(OrderSide.BUY)

    def _submit(self, side: OrderSide) -> None:
        self.submit_order(self.order_factory.market(self.config.instrument_id, side,
                                                    Quantity.from_int(1)))

    def on_order_denied(self, event: OrderDenied) -> None:
        self.denied.append(event)
        if self.config.sell_when_denied and self.sells_sent == 0:
            self.sells_sent += 1
            self._submit(OrderSide.SELL)

    def on_order_filled(self, event: OrderFilled) -> None:
        self.filled.append(event)


class RecordingSink:
    """A stand-in for PagerDuty: an ordinary ``stress_alert`` sink that keeps what it got."""

    def __init__(self) -> None:
        self.reports: list[StressResult] = []

    @hookimpl
    def stress_alert(self, result: StressResult, delivery: Delivery) -> None:
        self.reports.append(result)


@dataclass
class Summary:
    mode: str
    slots_run: int
    slots: list[str] = field(default_factory=list)
    first_breach: str | None = None
    kill_switch_confirmed: bool | None = None
    trading_state: str = ""
    orders_denied: int = 0
    denied_reasons: list[str] = field(default_factory=list)
    buys_filled: int = 0
    sells_filled: int = 0
    first_denied_at: str | None = None
    pages: list[dict[str, Any]] = field(default_factory=list)
    trading_state_events: int = 0


def run(mode: str = "halt") -> Summary:
    """One backtest day with the stress actor attached; what happened, as a Summary."""
    engine = BacktestEngine(BacktestEngineConfig(
        trader_id=TraderId("STRESS-001"), logging=LoggingConfig(log_level="ERROR")))
    try:
        engine.add_venue(venue=CME, oms_type=OmsType.NETTING, account_type=AccountType.MARGIN,
                         starting_balances=[Money(100_000, USD)], base_currency=USD)
        engine.add_instrument(mes_future())
        engine.add_data(synthetic_quotes())
        strategy = BuyEveryTenMinutes(BuyEveryTenMinutesConfig(
            sell_when_denied=mode == "reduce"))
        engine.add_strategy(strategy)
        sink = RecordingSink()
        actor: StressActor = attach(engine, StressActorConfig(mode=mode),
                                    extra_plugins={"example_sink": sink})
        engine.run(start=OPEN, end=CLOSE)
        assert actor.runner is not None
        actor.runner.deliveries.drain(10)  # the pages go out off the run's path; wait for them
        breaches = [r for r in actor.results if r.status == "breached"]
        first = breaches[0] if breaches else None
        return Summary(
            mode=mode, slots_run=actor.slots_run,
            slots=[f"{r.timestamp} {r.status}" for r in actor.results],
            first_breach=first.timestamp if first else None,
            kill_switch_confirmed=first.kill_switch_confirmed if first else None,
            trading_state=actor.host.stress_trading_state() if actor.host else "",
            orders_denied=len(strategy.denied),
            denied_reasons=sorted({e.reason for e in strategy.denied}),
            first_denied_at=_iso(strategy.denied[0].ts_event) if strategy.denied else None,
            buys_filled=sum(f.order_side == OrderSide.BUY for f in strategy.filled),
            sells_filled=sum(f.order_side == OrderSide.SELL for f in strategy.filled),
            pages=[{"run_id": r.run_id, "status": r.status, "timestamp": r.timestamp,
                    "kill_switch_confirmed": r.kill_switch_confirmed}
                   for r in sink.reports if r.status != "passed"],
            trading_state_events=len(actor.trading_state_events),
        )
    finally:
        engine.dispose()


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000


def _iso(nanos: int) -> str:
    return datetime.fromtimestamp(nanos / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("halt", "reduce"), default="halt")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    summary = run(args.mode)
    if args.json:
        print(json.dumps(summary.__dict__, indent=2))
        return 0
    print(f"mode {summary.mode}: {summary.slots_run} slots run")
    for line in summary.slots:
        print(f"  {line}")
    print(f"first breach at {summary.first_breach}, kill_switch_confirmed: "
          f"{str(summary.kill_switch_confirmed).lower()}; risk engine {summary.trading_state}")
    print(f"orders denied: {summary.orders_denied} (from {summary.first_denied_at}: "
          f"{'; '.join(summary.denied_reasons)})")
    print(f"fills: {summary.buys_filled} buys, {summary.sells_filled} sells; "
          f"pages to the sink: {len(summary.pages)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
