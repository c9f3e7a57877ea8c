"""The stress actor: the runner on the engine's clock, at the slots ``serve`` uses."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from nautilus_trader.common.actor import Actor
from nautilus_trader.common.config import ActorConfig
from nautilus_trader.model.enums import TradingState

from stress_hookspecs import RiskEvent, StressResult
from stress_host_nautilus.host import HOST_PLUGIN_NAME, NautilusHost
from stress_plugin.core.times import iso_utc
from stress_plugin.plugins import Plugins
from stress_plugin.runner import StressRunner
from stress_plugin.service.schedule import check_schedule, fire_times
from stress_plugin.settings import Settings, load_settings
from stress_plugin.store import Store

log = logging.getLogger("stress_runner.nautilus")

_BATCH = 64
"""Fire times computed at once (one calendar lookup), then handed out one alert at a time."""


class StressActorConfig(ActorConfig, frozen=True, kw_only=True):
    """What the stress actor runs, and when."""

    scenarios: tuple[str, ...] = ("flash_crash_lite",)
    """Scenarios run at each slot, in order, on one snapshot of the book (one KILL_SWITCH at
    most per slot, naming every breaching scenario)."""
    mode: str = "halt"
    """``halt`` (HALTED: no new orders) or ``reduce`` (REDUCING: only reducing orders)."""
    market_hours_only: bool = True
    """Slots at :MM:05 inside XNYS sessions (``serve``'s schedule); False: around the clock."""
    interval_minutes: int = 60
    offset_seconds: int = 5
    var: dict[str, float] | None = None
    """Normal VaR per instrument id (``"MESH4.XCME"``) and for the book (``"PORTFOLIO"``)."""
    store: str | None = None
    """A SQLite file (as ``STRESS_DB``) for the runs, the halt latch and the alert outbox, so a
    halt survives a restart of the node; None keeps them in memory for the actor's lifetime."""


class StressActor(Actor):
    """Runs the stress at each slot on the engine's clock; ``last_result`` is the latest."""

    def __init__(self, config: StressActorConfig, *, risk_engine: Any,
                 plugins: Plugins | None = None, settings: Settings | None = None,
                 extra_plugins: Mapping[str, object] | None = None) -> None:
        super().__init__(config)
        if config.mode not in ("halt", "reduce"):
            raise ValueError(f"StressActorConfig.mode={config.mode!r}: must be halt or reduce")
        check_schedule(config.interval_minutes, config.offset_seconds, config.market_hours_only)
        if not config.scenarios:
            raise ValueError("StressActorConfig.scenarios: must name at least one scenario")
        self._risk_engine = risk_engine
        self._given_plugins = plugins
        self._extra = dict(extra_plugins or {})
        self._settings = settings
        self.runner: StressRunner | None = None
        self.host: NautilusHost | None = None
        self.last_result: StressResult | None = None
        self.results: list[StressResult] = []
        self.slots_run = 0
        self.slots_flat = 0
        self.trading_state_events: list[Any] = []
        """Every TradingStateChanged seen on ``events.risk`` (ours and anyone else's)."""
        self._upcoming: list[datetime] = []
        self._alerts = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def on_start(self) -> None:
        if self.runner is None:  # a node stopped and started again keeps its runner
            self.host = NautilusHost(cache=self.cache, portfolio=self.portfolio,
                                     clock=self.clock, risk_engine=self._risk_engine,
                                     var=self.config.var)
            self.runner = self._build_runner()
            for name in self.config.scenarios:
                self.runner.scenario(name)  # an unknown name fails now, not at the first slot
            self.msgbus.subscribe(topic="events.risk*", handler=self._on_risk_event)
        self._restore_halt()
        self._schedule_next()

    def _restore_halt(self) -> None:
        """NautilusTrader's risk engine starts ACTIVE on every construction; the runner's latch
        (with a ``store`` file) does not forget, so a latched halt is put back before the first
        order of the new session, and read back like any KILL_SWITCH."""
        assert self.runner is not None and self.host is not None
        halt = self.runner.halt()
        if halt is None:
            return
        log.critical("trading halt of run %s (since %s) is still latched: setting the risk "
                     "engine %s again", halt["run_id"], halt["since"],
                     "REDUCING" if self.config.mode == "reduce" else "HALTED")
        self.runner.plugins.bus_publish(RiskEvent(
            type="KILL_SWITCH", scenario=halt["scenario"], symbols=tuple(halt["symbols"]),
            run_id=halt["run_id"], timestamp=halt["since"], mode=self.config.mode,
            reason=f"latched since {halt['since']}: {halt['reason']}"))

    def on_stop(self) -> None:
        if self.runner is not None:
            self.runner.deliveries.stop()

    def _build_runner(self) -> StressRunner:
        settings = (self._settings or load_settings()).model_copy(
            update={"stress_kill_mode": self.config.mode})
        if self._given_plugins is not None:
            plugins = self._given_plugins
        else:
            # the engine is the host now: the embedded stand-in bus and demo book step aside
            plugins = Plugins.load([*settings.disabled_plugins, "embedded_host"],
                                   trace=settings.stress_trace_plugins)
        plugins.register(self.host, HOST_PLUGIN_NAME)
        for name, plugin in self._extra.items():
            plugins.register(plugin, name)
        store = Store(self.config.store) if self.config.store else Store(":memory:")
        return StressRunner(plugins=plugins, settings=settings, store=store,
                            deliver_in_background=True)

    # -- the schedule ---------------------------------------------------------------------------

    def next_slots(self, count: int) -> list[datetime]:
        """The next ``count`` slots after the engine's now (what ``serve`` would run)."""
        config = self.config
        return fire_times(self._now(), count, interval_minutes=config.interval_minutes,
                          offset_seconds=config.offset_seconds,
                          market_hours_only=config.market_hours_only)

    def _now(self) -> datetime:
        """The engine's time as a plain datetime: ``clock.utc_now()`` is a pandas Timestamp,
        whose nanoseconds would survive the schedule's arithmetic (slots at :05.000000020)."""
        nanos = self.clock.timestamp_ns()
        return datetime.fromtimestamp(nanos // 1_000_000_000, UTC).replace(
            microsecond=nanos // 1000 % 1_000_000)

    def _schedule_next(self) -> None:
        now = self._now()
        self._upcoming = [t for t in self._upcoming if t > now]
        if not self._upcoming:
            self._upcoming = self.next_slots(_BATCH)
        slot = self._upcoming.pop(0)
        self._alerts += 1
        self.clock.set_time_alert(f"stress-slot-{self._alerts}", slot, self._on_slot)

    def _on_slot(self, event: Any) -> None:
        slot = datetime.fromtimestamp(event.ts_event / 1e9, UTC)
        try:
            self.run_slot(slot)
        finally:
            self._schedule_next()

    def run_slot(self, slot: datetime) -> list[StressResult]:
        """Every configured scenario on one snapshot of the book for ``slot`` (one KILL_SWITCH
        at most, as ``serve`` does); a flat book has nothing to stress."""
        assert self.runner is not None, "the actor has not started"
        if not any(p.signed_qty for p in self.cache.positions_open()):
            self.slots_flat += 1
            log.info("stress slot %s: no open positions, nothing to stress", slot.isoformat())
            return []
        self.slots_run += 1
        done = self.runner.run_many(scenarios=list(self.config.scenarios), trigger="schedule",
                                    scheduled_for=iso_utc(slot))
        self.results.extend(done)
        self.last_result = done[-1]
        return done

    def reset(self, actor: str, reason: str | None = None) -> dict[str, Any] | None:
        """Clear the halt (audited) and set the risk engine ACTIVE, read back."""
        assert self.runner is not None, "the actor has not started"
        return self.runner.reset(actor, reason)

    def _on_risk_event(self, event: Any) -> None:
        self.trading_state_events.append(event)
        state = getattr(event, "state", None)
        log.warning("risk engine trading state is now %s",
                    TradingState(state).name if state is not None else event)


def attach(engine_or_node: Any, config: StressActorConfig | None = None, *,
           plugins: Plugins | None = None, settings: Settings | None = None,
           extra_plugins: Mapping[str, object] | None = None) -> StressActor:
    """Add a stress actor to a ``BacktestEngine`` or a ``TradingNode`` and return it.

    The risk engine comes from the engine's or node's kernel (an actor has no handle on it).
    ``plugins`` defaults to the entry-point plugins (sinks, packs, evaluators; the embedded host
    blocked); ``extra_plugins`` are registered by name on top (a sink of your own, say).
    """
    kernel = engine_or_node.kernel
    actor = StressActor(config or StressActorConfig(), risk_engine=kernel.risk_engine,
                        plugins=plugins, settings=settings, extra_plugins=extra_plugins)
    kernel.trader.add_actor(actor)
    return actor
