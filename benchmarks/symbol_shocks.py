"""What ``symbol_shocks`` cost: the full ``run_once`` (BookColumns, store, no metrics) with a
scenario of no per-symbol shocks, 1,000 exact symbols and 1,000 glob patterns, at 100,000
symbols; each scenario run twice on the same book first (its per-symbol memo warm, as in a
service that runs every hour on a book whose symbols rarely change), then timed on it with the
others in turns (``common.interleaved``), and on three books of new symbols (every symbol
resolved: a new symbol is matched only against the patterns it could start with).

    python benchmarks/symbol_shocks.py [--symbols 100000] [--entries 1000] [--quick]
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace

from common import (
    fmt_ms,
    interleaved,
    machine,
    make_runner,
    pct,
    quiet_warnings,
    synthetic_book,
    table,
    temp_store,
    timed,
)

from stress_hookspecs import BookColumns
from stress_plugin.core.scenario import StressScenario


def scenario(name: str, shocks: dict[str, float]) -> StressScenario:
    return StressScenario({"scenario_name": name, "price_shock_pct": -0.03, "spread_mult": 3.0,
                           "duration_sec": 60, "recovery_type": "linear",
                           "symbol_shocks": shocks}, origin="benchmark")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=100_000)
    parser.add_argument("--entries", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="10,000 symbols, 3 runs (CI)")
    args = parser.parse_args()
    if args.quick:
        args.symbols, args.repeat = 10_000, 3
    quiet_warnings()
    logging.getLogger("stress_runner").setLevel(logging.CRITICAL + 1)  # a breach is no news
    n, k = args.symbols, args.entries
    host = synthetic_book(n).arrays()
    step = max(1, n // k)
    exact = {f"S{i:06d}": -0.031 for i in range(0, n, step)[:k]}
    patterns = {f"S{i:04d}*": -0.029 for i in range(k)}
    scenarios = [("none", scenario("plain", {})), (f"{len(exact):,} exact symbols",
                 scenario("exact", exact)), (f"{len(patterns):,} glob patterns",
                 scenario("globs", patterns))]
    store, folder = temp_store()
    runner = make_runner(store)
    book = host.snapshot()
    fresh_runs = 1 if args.quick else 3

    def renamed(tag: str) -> BookColumns:
        """The same book under new names: nothing of it is remembered."""
        given = host.snapshot()
        return replace(given, symbols=[f"{s}_{tag}" for s in host.symbols])

    for _, chosen in scenarios:  # warm: the memo knows the book's symbols
        for _ in range(2):
            runner.run_once(book=book, scenario=chosen)
    # in turns, so a drifting machine slows each scenario alike
    same = interleaved([(lambda c=chosen: runner.run_once(book=book, scenario=c), args.repeat)
                        for _, chosen in scenarios])
    books = {(label, i): renamed(f"{label[0]}{i}") for label, _ in scenarios
             for i in range(fresh_runs)}
    fresh: list[list[float]] = [[] for _ in scenarios]
    for i in range(fresh_runs):
        for (label, chosen), times in zip(scenarios, fresh, strict=True):
            times += timed(lambda b=books[label, i], c=chosen: runner.run_once(book=b, scenario=c),
                           1, warmup=0)
    if runner.halt() is not None:
        raise SystemExit("a scenario breaches: the figures would time the halt")
    base = pct(same[0], 50)
    rows = [[label, fmt_ms(pct(times, 50)), f"{pct(times, 50) / base:.2f}x",
             fmt_ms(pct(new, 50))]
            for (label, _), times, new in zip(scenarios, same, fresh, strict=True)]
    store.close()
    folder.cleanup()
    print(f"### symbol_shocks at {n:,} symbols: run_once p50 (ms)\n\nMachine: {machine()}\n")
    print(table(["symbol_shocks", "same book", "vs none", "new symbols"], rows))
    print("\nTarget: 1,000 entries <= 1.2x no entries.")


if __name__ == "__main__":
    main()
