"""One stress run: book -> symbol cap -> engine -> evaluators -> KILL_SWITCH -> store -> sinks."""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from stress_hookspecs import Book, Limits, Metrics, RiskEvent, StressResult
from stress_hookspecs.types import SymbolMetrics
from stress_plugin import engine
from stress_plugin.book import BookArrays, book_from_mapping, read_book
from stress_plugin.errors import NO_VALUE, BookError, PluginError, ScenarioError, UnknownScenario
from stress_plugin.plugins import Plugins
from stress_plugin.scenario import StressScenario, parse_limits
from stress_plugin.settings import Settings, load_settings
from stress_plugin.store import Store

log = logging.getLogger("stress_runner")

DEFAULT_SCENARIO = "flash_crash_lite"


class StressRunner:
    """Runs scenarios against the book; plugins are loaded once, when the runner is made."""

    def __init__(self, plugins: Plugins | None = None, settings: Settings | None = None,
                 store: Store | None = None) -> None:
        self.settings = settings or load_settings()
        self.store = store
        """Where each run is kept, with the prices it saw; None keeps nothing."""
        self.plugins = plugins or Plugins.load(
            self.settings.disabled_plugins, trace=self.settings.stress_trace_plugins
        )
        self._scenarios: dict[str, StressScenario] | None = None
        self._profiles: dict[tuple[str, int], np.ndarray] = {}

    # -- scenarios ----------------------------------------------------------------------------

    def scenarios(self) -> dict[str, StressScenario]:
        """Every discovered scenario by name: packs' ``stress_scenarios``, then STRESS_SCENARIOS."""
        if self._scenarios is None:
            found: dict[str, StressScenario] = {}
            offered = [*self.plugins.scenarios(),
                       *(("STRESS_SCENARIOS", p) for p in self.settings.scenario_files)]
            for plugin, item in offered:
                scenario = _scenario_from(plugin, item)
                if scenario.name in found:
                    raise ScenarioError(scenario.origin, "scenario_name", scenario.name,
                                        f"also defined by {found[scenario.name].origin}")
                found[scenario.name] = scenario
            self._scenarios = found
        return self._scenarios

    def scenario(self, name_or_path: str | Path | StressScenario) -> StressScenario:
        """A scenario by name, or loaded from a ``.yaml``/``.yml`` path."""
        if isinstance(name_or_path, StressScenario):
            return name_or_path
        text = str(name_or_path)
        if isinstance(name_or_path, Path) or text.endswith((".yaml", ".yml")):
            return StressScenario(text)
        known = self.scenarios()
        if text not in known:
            names = ", ".join(sorted(known)) or "none: is a scenario pack installed?"
            raise UnknownScenario("scenario", None, text, f"unknown scenario (known: {names})")
        return known[text]

    # -- the run ------------------------------------------------------------------------------

    def run_once(
        self,
        *,
        book: Book | Mapping[str, Any] | str | Path | None = None,
        scenario: str | Path | StressScenario = DEFAULT_SCENARIO,
        symbols: Sequence[str] | None = None,
        trigger: str = "manual",
        scheduled_for: str | None = None,
    ) -> StressResult:
        """Stress the book once; publishes KILL_SWITCH and alerts on a breach.

        ``book`` overrides the ``stress_book`` hook; ``symbols`` restricts the book to those.
        ``trigger`` (schedule, manual, cli) and ``scheduled_for`` (ISO UTC) go to the store.
        Raises ``StressError`` for unusable input; plugin failures are logged, never raised.
        """
        started = time.perf_counter()
        now = datetime.now(UTC)
        timestamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        run_id = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"
        chosen = self.scenario(scenario)

        arrays, source = self._book(book)
        _let_others_run()
        if symbols:
            arrays = _restrict(arrays, symbols, source)
        arrays, skipped = self._cap(arrays)
        limits = self._limits(chosen)

        shocks = np.full(len(arrays), chosen.price_shock_pct)
        for symbol, shock in chosen.symbol_shocks.items():
            shocks[arrays.symbols == symbol] = shock
        coef = engine.coefficients(arrays.quantity, arrays.price, arrays.spread,
                                   arrays.multiplier, arrays.delta, arrays.gamma, shocks,
                                   chosen.spread_mult)
        gamma_move = np.abs(arrays.gamma * arrays.price * shocks)
        out = engine.stress(coef, gamma_move, arrays.var, arrays.equity, arrays.book_var,
                            self._profile(chosen), limits)
        _let_others_run()

        result = StressResult(
            run_id=run_id,
            scenario=chosen.name,
            timestamp=timestamp,
            symbols_tested=len(arrays),
            portfolio=Metrics(
                worst_pnl=out.portfolio_worst_pnl,
                drawdown_pct=out.portfolio_drawdown_pct,
                var_ratio=_none_if_nan(out.portfolio_var_ratio),
                delta_change=None,
                headroom=out.portfolio_headroom,
            ),
            # columns, not 100,000 Metrics objects: made only if a plugin reads them one by one
            symbols=SymbolMetrics(arrays.symbols, out.worst_pnl, out.drawdown_pct, out.var_ratio,
                                  out.delta_change, out.headroom),
            headroom=float(min(out.portfolio_headroom, out.headroom.min())),
            limits=limits,
            skipped_symbols=skipped,
        )
        breaches = self.plugins.evaluate(result, limits)
        _let_others_run()
        runtime_ms = (time.perf_counter() - started) * 1000
        result = replace(result, breaches=tuple(breaches), kill_switch=bool(breaches),
                         runtime_ms=round(runtime_ms, 3))

        log.info("stress run %s: scenario=%s symbols_tested=%d breaches=%d headroom=%.4g "
                 "runtime_ms=%.3f", run_id, chosen.name, result.symbols_tested,
                 result.breach_count, result.headroom, runtime_ms)
        budget = self.settings.stress_max_runtime_ms
        if runtime_ms > budget:
            log.warning("stress run %s exceeded max runtime: %.3f ms > %g ms "
                        "(symbols_tested=%d)", run_id, runtime_ms, budget, result.symbols_tested)
        if result.kill_switch:
            self._kill_switch(result)
        if self.store is not None:
            _let_others_run()
            self.store.save_run(result, trigger=trigger, scheduled_for=scheduled_for,
                                prices=arrays.price)
        self.plugins.alert(result)
        return result

    def _book(self, book: Book | Mapping[str, Any] | str | Path | None) -> tuple[BookArrays, str]:
        if isinstance(book, str | Path):
            return read_book(book)[1], str(book)
        if book is None:
            answer = self.plugins.book()
            if answer is None:
                raise BookError("stress_book", None, NO_VALUE,
                                "no plugin provided a book (is embedded_host disabled?)")
            plugin, book = answer
            source = f"plugin {plugin} (stress_book)"
        else:
            source = "book argument"
        if isinstance(book, Mapping):
            book = book_from_mapping(book, source)
        if not isinstance(book, Book):
            raise PluginError(source, None, type(book).__name__, "must be a Book or a mapping")
        return BookArrays.from_book(book, source), source

    def _cap(self, arrays: BookArrays) -> tuple[BookArrays, tuple[str, ...]]:
        """Keep the STRESS_MAX_SYMBOLS largest gross notionals |q m P|, in book order."""
        cap = self.settings.stress_max_symbols
        if len(arrays) <= cap:
            return arrays, ()
        notional = np.abs(arrays.quantity * arrays.multiplier * arrays.price)
        order = np.argsort(-notional, kind="stable")
        skipped = tuple(arrays.symbols[order[cap:]].tolist())
        log.warning("symbol cap: testing %d of %d symbols (STRESS_MAX_SYMBOLS=%d); skipped %d "
                    "with the smallest gross notional: %s", cap, len(arrays), cap, len(skipped),
                    ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else ""))
        return arrays.take(np.sort(order[:cap])), skipped

    def _limits(self, scenario: StressScenario) -> Limits:
        answer = self.plugins.limits()
        if answer is None:
            return scenario.thresholds
        plugin, limits = answer
        return parse_limits(limits, f"plugin {plugin} (stress_limits)", scenario.thresholds,
                            error=PluginError)

    def _profile(self, scenario: StressScenario) -> np.ndarray:
        key = (scenario.recovery_type, scenario.steps)
        if key not in self._profiles:
            self._profiles[key] = engine.recovery_profile(*key)
        return self._profiles[key]

    def _kill_switch(self, result: StressResult) -> None:
        """Halt first: published before any alert sink runs; a failed bus is loud."""
        reason = "; ".join(f"{b.symbol} {b.limit} {b.value:.6g} > {b.threshold:g}"
                           for b in result.breaches[:20])
        event = RiskEvent(type="KILL_SWITCH", scenario=result.scenario,
                          symbols=tuple(result.breached_symbols), run_id=result.run_id,
                          timestamp=result.timestamp, reason=reason)
        log.critical("KILL_SWITCH triggered: scenario=%s symbols=%s run_id=%s (%s)",
                     result.scenario, ",".join(result.breached_symbols), result.run_id, reason)
        deliveries = self.plugins.bus_publish(event)
        if not any(d.error is None for d in deliveries):
            log.critical("KILL_SWITCH for run %s reached no bus: %s", result.run_id,
                         ", ".join(d.plugin for d in deliveries) or "no stress_bus_publish plugin")


