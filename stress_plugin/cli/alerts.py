"""``stress-runner alerts list|flush|retry|test``: the runtime's outbox, for every alert sink.

Nothing here can print a secret: the outbox keeps the report's run and the sink's name, never
what a sink sends, and sinks redact their own error texts.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from stress_plugin.store import OUTBOX_STATUSES, DeliveryRow

# The runner and the settings are imported in the handlers: building this parser (for
# ``stress-runner --help``) pays for neither.

FLUSH_BUDGET_S = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sub-commands of the main CLI's ``alerts`` parser."""
    commands = parser.add_subparsers(dest="alerts_command", metavar="COMMAND", required=True)

    flush = commands.add_parser("flush", help="send every pending delivery now, in order")
    flush.add_argument("--timeout", type=float, default=FLUSH_BUDGET_S, metavar="SECONDS",
                       help="give up (deliveries stay pending) after this long "
                            f"(default {FLUSH_BUDGET_S:g})")
    flush.add_argument("--sink", help="only this sink")
    flush.set_defaults(handler=flush_handler)

    listing = commands.add_parser("list", help="show deliveries, newest first")
    listing.add_argument("--status", choices=OUTBOX_STATUSES, help="only deliveries in this state")
    listing.add_argument("--sink", help="only this sink")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.set_defaults(handler=list_handler)

    retry = commands.add_parser("retry", help="queue a failed delivery again and send it now")
    retry.add_argument("id", type=int, help="the delivery id (alerts list)")
    retry.set_defaults(handler=retry_handler)

    test = commands.add_parser("test", help="send a [TEST] report to each sink now")
    test.add_argument("--sink", help="only this sink")
    test.set_defaults(handler=test_handler)


def _runner() -> Any:
    from stress_plugin.runner import StressRunner
    from stress_plugin.settings import load_settings
    from stress_plugin.store import Store

    settings = load_settings()
    return StressRunner(settings=settings, store=Store(settings.db_path),
                        deliver_in_background=False)


def flush_handler(args: argparse.Namespace) -> int:
    """Exit 0 when nothing is left pending or failed by this flush, 1 otherwise."""
    runner = _runner()
    before = {row.id for row in runner.store.deliveries_pending(args.sink)}
    left = runner.deliveries.drain(args.timeout, force=True, sink=args.sink)
    rows = [runner.store.delivery_get(i) for i in sorted(before)]
    delivered = sum(r is not None and r.status == "delivered" for r in rows)
    failed = sum(r is not None and r.status == "failed" for r in rows)
    print(f"delivered {delivered}, failed {failed}, still pending {len(left)}")
    if failed:
        print("rejected deliveries are listed by: stress-runner alerts list --status failed")
    return 0 if not left and not failed else 1


def list_handler(args: argparse.Namespace) -> int:
    from stress_plugin.settings import load_settings
    from stress_plugin.store import Store

    settings = load_settings()
    with Store(settings.db_path) as store:
        rows = store.deliveries_list(args.status, sink=args.sink, limit=args.limit)
    if args.json:
        print(json.dumps([row.to_dict() for row in rows], indent=2))
        return 0
    if not rows:
        print("no deliveries" + (f" with status {args.status}" if args.status else ""))
        return 0
    print(format_table(rows))
    return 0


def retry_handler(args: argparse.Namespace) -> int:
    runner = _runner()
    attempt = runner.deliveries.retry(args.id)
    if attempt is None:
        print(f"stress-runner: error: no delivery {args.id} to retry (delivered or unknown)",
              file=sys.stderr)
        return 2
    print(f"delivery {args.id} to {attempt.sink}: {attempt.status}"
          + (f" ({attempt.error})" if attempt.error else ""))
    return 0 if attempt.status == "delivered" else 1


def test_handler(args: argparse.Namespace) -> int:
    """Exit 0 when every sink tested took its test report."""
    from stress_hookspecs import Breach, Limits, Metrics, StressResult
    from stress_plugin.store import utc_now

    runner = _runner()
    sinks = [args.sink] if args.sink else runner.plugins.sinks()
    if args.sink and args.sink not in runner.plugins.sinks():
        known = ", ".join(runner.plugins.sinks()) or "none"
        print(f"stress-runner: error: no sink {args.sink} is loaded (loaded: {known})",
              file=sys.stderr)
        return 2
    worst = Metrics(worst_pnl=-1.0, drawdown_pct=0.0, var_ratio=None, delta_change=0.0,
                    headroom=0.5)
    report = StressResult(
        run_id="test-" + utc_now(), scenario="stress_runner_test", timestamp=utc_now()[:19] + "Z",
        symbols_tested=1, portfolio=worst, symbols={"TEST": worst}, headroom=0.5,
        limits=Limits(), breaches=(Breach("TEST", "max_drawdown_pct", 1.0, 0.05),),
        kill_switch=False, book_source="stress-runner alerts test", episode="test")
    ok = True
    for sink in sinks:
        attempt = runner.deliveries.test(sink, report)
        if attempt.status == "delivered":
            print(f"{sink}: test accepted ({attempt.outcome})")
        else:
            ok = False
            print(f"{sink}: test NOT accepted ({attempt.outcome}): {attempt.error}")
    if not sinks:
        print("no alert sink is loaded")
    return 0 if ok else 1


def format_table(rows: list[DeliveryRow]) -> str:
    """A plain table, ids whole; a long last error is cut to keep one line per delivery."""
    header = ("ID", "SINK", "RUN", "SCENARIO", "STATUS", "TRIES", "NEXT ATTEMPT (UTC)",
              "LAST ERROR")
    lines = [
        (str(r.id), r.sink, r.run_id, r.scenario, r.status, str(r.attempts),
         r.next_attempt_at[:19].replace("T", " ") if r.status == "pending" else "-",
         _cut(r.last_error or "", 70))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *lines]
    )


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
