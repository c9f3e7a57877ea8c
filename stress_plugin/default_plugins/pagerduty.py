"""PagerDuty Events API v2 alert sink: an ordinary ``stress_alert`` plugin.

It keeps no state and no store: the runtime's outbox makes each report durable and retries it
(this sink raises ``DeliveryDeferred`` on a 429, a 5xx or a network error, with PagerDuty's
Retry-After, and ``DeliveryRejected`` on a 400), and the runtime's episodes give each incident
its key: a scenario's consecutive breaching runs are one episode, so one ``dedup_key`` and one
incident, updated hourly; failed runs are an episode of their own (severity ``error``); the
first run that ends an episode resolves its incident. A retried delivery sends the same events
with the same keys, which PagerDuty uses to absorb repeats (delivery is at least once).

The routing key is read from ``PD_ROUTING_KEY`` at send time, only ever held in memory, added to
the body when it is sent and redacted from every error text: keys have leaked through logged
URLs and exception text elsewhere.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from stress_hookspecs import (
    Delivery,
    DeliveryDeferred,
    DeliveryRejected,
    StressResult,
    hookimpl,
)
from stress_plugin.settings import Settings, load_settings
from stress_plugin.version import DISTRIBUTION, __version__

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("stress_runner.pagerduty")

SOURCE = "stress_runner"
SUMMARY_MAX = 1024
DEDUP_KEY_MAX = 255
EVENT_MAX_BYTES = 512 * 1024
REDACTED = "<redacted>"
_SIZE_MARGIN = 1024
"""Bytes kept free below the event limit for the routing key and JSON framing."""


class PagerDutyAlerter:
    """Turns a stress report into Events API v2 events and sends them, one POST each.

    No retries of its own and no outbox: a failed POST raises ``DeliveryDeferred`` or
    ``DeliveryRejected`` and the runtime retries the whole delivery later.
    """

    def __init__(self, settings: Settings, *, client: httpx.Client | None = None,
                 request_timeout_s: float = 5.0) -> None:
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
        self.public_url = settings.stress_public_url
        """STRESS_PUBLIC_URL: every page then links the run's report first."""
        self.request_timeout_s = request_timeout_s
        self._own_client = client is None
        self._client = client

    @property
    def enabled(self) -> bool:
        return self._key is not None

    @property
    def client(self) -> httpx.Client:
        """Made on the first send: with paging off, httpx is never imported (cold start)."""
        if self._client is None:
            import httpx

            self._client = httpx.Client(
                timeout=self.request_timeout_s,
                headers={"User-Agent": f"{DISTRIBUTION}/{__version__}"},
            )
        return self._client

    def close(self) -> None:
        if self._own_client and self._client is not None:
            self._client.close()

    # -- events -----------------------------------------------------------------------------

    def events(self, report: StressResult) -> list[dict[str, Any]]:
        """This report's events, in order: resolves of the episodes it ends (with
        auto-resolve), an unconfirmed KILL_SWITCH's own trigger (never resolved by a run: a
        person checks the trading system), then the trigger of the episode it belongs to."""
        events: list[dict[str, Any]] = []
        if self.auto_resolve:
            events += [{"event_action": "resolve",
                        "dedup_key": make_dedup_key(report.scenario, episode)}
                       for episode in report.resolves]
        if report.kill_switch_confirmed is False:
            events.append(self.unconfirmed_event(report))
        if report.status != "passed" and report.episode is not None:
            key = make_dedup_key(report.scenario, report.episode)
            events.append(self.failure_event(report, key) if report.status == "failed"
                          else self.trigger_event(report, key))
        return events

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
        event = self._trigger(report, dedup_key, breach_summary(report.scenario, symbols),
                              "critical", "stress_breach", details)
        _fit(event)
        return event

    def unconfirmed_event(self, report: StressResult) -> dict[str, Any]:
        """A KILL_SWITCH the host did not confirm: its own critical incident, keyed by the run
        (``stress_runner/<scenario>/unconfirmed/<run_id>``), so it is never folded into the
        breach episode's hourly updates."""
        summary = unconfirmed_summary(report.scenario, report.breached_symbols, report.run_id)
        payload: dict[str, Any] = {
            "summary": summary,
            "severity": "critical",
            "source": SOURCE,
            "component": SOURCE,
            "group": report.scenario,
            "class": "stress_kill_switch_unconfirmed",
            "custom_details": {
                "scenario": report.scenario,
                "run_id": report.run_id,
                "timestamp": report.timestamp,
                "symbols": report.breached_symbols[:100],
                "kill_switch_confirmed": False,
                "halted": report.halted,
            },
        }
        if _is_iso_timestamp(report.timestamp):
            payload["timestamp"] = report.timestamp
        event: dict[str, Any] = {
            "event_action": "trigger",
            "dedup_key": make_dedup_key(report.scenario, f"unconfirmed/{report.run_id}"),
            "payload": payload,
        }
        if links := self.links_for(report):  # the report shows the breach the halt was for
            event["links"] = links
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
        return self._trigger(report, dedup_key, summary, "error", "stress_run_failed", details)

    def _trigger(self, report: StressResult, dedup_key: str, summary: str, severity: str,
                 event_class: str, details: dict[str, Any]) -> dict[str, Any]:
        """The trigger envelope every page of this sink shares."""
        payload: dict[str, Any] = {
            "summary": summary,
            "severity": severity,
            "source": SOURCE,
            "component": SOURCE,
            "group": report.scenario,
            "class": event_class,
            "custom_details": details,
        }
        if _is_iso_timestamp(report.timestamp):
            payload["timestamp"] = report.timestamp
        event: dict[str, Any] = {"event_action": "trigger", "dedup_key": dedup_key,
                                 "payload": payload}
        if links := self.links_for(report):
            event["links"] = links
        return event

    def links_for(self, report: StressResult) -> list[dict[str, str]]:
        """The page's links: the run's report first (with STRESS_PUBLIC_URL), so the on-call
        opens the breach or the failure in one click, then the runbook and the dashboard."""
        if not self.public_url:
            return list(self.links)
        return [{"href": report_url(self.public_url, report.run_id), "text": "Run report"},
                *self.links]

    # -- sending ----------------------------------------------------------------------------

    def send(self, report: StressResult) -> int:
        """POST every event of this report; the number sent. Raises ``DeliveryDeferred`` or
        ``DeliveryRejected`` (redacted) at the first event PagerDuty did not accept."""
        self._require_key()
        events = self.events(report)
        for body in events:
            self.post(body)
        return len(events)

    def send_test(self) -> str:
        """A ``[TEST]`` info trigger with its own key, then its resolve; returns the key."""
        import socket
        import uuid

        self._require_key()
        dedup_key = f"{SOURCE}/test/{uuid.uuid4().hex}"
        self.post({
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
        })
        self.post({"event_action": "resolve", "dedup_key": dedup_key})
        return dedup_key

    def post(self, body: dict[str, Any]) -> None:
        """One POST of one event; the routing key is added here and nowhere else."""
        import httpx

        assert self._key is not None
        data = json.dumps({"routing_key": self._key, **body}, allow_nan=False).encode()
        what = body["event_action"]  # the delivery's log line names the run
        try:
            response = self.client.post(self.url, content=data,
                                        headers={"Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            raise DeliveryDeferred(self._redact(
                f"PagerDuty {what}: {type(exc).__name__}: {exc}")) from None
        status = response.status_code
        if 200 <= status < 300:
            log.info("PagerDuty accepted %s %s", what, body.get("dedup_key"))
            return
        error = self._redact(f"PagerDuty {what}: {_describe(response)}")
        if status in (400, 413, 422):
            raise DeliveryRejected(error)
        if status in (408, 429) or status >= 500:
            raise DeliveryDeferred(error, _retry_after(response.headers.get("Retry-After")))
        # 401/403/404 or a redirect: a configuration problem; kept pending until it is fixed
        raise DeliveryDeferred(error + " (check PD_ROUTING_KEY and PD_EVENTS_URL)")

    def _require_key(self) -> None:
        if not self.enabled:
            raise DeliveryDeferred("PD_ROUTING_KEY is not set, so PagerDuty is off")

    def _redact(self, text: str) -> str:
        return text.replace(self._key, REDACTED) if self._key else text


