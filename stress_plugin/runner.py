"""One stress run: book -> symbol cap -> engine -> evaluators -> KILL_SWITCH -> store.

A run ends ``passed``, ``breached`` or ``failed``. What a run needs (the book, the limits, the
evaluators, finite numbers) fails closed: a run that could not check the book is stored,
counted and alerted as failed, never reported as passing. The runtime owns the halt latch: a
KILL_SWITCH is latched in the store whatever plugins are loaded. Alert sinks are not on the
run's path: the run is stored with one pending delivery per sink, and the delivery worker
(``delivery.Deliverer``) sends them.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from stress_hookspecs import (
    Book,
    BookColumns,
    Limits,
    Metrics,
    RiskEvent,
    RunTrigger,
    StressResult,
    SymbolMetrics,
)
from stress_plugin.core import DEFAULT_SCENARIO, engine
from stress_plugin.core.book import BookArrays, NameMemo, book_from_mapping, read_book
from stress_plugin.core.errors import (
    NO_VALUE,
    BookError,
    PluginError,
    RunFailure,
    ScenarioError,
    StressError,
    UnknownScenario,
    log_safe,
)
from stress_plugin.core.limits import check_limits, limits_in_force
from stress_plugin.core.scenario import StressScenario
from stress_plugin.core.times import iso_utc, parse_iso
from stress_plugin.delivery import Deliverer
from stress_plugin.plugins import Plugins
from stress_plugin.settings import Settings, load_settings
from stress_plugin.store import Store

log = logging.getLogger("stress_runner")

_CONFIRM_POLL_S = 0.05
"""Sleep between two reads of the host's trading state while confirming a switch."""
RESET_WINDOW_S = 15 * 60
"""Approvals of a reset older than this no longer count."""


class ClaimLost(RuntimeError):
    """This replica no longer holds the scheduled slot it was running: another took it over."""


