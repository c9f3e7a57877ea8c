"""``stress-runner alerts flush|list|test``: look after the PagerDuty outbox by hand.

Nothing here can print the routing key: the outbox never stores it, and the alerter redacts it
from every error text.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from stress_plugin.store import OUTBOX_STATUSES, OutboxEvent, Store

# The CLI builds this parser for every command, so the alerter (httpx, stamina) and the
# settings (pydantic) are imported in the handlers: no other command pays for them here.

FLUSH_BUDGET_S = 60.0
"""A flush by hand is not inside the runner's 30 s alert window, so it may take longer."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``alerts`` and its sub-commands to the main CLI's subparsers."""
    parser = subparsers.add_parser(
        "alerts", help="PagerDuty outbox: flush pending pages, list them, send a test page"
    )
    commands = parser.add_subparsers(dest="alerts_command", metavar="COMMAND", required=True)

    flush = commands.add_parser("flush", help="send every pending event now, oldest first")
    flush.add_argument(
        "--timeout",
        type=float,
        default=FLUSH_BUDGET_S,
        metavar="SECONDS",
        help=f"give up (events stay pending) after this long (default {FLUSH_BUDGET_S:g})",
    )
    flush.set_defaults(handler=flush_handler)

    listing = commands.add_parser("list", help="show outbox events, newest first")
    listing.add_argument("--status", choices=OUTBOX_STATUSES, help="only events in this state")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.set_defaults(handler=list_handler)

    test = commands.add_parser("test", help="send a [TEST] page and resolve it")
    test.set_defaults(handler=test_handler)
    return parser


def flush_handler(args: argparse.Namespace) -> int:
    """Exit 0 when the outbox is empty afterwards, 1 when events stayed pending or failed."""
    from stress_plugin.plugins.pagerduty import PagerDutyAlerter
    from stress_plugin.settings import load_settings

    settings = load_settings()
    with Store(settings.db_path) as store:
        alerter = PagerDutyAlerter(settings, store)
        try:
            result = alerter.flush(budget_s=args.timeout)
        finally:
            alerter.close()
    print(
        f"delivered {result.delivered}, failed {result.failed}, still pending {result.pending}"
    )
    if result.failed:
        print("rejected events are listed by: stress-runner alerts list --status failed")
    return 0 if result.pending == 0 and result.failed == 0 else 1


def list_handler(args: argparse.Namespace) -> int:
    from stress_plugin.settings import load_settings

    settings = load_settings()
    with Store(settings.db_path) as store:
        events = store.outbox_list(args.status, limit=args.limit)
    if args.json:
        print(json.dumps([event.to_dict() for event in events], indent=2))
        return 0
    if not events:
        print("no alert events" + (f" with status {args.status}" if args.status else ""))
        return 0
    print(format_table(events))
    return 0


def test_handler(args: argparse.Namespace) -> int:
    """Exit 0 when both the test trigger and its resolve were accepted."""
    from stress_plugin.plugins.pagerduty import PagerDutyAlerter
    from stress_plugin.settings import load_settings

    settings = load_settings()
    with Store(settings.db_path) as store:
        alerter = PagerDutyAlerter(settings, store)
        try:
            trigger, resolve = alerter.send_test()
        finally:
            alerter.close()
    if trigger.status != "delivered":
        print(f"test trigger NOT accepted ({trigger.status}): {trigger.error}")
        return 1
    print(f"test trigger accepted by {settings.pd_events_url} (dedup_key {trigger.dedup_key})")
    if resolve is None or resolve.status != "delivered":
        error = resolve.error if resolve else "not sent"
        print(f"its resolve was NOT accepted: {error}")
        if resolve is not None and resolve.status == "pending":
            print("it stays in the outbox; run: stress-runner alerts flush")
        return 1
    print("test resolve accepted; the test incident is closed")
    return 0


def format_table(events: list[OutboxEvent]) -> str:
    """A plain fixed-width table; long keys and errors are cut to keep one line per event."""
    header = ("ID", "CREATED (UTC)", "STATUS", "ACTION", "SCENARIO", "RUN", "TRIES",
              "DEDUP KEY", "LAST ERROR")
    rows = [
        (
            str(e.id),
            e.created_at[:19].replace("T", " "),
            e.status,
            e.event_action,
            _cut(e.scenario or "-", 24),
            _cut(e.run_id or "-", 20),
            str(e.attempts),
            _cut(e.dedup_key or "-", 48),
            _cut(e.last_error or "", 60),
        )
        for e in events
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
