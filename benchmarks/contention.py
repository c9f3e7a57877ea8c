"""``run_once`` on a busy machine: p50 quiet, then with busy processes on every core, which
this script starts itself (one ``while True: pass`` interpreter per CPU) and stops at the end.

Beside today's runner it times the same run followed by four ``os.sched_yield()`` calls, the
stage yields the runner used to make (removed: each one handed the core to a busy process
for a scheduler slice). The run is the full one of ``run_once.py`` without the metrics: a
host's ``Book``, the engine, the evaluator, the SQLite store.

    python benchmarks/contention.py [--sizes 100 1000] [--repeat 500] [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

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

YIELDS = 4
"""How many ``os.sched_yield()`` calls a run used to make (between its stages)."""


def _busy(count: int) -> list[subprocess.Popen]:
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
             for _ in range(count)]
    time.sleep(0.5)  # let them reach the loop
    return procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


def measure(n: int, repeat: int) -> tuple[list[float], list[float]]:
    """p50 of today's run and of the run with the old yields, in ms."""
    store, folder = temp_store()
    runner = make_runner(store)
    book = synthetic_book(n).snapshot()

    def run() -> None:
        runner.run_once(book=book, scenario=SCENARIO)

    def run_with_yields() -> None:
        runner.run_once(book=book, scenario=SCENARIO)
        for _ in range(YIELDS):
            os.sched_yield()

    now = pct(timed(run, repeat), 50)
    old = pct(timed(run_with_yields, repeat), 50)
    store.close()
    folder.cleanup()
    return [now, old]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000])
    parser.add_argument("--repeat", type=int, default=500)
    parser.add_argument("--busy", type=int, default=os.cpu_count() or 2,
                        help="busy processes (default: one per CPU)")
    parser.add_argument("--quick", action="store_true", help="100 symbols, 30 runs (CI)")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeat = [100], 30
    quiet_warnings()

    quiet = {n: measure(n, args.repeat) for n in args.sizes}
    procs = _busy(args.busy)
    try:
        busy = {n: measure(n, args.repeat) for n in args.sizes}
    finally:
        _stop(procs)
    rows = [[f"{n:,}", fmt_ms(quiet[n][0]), fmt_ms(busy[n][0]),
             f"{busy[n][0] / quiet[n][0]:.1f}x", fmt_ms(quiet[n][1]), fmt_ms(busy[n][1]),
             f"{busy[n][1] / quiet[n][1]:.1f}x"] for n in args.sizes]
    print(f"### Contention: run_once p50 (ms), quiet and with {args.busy} busy processes\n")
    print(f"Machine: {machine()}; {args.repeat} runs a phase\n")
    print(table(["symbols", "quiet", "busy", "busy / quiet", f"with {YIELDS} yields, quiet",
                 "with yields, busy", "busy / quiet"], rows))


if __name__ == "__main__":
    main()