class StressRunner:
    """Runs scenarios against the book; plugins are loaded once, when the runner is made.

    ``store`` keeps every run, the halt latch and the alert outbox; without one the runner keeps
    them in memory for its own lifetime. With ``deliver_in_background`` (the default) a daemon
    thread sends each run's alerts once it is stored; without it the caller sends them
    (``runner.deliveries.drain(...)``, as ``stress-runner run`` does).
    """

    def __init__(self, plugins: Plugins | None = None, settings: Settings | None = None,
                 store: Store | None = None, *, deliver_in_background: bool = True) -> None:
        self.settings = settings or load_settings()
        self.store = store if store is not None else Store(":memory:")
        self.plugins = plugins or Plugins.load(
            self.settings.disabled_plugins, trace=self.settings.stress_trace_plugins
        )
        self.plugins.require_evaluator()
        self.deliveries = Deliverer(self.plugins, self.store, self.settings)
        self.deliver_in_background = deliver_in_background
        self._scenarios: dict[str, StressScenario] | None = None
        self._profiles: dict[tuple[str, int, int, int], np.ndarray] = {}
        # the last book's names that passed the name rules: the same symbols again are one
        # list comparison, not the rules (1,000,000 names: ~120 ms less a run)
        self._names = NameMemo()

    # -- scenarios ----------------------------------------------------------------------------

    def scenarios(self) -> dict[str, StressScenario]:
        """Every discovered scenario by name: packs' ``stress_scenarios``, then STRESS_SCENARIOS."""
        if self._scenarios is None:
            found: dict[str, StressScenario] = {}
            offered = [*self.plugins.scenarios(),
                       *(("STRESS_SCENARIOS", p) for p in self.settings.scenario_files)]
            for plugin, item in offered:
                scenario = _scenario_from(plugin, item, self.settings.stress_max_file_bytes)
                if scenario.name in found:
                    raise ScenarioError(scenario.origin, "scenario_name", scenario.name,
                                        f"also defined by {found[scenario.name].origin}")
                found[scenario.name] = scenario
            self._scenarios = found
        return self._scenarios

    def scenario_named(self, name: str) -> StressScenario:
        """A discovered scenario by name only: what the API offers (a path is just an unknown
        name, and no file is opened)."""
        known = self.scenarios()
        if name not in known:
            names = ", ".join(sorted(known)) or "none: is a scenario pack installed?"
            raise UnknownScenario("scenario", None, name, f"unknown scenario (known: {names})",
                                  from_request=True)
        return known[name]

    def scenario(self, name_or_path: str | Path | StressScenario) -> StressScenario:
        """A scenario by name, or loaded from a ``.yaml``/``.yml`` path."""
        if isinstance(name_or_path, StressScenario):
            return name_or_path
        text = str(name_or_path)
        if isinstance(name_or_path, Path) or text.endswith((".yaml", ".yml")):
            return StressScenario(text, max_bytes=self.settings.stress_max_file_bytes)
        return self.scenario_named(text)

    # -- the limits and the halt ----------------------------------------------------------------

    def limits(self, scenario: StressScenario, live: Mapping[str, float] | None = None
               ) -> tuple[Limits, dict[str, str]]:
        """The limits in force now and each field's source (live > host > scenario > default);
        ``live``, the live limits when the caller read them already (a run, with the halt).

        Raises ``RunFailure`` when the host's ``stress_limits`` raises or answers nonsense.
        """
        return limits_in_force(scenario=scenario.limits_given, host=self.host_limits(),
                               live=self.store.live_limits() if live is None else live)

    def host_limits(self) -> tuple[str, dict[str, float]] | None:
        """(plugin, the fields it sets) from ``stress_limits``, checked; None when no host sets
        any. Raises ``RunFailure`` when the hook raises or answers something invalid."""
        answer = self.plugins.limits()
        if answer is None:
            return None
        plugin, given = answer
        try:
            return plugin, check_limits(given, f"plugin {plugin} (stress_limits)", PluginError)
        except StressError as exc:
            raise RunFailure.wrap("limits_invalid", exc) from None

    def halt(self) -> dict[str, Any] | None:
        """The halt in force (reason, since, run_id, scenario, symbols), or None."""
        return self.store.halt_get()

    def reset_approvals(self) -> dict[str, Any]:
        """The pending approvals of the halt in force, how many are needed and when the oldest
        expires."""
        approvals = self.store.reset_approvals(RESET_WINDOW_S)
        return {"approvals": approvals, "approvals_required": self.settings.stress_reset_approvals,
                "expires_at": _expiry(approvals) if approvals else None}

    def reset(self, actor: str, reason: str | None = None) -> dict[str, Any] | None:
        """``approve_reset`` by the operator ``actor``; returns the halt cleared, if any, with
        ``reset_confirmed`` (True, False, or None when no host can answer)."""
        return self.approve_reset(actor, actor, reason)["cleared"]

    def approve_reset(self, operator: str, actor: str, reason: str | None = None
                      ) -> dict[str, Any]:
        """One operator's approval to clear the halt latch (audited with ``actor`` and
        ``reason``). With STRESS_RESET_APPROVALS=N the halt clears once N distinct operators
        approved within ``RESET_WINDOW_S`` (MiFID II RTS 6 Art. 15(3): designated staff
        re-enable); then a ``RESET`` event goes to the host bus and the host's state is read
        back to ``ACTIVE`` (``cleared['reset_confirmed']``). The API and the CLI share
        this rule. Returns ``cleared``, ``approvals``, ``required`` and ``expires_at``."""
        required = self.settings.stress_reset_approvals
        outcome = self.store.reset_approve(operator, actor, reason, required=required,
                                           window_s=RESET_WINDOW_S)
        outcome["expires_at"] = _expiry(outcome["approvals"]) if outcome["cleared"] is None \
            and outcome["approvals"] else None
        cleared = outcome["cleared"]
        shown_reason = log_safe(reason or "no reason given")[:200]
        if cleared is None and outcome["approvals"]:
            log.warning("circuit reset approved by %s (%d of %d approvals); trading stays "
                        "halted (%s)", actor, len(outcome["approvals"]), required, shown_reason)
        if cleared is not None:
            log.warning("circuit reset by %s: trading halt of run %s cleared (%s)", actor,
                        cleared["run_id"], shown_reason)
            self.plugins.bus_publish(RiskEvent(
                type="RESET", scenario=cleared["scenario"], symbols=tuple(cleared["symbols"]),
                run_id=cleared["run_id"], timestamp=iso_utc(self.now()),
                reason=f"reset by {actor}: {reason or 'no reason given'}"))
            confirmed = self._confirm(("ACTIVE",))
            if confirmed is False:
                log.critical("RESET UNCONFIRMED: the host did not show ACTIVE within %g s "
                             "after the reset of run %s", self.settings.stress_kill_confirm_s,
                             cleared["run_id"])
            cleared = {**cleared, "reset_confirmed": confirmed}
        outcome["cleared"] = cleared
        return outcome

    def now(self) -> datetime:
        """The host's time (``stress_clock``, e.g. a backtest's simulated time), else UTC now."""
        return self.plugins.clock() or datetime.now(UTC)

    # -- the run ------------------------------------------------------------------------------

    def run_once(
        self,
        *,
        book: Book | BookColumns | Mapping[str, Any] | str | Path | None = None,
        scenario: str | Path | StressScenario = DEFAULT_SCENARIO,
        symbols: Sequence[str] | None = None,
        trigger: RunTrigger = "manual",
        scheduled_for: str | None = None,
    ) -> StressResult:
        """Stress the book once; publishes KILL_SWITCH on a breach; stores the run with its
        pending alerts and returns (the alerts go out afterwards, off this path).

        ``book`` overrides the ``stress_book`` hook; ``symbols`` restricts the book to those.
        ``trigger`` (schedule, manual, cli) and ``scheduled_for`` (ISO UTC) go to the store.
        Raises ``StressError`` for a bad request (unknown scenario or symbol). Anything the run
        needs that cannot be had ends in a result with ``status == "failed"``, stored and
        alerted like any other; output plugin failures are logged, never raised.
        """
        return self.run_many(scenarios=[scenario], book=book, symbols=symbols, trigger=trigger,
                             scheduled_for=scheduled_for)[0]

    def run_many(
        self,
        *,
        scenarios: Sequence[str | Path | StressScenario],
        book: Book | BookColumns | Mapping[str, Any] | str | Path | None = None,
        symbols: Sequence[str] | None = None,
        trigger: RunTrigger = "manual",
        scheduled_for: str | None = None,
        fence: Callable[[], bool] | None = None,
    ) -> list[StressResult]:
        """Stress ONE snapshot of the book under each scenario, in order; a result each.

        The book is taken once (one ``stress_book`` call or one file read), so every scenario
        sees the same positions and prices; a book that cannot be had fails every scenario's
        run. If any run trips the KILL_SWITCH, ONE event names every such scenario, published
        and latched before any run is stored (halt first). Each result is then stored as a run
        of its own, with one pending delivery per alert sink and its own episode (the store's,
        per scenario), and the stored results are returned; no sink is called on this path.
        ``run_once`` is this with one scenario.

        ``fence`` (a scheduled slot's: whether this replica still holds its claim) is asked
        before the KILL_SWITCH and before storing; False raises ``ClaimLost`` and nothing is
        published, latched or stored (the slot's unique key stops a store that races it).
        """
        chosen = list({s.name: s for s in map(self.scenario, scenarios)}.values())
        if not chosen:
            raise ScenarioError("scenarios", None, NO_VALUE, "no scenario to run")
        with RESPONSIVE:
            return self._run_many(chosen, book, symbols, trigger, scheduled_for, fence)

    def _run_many(self, chosen: list[StressScenario],
                  book: Book | BookColumns | Mapping[str, Any] | str | Path | None,
                  symbols: Sequence[str] | None, trigger: RunTrigger, scheduled_for: str | None,
                  fence: Callable[[], bool] | None = None) -> list[StressResult]:
        started = time.perf_counter()
        arrays: BookArrays | None = None
        source: str | None = None
        skipped: tuple[str, ...] = ()
        failure: RunFailure | None = None
        try:
            arrays, source = self._book(book)
            if symbols:
                arrays = _restrict(arrays, symbols, source)
            arrays, skipped = self._cap(arrays)
        except RunFailure as exc:
            failure = exc
        # the live limits and the halt in force, read once for every scenario of the snapshot
        live, halt = self.store.run_state()
        book_s = time.perf_counter() - started
        # each run's runtime counts the shared book once, as a run on its own would
        runs = [self._run(s, arrays, source, skipped, failure, live,
                          time.perf_counter() - book_s) for s in chosen]
        results = [result for result, _ in runs]
        # what each run's P&L paths are made of (None for a failed run), kept for its report
        paths = {result.run_id: p for result, p in runs}

        _check_fence(fence)
        on_failure = self.settings.stress_on_failure == "halt"
        tripped = [r.run_id for r in results
                   if r.breaches or (r.status == "failed" and on_failure)]
        if tripped:
            results = [replace(r, kill_switch=True) if r.run_id in tripped else r
                       for r in results]
            confirmed = self._kill_switch([r for r in results if r.run_id in tripped])
            results = [replace(r, kill_switch_confirmed=confirmed) if r.run_id in tripped else r
                       for r in results]
        # a trip latched a halt (or found one in force); else the halt read at the start
        halted = bool(tripped) or halt is not None
        if halted:  # False is the default: no copy on the everyday run
            results = [replace(r, halted=True) for r in results]
        sinks = self.plugins.sinks()
        _check_fence(fence)
        stored = []
        for result in results:
            # the store gives each run its episode (per scenario, in store order)
            stored.append(self.store.save_run(
                result, trigger=trigger, scheduled_for=scheduled_for, sinks=sinks,
                prices=arrays.price if arrays is not None and result.portfolio is not None
                else None,
                paths=paths[result.run_id] if result.portfolio is not None else None))
        if sinks and self.deliver_in_background:
            self.deliveries.start()
            self.deliveries.wake()
        return stored

    def _run(self, chosen: StressScenario, arrays: BookArrays | None, source: str | None,
             skipped: tuple[str, ...], failure: RunFailure | None,
             live: Mapping[str, float], started: float
             ) -> tuple[StressResult, engine.PathInputs | None]:
        """One scenario on the prepared book: limits, engine, evaluators, timing, log, and
        what its P&L paths are made of (None when the run failed before the engine). What
        it cannot have fails this run; nothing is published, stored or alerted here."""
        timestamp = iso_utc(self.now())
        # the timestamp's digits (UTC), then os.urandom, as secrets.token_hex does, without
        # importing hmac and OpenSSL at start-up
        run_id = f"{timestamp.replace('-', '').replace(':', '')}-{os.urandom(4).hex()}"
        # the fields known so far: a failed run keeps these and no metrics
        known: dict[str, Any] = dict(run_id=run_id, scenario=chosen.name, timestamp=timestamp,
                                     symbols_tested=0, portfolio=None, symbols={},
                                     headroom=None, limits=None)
        paths = None
        try:
            if failure is not None:
                raise failure
            assert arrays is not None
            known["book_source"] = source
            limits, limit_sources = self.limits(chosen, live)
            known.update(symbols_tested=len(arrays.symbols), skipped_symbols=skipped, limits=limits,
                         limit_sources=limit_sources)
            figures, paths = self._stress(arrays, chosen, limits)
            breaches = self.plugins.evaluate(StressResult(**{**known, **figures}))
        except RunFailure as exc:
            fields = {**known, "error": str(exc), "failure": exc.reason}
        else:
            fields = {**known, **figures, "breaches": tuple(breaches),
                      "kill_switch": bool(breaches)}
        runtime_ms = (time.perf_counter() - started) * 1000
        result = StressResult(**fields, runtime_ms=round(runtime_ms, 3))
        self._log(result, runtime_ms)
        return result, paths

    def _stress(self, arrays: BookArrays, chosen: StressScenario, limits: Limits
                ) -> tuple[dict[str, Any], engine.PathInputs]:
        """The engine's figures (a result's ``portfolio``, ``symbols`` and ``headroom``), and
        what its P&L paths are made of (kept for the run's report: the coefficients with each
        symbol's shock and spread multiplier, and the scenario's own profile); any non-finite
        metric fails the run."""
        shocks = chosen.shocks_for(arrays.symbols)
        coef = engine.coefficients(arrays.quantity, arrays.price, arrays.spread,
                                   arrays.multiplier, arrays.delta, arrays.gamma, shocks,
                                   chosen.spread_mults_for(arrays.symbols))
        gamma_move = np.abs(arrays.gamma * arrays.price * shocks)
        profile = self._profile(chosen)
        out = engine.stress(coef, gamma_move, arrays.var, arrays.equity, arrays.book_var,
                            profile, limits)
        _check_finite(out, arrays)
        paths = engine.PathInputs(coef, profile, chosen.step_sec, arrays.equity, arrays.book_var)
        return dict(
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
            headroom=min(out.portfolio_headroom, float(out.headroom.min())),
        ), paths

    def _log(self, result: StressResult, runtime_ms: float) -> None:
        if result.status == "failed":
            log.error("stress run failed: %s run %s: %s", result.scenario, result.run_id,
                      result.error)
            return
        log.info("stress run %s: scenario=%s symbols_tested=%d breaches=%d headroom=%.4g "
                 "runtime_ms=%.3f", result.run_id, result.scenario, result.symbols_tested,
                 result.breach_count, result.headroom, runtime_ms)
        budget = self.settings.stress_max_runtime_ms
        if runtime_ms > budget:
            log.warning("stress run %s exceeded max runtime: %.3f ms > %g ms "
                        "(symbols_tested=%d)", result.run_id, runtime_ms, budget,
                        result.symbols_tested)

    def _book(self, book: Book | BookColumns | Mapping[str, Any] | str | Path | None
              ) -> tuple[BookArrays, str]:
        """The book's columns and who supplied it; ``RunFailure`` when there is none to use."""
        if isinstance(book, str | Path):
            try:
                return read_book(book, self.settings.stress_max_file_bytes)[1], str(book)
            except BookError as exc:
                reason = "book_unavailable" if exc.problem.startswith("cannot read") else \
                    "book_invalid"
                raise RunFailure.wrap(reason, exc) from None
        if book is None:
            answer = self.plugins.book()
            if answer is None:
                suppliers = ", ".join(self.plugins.book_suppliers()) or "none is loaded"
                raise RunFailure("book_unavailable", "stress_book", None, NO_VALUE,
                                 f"no plugin provided a book (asked: {suppliers})")
            plugin, book = answer
            source = f"plugin {plugin}"
        else:
            source = "book argument"
        where = f"{source} (stress_book)" if source.startswith("plugin") else source
        try:
            if isinstance(book, Mapping):
                book = book_from_mapping(book, where)
            if not isinstance(book, Book | BookColumns):
                raise PluginError(where, None, type(book).__name__,
                                  "must be a Book, a BookColumns or a mapping")
            return BookArrays.from_book(book, where, names=self._names), source
        except StressError as exc:
            raise RunFailure.wrap("book_invalid", exc) from None

    def _cap(self, arrays: BookArrays) -> tuple[BookArrays, tuple[str, ...]]:
        """Keep the STRESS_MAX_SYMBOLS largest gross notionals |q m P|, in book order."""
        cap, n = self.settings.stress_max_symbols, len(arrays.symbols)
        if n <= cap:
            return arrays, ()
        notional = np.abs(arrays.quantity * arrays.multiplier * arrays.price)
        order = np.argsort(-notional, kind="stable")
        skipped = tuple(arrays.symbols[order[cap:]].tolist())
        log.warning("symbol cap: testing %d of %d symbols (STRESS_MAX_SYMBOLS=%d); skipped %d "
                    "with the smallest gross notional: %s", cap, n, cap, len(skipped),
                    ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else ""))
        return arrays.take(np.sort(order[:cap])), skipped

    def _profile(self, scenario: StressScenario) -> np.ndarray:
        key = scenario.profile_key
        if key not in self._profiles:
            self._profiles[key] = engine.recovery_profile(*key)
        return self._profiles[key]

    def _kill_switch(self, results: Sequence[StressResult]) -> bool | None:
        """Halt first: ONE event, published on the bus and latched before any run is stored or
        any sink runs; a bus that nobody accepted is loud. Then the host's state is read back:
        whether it confirmed the switch (None when no host can say).

        For several runs (``run_many``) ``scenario`` names them all, comma-separated,
        ``symbols`` is every breached symbol once, ``run_id`` is the first run's and
        ``reason`` says which run broke what."""
        first = results[0]
        if len(results) == 1:
            reason = _trip_reason(first)
        else:
            reason = " | ".join(f"{r.scenario} (run {r.run_id}): {_trip_reason(r, 5)}"
                                for r in results)
        names = ",".join(r.scenario for r in results)
        symbols = tuple(dict.fromkeys(s for r in results for s in r.breached_symbols))
        mode = self.settings.stress_kill_mode
        event = RiskEvent(type="KILL_SWITCH", scenario=names, symbols=symbols,
                          run_id=first.run_id, timestamp=first.timestamp, reason=reason,
                          mode=mode)
        log.critical("KILL_SWITCH triggered: scenario=%s symbols=%s run_id=%s mode=%s (%s)",
                     names, ",".join(symbols), first.run_id, mode, reason)
        deliveries = self.plugins.bus_publish(event)
        if not any(d.error is None for d in deliveries):
            log.critical("KILL_SWITCH for run %s reached no bus: %s", first.run_id,
                         ", ".join(d.plugin for d in deliveries) or "no stress_bus_publish plugin")
        self.store.halt_set({"reason": reason, "since": first.timestamp,
                             "run_id": first.run_id, "scenario": names,
                             "symbols": list(symbols)})
        # REDUCING is asked for with mode=reduce, but a host that HALTED did more, not less
        wanted = ("HALTED",) if mode == "halt" else ("REDUCING", "HALTED")
        confirmed = self._confirm(wanted)
        if confirmed is False:
            log.critical("KILL_SWITCH UNCONFIRMED: scenario=%s run_id=%s: the host did not show "
                         "%s within %g s (STRESS_KILL_CONFIRM_S); paging separately", names,
                         first.run_id, wanted[0], self.settings.stress_kill_confirm_s)
        return confirmed

    def _confirm(self, wanted: tuple[str, ...]) -> bool | None:
        """Read ``stress_trading_state`` until it shows one of ``wanted`` (True) or
        STRESS_KILL_CONFIRM_S passes (False); None at once when no plugin implements it. The
        wait never exceeds the deadline, and no sink is waited for."""
        deadline = time.monotonic() + self.settings.stress_kill_confirm_s
        while True:
            answer = self.plugins.trading_state()
            if answer is None:
                return None
            plugin, state = answer
            if state in wanted:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                log.error("trading state from plugin %s is %s, not %s", plugin,
                          state or "unknown", " or ".join(wanted))
                return False
            time.sleep(min(_CONFIRM_POLL_S, left))