def _scenario_from(plugin: str, item: Any) -> StressScenario:
    if isinstance(item, StressScenario):
        return item
    if isinstance(item, str | Path):
        return StressScenario(item)
    if isinstance(item, Mapping):
        return StressScenario(item, origin=f"plugin {plugin} (stress_scenarios)")
    raise PluginError(f"plugin {plugin} (stress_scenarios)", None, type(item).__name__,
                      "each scenario must be a path or a mapping")


def _restrict(arrays: BookArrays, symbols: Sequence[str], source: str) -> BookArrays:
    position = {sym: i for i, sym in enumerate(arrays.symbols.tolist())}
    missing = [s for s in symbols if s not in position]
    if missing:
        raise BookError(source, "symbols", ",".join(missing), "not in the book")
    return arrays.take(np.array([position[s] for s in dict.fromkeys(symbols)], dtype=np.intp))


def _let_others_run() -> None:
    """Release the GIL between the stages of a run, so a host's trading thread or event loop
    that is waiting for it runs now rather than after the interpreter's 5 ms switch interval.
    ``os.sched_yield`` releases it for a fraction of a microsecond; ``time.sleep(0)`` would
    sleep some 80 us."""
    os.sched_yield()


def _none_if_nan(value: float) -> float | None:
    return None if np.isnan(value) else float(value)

