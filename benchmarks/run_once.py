"""The full ``StressRunner.run_once`` against the same model written two plain ways: a fair
per-symbol Python loop and straightforward (symbols x grid) numpy.

Full run: the book (a host's ``Book`` of ``Position``s, or the same book as ``BookColumns``),
validation, engine, the built-in evaluator, the limits in force, the store write (a real
SQLite file in the temp directory, WAL) and the service's ``PrometheusMetrics.observe_run``; the
embedded host and the flash_crash pack are registered, alert sinks are off. ``runtime_ms`` is
the runner's own figure (book to evaluation, what the 50 ms budget covers); ``store`` is the
``save_run`` call and ``metrics`` the ``observe_run`` call, both inside the full figure.
With ``--postgresql URL`` the full run is also timed with the PostgreSQL store (a schema of its
own in that database, a loopback or remote server: the store figure is then a network round
trip per statement), in a second table.

The baselines (``common.plain_loop``, ``common.numpy_model``) compute the model and the
breaches from the same ``Book``; each is first checked to give the runner's metrics and
breaches, then timed. Ratios are baseline p50 over full-run p50, measured in one process and
in turns (ten rounds of each in the same order), so a machine whose speed drifts while the
script runs slows both sides of a ratio alike.

    python benchmarks/run_once.py [--sizes 100 1000 10000 100000] [--quick] [--postgresql URL]
"""

from __future__ import annotations

import argparse
import gc
import time

from common import (
    SCENARIO,
    check_same,
    fmt_ms,
    interleaved,
    machine,
    make_runner,
    numpy_model,
    pct,
    plain_loop,
    quiet_warnings,
    synthetic_book,
    table,
    temp_store,
)

from stress_plugin.service.metrics import PrometheusMetrics

REPEAT = {100: 3000, 1_000: 1000, 10_000: 200, 100_000: 20}
LOOP_REPEAT = {100: 50, 1_000: 10, 10_000: 3, 100_000: 1}
TARGETS = {100: "p50 <= 0.2, >= 25x loop", 1_000: "p99 <= 3x p50",
           10_000: "p50 <= 3, >= 150x loop, p99 <= 3x p50", 100_000: "p50 <= 35"}


def bench(n: int, repeat: int | None, loop_repeat: int | None,
          postgresql: str | None = None) -> list[str]:
    store, folder = temp_store(postgresql)
    runner = make_runner(store)
    metrics = PrometheusMetrics()
    host = synthetic_book(n)
    book, columns = host.snapshot(), host.arrays().snapshot()
    scenario = runner.scenario(SCENARIO)
    runtime: list[float] = []
    saves: list[float] = []
    observes: list[float] = []
    save_run = store.save_run

    def timed_save(*args, **kwargs):
        start = time.perf_counter()
        stored = save_run(*args, **kwargs)
        saves.append((time.perf_counter() - start) * 1000)
        return stored

    store.save_run = timed_save  # this instance only: time the store write inside the run

    def full_run(given=book):
        result = runner.run_once(book=given, scenario=SCENARIO)
        start = time.perf_counter()
        metrics.observe_run(result, "manual", time.time())
        observes.append((time.perf_counter() - start) * 1000)
        runtime.append(result.runtime_ms)
        return result

    def columns_run():  # the same run from BookColumns: its parts are not kept apart
        size = len(saves)
        full_run(columns)
        del saves[size:], observes[size:], runtime[size:]

    result = full_run()
    if result.breaches:
        raise SystemExit(f"the benchmark book breaches at {n:,} symbols")
    repeat = repeat or REPEAT.get(n, max(3, 1_000_000 // n))
    runs = [(full_run, repeat), (columns_run, repeat)]
    if loop_repeat != 0:
        loop = plain_loop(book, scenario, scenario.thresholds)
        check_same(result, loop, "loop")  # the same numbers and breaches, or no figures
        check_same(result, numpy_model(book, scenario, scenario.thresholds), "numpy")
        loops = loop_repeat or LOOP_REPEAT.get(n, 1)
        runs += [(lambda: plain_loop(book, scenario, scenario.thresholds), loops),
                 (lambda: numpy_model(book, scenario, scenario.thresholds), max(3, loops * 3))]
    columns_run()  # warm: each baseline ran once in its check
    gc.collect()
    del saves[:], observes[:], runtime[:]
    # every figure in the same stretch of time, in turns (common.interleaved)
    fast, by_columns, *baselines = interleaved(runs)
    runtime, saves, observes = runtime[-repeat:], saves[-repeat:], observes[-repeat:]

    cells = ["-"] * 4
    if baselines:
        slow, vector = baselines
        full = pct(fast, 50)
        cells = [fmt_ms(pct(slow, 50)), fmt_ms(pct(vector, 50)),
                 f"{pct(slow, 50) / full:,.0f}x", f"{pct(vector, 50) / full:,.1f}x"]
    store.close()
    folder.cleanup()
    return [f"{n:,}", fmt_ms(pct(fast, 50)), fmt_ms(pct(fast, 99)),
            f"{pct(fast, 99) / pct(fast, 50):.1f}", fmt_ms(pct(by_columns, 50)),
            fmt_ms(pct(runtime, 50)), fmt_ms(pct(saves, 50)), fmt_ms(pct(observes, 50)),
            *cells, str(repeat), TARGETS.get(n, "")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000, 100_000])
    parser.add_argument("--repeat", type=int, help="timed runs per size (default by size)")
    parser.add_argument("--loop-repeat", type=int, help="timed loops per size; 0: none")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and repeats (CI)")
    parser.add_argument("--postgresql", metavar="URL",
                        help="also run with the PostgreSQL store in this (empty) database")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeat, args.loop_repeat = [100, 1_000], 20, 1
    quiet_warnings()

    rows = [bench(n, args.repeat, args.loop_repeat) for n in args.sizes]
    print("### run_once: the full run (store and metrics) vs a fair plain loop and "
          f"straightforward numpy (ms)\n\nMachine: {machine()}\n")
    print(table(["symbols", "full p50", "full p99", "p99/p50", "full p50, BookColumns",
                 "runtime_ms p50", "store p50", "metrics p50", "loop p50", "numpy p50",
                 "x loop", "x numpy", "runs", "target (ms)"], rows))
    if args.postgresql:
        rows = [bench(n, args.repeat, 0, args.postgresql)[:8] for n in args.sizes]
        print("\n### run_once with the PostgreSQL store (ms), beside SQLite above\n")
        print(table(["symbols", "full p50", "full p99", "p99/p50", "full p50, BookColumns",
                     "runtime_ms p50", "store p50", "metrics p50"], rows))


if __name__ == "__main__":
    main()