def _trip_reason(result: StressResult, limit: int = 20) -> str:
    if result.status == "failed":
        return f"run failed ({result.failure}): {result.error}"
    return "; ".join(f"{b.symbol} {b.limit} {b.value:.6g} > {b.threshold:g}"
                     for b in result.breaches[:limit])


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """One row of a many-scenario run (CLI table, status endpoint): status, worst P&L,
    drawdown, breaches, headroom and the binding symbol: the first in book order whose
    headroom is the run's, or PORTFOLIO when only the whole book binds that early; None when
    nothing binds below the headroom cap, or the run failed."""
    row = {"scenario": result["scenario"], "status": result["status"],
           "run_id": result["run_id"], "timestamp": result["timestamp"],
           "worst_pnl": None, "drawdown_pct": None, "breach_count": result["breach_count"],
           "breached_symbols": list(result["breached_symbols"]),
           "headroom": result["headroom"], "binding_symbol": None,
           "error": result.get("error")}
    if result.get("portfolio") is None:  # a failed run: no figures
        return row
    binding: str | None = "PORTFOLIO"
    lowest = result["portfolio"]["headroom"]
    for symbol, m in result["symbols"].items():
        if m["headroom"] <= lowest and (binding == "PORTFOLIO" or m["headroom"] < lowest):
            binding, lowest = symbol, m["headroom"]
    row.update(worst_pnl=result["portfolio"]["worst_pnl"],
               drawdown_pct=result["portfolio"]["drawdown_pct"],
               binding_symbol=binding if lowest < engine.HEADROOM_CAP else None)
    return row