# -- pure helpers -----------------------------------------------------------------------------


def report_url(public_url: str, run_id: str) -> str:
    """Where the service serves a run's HTML report."""
    from urllib.parse import quote

    return f"{public_url.rstrip('/')}/api/v1/stress/results/{quote(run_id, safe='')}/report"


def make_dedup_key(scenario: str, episode: str) -> str:
    """``stress_runner/<scenario>/<episode>`` (the episode is the run that opened it, with
    ``failed/`` for failed runs); hashed if over PagerDuty's 255."""
    key = f"{SOURCE}/{scenario}/{episode}"
    if len(key) <= DEDUP_KEY_MAX:
        return key
    import hashlib

    digest = hashlib.sha256(f"{scenario}\0{episode}".encode()).hexdigest()
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


def unconfirmed_summary(scenario: str, symbols: list[str], run_id: str) -> str:
    """``KILL_SWITCH UNCONFIRMED: <scenario> on A, B (run <id>)``, at most 1024 characters."""
    suffix = f" (run {run_id})"
    on = breach_summary(scenario, symbols).removeprefix("Stress test breach: ") if symbols \
        else scenario
    text = f"KILL_SWITCH UNCONFIRMED: {on}"
    if len(text) + len(suffix) > SUMMARY_MAX:
        text = text[: SUMMARY_MAX - len(suffix) - 3] + "..."
    return text + suffix


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
    import email.utils  # only for an HTTP date: email is ~10 ms of a cold start

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


@hookimpl
def stress_alert(result: StressResult, delivery: Delivery) -> str | None:
    """Page a breach or a failed run, resolve the incidents a run ends; see the module doc.

    Reads the settings at every call, so the key is never kept. Answers ``"disabled"``
    without a routing key (with a warning on a breach or a failed run), so the metrics do not
    count a page as sent.
    """
    alerter = PagerDutyAlerter(load_settings())
    if not alerter.enabled:
        if result.status != "passed":
            symbols = ", ".join(result.breached_symbols[:10])
            what = (f"breach of {result.scenario} on {symbols}" if result.status == "breached"
                    else f"failed run of {result.scenario}")
            log.warning("PagerDuty paging is off: PD_ROUTING_KEY is not set; %s (run %s) was "
                        "not paged", what, result.run_id)
        return "disabled"
    try:
        if delivery.test:
            alerter.send_test()
        else:
            alerter.send(result)
    finally:
        alerter.close()
    return None
