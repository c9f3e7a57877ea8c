"""The long-running service behind ``stress-runner serve``: scheduled and manual runs, the
store, live limits and config, the halt, metrics and the delivery worker of the alert outbox.

The API (``api.py``) is a thin HTTP shell over this class; everything here is synchronous and
runs in worker threads, never on the server's event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import Gauge

from stress_hookspecs import RunTrigger, StressResult
from stress_plugin.core.errors import ConfigError, RunFailure
from stress_plugin.core.limits import check_limits
from stress_plugin.core.prices import price_summary
from stress_plugin.core.times import iso_utc, parse_iso
from stress_plugin.plugins import Plugins
from stress_plugin.runner import ClaimLost, StressRunner, summary
from stress_plugin.service.config import (
    ServiceConfig,
    check_config,
    effective_config,
    from_settings,
)
from stress_plugin.service.metrics import PrometheusMetrics
from stress_plugin.settings import Settings
from stress_plugin.store import WORKER, Store

SLOT_GRACE_S = 300
"""How long after its time a slot may still run (the scheduler's misfire grace), here or, after
a take-over, on another replica."""
REPLICA_BEAT_S = 10.0
"""How often a serving replica says it is alive; one unseen for three beats is gone."""

log = logging.getLogger("stress_runner.service")

class StressService:
    """Owns the runner, the store, the scheduler and the metrics of one deployment."""

    def __init__(self, settings: Settings, *, book_path: Path | None = None,
                 plugins: Plugins | None = None, store: Store | None = None) -> None:
        self.settings = settings
        self.book_path = book_path
        self.metrics = PrometheusMetrics()
        self.store = store or Store(settings.db_path)
        self.plugins = plugins or Plugins.load(settings.disabled_plugins,
                                               trace=settings.stress_trace_plugins)
        self.plugins.observer = self.metrics
        self.runner = StressRunner(plugins=self.plugins, settings=settings, store=self.store)
        self._run_lock = threading.Lock()
        self._config_lock = threading.Lock()
        self._watch_lock = threading.Lock()
        self._watching: set[tuple[str, str]] = set()
        self._stopping = threading.Event()
        self.replica = WORKER
        """Who this replica is in slot claims and heartbeats."""
        self.config = self._initial_config()
        self._apply_runner_settings()
        self.scheduler: Any = None
        self.duplicate_runs = 0
        self.metrics.read_at_scrape(halted=self.store.halted, next_run=self._next_run,
                                    scheduler_counts=self._scheduler_counts,
                                    outbox=self.store.outbox_stats)
        replicas = Gauge("stress_replicas", "Replicas of this deployment seen alive in their "
                         "last three heartbeats (one shared store).",
                         registry=self.metrics.registry)
        replicas.set_function(lambda: self.store.replica_count(self._fresh_since()))
        Gauge("stress_replicas_expected", "Replicas the deployment runs (STRESS_REPLICAS).",
              registry=self.metrics.registry).set(settings.stress_replicas)
        self.metrics.restore([{**run, "result": self.store.run(run["run_id"])}
                              for run in self.store.latest_runs()])
        self.metrics.declare(
            scenarios=sorted(self.runner.scenarios()),
            plugins=[info.name for info in self.plugins.describe()],
            sinks=[info.name for info in self.plugins.describe() if "stress_alert" in info.hooks])

    # -- runs ---------------------------------------------------------------------------------

    def run(self, *, trigger: RunTrigger, scenario: str | None = None,
            symbols: list[str] | None = None,
            scheduled_for: datetime | None = None) -> StressResult:
        """One run, never overlapping another; stored and counted before it returns."""
        return self.run_many(trigger=trigger, scenarios=[scenario or self.config.scenarios[0]],
                             symbols=symbols, scheduled_for=scheduled_for)[0]

    def run_many(self, *, trigger: RunTrigger, scenarios: list[str],
                 symbols: list[str] | None = None, scheduled_for: datetime | None = None,
                 fence: Callable[[], bool] | None = None) -> list[StressResult]:
        """Each scenario on one snapshot of the book (``StressRunner.run_many``: one
        KILL_SWITCH for all), never overlapping another run; stored and counted per scenario."""
        # names only: the API never opens a path it is given
        chosen = [self.runner.scenario_named(name) for name in scenarios]
        with self._run_lock:
            # the --book file is read at every run (it is the live book), else the hooks answer
            results = self.runner.run_many(
                book=self.book_path, scenarios=chosen, symbols=symbols, trigger=trigger,
                scheduled_for=iso_utc(scheduled_for) if scheduled_for else None, fence=fence)
        self.metrics.observe_runs(results, trigger, time.time())
        return results

    def scheduled_run(self, slot: datetime) -> None:
        """The scheduler's job: claim (scenario, slot) for every configured scenario (the
        config as stored now: another replica may have changed it), then run the claimed ones
        on one book snapshot, each keyed by its scheduled UTC time."""
        self.sync_config()
        claimed = [name for name in self.config.scenarios if self.claim_slot(name, slot)]
        if claimed:
            self._run_claimed(claimed, slot)

    def claim_slot(self, scenario: str, slot: datetime) -> bool:
        """Whether this replica runs ``scenario`` for ``slot`` (``Store.claim_slot``): not
        when its run is stored (counted duplicate), nor while another replica's lease is live;
        then a watcher takes the slot over if that lease expires with no run stored."""
        claim = self.store.claim_slot(scenario, iso_utc(slot), self.settings.stress_slot_lease_s,
                                      self.replica)
        if claim.state == "claimed":
            if claim.attempt > 1:
                log.warning("took over the slot of %s at %s (attempt %d): the replica holding "
                            "it let its lease expire with no run stored", scenario,
                            claim.scheduled_for, claim.attempt)
            return True
        if claim.state == "done":
            log.warning("scheduled run of %s at %s already done by another worker; skipped",
                        scenario, claim.scheduled_for)
            self.duplicate_runs += 1
            return False
        log.info("slot of %s at %s is held by replica %s until %s", scenario,
                 claim.scheduled_for, claim.replica, claim.lease_until)
        self._watch_claim(scenario, slot)
        return False

    def _run_claimed(self, scenarios: list[str], slot: datetime) -> None:
        """Run claimed slots, renewing their leases meanwhile; a lease lost (taken over)
        fences the run: nothing is published, latched or stored by this replica."""
        key, lease = iso_utc(slot), self.settings.stress_slot_lease_s
        done, lost = threading.Event(), threading.Event()

        def heartbeat() -> None:
            while not done.wait(lease / 3):
                try:
                    if not all([self.store.renew_claim(n, key, lease, self.replica)
                                for n in scenarios]):
                        lost.set()
                except Exception:
                    log.exception("renewing the claim of slot %s failed", key)

        def fence() -> bool:
            return not lost.is_set() and all(self.store.holds_claim(n, key, self.replica)
                                             for n in scenarios)

        beat = threading.Thread(target=heartbeat, name="stress-slot-lease", daemon=True)
        beat.start()
        try:
            self.run_many(trigger="schedule", scenarios=scenarios, scheduled_for=slot,
                          fence=fence)
        except ClaimLost:
            log.error("slot %s of %s: this replica lost its claim mid-run; another replica "
                      "runs it, nothing of this run was published or stored", key,
                      ",".join(scenarios))
        finally:
            done.set()

    def _watch_claim(self, scenario: str, slot: datetime) -> None:
        """Until the slot's grace passes: once the holder's lease has expired with no run
        stored, claim the slot and run it (a replica killed mid-slot is taken over)."""
        key = (scenario, iso_utc(slot))
        with self._watch_lock:
            if key in self._watching:
                return
            self._watching.add(key)
        deadline = slot + timedelta(seconds=SLOT_GRACE_S)

        def watch() -> None:
            try:
                while not self._stopping.is_set():
                    claim = self.store.claim_slot(*key, self.settings.stress_slot_lease_s,
                                                  self.replica)
                    if claim.state == "claimed":
                        self._run_claimed([scenario], slot)
                        return
                    if claim.state == "done":
                        return
                    until = parse_iso(claim.lease_until) if claim.lease_until else deadline
                    if until >= deadline:
                        log.error("slot of %s at %s: held by %s past its grace; not run here",
                                  scenario, key[1], claim.replica)
                        return
                    wait = (until - datetime.now(UTC)).total_seconds() + 0.05
                    self._stopping.wait(max(0.05, wait))
            except Exception:
                log.exception("watching the claim of slot %s of %s failed", key[1], scenario)
            finally:
                with self._watch_lock:
                    self._watching.discard(key)

        threading.Thread(target=watch, name="stress-slot-watch", daemon=True).start()

    def sync_config(self) -> None:
        """Take up the config as stored now (another replica's PUT holds here too)."""
        stored = self.store.current_config()
        if stored is None:
            return
        try:
            new = check_config(effective_config(self.settings, stored),
                               known=set(self.runner.scenarios()))
        except ConfigError as exc:
            log.error("stored config is not valid here (%s); keeping the current one", exc)
            return
        with self._config_lock:
            if new == self.config:
                return
            if self.scheduler is not None:
                self.scheduler.reschedule(interval_minutes=new.interval_minutes,
                                          offset_seconds=new.offset_seconds,
                                          market_hours_only=new.market_hours_only,
                                          enabled=new.enabled)
            self.config = new
            self._apply_runner_settings()
        log.info("config changed on another replica: now %s", new.to_dict())

    # -- config, limits, halt -------------------------------------------------------------------

    def update_config(self, patch: dict[str, Any], actor: str) -> ServiceConfig:
        """Validate the whole new config, then persist, audit and apply it, or change nothing."""
        with self._config_lock:
            merged = {**self.config.to_dict(), **patch}
            new = check_config(merged, known=set(self.runner.scenarios()))
            if self.scheduler is not None:
                self.scheduler.reschedule(interval_minutes=new.interval_minutes,
                                          offset_seconds=new.offset_seconds,
                                          market_hours_only=new.market_hours_only,
                                          enabled=new.enabled)
            self.store.save_config(new.to_dict(), actor=actor, change=patch)
            self.config = new
            self._apply_runner_settings()
        log.info("config changed by %s: %s", actor, patch)
        return new

    def limits(self) -> dict[str, Any]:
        """The limits a run of the first scheduled scenario would use now, from the runner's
        own function: each field's value, its source, and the live fields set through the API.
        Raises ``RunFailure`` when the host's limits cannot be had (the API answers 503)."""
        limits, sources = self.runner.limits(self.runner.scenario(self.config.scenarios[0]))
        return {**limits.to_dict(), "sources": sources, "live": self.store.live_limits()}

    def update_limits(self, patch: dict[str, float | None], actor: str) -> dict[str, Any]:
        """Set live limits (``None`` removes one field); a change that changes nothing is an
        error, and loosening a limit the host set is allowed but logged with both values."""
        with self._config_lock:
            live = self.store.live_limits()
            merged = {**live, **patch}
            new = check_limits({k: v for k, v in merged.items() if v is not None}, "limits",
                               ConfigError)
            if new == live:
                raise ConfigError("limits", None, patch, "changes nothing (live limits are "
                                  f"{live or 'not set'}); DELETE removes them")
            self._warn_if_looser_than_host(new)
            self.store.save_limits(new, actor=actor)
        log.info("live limits changed by %s: %s (live now %s)", actor, patch, new)
        return self.limits()

    def delete_limits(self, actor: str) -> dict[str, Any]:
        """Remove every live limit (audited); the host's and the scenario's apply again."""
        with self._config_lock:
            live = self.store.live_limits()
            if live:
                self.store.save_limits({}, actor=actor)
                log.warning("live limits %s removed by %s", live, actor)
        return self.limits()

    def _warn_if_looser_than_host(self, live: dict[str, float]) -> None:
        try:
            host = self.runner.host_limits()
        except RunFailure as exc:
            log.warning("live limits set while the host's limits cannot be read: %s", exc)
            return
        if host is None:
            return
        plugin, values = host
        for name, value in live.items():
            if name in values and value > values[name]:
                log.warning("live %s=%g loosens the %g that plugin %s sets", name, value,
                            values[name], plugin)

    def reset_circuit(self, actor: str, reason: str | None = None, *,
                      operator: str | None = None) -> dict[str, Any]:
        """One approval to clear the halt (``runner.approve_reset``: audited, RESET published
        when it clears); ``operator`` defaults to ``actor``."""
        return self.runner.approve_reset(operator or actor, actor, reason)

    def audit(self, hours: float) -> list[dict[str, Any]]:
        return self.store.audit_log(iso_utc(datetime.now(UTC) - timedelta(hours=hours)))

    def halt(self) -> dict[str, Any] | None:
        return self.runner.halt()

    # -- reads ----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        totals = self.store.run_totals()
        next_run = self.scheduler.next_run_time if self.scheduler is not None else None
        return {
            "enabled": self.config.enabled,
            "scheduler_running": bool(self.scheduler is not None and (
                self.scheduler.running or self.settings.stress_test_interval_s is not None)),
            "market_hours_only": self.config.market_hours_only,
            "interval_minutes": self.config.interval_minutes,
            "offset_seconds": self.config.offset_seconds,
            "last_run": self.store.last_run_summary(),
            "next_run": iso_utc(next_run) if next_run else None,
            "total_runs": totals["runs"],
            "total_breaches": totals["breaches"],
            "scenarios": sorted(self.runner.scenarios()),
            "scheduled_scenarios": list(self.config.scenarios),
            "scenario_results": {name: summary(result) for name, result
                                 in self.store.latest_results().items()},
            "halted": self.halt() is not None,
            "halt": self.halt(),
            "book": str(self.book_path) if self.book_path else "stress_book hook",
            "replica": self.replica,
            "last_slot": self.store.last_slot(),
            "replicas": self.replicas(),
        }

    def replicas(self) -> list[dict[str, Any]]:
        """The replicas seen in the last three heartbeats, newest first."""
        return self.store.replicas_seen(self._fresh_since())

    def _fresh_since(self) -> str:
        return iso_utc(datetime.now(UTC) - timedelta(seconds=3 * self._beat_s()))

    def _beat_s(self) -> float:
        return min(REPLICA_BEAT_S, self.settings.stress_slot_lease_s / 3)

    def results(self, hours: float) -> list[dict[str, Any]]:
        return self.store.runs_since(iso_utc(datetime.now(UTC) - timedelta(hours=hours)))

    def volatility(self, hours: float) -> dict[str, Any]:
        """Per symbol, from the prices each run saw in the window (``price_summary``)."""
        since = iso_utc(datetime.now(UTC) - timedelta(hours=hours))
        series: dict[str, list[float]] = {}
        for symbol, price in self.store.prices_since(since):
            series.setdefault(symbol, []).append(price)
        return {"hours": hours,
                "symbols": {symbol: price_summary(prices)
                            for symbol, prices in sorted(series.items())}}

    # -- lifecycle ------------------------------------------------------------------------------

    def start_scheduler(self) -> None:
        from stress_plugin.service.scheduler import HourlyStressScheduler

        self.scheduler = HourlyStressScheduler(
            self.scheduled_run,
            interval_minutes=self.config.interval_minutes,
            offset_seconds=self.config.offset_seconds,
            market_hours_only=self.config.market_hours_only,
            enabled=self.config.enabled,
            misfire_grace_s=SLOT_GRACE_S,
            done=self._slots_done,
        )
        self.store.replica_seen(self.replica)
        threading.Thread(target=self._heartbeat, name="stress-replica", daemon=True).start()
        if self.settings.stress_test_interval_s is not None:
            log.warning("STRESS_TEST_INTERVAL_S=%g: a slot every %g s instead of the schedule "
                        "(for tests only)", self.settings.stress_test_interval_s,
                        self.settings.stress_test_interval_s)
            threading.Thread(target=self._test_ticker, name="stress-test-slots",
                             daemon=True).start()
        else:
            self.scheduler.start()
        self.metrics.up.set(1)

    def _test_ticker(self) -> None:
        """STRESS_TEST_INTERVAL_S: a slot at every multiple of the interval since the epoch."""
        step = self.settings.stress_test_interval_s or 1
        while True:
            now = time.time()
            slot = (now // step + 1) * step
            if self._stopping.wait(slot - now):
                return
            try:
                self.scheduled_run(datetime.fromtimestamp(slot, UTC))
            except Exception:
                log.exception("test slot %s failed", iso_utc(datetime.fromtimestamp(slot, UTC)))

    def _heartbeat(self) -> None:
        """Say this replica is alive, and take up a config another replica changed."""
        while not self._stopping.wait(self._beat_s()):
            try:
                self.store.replica_seen(self.replica)
                self.sync_config()
            except Exception:
                log.exception("replica heartbeat failed; trying again")

    def alerts(self, hours: float) -> dict[str, Any]:
        """The outbox: every pending and failed delivery, and those made in the window."""
        since = iso_utc(datetime.now(UTC) - timedelta(hours=hours))
        return {
            "hours": hours,
            "pending": [r.to_dict() for r in self.store.deliveries_list("pending", limit=1000)],
            "failed": [r.to_dict() for r in self.store.deliveries_list("failed", limit=1000)],
            "recent": [r.to_dict() for r in self.store.deliveries_list(
                "delivered", since=since, limit=1000)],
        }

    def deliveries_of(self, run_id: str) -> list[dict[str, Any]]:
        return [{"id": r.id, "sink": r.sink, "status": r.status}
                for r in self.store.deliveries_list(run_id=run_id, newest_first=False)]

    def stop(self) -> None:
        self._stopping.set()
        self.metrics.up.set(0)
        self.runner.deliveries.stop()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)

    # -- helpers --------------------------------------------------------------------------------

    def _initial_config(self) -> ServiceConfig:
        """The effective config (``effective_config``), validated; the environment's alone if
        the stored one no longer validates (a scenario since uninstalled, say)."""
        known = set(self.runner.scenarios())
        try:
            return check_config(effective_config(self.settings, self.store.current_config()),
                                known=known)
        except ConfigError as exc:
            log.error("stored config is no longer valid (%s); using the environment's", exc)
            return check_config(from_settings(self.settings), known=known)

    def _apply_runner_settings(self) -> None:
        self.runner.settings = self.settings.model_copy(update={
            "stress_max_symbols": self.config.max_symbols,
            "stress_max_runtime_ms": self.config.max_runtime_ms,
            "stress_kill_mode": self.config.kill_mode,
        })

    def _scheduler_counts(self) -> dict[str, int]:
        """Scheduled runs not done, by reason, for the metrics (slots past their grace are
        judged against the stored runs first)."""
        counts = {"duplicate": self.duplicate_runs}
        if self.scheduler is not None:
            counts |= self.scheduler.counts()
        return counts

    def _next_run(self) -> datetime | None:
        return self.scheduler.next_run_time if self.scheduler is not None else None

    def _slots_done(self, first: datetime, last: datetime) -> set[datetime]:
        """The slots in [first, last] with a stored scheduled run, by any worker."""
        return {parse_iso(slot)
                for slot in self.store.scheduled_slots(iso_utc(first), iso_utc(last))}
