"""The runtime's one delivery path for every alert sink: the outbox worker.

A run writes one pending delivery per sink in the same transaction as the run (``Store.save_run``)
and returns; this worker sends them, never on the run's path. Per sink and scenario, deliveries
go in order (a later one waits while an earlier one is pending), so no stale trigger follows
its resolve; sinks go in parallel, each call in a daemon thread that is abandoned after the
timeout, so neither a hung sink nor the process's exit waits on it. Retries are the runtime's:
capped exponential backoff with jitter, ``DeliveryDeferred`` (try later, maybe with a
retry-after), ``DeliveryRejected`` (never: kept as failed), anything else retried. A delivery is
claimed with a lease before each attempt, so two processes on one store (the service and an
``alerts flush``) do not send it together, and a worker that dies mid-attempt leaves it to the
next. Delivery is at least once; the delivery id is the same on every retry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from stress_hookspecs import Delivery, DeliveryDeferred, DeliveryRejected, StressResult
from stress_plugin.core.times import parse_iso
from stress_plugin.plugins import Plugins
from stress_plugin.settings import Settings
from stress_plugin.store import DeliveryRow, Store, utc_now

log = logging.getLogger("stress_runner.alerts")

_LEASE_MARGIN_S = 5.0
"""A claim outlives the sink timeout by this much, then another worker may take it."""
_IDLE_WAIT_S = 5.0
"""The background worker looks for due deliveries at least this often."""


class Attempt(NamedTuple):
    """How one attempt of one delivery ended."""

    delivery_id: int
    sink: str
    status: str
    """``delivered``, ``pending`` (try again later) or ``failed`` (rejected, never retried)."""
    outcome: str
    """The ``stress_alerts_total`` label: ok, the sink's own word, deferred, error, timeout,
    rejected."""
    error: str | None = None
    retry_in_s: float | None = None


class PassResult:
    """The attempts of one pass over the due deliveries, in order."""

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []

    def count(self, status: str) -> int:
        return sum(a.status == status for a in self.attempts)


class Deliverer:
    """Sends the store's pending deliveries through the loaded ``stress_alert`` sinks."""

    def __init__(self, plugins: Plugins, store: Store, settings: Settings) -> None:
        self.plugins = plugins
        self.store = store
        self.timeout_s = settings.stress_alert_timeout_s
        self.retry_base_s = settings.stress_alert_retry_base_s
        self.retry_max_s = settings.stress_alert_retry_max_s
        self._pass_lock = threading.Lock()
        self._busy: dict[str, threading.Thread] = {}
        """Per sink, the thread of its lane or of a call it abandoned that is still running:
        no new call goes to a sink until that one has returned."""
        self._busy_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

    # -- sending ---------------------------------------------------------------------------

    def deliver(self, *, force: bool = False, sink: str | None = None,
                deadline: float | None = None) -> PassResult:
        """One pass over the pending deliveries: each due one (every one with ``force``) is
        tried once, in order per sink and scenario. Returns when every lane is done or at
        ``deadline`` (monotonic); a lane still running then finishes on its own."""
        result = PassResult()
        with self._pass_lock:
            lanes: dict[str, list[DeliveryRow]] = {}
            for row in self.store.deliveries_pending(sink):
                lanes.setdefault(row.sink, []).append(row)
            threads = []
            for name, rows in lanes.items():
                with self._busy_lock:
                    busy = self._busy.get(name)
                    if busy is not None and busy.is_alive():
                        continue  # an abandoned call or an earlier lane is still going
                    thread = threading.Thread(target=self._lane, args=(name, rows, force,
                                                                       result),
                                              name=f"stress-alert-{name}", daemon=True)
                    self._busy[name] = thread
                thread.start()
                threads.append(thread)
            for thread in threads:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return result

    def drain(self, timeout_s: float, *, force: bool = False, sink: str | None = None,
              on_wait: Callable[[list[DeliveryRow]], None] | None = None) -> list[DeliveryRow]:
        """Deliver until nothing pending is due within ``timeout_s``; returns what is still
        pending (left for the service or ``alerts flush``). ``on_wait`` is told once, the
        first time something is still pending after a pass (so there is a wait ahead)."""
        deadline = time.monotonic() + timeout_s
        passes = 0
        while True:
            pending = self.store.deliveries_pending(sink)
            if not pending:
                return []
            if passes == 1 and on_wait is not None:
                on_wait(pending)
            due_in = min(_seconds_until(row.next_attempt_at) for row in pending)
            left = deadline - time.monotonic()
            if left <= 0 or (not force and due_in > left):
                return pending
            if not force and due_in > 0:
                time.sleep(min(due_in, left))
                continue
            self.deliver(force=force, sink=sink, deadline=deadline)
            passes += 1
            force = False  # every pending one has had its forced try; retries keep the schedule
            if time.monotonic() >= deadline:
                return self.store.deliveries_pending(sink)

    def join(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the lanes and sink calls still running (a clean stop,
        or a test that must know no attempt is in flight)."""
        deadline = time.monotonic() + timeout_s
        with self._busy_lock:
            threads = list(self._busy.values())
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def retry(self, delivery_id: int) -> Attempt | None:
        """Queue a failed or waiting delivery again and try it now; None if unknown."""
        row = self.store.delivery_requeue(delivery_id)
        if row is None:
            return None
        result = PassResult()
        self._lane(row.sink, [row], True, result)
        return result.attempts[0] if result.attempts else None

    def test(self, sink: str, report: StressResult) -> Attempt:
        """Send ``report`` to one sink now as a test (``delivery.test``), outside the outbox."""
        now = utc_now()
        delivery = Delivery(id=0, attempt=1, first_attempt_at=now, test=True)
        return self._call(sink, 0, report, delivery)

    # -- the background worker ---------------------------------------------------------------

    def start(self) -> None:
        """Send continuously in a daemon thread: pending deliveries of earlier processes first
        (whatever their schedule), then each one when it comes due or a run wakes the worker."""
        if self._worker is not None and self._worker.is_alive():
            return
        freed = self.store.release_dead_claims()
        if freed:
            log.warning("took over %d delivery claim(s) of a process that is gone", freed)
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="stress-deliveries",
                                        daemon=True)
        self._worker.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _work(self) -> None:
        force = True
        while not self._stop.is_set():
            try:
                self.deliver(force=force, deadline=time.monotonic() + self.timeout_s)
                pending = self.store.deliveries_pending()
            except Exception:
                log.exception("delivery worker pass failed; trying again")
                pending = []
            force = False
            wait = min([_IDLE_WAIT_S, *(_seconds_until(r.next_attempt_at) for r in pending)])
            self._wake.wait(max(0.05, wait))
            self._wake.clear()

    # -- one sink's lane ---------------------------------------------------------------------

    def _lane(self, sink: str, rows: list[DeliveryRow], force: bool, result: PassResult) -> None:
        """This sink's deliveries in order; a scenario whose head is not delivered waits."""
        blocked: set[str] = set()
        reports: dict[str, StressResult] = {}
        for row in rows:
            if row.scenario in blocked:
                continue
            if not force and _seconds_until(row.next_attempt_at) > 0:
                blocked.add(row.scenario)
                continue
            claimed = self.store.delivery_claim(row.id, self.timeout_s + _LEASE_MARGIN_S)
            if claimed is None:  # another worker has it
                blocked.add(row.scenario)
                continue
            if row.run_id not in reports:
                reports[row.run_id] = self.store.report(row.run_id)
            delivery = Delivery(id=claimed.id, attempt=claimed.attempts,
                                first_attempt_at=claimed.first_attempt_at or utc_now())
            attempt = self._call(sink, claimed.id, reports[row.run_id], delivery)
            self._record(claimed, attempt)
            result.attempts.append(attempt)
            if attempt.status != "delivered" and attempt.status != "failed":
                blocked.add(row.scenario)
            if attempt.outcome == "timeout":
                return  # the sink is stuck in a call: nothing more goes to it for now

    def _call(self, sink: str, delivery_id: int, report: StressResult,
              delivery: Delivery) -> Attempt:
        """One call into the sink in a daemon thread, waited for at most the timeout."""
        impl = self.plugins.alert_impl(sink)
        if impl is None:
            return Attempt(delivery_id, sink, "pending", "error",
                           f"sink {sink} is not loaded (blocked or uninstalled)",
                           self._backoff(delivery.attempt))
        box: dict[str, Any] = {}

        def call() -> None:
            kwargs = {"result": report, "delivery": delivery}
            try:
                box["answer"] = self.plugins.invoke(impl, "stress_alert", kwargs)
            except BaseException as exc:  # reported below, in the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=call, name=f"stress-alert-call-{sink}", daemon=True)
        thread.start()
        thread.join(self.timeout_s)
        if thread.is_alive():
            with self._busy_lock:
                self._busy[sink] = thread
            return Attempt(delivery_id, sink, "pending", "timeout",
                           f"timed out after {self.timeout_s:g} s (the call is abandoned)",
                           self._backoff(delivery.attempt))
        error = box.get("error")
        if error is None:
            answer = box.get("answer")
            outcome = answer if isinstance(answer, str) and answer else "ok"
            return Attempt(delivery_id, sink, "delivered", outcome)
        if isinstance(error, DeliveryRejected):
            return Attempt(delivery_id, sink, "failed", "rejected", _text(error))
        if isinstance(error, DeliveryDeferred):
            delay = error.retry_after if error.retry_after is not None else \
                self._backoff(delivery.attempt)
            return Attempt(delivery_id, sink, "pending", "deferred", _text(error), delay)
        return Attempt(delivery_id, sink, "pending", "error", _text(error),
                       self._backoff(delivery.attempt))

    def _record(self, row: DeliveryRow, attempt: Attempt) -> None:
        what = f"delivery {row.id} to {row.sink} (run {row.run_id}, attempt {row.attempts})"
        if attempt.outcome in ("error", "timeout"):
            # counted before the store says so: whoever reads the attempt's error from the
            # store (drain, alerts list) finds it counted already
            self.plugins.count_error(row.sink)
        if attempt.status == "delivered":
            self.store.delivery_done(row.id, attempt.outcome)
            log.info("%s delivered%s", what,
                     "" if attempt.outcome == "ok" else f" ({attempt.outcome})")
        elif attempt.status == "failed":
            self.store.delivery_failed(row.id, attempt.error or "rejected")
            log.error("%s rejected, not retried: %s", what, attempt.error)
        else:
            delay = attempt.retry_in_s or 0.0
            self.store.delivery_later(row.id, attempt.error or attempt.outcome, delay)
            # deferred is the sink saying "later" (an outage): a warning; a raising or hung
            # sink is an error of the plugin (the runbook's grep "stress.*error" finds it)
            deferred = attempt.outcome == "deferred"
            log.log(logging.WARNING if deferred else logging.ERROR,
                    "%s %s: %s, next attempt in %s", what, "deferred" if deferred else "failed",
                    attempt.error, _duration(delay))
        if self.plugins.observer is not None:
            self.plugins.observer.alert_outcome(row.sink, attempt.outcome)

    def _backoff(self, attempt: int) -> float:
        """Capped exponential backoff with jitter: base x 2^(attempt-1), at most the cap,
        times a random factor in [0.5, 1] so that many deliveries do not retry in step."""
        import random  # here: only a retry needs it, not every CLI start (2 ms)

        delay = min(self.retry_max_s, self.retry_base_s * 2.0 ** min(attempt - 1, 30))
        return delay * random.uniform(0.5, 1.0)


def _seconds_until(iso: str) -> float:
    return (parse_iso(iso) - datetime.now(UTC)).total_seconds()


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


def _text(error: BaseException, limit: int = 300) -> str:
    """The error in one line, for the outbox and the log (a sink redacts its own secrets)."""
    text = " ".join(str(error).split()) or type(error).__name__
    if not isinstance(error, DeliveryDeferred | DeliveryRejected):
        text = f"{type(error).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
