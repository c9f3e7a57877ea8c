"""What ``symbol_shocks`` cost: the full ``run_once`` (BookColumns, store, no metrics) with a
scenario of no per-symbol shocks, 1,000 exact symbols and 1,000 glob patterns, at 100,000
symbols; each scenario run twice on the same book first (its per-symbol memo warm, as in a
service that runs every hour on a book whose symbols rarely change) and once on a book of
new symbols (every symbol resolved).

    python benchmarks/symbol_shocks.py [--symbols 100000] [--entries 1000] [--quick]
"""

from __future__ import annotations

import argparse
import logging

from common import (
    fmt_ms,
    machine,
    make_runner,
    pct,
    quiet_warnings,
    synthetic_book,
    table,
    temp_store,
    timed,
)

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
    rows, base = [], None
    for label, chosen in scenarios:
        same = timed(lambda c=chosen: runner.run_once(book=book, scenario=c), args.repeat)
        fresh = []
        for i in range(1 if args.quick else 3):  # new symbols each time: nothing remembered
            renamed = host.snapshot()
            renamed = type(renamed)(**{**{f: getattr(renamed, f) for f in (
                "equity", "var", "quantity", "price", "spread", "multiplier", "position_var",
                "delta", "gamma")}, "symbols": [f"{s}_{label[0]}{i}" for s in host.symbols]})
            fresh += timed(lambda r=renamed, c=chosen: runner.run_once(book=r, scenario=c), 1,
                           warmup=0)
        if runner.halt() is not None:
            raise SystemExit(f"the {label} scenario breaches: the figures would time the halt")
        base = base or pct(same, 50)
        rows.append([label, fmt_ms(pct(same, 50)), f"{pct(same, 50) / base:.2f}x",
                     fmt_ms(pct(fresh, 50))])
    store.close()
    folder.cleanup()
    print(f"### symbol_shocks at {n:,} symbols: run_once p50 (ms)\n\nMachine: {machine()}\n")
    print(table(["symbol_shocks", "same book", "vs none", "new symbols"], rows))
    print("\nTarget: 1,000 entries <= 1.2x no entries.")


if __name__ == "__main__":
    main()
