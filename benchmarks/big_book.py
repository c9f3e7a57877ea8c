"""A 1,000,000-symbol book end to end: the host's snapshot as ``BookColumns`` (its numpy
arrays copied), the full run of a snapshot (validation, engine, evaluator, SQLite store,
``PrometheusMetrics.observe_run``; the snapshot is timed on its own, as the issue's targets
split them) and the peak memory of the two; beside it the snapshot of the same book as
``Position``s.

The host keeps its positions as arrays (``common.ArrayHost``) and answers ``stress_book`` with
copies; the runner copies once more, so nothing it holds changes under it. The book is
``common.synthetic_book``, sized not to breach (the script says so if it does).

    python benchmarks/big_book.py [--symbols 1000000] [--repeat 5] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

from common import (
    SCENARIO,
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

from stress_hookspecs import BookColumns, StressResult
from stress_plugin.service.metrics import PrometheusMetrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="10,000 symbols, 3 runs (CI)")
    args = parser.parse_args()
    if args.quick:
        args.symbols, args.repeat = 10_000, 3
    quiet_warnings()
    n = args.symbols
    lists = synthetic_book(n)
    host = lists.arrays()
    store, folder = temp_store()
    runner = make_runner(store)
    metrics = PrometheusMetrics()

    def full_run(book: BookColumns) -> StressResult:
        result = runner.run_once(book=book, scenario=SCENARIO)
        metrics.observe_run(result, "manual", time.time())
        return result

    result = full_run(host.snapshot())
    snapshot = timed(host.snapshot, max(args.repeat, 5))
    runs = []
    for _ in range(args.repeat):  # each on a snapshot of its own, taken before it is timed
        book = host.snapshot()
        runs += timed(lambda b=book: full_run(b), 1, warmup=0)
    gc.collect()
    tracemalloc.start()
    full_run(host.snapshot())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    store.close()
    folder.cleanup()
    positions = timed(lists.snapshot, 1, warmup=0) if not args.quick else [float("nan")]

    print(f"### {n:,} symbols as BookColumns (ms)\n\nMachine: {machine()}\n")
    print(table(["what", "p50", "max", "target"], [
        ["snapshot: the host's arrays copied into a BookColumns", fmt_ms(pct(snapshot, 50)),
         fmt_ms(max(snapshot)), "<= 50"],
        ["full run_once of that snapshot (store and metrics)", fmt_ms(pct(runs, 50)),
         fmt_ms(max(runs)),
         "<= 400"],
        ["snapshot as a Book of Positions, for comparison",
         fmt_ms(positions[0]) if positions[0] == positions[0] else "-", "", ""],
    ]))
    print(f"\nPeak memory of one full run (snapshot included): {peak / 2**20:,.0f} MiB allocated "
          f"(tracemalloc, numpy included; target <= 300). Breaches: {len(result.breaches)} "
          f"({result.status}); runtime_ms {result.runtime_ms:,.1f}.")


if __name__ == "__main__":
    main()
