"""PagerDuty Events API v2 alert sink, with an outbox so no page is lost to an outage.

Every event goes to the store's outbox before it is sent, and is marked delivered right after
PagerDuty's 202; a retried or repeated send carries the same ``dedup_key``, which PagerDuty
uses to absorb repeats. A scenario's consecutive breaching runs form one episode with one
``dedup_key`` (one incident, updated hourly); the first passing run resolves it.

The routing key lives only in memory: it is added to the body at send time and redacted from
every error text, because keys have leaked through logged URLs and exception text elsewhere.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import math
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from stress_hookspecs import StressResult, hookimpl
from stress_plugin.errors import NO_VALUE, ConfigError
from stress_plugin.settings import Settings, load_settings
from stress_plugin.store import OutboxEvent, Store

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("stress_runner.pagerduty")

SINK = "pagerduty"
TEST_SINK = "pagerduty-test"
SOURCE = "stress_runner"
SUMMARY_MAX = 1024
DEDUP_KEY_MAX = 255
EVENT_MAX_BYTES = 512 * 1024
REDACTED = "<redacted>"
_SIZE_MARGIN = 1024
"""Bytes kept free below the event limit for the routing key and JSON framing."""
_MIN_ATTEMPT_S = 0.5
"""An attempt is not started with less time than this left in the budget."""


class PagerDutyError(RuntimeError):
    """An event was not delivered (still pending in the outbox, or rejected)."""


class _Retryable(Exception):
    """429, 408, 5xx or a network error: worth another try with the same body."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of sending one event; ``error`` is redacted."""

    status: str
    """``delivered``, ``failed`` (rejected, never retried) or ``pending`` (try again later)."""
    dedup_key: str | None
    http_status: int | None = None
    error: str | None = None
    outbox_id: int | None = None


@dataclass(frozen=True, slots=True)
class FlushResult:
    delivered: int
    failed: int
    pending: int
    """Events still pending after this flush (not reached, or PagerDuty unreachable)."""


