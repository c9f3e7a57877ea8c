"""Prometheus metrics, in a registry of their own (nothing is added to the global one)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from stress_hookspecs import StressResult
from stress_plugin.errors import FAILURE_REASONS

RUNTIME_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
"""0.1 ms to 100 ms: the 50 ms budget sits between the last two buckets."""


class Metrics:
    """The runbook's metrics and ours; ``render()`` is the /metrics body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter("stress_runs_total", "Stress runs, failed ones included.",
                            ["scenario", "trigger"], registry=r)
        self.failed_runs = Counter("stress_runs_failed_total", "Stress runs that could not "
                                   "check the book (never a pass), by reason.",
                                   ["scenario", "reason"], registry=r)
        self.breaches = Counter("stress_breaches_total",
                                "Breached symbols (PORTFOLIO included) summed over runs.",
                                ["scenario"], registry=r)
        self.runtime = Histogram("stress_runtime_seconds", "Runtime of one run (book to "
                                 "evaluation).", buckets=RUNTIME_BUCKETS, registry=r)
        self.symbols_tested = Gauge("stress_symbols_tested", "Symbols tested by the last run.",
                                    registry=r)
        self.symbols_skipped = Gauge("stress_symbols_skipped",
                                     "Symbols left out of the last run by STRESS_MAX_SYMBOLS.",
                                     registry=r)
        self.up = Gauge("stress_runner_up", "1 while the stress runner service is serving.",
                        registry=r)
        self.next_run = Gauge("stress_scheduler_next_run",
                              "Next scheduled run, unix seconds (0: none scheduled).", registry=r)
        self.last_run = Gauge("stress_last_run_timestamp_seconds",
                              "When the last run finished, unix seconds.", registry=r)
        self.headroom = Gauge("stress_headroom_ratio", "Headroom of the last run per scenario "
                              "(<= 1 breaches).", ["scenario"], registry=r)
        self.kill_switches = Counter("stress_kill_switch_total", "KILL_SWITCH events published.",
                                     registry=r)
        self.kill_unconfirmed = Counter(
            "stress_kill_switch_unconfirmed_total", "KILL_SWITCH events the host's trading state "
            "did not confirm within STRESS_KILL_CONFIRM_S (each also paged on its own).",
            registry=r)
        self.alerts = Counter("stress_alerts_total", "Alert delivery attempts by sink and "
                              "outcome (ok, deferred, error, timeout, rejected, or the sink's "
                              "own word such as disabled).",
                              ["sink", "outcome"], registry=r)
        self.plugin_errors = Counter("stress_plugin_errors_total",
                                     "Plugin calls that raised or timed out.", ["plugin"],
                                     registry=r)
        self.halted = Gauge("stress_halted", "1 while trading is halted by a KILL_SWITCH.",
                            registry=r)
        self.before_render: Callable[[], None] = lambda: None
        """Called at every scrape, so gauges read from the store and scheduler are current."""
        self.scheduler_counts: Callable[[], dict[str, int]] = dict
        """Read at every scrape: scheduled runs not done, by reason (the scheduler counts)."""
        r.register(_SchedulerCollector(self))
        self.outbox_stats: Callable[[], dict[str, tuple[int, str | None]]] = dict
        """Read at every scrape: per sink, pending deliveries and the oldest one's creation."""
        self.sinks: list[str] = []
        r.register(_OutboxCollector(self))

    def observe_runs(self, results: list[StressResult], trigger: str,
                     finished_unix: float) -> None:
        """Runs of one book snapshot (``run_many``): each counted under its scenario, and
        their one KILL_SWITCH event (and its confirmation) counted once."""
        for result in results:
            self.observe_run(result, trigger, finished_unix, count_kill_switch=False)
        if any(r.kill_switch for r in results):
            self.kill_switches.inc()
        if any(r.kill_switch_confirmed is False for r in results):
            self.kill_unconfirmed.inc()

    def observe_run(self, result: StressResult, trigger: str, finished_unix: float, *,
                    count_kill_switch: bool = True) -> None:
        self.runs.labels(result.scenario, trigger).inc()
        if result.kill_switch and count_kill_switch:
            self.kill_switches.inc()
        if result.kill_switch_confirmed is False and count_kill_switch:
            self.kill_unconfirmed.inc()
        if result.status == "failed":  # no metrics to show: the gauges keep the last real run
            self.failed_runs.labels(result.scenario, result.failure).inc()
            return
        self.breaches.labels(result.scenario).inc(result.breach_count)
        self.runtime.observe(result.runtime_ms / 1000)
        self.symbols_tested.set(result.symbols_tested)
        self.symbols_skipped.set(len(result.skipped_symbols))
        self.last_run.set(finished_unix)
        self.headroom.labels(result.scenario).set(result.headroom)

    def restore(self, latest_runs: list[dict[str, Any]]) -> None:
        """Gauges of the last stored runs, so a restart does not read as 'never ran'."""
        for run in latest_runs:  # oldest first: the newest run sets the unlabelled gauges
            self.headroom.labels(run["scenario"]).set(run["headroom"])
            self.last_run.set(datetime.fromisoformat(run["timestamp"]).timestamp())
            self.symbols_tested.set(run["symbols_tested"])
            self.symbols_skipped.set(run["symbols_skipped"])

    def plugin_error(self, plugin: str) -> None:
        self.plugin_errors.labels(plugin).inc()

    def alert_outcome(self, sink: str, outcome: str) -> None:
        self.alerts.labels(sink, outcome).inc()

    def declare(self, scenarios: list[str], plugins: list[str], sinks: list[str]) -> None:
        """Create the known label sets at 0, so a first increment shows in ``increase()``."""
        for scenario in scenarios:
            self.breaches.labels(scenario)
            for reason in FAILURE_REASONS:
                self.failed_runs.labels(scenario, reason)
            for trigger in ("schedule", "manual"):
                self.runs.labels(scenario, trigger)
        for plugin in plugins:
            self.plugin_errors.labels(plugin)
        self.sinks = list(sinks)
        for sink in sinks:
            for outcome in ("ok", "deferred", "error", "timeout", "rejected"):
                self.alerts.labels(sink, outcome)

    def render(self) -> bytes:
        self.before_render()
        return generate_latest(self.registry)


