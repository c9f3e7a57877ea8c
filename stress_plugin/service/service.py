"""The long-running service behind ``stress-runner serve``: scheduled and manual runs, the
store, live limits and config, the halt, metrics and the delivery worker of the alert outbox.

The API (``api.py``) is a thin HTTP shell over this class; everything here is synchronous and
runs in worker threads, never on the server's event loop.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from stress_hookspecs import StressResult
from stress_plugin.core.errors import ConfigError, RunFailure
from stress_plugin.core.limits import check_limits
from stress_plugin.plugins import Plugins
from stress_plugin.runner import DEFAULT_SCENARIO, StressRunner, summary
from stress_plugin.service.metrics import Metrics
from stress_plugin.service.scheduler import check_schedule
from stress_plugin.settings import Settings
from stress_plugin.store import Store

log = logging.getLogger("stress_runner.service")

ENV_CONFIG = {
    "stress_enabled": "enabled",
    "market_hours_only": "market_hours_only",
    "stress_max_symbols": "max_symbols",
    "stress_max_runtime_ms": "max_runtime_ms",
    "stress_kill_mode": "kill_mode",
}
"""Settings that are also live config: the environment variable's field -> the config field."""


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """What PUT /api/v1/stress/config may change; persisted with an audit trail."""

    enabled: bool = True
    market_hours_only: bool = True
    interval_minutes: int = 60
    offset_seconds: int = 5
    max_symbols: int = 100
    max_runtime_ms: float = 50.0
    scenarios: tuple[str, ...] = (DEFAULT_SCENARIO,)
    """Scenarios each scheduled run stresses, in order."""
    kill_mode: str = "halt"
    """What a KILL_SWITCH asks of the host: ``halt`` or ``reduce`` (STRESS_KILL_MODE)."""

    def to_dict(self) -> dict[str, Any]:
        return {name: list(v) if isinstance(v, tuple) else v
                for name in self.__slots__ for v in [getattr(self, name)]}

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceConfig:
        return cls(enabled=settings.stress_enabled,
                   market_hours_only=settings.market_hours_only,
                   max_symbols=settings.stress_max_symbols,
                   max_runtime_ms=settings.stress_max_runtime_ms,
                   kill_mode=settings.stress_kill_mode)