def _scenario_from(plugin: str, item: Any, max_bytes: int) -> StressScenario:
    if isinstance(item, StressScenario):
        return item
    if isinstance(item, str | Path):
        return StressScenario(item, max_bytes=max_bytes)
    if isinstance(item, Mapping):
        return StressScenario(item, origin=f"plugin {plugin} (stress_scenarios)")
    raise PluginError(f"plugin {plugin} (stress_scenarios)", None, type(item).__name__,
                      "each scenario must be a path or a mapping")


def _restrict(arrays: BookArrays, symbols: Sequence[str], source: str) -> BookArrays:
    """The requested symbols, in the order asked; a symbol matches its exact name, or the one
    book symbol equal to it ignoring case. Unknown ones are named with their close matches."""
    names = arrays.symbols.tolist()
    position = {sym: i for i, sym in enumerate(names)}
    folded: dict[str, list[int]] = {}
    for i, sym in enumerate(names):
        folded.setdefault(sym.casefold(), []).append(i)
    chosen, missing = [], []
    for sym in symbols:
        if sym in position:
            chosen.append(position[sym])
        elif len(folded.get(sym.casefold(), ())) == 1:
            chosen.append(folded[sym.casefold()][0])
        else:
            missing.append(sym)
    if missing:
        raise BookError("symbols", None, ",".join(missing),
                        f"not in the book of {source}: {_suggest(missing, names)}",
                        from_request=True)
    return arrays.take(np.array(list(dict.fromkeys(chosen)), dtype=np.intp))