class PagerDutyAlerter:
    """Turns stress results into PagerDuty events and delivers them through the outbox.

    ``budget_s`` bounds one ``alert()`` call (the runner abandons a sink after 30 s);
    ``attempts`` and the ``wait_*`` values shape stamina's exponential backoff with jitter.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        client: httpx.Client | None = None,
        budget_s: float = 20.0,
        attempts: int = 5,
        request_timeout_s: float = 5.0,
        wait_initial_s: float = 0.5,
        wait_max_s: float = 4.0,
        wait_jitter_s: float = 1.0,
    ) -> None:
        key = settings.pd_routing_key.get_secret_value().strip() if settings.pd_routing_key else ""
        self._key: str | None = key or None
        self.url = settings.pd_events_url
        self.auto_resolve = settings.pd_auto_resolve
        self.links = [
            {"href": href, "text": text}
            for href, text in (
                (settings.pd_runbook_url, "Runbook"),
                (settings.pd_dashboard_url, "Dashboard"),
            )
            if href
        ]
        self.store = store
        self.budget_s = budget_s
        self.attempts = attempts
        self.request_timeout_s = request_timeout_s
        self.wait_initial_s = wait_initial_s
        self.wait_max_s = wait_max_s
        self.wait_jitter_s = wait_jitter_s
        self._own_client = client is None
        self._client = client
        self._send_lock = threading.Lock()
        """One delivery pass at a time, so events leave in outbox order and only once."""

    @property
    def enabled(self) -> bool:
        return self._key is not None

    @property
    def client(self) -> httpx.Client:
        """Made on the first send: with paging off, httpx is never imported (cold start)."""
        if self._client is None:
            import httpx

            self._client = httpx.Client(
                timeout=self.request_timeout_s, headers={"User-Agent": "stress-plugin"}
            )
        return self._client

    def close(self) -> None:
        if self._own_client and self._client is not None:
            self._client.close()

    # -- the hook ---------------------------------------------------------------------------

    def alert(self, report: StressResult) -> None:
        """Queue this run's event (if any), then deliver everything pending within the budget.

        Raises PagerDutyError when this run's event did not reach PagerDuty; it stays in the
        outbox (unless rejected) for the next run or ``stress-runner alerts flush``.
        """
        if not self.enabled:
            if report.status == "breached":
                log.warning(
                    "PagerDuty paging is off: PD_ROUTING_KEY is not set; breach of %s on %s "
                    "(run %s) was not paged",
                    report.scenario,
                    ", ".join(report.breached_symbols[:10]),
                    report.run_id,
                )
            elif report.status == "failed":
                log.warning("PagerDuty paging is off: PD_ROUTING_KEY is not set; failed run %s "
                            "of %s was not paged", report.run_id, report.scenario)
            return
        deadline = time.monotonic() + self.budget_s
        event_ids = self.enqueue(report)
        if not event_ids and not self._pending():
            return
        self._deliver_pending(deadline)
        for event_id in event_ids:
            event = self.store.outbox_get(event_id)
            if event is not None and event.status != "delivered":
                raise PagerDutyError(
                    f"PagerDuty {event.event_action} for {report.scenario} (run "
                    f"{report.run_id}) is {event.status} in outbox #{event.id}: "
                    f"{event.last_error or 'not sent yet'}")

    def enqueue(self, report: StressResult) -> list[int]:
        """Write this run's events to the outbox and move the episodes on; their outbox ids.

        A scenario has two kinds of incident, each one episode with one dedup_key: breaches,
        and failed runs (a check that could not run). A breach opens the breach episode or
        continues it; a failed run does the same with the failure episode; a run that
        completes resolves an open failure episode, and a passing run an open breach episode
        (resolves only with auto-resolve).
        """
        ids = []
        with self.store.transaction():
            failure_scope = f"{report.scenario}/failed"
            if report.status == "failed":
                dedup_key = self._episode_key(failure_scope, report)
                return [self._add(report, "trigger", self.failure_event(report, dedup_key))]
            ids += self._close(failure_scope, report)
            if report.status == "breached":
                dedup_key = self._episode_key(report.scenario, report)
                ids.append(self._add(report, "trigger", self.trigger_event(report, dedup_key)))
            else:
                ids += self._close(report.scenario, report)
        return ids

    def _episode_key(self, scope: str, report: StressResult) -> str:
        """The open episode's dedup_key for this scope, or a new episode's."""
        episode = self.store.episode_current(SINK, scope)
        if episode is None:
            dedup_key = make_dedup_key(scope, report.run_id)
            self.store.episode_open(SINK, scope, dedup_key, report.run_id)
            return dedup_key
        self.store.episode_touch(episode.id, report.run_id)
        return episode.dedup_key

    def _close(self, scope: str, report: StressResult) -> list[int]:
        """Close this scope's open episode; its resolve's outbox id, if one is sent."""
        episode = self.store.episode_current(SINK, scope)
        if episode is None:
            return []
        self.store.episode_close(episode.id, report.run_id)
        if not self.auto_resolve:
            log.info("%s: episode %s closed without resolve (PD_AUTO_RESOLVE off)", scope,
                     episode.dedup_key)
            return []
        body = {"event_action": "resolve", "dedup_key": episode.dedup_key}
        return [self._add(report, "resolve", body)]

    def _add(self, report: StressResult, action: str, body: dict[str, Any]) -> int:
        return self.store.outbox_add(SINK, action, body, dedup_key=body["dedup_key"],
                                     scenario=report.scenario, run_id=report.run_id)

    # -- payload ----------------------------------------------------------------------------

    def trigger_event(self, report: StressResult, dedup_key: str) -> dict[str, Any]:
        """The runbook's payload, kept inside PagerDuty's limits (never fails on size)."""
        symbols = report.breached_symbols
        breaches = [
            {
                "symbol": b.symbol,
                "limit": b.limit,
                "value": _finite(b.value),
                "threshold": _finite(b.threshold),
            }
            for b in report.breaches
        ]
        details: dict[str, Any] = {
            "scenario": report.scenario,
            "symbols": symbols,
            "breach_count": report.breach_count,
            "timestamp": report.timestamp,
            "run_id": report.run_id,
            "breaches": breaches,
            "headroom": _finite(report.headroom if report.headroom is not None else math.nan),
            "kill_switch": report.kill_switch,
        }
        payload: dict[str, Any] = {
            "summary": breach_summary(report.scenario, symbols),
            "severity": "critical",
            "source": SOURCE,
            "component": SOURCE,
            "group": report.scenario,
            "class": "stress_breach",
            "custom_details": details,
        }
        if _is_iso_timestamp(report.timestamp):
            payload["timestamp"] = report.timestamp
        event: dict[str, Any] = {
            "event_action": "trigger",
            "dedup_key": dedup_key,
            "payload": payload,
        }
        if self.links:
            event["links"] = self.links
        _fit(event)
        return event

    def failure_event(self, report: StressResult, dedup_key: str) -> dict[str, Any]:
        """A failed run is its own incident (severity ``error``): the check could not run."""
        summary = self._redact(f"Stress run failed: {report.scenario}: {report.error}")
        if len(summary) > SUMMARY_MAX:
            summary = summary[: SUMMARY_MAX - 3] + "..."
        details = {
            "scenario": report.scenario,
            "run_id": report.run_id,
            "timestamp": report.timestamp,
            "failure": report.failure,
            "error": self._redact(report.error or ""),
            "book_source": report.book_source,
            "kill_switch": report.kill_switch,
        }
        payload: dict[str, Any] = {
            "summary": summary,
            "severity": "error",
            "source": SOURCE,
            "component": SOURCE,
            "group": report.scenario,
            "class": "stress_run_failed",
            "custom_details": details,
        }
        if _is_iso_timestamp(report.timestamp):
            payload["timestamp"] = report.timestamp
        event: dict[str, Any] = {"event_action": "trigger", "dedup_key": dedup_key,
                                 "payload": payload}
        if self.links:
            event["links"] = self.links
        return event

    # -- delivery ---------------------------------------------------------------------------

    def flush(self, *, budget_s: float | None = None) -> FlushResult:
        """Send every pending event, oldest first; stops early if PagerDuty is unreachable."""
        self._require_key()
        deadline = time.monotonic() + (self.budget_s if budget_s is None else budget_s)
        delivered, failed = self._deliver_pending(deadline)
        return FlushResult(delivered, failed, len(self._pending()))

    def send_test(self) -> tuple[SendResult, SendResult | None]:
        """A ``[TEST]`` info trigger with its own key, then its resolve.

        The trigger is sent directly (a test that fails must not page hours later); once it
        is accepted, the resolve goes through the outbox so a flush can still close it.
        """
        self._require_key()
        deadline = time.monotonic() + self.budget_s
        dedup_key = f"{SOURCE}/test/{uuid.uuid4().hex}"
        event = {
            "event_action": "trigger",
            "dedup_key": dedup_key,
            "payload": {
                "summary": f"[TEST] stress_runner PagerDuty integration test from "
                f"{socket.gethostname()}; resolves itself, no action needed",
                "severity": "info",
                "source": SOURCE,
                "component": SOURCE,
                "class": "stress_test_page",
                "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        }
        trigger = self._send(event, deadline, lambda _error: None)
        if trigger.status != "delivered":
            return trigger, None
        outbox_id = self.store.outbox_add(
            TEST_SINK, "resolve", {"event_action": "resolve", "dedup_key": dedup_key},
            dedup_key=dedup_key,
        )
        with self._send_lock:
            row = self.store.outbox_get(outbox_id)
            assert row is not None
            resolve = self._deliver(row, deadline)
        return trigger, resolve

    def _require_key(self) -> None:
        if not self.enabled:
            raise ConfigError(
                "environment", "PD_ROUTING_KEY", NO_VALUE, "is not set, so PagerDuty is off"
            )

    def _pending(self) -> list[OutboxEvent]:
        """This sink's pending events (pages and test resolves), oldest first."""
        rows = self.store.outbox_pending(SINK) + self.store.outbox_pending(TEST_SINK)
        return sorted(rows, key=lambda row: row.id)

    def _deliver_pending(self, deadline: float) -> tuple[int, int]:
        """One pass over the outbox in order; returns (delivered, failed)."""
        delivered = failed = 0
        if not self._send_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            log.warning("PagerDuty delivery still busy in another thread; events stay pending")
            return delivered, failed
        try:
            for row in self._pending():
                if deadline - time.monotonic() < _MIN_ATTEMPT_S:
                    break
                result = self._deliver(row, deadline)
                if result.status == "delivered":
                    delivered += 1
                elif result.status == "failed":
                    failed += 1
                else:
                    break  # PagerDuty unreachable: later events wait, so order is kept
        finally:
            self._send_lock.release()
        return delivered, failed

    def _deliver(self, row: OutboxEvent, deadline: float) -> SendResult:
        """Send one outbox row and record the outcome on it."""
        result = self._send(
            row.body, deadline, lambda error: self.store.outbox_record_attempt(row.id, error)
        )
        what = f"{row.event_action} {row.dedup_key} (outbox #{row.id})"
        if result.status == "delivered":
            self.store.outbox_mark_delivered(row.id)
            log.info("PagerDuty accepted %s", what)
        elif result.status == "failed":
            self.store.outbox_mark_failed(row.id, result.error or "rejected")
            log.error("PagerDuty rejected %s, not retried: %s", what, result.error)
        else:
            log.warning("PagerDuty %s not delivered, kept pending: %s", what, result.error)
        return SendResult(
            result.status, row.dedup_key, result.http_status, result.error, outbox_id=row.id
        )

    def _send(
        self, body: dict[str, Any], deadline: float, on_attempt: Callable[[str | None], None]
    ) -> SendResult:
        """POST with retries (same body and dedup_key each time) until done or out of budget."""
        assert self._key is not None
        data = json.dumps({"routing_key": self._key, **body}, allow_nan=False).encode()
        dedup_key = body.get("dedup_key")
        import stamina  # here, not at import: `stress-runner run` without a key never sends

        try:
            for attempt in stamina.retry_context(
                on=lambda exc: self._backoff(exc, deadline),
                attempts=self.attempts,
                timeout=max(deadline - time.monotonic(), _MIN_ATTEMPT_S),
                wait_initial=self.wait_initial_s,
                wait_max=self.wait_max_s,
                wait_jitter=self.wait_jitter_s,
            ):
                with attempt:
                    response = self._post_once(data, deadline, on_attempt)
        except _Retryable as exc:
            return SendResult("pending", dedup_key, None, str(exc))
        status = response.status_code
        if 200 <= status < 300:
            return SendResult("delivered", _answer(response).get("dedup_key") or dedup_key, status)
        error = self._redact(_describe(response))
        if status in (400, 413, 422):
            return SendResult("failed", dedup_key, status, error)
        # 401/403/404 or a redirect: a configuration problem; fix it, then flush.
        return SendResult("pending", dedup_key, status, error)

    def _post_once(
        self, data: bytes, deadline: float, on_attempt: Callable[[str | None], None]
    ) -> httpx.Response:
        import httpx

        timeout = min(self.request_timeout_s, max(deadline - time.monotonic(), _MIN_ATTEMPT_S))
        try:
            response = self.client.post(
                self.url,
                content=data,
                headers={"Content-Type": "application/json"},
                timeout=timeout,
            )
        except httpx.HTTPError as exc:
            error = self._redact(f"{type(exc).__name__}: {exc}")
            on_attempt(error)
            raise _Retryable(error) from None
        status = response.status_code
        if 200 <= status < 300:
            on_attempt(None)
            return response
        error = self._redact(_describe(response))
        on_attempt(error)
        if status in (408, 429) or status >= 500:
            raise _Retryable(error, _retry_after(response.headers.get("Retry-After")))
        return response

    def _backoff(self, exc: Exception, deadline: float) -> bool | float:
        """Retry only transient failures, and only while the budget allows the wait."""
        if not isinstance(exc, _Retryable):
            return False
        left = deadline - time.monotonic()
        if exc.retry_after is not None:
            if exc.retry_after > left - _MIN_ATTEMPT_S:
                log.warning(
                    "PagerDuty asked to retry after %.1f s, beyond this call's budget; the "
                    "event stays pending",
                    exc.retry_after,
                )
                return False
            return exc.retry_after
        return left >= self.wait_max_s + self.wait_jitter_s + _MIN_ATTEMPT_S

    def _redact(self, text: str) -> str:
        return text.replace(self._key, REDACTED) if self._key else text


