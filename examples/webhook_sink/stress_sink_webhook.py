"""A third-party stress-plugin alert sink: breaches go to a Slack-compatible incoming webhook.

Configured by ``STRESS_WEBHOOK_URL``. Webhook URLs are secrets (the token is in the path), so
the URL never appears in an error message.
"""

from __future__ import annotations

import os

import httpx

from stress_hookspecs import StressResult, hookimpl

TIMEOUT_S = 10.0
MAX_SYMBOLS_SHOWN = 20


class WebhookError(RuntimeError):
    """The webhook did not take the message; the runner logs and counts it."""


def message(report: StressResult) -> str:
    """One short Slack message: what breached, where, and whether trading was halted."""
    symbols = report.breached_symbols
    shown = ", ".join(symbols[:MAX_SYMBOLS_SHOWN])
    if len(symbols) > MAX_SYMBOLS_SHOWN:
        shown += f" ... and {len(symbols) - MAX_SYMBOLS_SHOWN} more"
    halted = "KILL_SWITCH sent" if report.kill_switch else "no KILL_SWITCH"
    return (
        f":rotating_light: *Stress test breach*: {report.scenario} on {shown}\n"
        f"{report.breach_count} breached, headroom {report.headroom:.3g}, {halted}. "
        f"Run {report.run_id} at {report.timestamp}."
    )


@hookimpl
def stress_alert(report: StressResult) -> None:
    """Post on breaches only; a passing run or a missing URL returns at once."""
    url = os.environ.get("STRESS_WEBHOOK_URL", "").strip()
    if report.breach_count == 0 or not url:
        return
    try:
        response = httpx.post(url, json={"text": message(report)}, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise WebhookError(f"webhook post failed: {type(exc).__name__}") from None
    if response.status_code >= 300:
        raise WebhookError(f"webhook answered HTTP {response.status_code}")