def _suggest(missing: Sequence[str], names: Sequence[str], listed: int = 20) -> str:
    """Close matches (ignoring case) of each unknown symbol, and the book's symbols if few."""
    import difflib

    by_fold: dict[str, str] = {}
    for name in names:
        by_fold.setdefault(name.casefold(), name)
    hints = []
    for sym in missing:
        close = difflib.get_close_matches(sym.casefold(), list(by_fold), n=3, cutoff=0.6)
        hints.append(f"{sym}: did you mean {', '.join(by_fold[c] for c in close)}?" if close
                     else f"{sym}: no close match")
    book = (f"the book has {', '.join(names)}" if len(names) <= listed
            else f"the book has {len(names)} symbols")
    return "; ".join([*hints, book])


class _Responsive:
    """While any run is in progress, the interpreter's switch interval is at most
    ``interval_s`` (then restored), so a host's trading thread or event loop waiting for the
    GIL gets it within that time instead of Python's default 5 ms.

    This replaces yielding the CPU between stages (``os.sched_yield``): a yield gives the core
    to another process whenever one is runnable, so on a busy host every run waited a
    scheduler slice per stage (45x slower with two busy processes on two cores). A shorter
    switch interval costs nothing unless another thread of this process asks for the GIL, and
    then it is the hand-over that thread needs. Process-wide, as the interval is: runs in
    several threads share one window, and the host's own setting, if lower, is kept.
    """

    def __init__(self, interval_s: float = 0.0005) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = 0.0

    def __enter__(self) -> None:
        with self._lock:
            if not self._depth:
                self._saved = sys.getswitchinterval()
                if self._saved > self.interval_s:
                    sys.setswitchinterval(self.interval_s)
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if not self._depth:
                sys.setswitchinterval(self._saved)