class _OutboxCollector:
    """``stress_alert_outbox_pending{sink}`` and ``stress_alert_outbox_oldest_seconds{sink}``
    from one grouped COUNT(*) at scrape time (the scrape runs in a worker thread)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        now = datetime.now(UTC)
        stats = self.metrics.outbox_stats()
        pending = GaugeMetricFamily("stress_alert_outbox_pending",
                                    "Deliveries waiting in the alert outbox, per sink.",
                                    labels=["sink"])
        oldest = GaugeMetricFamily("stress_alert_outbox_oldest_seconds",
                                   "Age of the oldest pending delivery per sink (0: none).",
                                   labels=["sink"])
        for sink in sorted({*self.metrics.sinks, *stats}):
            count, created = stats.get(sink, (0, None))
            pending.add_metric([sink], count)
            age = 0.0 if created is None else (now - datetime.fromisoformat(
                created.replace("Z", "+00:00"))).total_seconds()
            oldest.add_metric([sink], max(0.0, age))
        yield pending
        yield oldest


class _SchedulerCollector:
    """``stress_scheduler_missed_runs_total{reason}`` from the live scheduler's counters."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "stress_scheduler_missed_runs", "Scheduled runs not done: missed (late past the "
            "grace), skipped (previous still running), failed, duplicate (done elsewhere).",
            labels=["reason"])
        for reason, count in sorted(self.metrics.scheduler_counts().items()):
            family.add_metric([reason], count)
        yield family
