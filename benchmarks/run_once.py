"""The full ``StressRunner.run_once`` against the same model as a plain per-symbol Python loop.

Full run: the book (a host's ``Book`` snapshot, passed in), validation, engine, the built-in
evaluator, the store write (a real SQLite file in the temp directory, WAL, synchronous=FULL)
and the service's ``PrometheusMetrics.observe_run``; the embedded host and the flash_crash pack are
registered, alert sinks are off. ``runtime_ms`` is the runner's own figure (book to evaluation,
the part the 50 ms budget covers); ``store`` is the ``save_run`` call (JSON and SQLite).

The loop is model.md written directly (``common.loop_model``): per symbol, per grid point,
headroom by the closed form per point. It computes the model and the breaches only, so compare
it with ``runtime_ms``; against the full run it pays no store write. Every size first checks
that both give the same metrics and breaches.

    python benchmarks/run_once.py [--sizes 100 1000 10000 100000] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
import tracemalloc

from common import (
    SCENARIO,
    check_same,
    fmt_ms,
    loop_model,
    machine,
    make_runner,
    pct,
    quiet_warnings,
    synthetic_book,
    table,
    temp_store,
    timed,
)

from stress_plugin.service.metrics import PrometheusMetrics

REPEAT = {100: 2000, 1_000: 500, 10_000: 100, 100_000: 10}
LOOP_REPEAT = {100: 50, 1_000: 10, 10_000: 3, 100_000: 1}
TARGETS = {100: "p50 <= 1, p99 <= 5, >= 10x", 10_000: "p50 <= 50, >= 100x"}


def bench(n: int, repeat: int | None, loop_repeat: int | None) -> list[str]:
    store, folder = temp_store()
    runner = make_runner(store)
    metrics = PrometheusMetrics()
    book = synthetic_book(n).snapshot()
    scenario = runner.scenario(SCENARIO)
    runtime, saves = [], []
    save_run = store.save_run

    def timed_save(*args, **kwargs):
        start = time.perf_counter()
        stored = save_run(*args, **kwargs)
        saves.append((time.perf_counter() - start) * 1000)
        return stored

    store.save_run = timed_save  # this instance only: time the store write inside the run

    def full_run():
        result = runner.run_once(book=book, scenario=SCENARIO)
        metrics.observe_run(result, "manual", time.time())
        runtime.append(result.runtime_ms)
        return result

    result = full_run()
    gc.collect()
    repeat = repeat or REPEAT.get(n, max(3, 1_000_000 // n))
    runtime.clear()
    saves.clear()
    fast = timed(full_run, repeat)
    runtime, saves = runtime[-repeat:], saves[-repeat:]  # drop the warm-up runs

    loop_cells = ["-", "-", "-"]
    if loop_repeat != 0:
        loop = loop_model(book, scenario, scenario.thresholds)
        check_same(result, loop)  # the same numbers and breaches, or no figures at all
        slow = timed(lambda: loop_model(book, scenario, scenario.thresholds),
                     loop_repeat or LOOP_REPEAT.get(n, 1), warmup=0)
        loop_cells = [fmt_ms(pct(slow, 50)), f"{pct(slow, 50) / pct(fast, 50):,.0f}x",
                      f"{pct(slow, 50) / pct(runtime, 50):,.0f}x"]
    store.close()
    folder.cleanup()
    return [f"{n:,}", fmt_ms(pct(fast, 50)), fmt_ms(pct(fast, 99)), fmt_ms(pct(runtime, 50)),
            fmt_ms(pct(saves, 50)), *loop_cells, str(repeat), TARGETS.get(n, "")]


def peak_memory(n: int) -> tuple[float, float]:
    """MiB allocated at the peak of one full run (tracemalloc sees numpy too), and peak RSS."""
    store, folder = temp_store()
    runner = make_runner(store)
    book = synthetic_book(n).snapshot()
    runner.run_once(book=book)
    gc.collect()
    tracemalloc.start()
    runner.run_once(book=book)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    store.close()
    folder.cleanup()
    return peak / 2**20, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000, 100_000])
    parser.add_argument("--repeat", type=int, help="timed runs per size (default by size)")
    parser.add_argument("--loop-repeat", type=int, help="timed loops per size; 0: no loop")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and repeats (CI)")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeat, args.loop_repeat = [100, 1_000], 20, 2
    quiet_warnings()

    rows = [bench(n, args.repeat, args.loop_repeat) for n in args.sizes]
    print(f"### run_once: the full run vs a plain Python loop (ms)\n\nMachine: {machine()}\n")
    print(table(["symbols", "run_once p50", "run_once p99", "runtime_ms p50", "store p50",
                 "loop p50", "speed-up (full)", "speed-up (runtime_ms)", "runs",
                 "target (ms)"], rows))
    traced, rss = peak_memory(max(args.sizes))
    print(f"\nPeak memory of one run at {max(args.sizes):,} symbols: {traced:,.1f} MiB allocated "
          f"(tracemalloc); process peak RSS {rss:,.0f} MiB.")


if __name__ == "__main__":
    main()
