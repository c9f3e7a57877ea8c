"""A third-party stress-plugin alert sink: breaches and failed runs go to a Slack-compatible
incoming webhook.

Configured by ``STRESS_WEBHOOK_URL``. Webhook URLs are secrets (the token is in the path), so
the URL never appears in an error message. There is no retry or queue here: the runtime keeps
each report in its outbox and calls again, with backoff, until this function returns.
"""

from __future__ import annotations

import os

import httpx

from stress_hookspecs import Delivery, StressResult, hookimpl

TIMEOUT_S = 10.0
MAX_SYMBOLS_SHOWN = 20


class WebhookError(RuntimeError):
    """The webhook did not take the message; the runtime logs it and tries again later."""


def message(report: StressResult, delivery: Delivery) -> str:
    """One short Slack message: what breached (or why the check failed), and the halt."""
    test = "[TEST] " if delivery.test else ""
    halted = "trading HALTED" if report.halted else "trading not halted"
    if report.status == "failed":
        return (f":warning: {test}*Stress run failed*: {report.scenario}: {report.error}\n"
                f"The risk check did not run; {halted}. Run {report.run_id} at "
                f"{report.timestamp}.")
    symbols = report.breached_symbols
    shown = ", ".join(symbols[:MAX_SYMBOLS_SHOWN])
    if len(symbols) > MAX_SYMBOLS_SHOWN:
        shown += f" ... and {len(symbols) - MAX_SYMBOLS_SHOWN} more"
    return (
        f":rotating_light: {test}*Stress test breach*: {report.scenario} on {shown}\n"
        f"{report.breach_count} breached, headroom {report.headroom:.3g}, {halted}. "
        f"Run {report.run_id} at {report.timestamp}."
    )


@hookimpl
def stress_alert(result: StressResult, delivery: Delivery) -> str | None:
    """Post breaches and failed runs; a passing run or a missing URL returns at once."""
    url = os.environ.get("STRESS_WEBHOOK_URL", "").strip()
    if result.status == "passed":
        return None
    if not url:
        return "disabled"
    try:
        response = httpx.post(url, json={"text": message(result, delivery)}, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise WebhookError(f"webhook post failed: {type(exc).__name__}") from None
    if response.status_code >= 300:
        raise WebhookError(f"webhook answered HTTP {response.status_code}")
    return None