class StressService:
    """Owns the runner, the store, the scheduler and the metrics of one deployment."""

    def __init__(self, settings: Settings, *, book_path: Path | None = None,
                 plugins: Plugins | None = None, store: Store | None = None) -> None:
        self.settings = settings
        self.book_path = book_path
        self.metrics = Metrics()
        self.store = store or Store(settings.db_path)
        self.plugins = plugins or Plugins.load(settings.disabled_plugins,
                                               trace=settings.stress_trace_plugins)
        self.plugins.observer = self.metrics
        self.runner = StressRunner(plugins=self.plugins, settings=settings, store=self.store)
        self._run_lock = threading.Lock()
        self._config_lock = threading.Lock()
        self.config = self._initial_config()
        self._apply_runner_settings()
        self.scheduler: Any = None
        self.duplicate_runs = 0
        self.metrics.scheduler_counts = self._scheduler_counts
        self.metrics.outbox_stats = self.store.outbox_stats
        self.metrics.before_render = self._refresh_gauges
        self.metrics.restore([{**run, "result": self.store.run(run["run_id"])}
                              for run in self.store.latest_runs()])
        self.metrics.declare(
            scenarios=sorted(self.runner.scenarios()),
            plugins=[info.name for info in self.plugins.describe()],
            sinks=[info.name for info in self.plugins.describe() if "stress_alert" in info.hooks])
        self._refresh_gauges()

    # -- runs ---------------------------------------------------------------------------------

    def run(self, *, trigger: str, scenario: str | None = None,
            symbols: list[str] | None = None,
            scheduled_for: datetime | None = None) -> StressResult:
        """One run, never overlapping another; stored and counted before it returns."""
        return self.run_many(trigger=trigger, scenarios=[scenario or self.config.scenarios[0]],
                             symbols=symbols, scheduled_for=scheduled_for)[0]

    def run_many(self, *, trigger: str, scenarios: list[str], symbols: list[str] | None = None,
                 scheduled_for: datetime | None = None) -> list[StressResult]:
        """Each scenario on one snapshot of the book (``StressRunner.run_many``: one
        KILL_SWITCH for all), never overlapping another run; stored and counted per scenario."""
        # names only: the API never opens a path it is given
        chosen = [self.runner.scenario_named(name) for name in scenarios]
        with self._run_lock:
            # the --book file is read at every run (it is the live book), else the hooks answer
            results = self.runner.run_many(
                book=self.book_path, scenarios=chosen, symbols=symbols, trigger=trigger,
                scheduled_for=iso_utc(scheduled_for) if scheduled_for else None)
        self.metrics.observe_runs(results, trigger, time.time())
        self._refresh_gauges()
        return results

    def scheduled_run(self, fire_time: datetime) -> None:
        """The scheduler's job: every configured scenario on one book snapshot, each keyed by
        (scenario, scheduled UTC time) so a slot another worker ran is skipped."""
        todo = []
        for name in self.config.scenarios:
            if self.store.has_scheduled_run(name, iso_utc(fire_time)):
                log.warning("scheduled run of %s at %s already done by another worker; skipped",
                            name, iso_utc(fire_time))
                self.duplicate_runs += 1
                continue
            todo.append(name)
        if todo:
            self.run_many(trigger="schedule", scenarios=todo, scheduled_for=fire_time)

    # -- config, limits, halt -------------------------------------------------------------------

    def update_config(self, patch: dict[str, Any], actor: str) -> ServiceConfig:
        """Validate the whole new config, then persist, audit and apply it, or change nothing."""
        with self._config_lock:
            merged = {**self.config.to_dict(), **patch}
            new = _check_config(merged, known=set(self.runner.scenarios()))
            if self.scheduler is not None:
                self.scheduler.reschedule(interval_minutes=new.interval_minutes,
                                          offset_seconds=new.offset_seconds,
                                          market_hours_only=new.market_hours_only,
                                          enabled=new.enabled)
            self.store.save_config(new.to_dict(), actor=actor, change=patch)
            self.config = new
            self._apply_runner_settings()
        log.info("config changed by %s: %s", actor, patch)
        self._refresh_gauges()
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
            new = {**live, **patch}
            new = check_limits({k: v for k, v in new.items() if v is not None}, "limits",
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
        outcome = self.runner.approve_reset(operator or actor, actor, reason)
        self._refresh_gauges()
        return outcome

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
            "scheduler_running": bool(self.scheduler is not None and self.scheduler.running),
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
        }

    def results(self, hours: float) -> list[dict[str, Any]]:
        return self.store.runs_since(iso_utc(datetime.now(UTC) - timedelta(hours=hours)))

    def volatility(self, hours: float) -> dict[str, Any]:
        """Per symbol, from the prices each run saw: samples, realized volatility, last/high/low.

        Realized volatility is sqrt(sum of squared log returns) between consecutive snapshots
        in the window: the volatility actually realized over that window, not annualized.
        """
        since = iso_utc(datetime.now(UTC) - timedelta(hours=hours))
        series: dict[str, list[float]] = {}
        for symbol, price in self.store.prices_since(since):
            series.setdefault(symbol, []).append(price)
        symbols = {}
        for symbol, prices in sorted(series.items()):
            returns = [math.log(b / a) for a, b in itertools.pairwise(prices)]
            symbols[symbol] = {
                "samples": len(prices),
                "realized_volatility": math.sqrt(sum(r * r for r in returns)) if returns else None,
                "last": prices[-1],
                "high": max(prices),
                "low": min(prices),
            }
        return {"hours": hours, "symbols": symbols}

    # -- lifecycle ------------------------------------------------------------------------------

    def start_scheduler(self) -> None:
        from stress_plugin.service.scheduler import HourlyStressScheduler

        self.scheduler = HourlyStressScheduler(
            self.scheduled_run,
            interval_minutes=self.config.interval_minutes,
            offset_seconds=self.config.offset_seconds,
            market_hours_only=self.config.market_hours_only,
            enabled=self.config.enabled,
        )
        self.scheduler.start()
        self.metrics.up.set(1)
        self._refresh_gauges()

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
            return _check_config(effective_config(self.settings, self.store), known=known)
        except ConfigError as exc:
            log.error("stored config is no longer valid (%s); using the environment's", exc)
            return _check_config(ServiceConfig.from_settings(self.settings).to_dict(), known=known)

    def _apply_runner_settings(self) -> None:
        self.runner.settings = self.settings.model_copy(update={
            "stress_max_symbols": self.config.max_symbols,
            "stress_max_runtime_ms": self.config.max_runtime_ms,
            "stress_kill_mode": self.config.kill_mode,
        })

    def _scheduler_counts(self) -> dict[str, int]:
        """Scheduled runs not done, by reason, for the metrics."""
        counts = {"duplicate": self.duplicate_runs}
        if self.scheduler is not None:
            counts |= {"missed": self.scheduler.missed_runs,
                       "skipped": self.scheduler.skipped_runs,
                       "failed": self.scheduler.failed_runs}
        return counts

    def _refresh_gauges(self) -> None:
        self.metrics.halted.set(1 if self.halt() is not None else 0)
        next_run = self.scheduler.next_run_time if self.scheduler is not None else None
        self.metrics.next_run.set(next_run.timestamp() if next_run else 0)