RESPONSIVE = _Responsive()
"""The runner's switch-interval window (``_Responsive``)."""


def _check_fence(fence: Callable[[], bool] | None) -> None:
    if fence is not None and not fence():
        raise ClaimLost("this replica lost its claim of the slot; another runs it")


def _none_if_nan(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _check_finite(out: engine.EngineOutput, arrays: BookArrays) -> None:
    """Fail the run on any NaN or infinity (a NaN VaR ratio is fine: no VaR was given)."""
    checks = [("worst_pnl", out.worst_pnl), ("drawdown_pct", out.drawdown_pct),
              ("delta_change", out.delta_change), ("headroom", out.headroom),
              ("var_ratio", np.where(np.isnan(arrays.var), 0.0, out.var_ratio))]
    for name, column in checks:
        if not np.isfinite(column).all():
            bad = int(np.argmin(np.isfinite(column)))
            raise RunFailure("non_finite", "engine", f"{arrays.symbols[bad]}.{name}",
                             float(column[bad]), "is not a finite number; the book's numbers "
                             "are too large or too small to stress")
    portfolio = [("worst_pnl", out.portfolio_worst_pnl),
                 ("drawdown_pct", out.portfolio_drawdown_pct),
                 ("headroom", out.portfolio_headroom)]
    if arrays.book_var is not None:
        portfolio.append(("var_ratio", out.portfolio_var_ratio))
    for name, value in portfolio:
        if not np.isfinite(value):
            raise RunFailure("non_finite", "engine", f"PORTFOLIO.{name}", float(value),
                             "is not a finite number; the book's numbers are too large or too "
                             "small to stress")


def _expiry(approvals: list[dict[str, Any]]) -> str:
    """When the oldest pending approval stops counting (ISO UTC)."""
    oldest = parse_iso(min(a["at"] for a in approvals))
    return iso_utc(oldest + timedelta(seconds=RESET_WINDOW_S))


