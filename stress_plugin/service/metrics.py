"""Prometheus metrics, in a registry of their own (nothing is added to the global one).

Runs update their counters as they happen and hand over their latest series by reference; those
series and the state gauges (the halt, the next slot, the scheduler's counts, the outbox) are
made when Prometheus scrapes, from the kept run and cheap reads the service supplies, so nothing
refreshes them, a run pays nothing for them, and a scrape sees the store as it is. The scrape
does I/O: the API renders it in a worker thread, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from stress_hookspecs import RunTrigger, StressResult, SymbolMetrics
from stress_hookspecs.types import Column
from stress_plugin.core.errors import FAILURE_REASONS
from stress_plugin.core.times import parse_iso

RUNTIME_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075,
                   0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0)
"""0.1 ms to 5 s: the 50 ms budget is a bucket edge, and a run several times over it (a
big book, a throttled pod) still lands in a finite bucket, so quantiles quote its real size."""
SYMBOL_SERIES = 100
"""Per-symbol series of the latest run per scenario: the largest losses (the runbook's
100-symbol book fits whole); bounds the metric's cardinality for big books."""
BREACH_SERIES = 100
"""Breach series of the latest run per scenario: the most exceeded limits first."""


class PrometheusMetrics:
    """The service's Prometheus registry: the runbook's metrics and ours; ``render()`` is the
    /metrics body. (``stress_hookspecs.Metrics`` is a run's per-symbol figures, not this.)"""

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
        self.next_run.set_function(lambda: _unix_or_0(self._next_run()))
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
        self.halted.set_function(lambda: 1.0 if self._halted() else 0.0)
        self._latest: dict[str, _Latest] = {}
        """Per scenario, its latest completed run's series (rendered at scrape time)."""
        self._scenarios: list[str] = []
        self._halted: Callable[[], bool] = lambda: False
        self._next_run: Callable[[], datetime | None] = lambda: None
        self.scheduler_counts: Callable[[], dict[str, int]] = dict
        self.outbox_stats: Callable[[], dict[str, tuple[int, str | None]]] = dict
        self.sinks: list[str] = []
        r.register(_SchedulerCollector(self))
        r.register(_OutboxCollector(self))
        r.register(_LatestRunCollector(self))

    def read_at_scrape(self, *, halted: Callable[[], bool],
                       next_run: Callable[[], datetime | None],
                       scheduler_counts: Callable[[], dict[str, int]],
                       outbox: Callable[[], dict[str, tuple[int, str | None]]]) -> None:
        """The reads each scrape makes: whether trading is halted, the next slot (None: none
        scheduled), scheduled runs not done by reason, and per sink the pending deliveries
        with the oldest one's creation time. Each must be cheap (a ``COUNT(*)``, no decoding)."""
        self._halted, self._next_run = halted, next_run
        self.scheduler_counts, self.outbox_stats = scheduler_counts, outbox

    def observe_runs(self, results: list[StressResult], trigger: RunTrigger,
                     finished_unix: float) -> None:
        """Runs of one book snapshot (``run_many``): each counted under its scenario, and
        their one KILL_SWITCH event (and its confirmation) counted once."""
        for result in results:
            self.observe_run(result, trigger, finished_unix, count_kill_switch=False)
        if any(r.kill_switch for r in results):
            self.kill_switches.inc()
        if any(r.kill_switch_confirmed is False for r in results):
            self.kill_unconfirmed.inc()

    def observe_run(self, result: StressResult, trigger: RunTrigger, finished_unix: float, *,
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
        if result.headroom is not None:  # always, for a run that completed
            self.headroom.labels(result.scenario).set(result.headroom)
        if isinstance(result.symbols, SymbolMetrics):
            names, worst = result.symbols.symbols, result.symbols.worst_pnl
            headroom = result.symbols.headroom
        else:
            names = list(result.symbols)
            worst = [m.worst_pnl for m in result.symbols.values()]
            headroom = [m.headroom for m in result.symbols.values()]
        self._latest[result.scenario] = _Latest(
            _unix(result.timestamp),
            [(b.symbol, b.limit, b.value, b.threshold) for b in result.breaches],
            names, worst, headroom)

    def restore(self, latest_runs: list[dict[str, Any]]) -> None:
        """Gauges of the last stored runs, so a restart does not read as 'never ran'; each
        run's ``result`` (when given) restores its breach and per-symbol series too."""
        for run in latest_runs:  # oldest first: the newest run sets the unlabelled gauges
            self.headroom.labels(run["scenario"]).set(run["headroom"])
            self.last_run.set(_unix(run["timestamp"]))
            self.symbols_tested.set(run["symbols_tested"])
            self.symbols_skipped.set(run["symbols_skipped"])
            result = run.get("result")
            if result is not None:
                symbols = result["symbols"]
                self._latest[run["scenario"]] = _Latest(
                    _unix(run["timestamp"]),
                    [(b["symbol"], b["limit"], b["value"], b["threshold"])
                     for b in result["breaches"]], list(symbols),
                    [m["worst_pnl"] for m in symbols.values()],
                    [m["headroom"] for m in symbols.values()])

    def plugin_error(self, plugin: str) -> None:
        self.plugin_errors.labels(plugin).inc()

    def alert_outcome(self, sink: str, outcome: str) -> None:
        self.alerts.labels(sink, outcome).inc()

    def declare(self, scenarios: list[str], plugins: list[str], sinks: list[str]) -> None:
        """Create the known label sets at 0, so a first increment shows in ``increase()``."""
        self._scenarios = list(scenarios)
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
        """The exposition text; reads the store, so call it off the event loop."""
        return generate_latest(self.registry)


@dataclass(frozen=True, slots=True)
class _Latest:
    """What a scenario's latest completed run shows: kept by reference when the run ends
    (nothing sorted or labelled on the run's path), rendered when Prometheus scrapes."""

    when: float
    breaches: list[tuple[str, str, float, float]]
    names: Column
    worst: Column
    headroom: Column


class _LatestRunCollector:
    """The latest run's series per scenario, made at scrape time: ``stress_breach_active``,
    the most exceeded breaches (``stress_breach_value``, ``_threshold``, ``_timestamp_seconds``,
    at most ``BREACH_SERIES``) and the largest losses (``stress_symbol_loss``,
    ``stress_symbol_headroom_ratio``, at most ``SYMBOL_SERIES``). Only the latest run's
    symbols are ever shown: a symbol it no longer has leaves no stale series."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        import numpy as np

        latest = dict(self.metrics._latest)  # a copy: runs may end while this renders
        breach = ["scenario", "symbol", "limit"]
        active = GaugeMetricFamily(
            "stress_breach_active", "1 while the latest run of the scenario breached (the "
            "breach episode, which the runner's page covers); 0 after a passing run.",
            labels=["scenario"])
        value = GaugeMetricFamily(
            "stress_breach_value", "A breach of the latest run of the scenario: the metric's "
            "value (the most exceeded limits, at most 100).", labels=breach)
        threshold = GaugeMetricFamily(
            "stress_breach_threshold", "The limit that stress_breach_value exceeded.",
            labels=breach)
        when = GaugeMetricFamily(
            "stress_breach_timestamp_seconds", "When the run that found the breach ran, unix "
            "seconds.", labels=breach)
        loss = GaugeMetricFamily(
            "stress_symbol_loss", "Loss (max(0, -worst P&L), currency) of a symbol in the latest "
            "run of the scenario: the 100 largest losses.", labels=["scenario", "symbol"])
        headroom = GaugeMetricFamily(
            "stress_symbol_headroom_ratio", "Headroom of a symbol in the latest run of the "
            "scenario (the symbols of stress_symbol_loss).", labels=["scenario", "symbol"])
        for scenario in sorted({*self.metrics._scenarios, *latest}):
            run = latest.get(scenario)
            active.add_metric([scenario], 1.0 if run is not None and run.breaches else 0.0)
            if run is None:
                continue
            # most exceeded first; an identical label set (two evaluators) is shown once
            ranked = sorted(run.breaches, key=lambda b: -(b[2] / b[3]) if b[3] else 0.0)
            kept: dict[tuple[str, str], tuple[float, float]] = {}
            for symbol, limit, v, t in ranked:
                if len(kept) < BREACH_SERIES:
                    kept.setdefault((symbol, limit), (v, t))
            for (symbol, limit), (v, t) in kept.items():
                value.add_metric([scenario, symbol, limit], v)
                threshold.add_metric([scenario, symbol, limit], t)
                when.add_metric([scenario, symbol, limit], run.when)
            names = run.names.tolist() if hasattr(run.names, "tolist") else list(run.names)
            worst = np.asarray(run.worst, dtype=np.float64)
            rooms = np.asarray(run.headroom, dtype=np.float64).tolist()
            for i in np.argsort(worst, kind="stable")[:SYMBOL_SERIES].tolist():
                loss.add_metric([scenario, names[i]], max(0.0, -float(worst[i])))
                headroom.add_metric([scenario, names[i]], rooms[i])
        yield from (active, value, threshold, when, loss, headroom)


class _OutboxCollector:
    """``stress_alert_outbox_pending{sink}`` and ``stress_alert_outbox_oldest_seconds{sink}``
    from one grouped COUNT(*) at scrape time (the scrape runs in a worker thread)."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
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
            age = 0.0 if created is None else (now - parse_iso(created)).total_seconds()
            oldest.add_metric([sink], max(0.0, age))
        yield pending
        yield oldest


def _unix(timestamp: str) -> float:
    return parse_iso(timestamp).timestamp()


def _unix_or_0(moment: datetime | None) -> float:
    return moment.timestamp() if moment is not None else 0.0


class _SchedulerCollector:
    """``stress_scheduler_missed_runs_total{reason}`` from the live scheduler's counters."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "stress_scheduler_missed_runs", "Scheduled runs not done: missed (late past the "
            "grace), skipped (previous still running), failed, duplicate (done elsewhere).",
            labels=["reason"])
        for reason, count in sorted(self.metrics.scheduler_counts().items()):
            family.add_metric([reason], count)
        yield family