def effective_config(settings: Settings, store: Store) -> dict[str, Any]:
    """Defaults, then the stored config (what operators last set through the API), then any of
    the runbook's variables set explicitly in the environment: a deployment change such as
    ``kubectl set env STRESS_ENABLED=false`` is the newest intent and must work. Unvalidated;
    ``stress-runner schedule`` reads it too, so it lists what the service would schedule."""
    base = ServiceConfig.from_settings(settings).to_dict()
    stored = store.current_config() or {}
    explicit = {}
    for variable, name in ENV_CONFIG.items():
        if variable in settings.model_fields_set:
            explicit[name] = base[name]
            if name in stored and stored[name] != base[name]:
                log.warning("%s=%s from the environment overrides the stored %s=%s",
                            variable.upper(), base[name], name, stored[name])
    return {**base, **stored, **explicit}


def _check_config(data: dict[str, Any], *, known: set[str]) -> ServiceConfig:
    """The whole config or a ConfigError naming the field and value."""
    src = "config"

    def integer(name: str, low: int, high: int) -> int:
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(src, name, value, f"must be a whole number from {low} to {high}")
        return value

    if not isinstance(data["enabled"], bool):
        raise ConfigError(src, "enabled", data["enabled"], "must be true or false")
    try:  # the scheduler's own check, so the API and the scheduler agree on what is valid
        check_schedule(data["interval_minutes"], data["offset_seconds"],
                       data["market_hours_only"])
    except ValueError as exc:  # "name=value: problem"
        name, _, rest = str(exc).partition("=")
        raise ConfigError(src, name, data[name], rest.partition(": ")[2]) from None
    runtime = data["max_runtime_ms"]
    if isinstance(runtime, bool) or not isinstance(runtime, int | float) or not (
            math.isfinite(runtime) and runtime > 0):
        raise ConfigError(src, "max_runtime_ms", runtime, "must be a number > 0")
    scenarios = data["scenarios"]
    if not isinstance(scenarios, list | tuple) or not scenarios or not all(
            isinstance(s, str) for s in scenarios):
        raise ConfigError(src, "scenarios", scenarios, "must be a non-empty list of names")
    kill_mode = data.get("kill_mode", "halt")  # absent from configs stored before it existed
    if kill_mode not in ("halt", "reduce"):
        raise ConfigError(src, "kill_mode", kill_mode, "must be halt or reduce")
    unknown = [s for s in scenarios if s not in known]
    if unknown:
        raise ConfigError(src, "scenarios", unknown,
                          f"unknown scenario (known: {', '.join(sorted(known))})")
    return ServiceConfig(
        enabled=data["enabled"],
        market_hours_only=data["market_hours_only"],
        interval_minutes=data["interval_minutes"],
        offset_seconds=data["offset_seconds"],
        max_symbols=integer("max_symbols", 1, 10_000_000),
        max_runtime_ms=float(runtime),
        scenarios=tuple(dict.fromkeys(scenarios)),
        kill_mode=kill_mode,
    )


def iso_utc(moment: datetime) -> str:
    """ISO 8601 UTC to the second with a Z: how runs and schedules are written everywhere."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
