"""A 1 ms asyncio "trading loop" in the same process as stress runs: tick lateness without and
with runs firing, and the cost of the host's book snapshot.

The runs are the service's own: a ``StressService`` (store on a temp SQLite file, metrics, the
evaluator, the embedded host, the flash_crash pack, and a host plugin whose ``stress_book``
copies its live book into a ``Book``). The real ``HourlyStressScheduler`` fires at most once a
minute, so the schedule is compressed: a background thread calls ``service.scheduled_run``, the
very job the scheduler's worker thread runs, ``--hz`` times a second. Each tick awaits
``asyncio.sleep(0.001)``; its lag is how much later than 1 ms it resumed.

    python benchmarks/trading_loop.py [--sizes 100 1000] [--seconds 10] [--hz 10] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import (
    fmt_ms,
    machine,
    make_plugins,
    pct,
    quiet_warnings,
    synthetic_book,
    table,
    timed,
)

from stress_plugin.runner import RESPONSIVE
from stress_plugin.service.service import StressService
from stress_plugin.settings import load_settings
from stress_plugin.store import Store

PERIOD_S = 0.001


async def _ticks(seconds: float) -> list[float]:
    """Lag of each 1 ms tick, in ms."""
    lags = []
    end = time.perf_counter() + seconds
    while (start := time.perf_counter()) < end:
        await asyncio.sleep(PERIOD_S)
        lags.append((time.perf_counter() - start - PERIOD_S) * 1000)
    return lags


def _service(n: int, folder: str, columns: bool) -> StressService:
    os.environ["STRESS_DB"] = str(Path(folder) / "stress.db")
    os.environ["STRESS_MAX_SYMBOLS"] = str(max(n, 100))
    settings = load_settings()
    plugins = make_plugins()
    host = synthetic_book(n)  # stress_book: a snapshot per run, as Positions or as arrays
    plugins.register(host.arrays() if columns else host, "trading_host")
    return StressService(settings, plugins=plugins, store=Store(settings.db_path))


def _fire(service: StressService, hz: float, stop: threading.Event, runs: list[float]) -> None:
    """The scheduler's job, ``hz`` times a second, each run keyed by its own fire time."""
    fire_time = datetime(2000, 1, 3, tzinfo=UTC)
    next_at = time.perf_counter()
    while not stop.is_set():
        start = time.perf_counter()
        service.scheduled_run(fire_time)
        runs.append((time.perf_counter() - start) * 1000)
        fire_time += timedelta(seconds=1)
        next_at += 1 / hz
        stop.wait(max(0.0, next_at - time.perf_counter()))


def measure(n: int, seconds: float, hz: float, freeze: bool, columns: bool) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="stress-bench-") as folder:
        service = _service(n, folder, columns)
        for _ in range(5):  # warm up: first-call imports and caches
            service.run(trigger="manual")
        if freeze:  # what exists now is never collected: a full GC pass stays short
            gc.collect()
            gc.freeze()
        quiet = asyncio.run(_ticks(seconds))
        stop, runs = threading.Event(), []
        worker = threading.Thread(target=_fire, args=(service, hz, stop, runs), daemon=True)
        worker.start()
        busy = asyncio.run(_ticks(seconds))
        stop.set()
        worker.join()
        service.store.close()
    return [f"{n:,}", fmt_ms(pct(quiet, 50)), fmt_ms(pct(quiet, 99)), fmt_ms(max(quiet)),
            fmt_ms(pct(busy, 50)), fmt_ms(pct(busy, 99)), fmt_ms(max(busy)),
            fmt_ms(pct(busy, 99) - pct(quiet, 99)), f"{len(runs)}", fmt_ms(pct(runs, 50))]


def snapshot_row(n: int, repeat: int) -> list[str]:
    host = synthetic_book(n)
    times = timed(host.snapshot, repeat)
    return [f"{n:,}", fmt_ms(pct(times, 50)), fmt_ms(pct(times, 99)),
            f"{pct(times, 50) * 1e6 / n:,.0f} ns"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000])
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase (default 10)")
    parser.add_argument("--hz", type=float, default=10.0, help="runs a second (default 10)")
    parser.add_argument("--switch-interval", type=float,
                        help="sys.setswitchinterval for the process, in seconds "
                             f"(default Python's {sys.getswitchinterval():g})")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() after start-up, as a latency-minded host would")
    parser.add_argument("--columns", action="store_true",
                        help="the host answers stress_book with BookColumns (its arrays copied)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 s phases (CI)")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.seconds = [100], 1.0
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    quiet_warnings()

    rows = [measure(n, args.seconds, args.hz, args.gc_freeze, args.columns) for n in args.sizes]
    print(f"### Trading loop: 1 ms ticks, lag in ms, without and with runs at {args.hz:g} Hz\n")
    print(f"Machine: {machine()}; switch interval {sys.getswitchinterval() * 1000:g} ms, "
          f"{min(sys.getswitchinterval(), RESPONSIVE.interval_s) * 1000:g} ms during runs; "
          f"{args.seconds:g} s per phase; gc.freeze(): {'yes' if args.gc_freeze else 'no'}; "
          f"the host's book as {'BookColumns' if args.columns else 'Positions'}\n")
    print(table(["symbols", "idle p50", "idle p99", "idle max", "runs p50", "runs p99",
                 "runs max", "added p99", "runs", "run ms p50"], rows))

    sizes = [100, 1_000] if args.quick else [100, 1_000, 10_000, 100_000]
    snaps = [snapshot_row(n, 5 if args.quick else max(5, 1_000_000 // n)) for n in sizes]
    print("\n### Book snapshot: a host's lists copied into a Book of Positions (ms)\n")
    print(table(["positions", "p50", "p99", "per position"], snaps))


if __name__ == "__main__":
    main()
