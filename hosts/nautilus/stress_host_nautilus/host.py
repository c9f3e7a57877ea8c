"""The hooks a NautilusTrader node answers: book, bus, trading state and clock."""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from nautilus_trader.model.enums import InstrumentClass, TradingState

from stress_hookspecs import Book, Position, RiskEvent, hookimpl

log = logging.getLogger("stress_runner.nautilus")

HOST_PLUGIN_NAME = "nautilus_host"
"""The name the host is registered under in the actor's runner (``book_source`` shows it)."""
BOOK_VAR_KEY = "PORTFOLIO"
"""The key of the whole book's VaR in ``StressActorConfig.var`` (others are instrument ids)."""


class BookUnavailable(RuntimeError):
    """The node cannot produce a book the stress can trust; the run fails (never skips)."""


class NautilusHost:
    """Hook implementations over one node's cache, portfolio, clock and risk engine.

    Actors have no handle on the risk engine, so it is passed in (``attach`` takes it from the
    engine's or node's kernel).
    """

    def __init__(self, *, cache: Any, portfolio: Any, clock: Any, risk_engine: Any,
                 var: Mapping[str, float] | None = None) -> None:
        self.cache = cache
        self.portfolio = portfolio
        self.clock = clock
        self.risk_engine = risk_engine
        self.var = dict(var or {})

    # -- what a run reads ---------------------------------------------------------------------

    @hookimpl
    def stress_book(self) -> Book:
        """Open positions netted per instrument, priced at the latest quote's mid; equity from
        the accounts of their venues. Anything without a usable price raises."""
        net: dict[Any, float] = defaultdict(float)
        for position in self.cache.positions_open():
            net[position.instrument_id] += position.signed_qty
        positions = []
        venues = set()
        for instrument_id, quantity in net.items():
            if quantity == 0:
                continue
            positions.append(self._position(instrument_id, quantity))
            venues.add(instrument_id.venue)
        if not positions:
            raise BookUnavailable("no open positions in the cache: nothing to stress")
        return Book(equity=self._equity(venues), positions=tuple(positions),
                    var=self.var.get(BOOK_VAR_KEY))

    def _position(self, instrument_id: Any, quantity: float) -> Position:
        instrument = self.cache.instrument(instrument_id)
        if instrument is None:
            raise BookUnavailable(f"{instrument_id}: an open position with no instrument in "
                                  "the cache (no multiplier)")
        bid, ask = self._quote(instrument_id)
        multiplier = float(instrument.multiplier)
        var = self.var.get(str(instrument_id))
        if instrument.instrument_class is not InstrumentClass.OPTION:
            return Position(symbol=str(instrument_id), quantity=float(quantity),
                            price=(bid + ask) / 2, spread=ask - bid, multiplier=multiplier,
                            var=var)
        # an option is marked on its underlying (docs/model.md): the underlying's price with the
        # option's delta and gamma per unit, and the option's own spread
        greeks = self.cache.greeks(instrument_id)
        if greeks is None:
            raise BookUnavailable(f"{instrument_id}: an option with no greeks in the cache; "
                                  "compute them with the actor's greeks calculator "
                                  "(instrument_greeks(..., cache_greeks=True)) before the run")
        per_unit = float(greeks.multiplier) or multiplier
        underlying = float(greeks.underlying_price)
        delta, gamma = float(greeks.delta) / per_unit, float(greeks.gamma) / per_unit
        if not (math.isfinite(underlying) and underlying > 0 and math.isfinite(delta)
                and math.isfinite(gamma)):
            raise BookUnavailable(f"{instrument_id}: cached greeks are not usable (underlying "
                                  f"price {underlying}, delta {delta}, gamma {gamma})")
        return Position(symbol=str(instrument_id), quantity=float(quantity), price=underlying,
                        spread=ask - bid, multiplier=multiplier, var=var, delta=delta,
                        gamma=gamma)

    def _quote(self, instrument_id: Any) -> tuple[float, float]:
        quote = self.cache.quote_tick(instrument_id)
        if quote is None:
            raise BookUnavailable(f"{instrument_id}: an open position with no quote in the "
                                  "cache (no mid or spread to stress)")
        bid, ask = quote.bid_price.as_double(), quote.ask_price.as_double()
        if not (math.isfinite(bid) and math.isfinite(ask) and 0 < bid <= ask):
            raise BookUnavailable(f"{instrument_id}: the latest quote bid {bid} / ask {ask} is "
                                  "not a usable price (need 0 < bid <= ask)")
        return bid, ask

    def _equity(self, venues: set[Any]) -> float:
        """Cash balance plus unrealized P&L, per venue account, in one currency."""
        total = 0.0
        currencies = set()
        for venue in venues:
            account = self.portfolio.account(venue)
            if account is None:
                raise BookUnavailable(f"{venue}: no account, so no equity to stress against")
            currency = account.base_currency
            if currency is None:
                raise BookUnavailable(f"{venue}: a multi-currency account; the stress needs "
                                      "equity in one currency")
            currencies.add(currency)
            total += account.balance_total(currency).as_double()
            unrealized = self.portfolio.unrealized_pnls(venue) or {}
            for pnl_currency, money in unrealized.items():
                if pnl_currency != currency:
                    raise BookUnavailable(f"{venue}: unrealized P&L in {pnl_currency}, equity "
                                          f"in {currency}")
                total += money.as_double()
        if len(currencies) > 1:
            raise BookUnavailable("accounts in " + ", ".join(sorted(map(str, currencies))) +
                                  ": the stress needs equity in one currency")
        if not total > 0:
            raise BookUnavailable(f"equity is {total}: nothing to measure a drawdown against")
        return total

    @hookimpl
    def stress_clock(self) -> int:
        """The engine's time in UNIX nanoseconds (simulated in a backtest)."""
        return self.clock.timestamp_ns()

    # -- what a run sets ----------------------------------------------------------------------

    @hookimpl
    def stress_bus_publish(self, event: RiskEvent) -> None:
        """KILL_SWITCH: the risk engine goes HALTED (mode halt) or REDUCING (mode reduce), and
        denies orders from then on; RESET: ACTIVE. The engine publishes TradingStateChanged."""
        if event.type == "KILL_SWITCH":
            state = TradingState.REDUCING if event.mode == "reduce" else TradingState.HALTED
        elif event.type == "RESET":
            state = TradingState.ACTIVE
        else:
            return
        self.risk_engine.set_trading_state(state)
        log.critical("risk engine set %s by %s of run %s (%s)", state.name, event.type,
                     event.run_id, event.reason)

    @hookimpl
    def stress_trading_state(self) -> str:
        """What the risk engine enforces now, read from the engine itself."""
        return TradingState(self.risk_engine.trading_state).name