# -- pure helpers -----------------------------------------------------------------------------


def make_dedup_key(scenario: str, run_id: str) -> str:
    """``stress_runner/<scenario>/<first breaching run>``; hashed if over PagerDuty's 255."""
    key = f"{SOURCE}/{scenario}/{run_id}"
    if len(key) <= DEDUP_KEY_MAX:
        return key
    digest = hashlib.sha256(f"{scenario}\0{run_id}".encode()).hexdigest()
    return f"{SOURCE}/{scenario[:100]}/{digest}"


def breach_summary(scenario: str, symbols: list[str]) -> str:
    """``Stress test breach: <scenario> on A, B ... and N more``, at most 1024 characters."""
    prefix = f"Stress test breach: {scenario} on "
    full = prefix + ", ".join(symbols)
    if len(full) <= SUMMARY_MAX:
        return full
    shown: list[str] = []
    for symbol in symbols:
        candidate = [*shown, symbol]
        rest = len(symbols) - len(candidate)
        text = prefix + ", ".join(candidate) + f" ... and {rest} more"
        if len(text) > SUMMARY_MAX:
            break
        shown = candidate
    text = prefix + ", ".join(shown) + f" ... and {len(symbols) - len(shown)} more"
    if len(text) <= SUMMARY_MAX:
        return text
    return text[: SUMMARY_MAX - 3] + "..."  # the scenario name alone is too long


def _fit(event: dict[str, Any]) -> None:
    """Trim ``custom_details`` until the event is under 512 KB, saying what was left out."""
    details = event["payload"]["custom_details"]
    for field in ("breaches", "symbols"):
        total = len(details[field])
        while _size(event) > EVENT_MAX_BYTES - _SIZE_MARGIN and details[field]:
            details[field] = details[field][: len(details[field]) // 2]
            details[f"{field}_note"] = (
                f"truncated to fit PagerDuty's 512 KB limit: {len(details[field])} of {total} "
                "shown; see the run's result for all"
            )
    if _size(event) > EVENT_MAX_BYTES - _SIZE_MARGIN:
        event["payload"]["custom_details"] = {
            "scenario": str(details["scenario"])[:SUMMARY_MAX],
            "run_id": str(details["run_id"])[:SUMMARY_MAX],
            "breach_count": details["breach_count"],
            "note": "details left out to fit PagerDuty's 512 KB limit",
        }
        event["payload"]["group"] = str(event["payload"]["group"])[:SUMMARY_MAX]


def _size(event: dict[str, Any]) -> int:
    return len(json.dumps(event, allow_nan=False).encode())


def _finite(value: float) -> float | str:
    """JSON has no NaN or Infinity; PagerDuty would reject the whole event."""
    return value if math.isfinite(value) else str(value)


def _is_iso_timestamp(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return False
    return True


def _retry_after(header: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _answer(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _describe(response: httpx.Response) -> str:
    """``HTTP 400: <message> [errors]`` from PagerDuty's answer, or the start of the body."""
    data = _answer(response)
    text = f"HTTP {response.status_code}"
    if data.get("message"):
        text += f": {data['message']}"
        if data.get("errors"):
            text += f" {data['errors']}"
    elif response.text:
        text += f": {response.text[:300]}"
    return text


# -- the plugin ---------------------------------------------------------------------------

_alerter: PagerDutyAlerter | None = None
_alerter_lock = threading.Lock()


def get_alerter() -> PagerDutyAlerter:
    """The process's alerter, built on first use from the environment."""
    global _alerter
    with _alerter_lock:
        if _alerter is None:
            settings = load_settings()
            _alerter = PagerDutyAlerter(settings, Store(settings.db_path))
        return _alerter


def reset_alerter() -> None:
    """Forget the cached alerter, e.g. after the environment changed (tests, reload)."""
    global _alerter
    with _alerter_lock:
        if _alerter is not None:
            _alerter.close()
            _alerter.store.close()
        _alerter = None


@hookimpl
def stress_alert(report: StressResult) -> str | None:
    """Page on a breach, resolve on the first pass after one; see ``PagerDutyAlerter.alert``.

    Answers ``"disabled"`` without a routing key, so the metrics do not count a page as sent.
    """
    alerter = get_alerter()
    alerter.alert(report)
    return None if alerter.enabled else "disabled"
