"""Shared by the benchmarks: a synthetic host book, the full runner, a plain-loop model, tables.

The book is built to look like a desk's: mixed longs and shorts over six multipliers, 80%
futures and 20% options (delta and gamma), VaR on 90% of the lines and on the book, sized so
that a normal run does not breach (the everyday case: a run every hour that finds nothing).
"""

from __future__ import annotations

import gc
import math
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import stress_pack_flash_crash
from stress_hookspecs import Book, BookColumns, Breach, Limits, Position, hookimpl
from stress_plugin.core.scenario import StressScenario
from stress_plugin.default_plugins import default_plugins
from stress_plugin.default_plugins.embedded_host import EmbeddedHost
from stress_plugin.plugins import Plugins, build_manager
from stress_plugin.runner import StressRunner
from stress_plugin.settings import load_settings
from stress_plugin.store import Store

SCENARIO = "flash_crash_lite"


@dataclass
class HostBook:
    """The host's own live state, one list per field: what a trading system holds in memory."""

    symbols: list[str]
    quantity: list[float]
    price: list[float]
    spread: list[float]
    multiplier: list[float]
    var: list[float | None]
    delta: list[float]
    gamma: list[float]
    equity: float
    book_var: float

    def snapshot(self) -> Book:
        """The ``stress_book`` answer: a copy as a ``Book`` of frozen ``Position``s."""
        return Book(equity=self.equity, var=self.book_var, positions=tuple(map(
            Position, self.symbols, self.quantity, self.price, self.spread, self.multiplier,
            self.var, self.delta, self.gamma)))

    def arrays(self) -> ArrayHost:
        """The same book held as numpy arrays, as a host built around columns keeps it."""
        var = np.array([np.nan if v is None else v for v in self.var])
        return ArrayHost(np.array(self.symbols, dtype=object), *(
            np.array(c, dtype=np.float64) for c in (self.quantity, self.price, self.spread,
                                                    self.multiplier)),
            var, np.array(self.delta), np.array(self.gamma), self.equity, self.book_var)

    @hookimpl
    def stress_book(self) -> Book:
        return self.snapshot()


@dataclass
class ArrayHost:
    """A host that keeps its positions as numpy arrays; its snapshot is a ``BookColumns`` of
    copies (the runner copies again, so a host could even hand over its live arrays)."""

    symbols: np.ndarray
    quantity: np.ndarray
    price: np.ndarray
    spread: np.ndarray
    multiplier: np.ndarray
    var: np.ndarray
    delta: np.ndarray
    gamma: np.ndarray
    equity: float
    book_var: float

    def snapshot(self) -> BookColumns:
        return BookColumns(
            equity=self.equity, var=self.book_var, symbols=self.symbols.copy(),
            quantity=self.quantity.copy(), price=self.price.copy(), spread=self.spread.copy(),
            multiplier=self.multiplier.copy(), position_var=self.var.copy(),
            delta=self.delta.copy(), gamma=self.gamma.copy())

    @hookimpl
    def stress_book(self) -> BookColumns:
        return self.snapshot()


def synthetic_book(n: int, seed: int = 0) -> HostBook:
    """``n`` positions; deterministic for a seed. Sized not to breach the default scenario
    (flash_crash_lite: 3% down, spreads 3x) at any size: each VaR is at least the position's
    loss bound at that shock divided by 1.5 (the VaR limit is 2x), which only lifts the rare
    option whose random VaR was small (at 1,000,000 symbols 28 breached without it)."""
    rng = np.random.default_rng(seed)
    price = np.exp(rng.uniform(np.log(20), np.log(20_000), n)).round(2)
    multiplier = rng.choice([1.0, 2.0, 5.0, 10.0, 50.0, 100.0], n)
    quantity = np.where(rng.random(n) < 0.55, 1, -1) * rng.integers(1, 50, n)
    spread = (price * rng.uniform(0.5e-4, 5e-4, n)).round(4)
    option = rng.random(n) < 0.2
    delta = np.where(option, np.where(rng.random(n) < 0.5, 1, -1) * rng.uniform(0.1, 0.9, n),
                     1.0)
    # gamma such that a 3% move changes delta by 0.5% to 8% (under the 10% limit)
    gamma = np.where(option, rng.uniform(0.005, 0.08, n) / (price * 0.03), 0.0)
    notional = np.abs(quantity * multiplier * price)
    var = notional * rng.uniform(0.02, 0.05, n) * np.where(option, np.abs(delta), 1.0)
    move = 0.03 * price
    size = np.abs(quantity * multiplier)
    loss_bound = size * (np.abs(delta) * move + 0.5 * np.abs(gamma) * move * move
                         + 0.5 * 3.0 * spread)
    var = np.maximum(var, loss_bound / 1.5)
    has_var = rng.random(n) < 0.9
    gross = float(notional.sum())
    equity = round(max(gross * 0.2, notional.max()), 2)  # 5x gross leverage at most
    return HostBook(
        symbols=[f"S{i:07d}" if n > 999_999 else f"S{i:06d}" for i in range(n)],
        quantity=quantity.astype(float).tolist(),
        price=price.tolist(),
        spread=spread.tolist(),
        multiplier=multiplier.tolist(),
        var=[float(v) if ok else None for v, ok in zip(var, has_var, strict=True)],
        delta=delta.tolist(),
        gamma=gamma.tolist(),
        equity=equity,
        book_var=round(gross * 0.005, 2),
    )


def make_plugins() -> Plugins:
    """The plugins as deployed minus the sinks: the evaluator, the embedded host, the pack."""
    pm, _ = build_manager(entry_points=False)
    plugins = Plugins(pm)
    for name, plugin in default_plugins().items():
        if name != "pagerduty":
            plugins.register(EmbeddedHost() if name == "embedded_host" else plugin, name)
    plugins.register(stress_pack_flash_crash, "flash_crash")
    return plugins


def make_runner(store: Store | None) -> StressRunner:
    """A runner over ``make_plugins`` with no symbol cap and no runtime-budget warnings."""
    settings = load_settings().model_copy(update={"stress_max_symbols": 10_000_000,
                                                  "stress_max_runtime_ms": 1e9})
    return StressRunner(plugins=make_plugins(), settings=settings, store=store)


def temp_store(postgresql: str | None = None) -> tuple[Store, Any]:
    """A new store and what ``cleanup()`` removes: a SQLite file in a temp dir, or, given a
    PostgreSQL URL, a schema of its own in that database (dropped by ``cleanup()``)."""
    if postgresql is None:
        folder = tempfile.TemporaryDirectory(prefix="stress-bench-")
        return Store(Path(folder.name) / "stress.db"), folder
    import uuid

    import psycopg

    schema = f"stress_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgresql, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")

    class Schema:
        @staticmethod
        def cleanup() -> None:
            with psycopg.connect(postgresql, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")

    joiner = "&" if "?" in postgresql else "?"
    return Store(f"{postgresql}{joiner}options=-csearch_path%3D{schema}"), Schema


# -- the baselines: model.md written directly, as a loop and as symbols x grid numpy ---------


Figures = tuple[dict[str, tuple], tuple, list[Breach]]
"""({symbol: (worst, drawdown, var_ratio, delta_change, headroom)}, portfolio, breaches)."""


def profile(scenario: StressScenario) -> list[float]:
    """g(t) on the grid, model.md's shapes, written point by point."""
    T, dt = scenario.duration_sec, scenario.step_sec
    ramp, hold = scenario.ramp_sec, scenario.hold_sec
    rest = T - ramp - hold
    g = []
    for j in range(scenario.steps + 1):
        t = j * dt
        if t < ramp:
            g.append(t / ramp)
        elif t <= ramp + hold or not rest:
            g.append(1.0)
        else:
            u = (t - ramp - hold) / rest
            g.append({"linear": 1 - u, "exponential": math.exp(-3 * u),
                      "none": 1.0}[scenario.recovery_type])
    return g


def plain_loop(book: Book, scenario: StressScenario, limits: Limits) -> Figures:
    """model.md as a fair plain Python loop: per symbol, one pass over the grid that prices
    each point and solves that point's headroom once, against the smaller of its loss limits
    (losing more than either is losing more than the smaller); the portfolio is the sum."""
    g = profile(scenario)
    E = book.equity
    shocks = scenario.shocks_for(np.array([p.symbol for p in book.positions], dtype=object))
    mults = scenario.spread_mults_for(np.array([p.symbol for p in book.positions],
                                               dtype=object))
    symbols: dict[str, tuple] = {}
    breaches: list[Breach] = []
    book_a, book_b, book_c = [0.0] * len(g), [0.0] * len(g), [0.0] * len(g)
    for i, p in enumerate(book.positions):
        s, k = float(shocks[i]), float(mults[i])
        size = p.quantity * p.multiplier
        max_loss = limits.max_drawdown_pct * E
        if p.var is not None:
            max_loss = min(max_loss, limits.max_var_multiplier * p.var)
        worst, lam, delta_change = math.inf, math.inf, 0.0
        for j, gt in enumerate(g):
            dP = p.price * s * gt
            a = size * p.delta * dP
            b = size * 0.5 * p.gamma * dP * dP
            c = 0.5 * p.spread * (1 + (k - 1) * gt) * abs(size)
            worst = min(worst, a + b - c)
            lam = min(lam, first_scale(a, b, max_loss - c))
            delta_change = max(delta_change, abs(p.gamma * dP))
            book_a[j] += a
            book_b[j] += b
            book_c[j] += c
        if delta_change:
            lam = min(lam, limits.max_position_delta / delta_change)
        loss = max(0.0, -worst)
        m = (worst, loss / E, None if p.var is None else loss / p.var, delta_change,
             min(lam, 100.0))
        symbols[p.symbol] = m
        breaches += _loop_breaches(p.symbol, m, limits)
    max_loss = limits.max_drawdown_pct * E
    if book.var is not None:
        max_loss = min(max_loss, limits.max_var_multiplier * book.var)
    worst = min(a + b - c for a, b, c in zip(book_a, book_b, book_c, strict=True))
    lam = min(first_scale(a, b, max_loss - c) for a, b, c in zip(book_a, book_b, book_c,
                                                                 strict=True))
    loss = max(0.0, -worst)
    portfolio = (worst, loss / E, None if book.var is None else loss / book.var, None,
                 min(lam, 100.0))
    breaches += _loop_breaches("PORTFOLIO", portfolio, limits)
    return symbols, portfolio, breaches


def first_scale(a: float, b: float, K: float) -> float:
    """Smallest lam >= 0 with b lam^2 + a lam + K < 0 (a point's P&L at scale lam below
    -max_loss, K = max_loss - spread cost); the roots in the form that does not cancel."""
    if K < 0:
        return 0.0  # beyond the limit before any shock
    disc = a * a - 4 * b * K
    r = math.sqrt(max(disc, 0.0))
    if b >= 0:  # convex (or linear): negative between the roots, both >= 0 when a < 0
        return 2 * K / (r - a) if a < 0 and (b == 0 or disc > 0) else math.inf
    if a > 0:  # concave: negative beyond the larger root
        return (a + r) / (-2 * b)
    return 0.0 if K == 0 else 2 * K / (r - a)


def numpy_model(book: Book, scenario: StressScenario, limits: Limits) -> Figures:
    """model.md as straightforward numpy: the (symbols x grid) P&L matrix, its minimum per
    row, and the headroom solved at every point of it, from the same ``Book``."""
    pos = book.positions
    q, P, h, m, v, d, c = (np.array([getattr(p, f) for p in pos], dtype=np.float64)
                           for f in ("quantity", "price", "spread", "multiplier", "var",
                                     "delta", "gamma"))
    names = np.array([p.symbol for p in pos], dtype=object)
    s, k = scenario.shocks_for(names), scenario.spread_mults_for(names)
    g = np.array(profile(scenario))[None, :]
    E = book.equity
    dP = (P * s)[:, None] * g
    size = (q * m)[:, None]
    A = size * d[:, None] * dP
    G = size * 0.5 * c[:, None] * dP * dP
    C = 0.5 * h[:, None] * (1 + (k[:, None] - 1) * g) * np.abs(size)
    pnl = A + G - C
    worst = pnl.min(axis=1)
    loss = np.maximum(0.0, -worst)
    max_loss = np.fmin(limits.max_drawdown_pct * E, limits.max_var_multiplier * v)
    lam = _roots(A, G, max_loss[:, None] - C).min(axis=1)
    delta_change = np.abs(c[:, None] * dP).max(axis=1)
    with np.errstate(divide="ignore"):
        lam = np.minimum(lam, limits.max_position_delta / delta_change)
    lam = np.minimum(lam, 100.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        var_ratio = loss / v
    symbols = {}
    breaches: list[Breach] = []
    for i, name in enumerate(names.tolist()):
        metrics = (float(worst[i]), float(loss[i] / E),
                   None if np.isnan(v[i]) else float(var_ratio[i]), float(delta_change[i]),
                   float(lam[i]))
        symbols[name] = metrics
        breaches += _loop_breaches(name, metrics, limits)
    book_pnl = pnl.sum(axis=0)
    book_loss = max(0.0, -float(book_pnl.min()))
    book_max = limits.max_drawdown_pct * E
    if book.var is not None:
        book_max = min(book_max, limits.max_var_multiplier * book.var)
    book_lam = float(_roots(A.sum(axis=0), G.sum(axis=0), book_max - C.sum(axis=0)).min())
    portfolio = (float(book_pnl.min()), book_loss / E,
                 None if book.var is None else book_loss / book.var, None, min(book_lam, 100.0))
    breaches += _loop_breaches("PORTFOLIO", portfolio, limits)
    return symbols, portfolio, breaches


def _roots(a: np.ndarray, b: np.ndarray, K: np.ndarray) -> np.ndarray:
    """``first_scale`` elementwise."""
    with np.errstate(divide="ignore", invalid="ignore"):
        disc = a * a - 4 * b * K
        r = np.sqrt(np.maximum(disc, 0.0))
        near = 2 * K / (r - a)
        convex = np.where((a < 0) & ((b == 0) | (disc > 0)), near, np.inf)
        concave = np.where(a > 0, (a + r) / (-2 * b), np.where(K == 0, 0.0, near))
        lam = np.where(b >= 0, convex, concave)
    lam = np.where(K < 0, 0.0, lam)
    return np.where(np.isnan(lam), np.inf, lam)


def _loop_breaches(symbol: str, m: tuple, limits: Limits) -> list[Breach]:
    checks = (("max_drawdown_pct", m[1], limits.max_drawdown_pct),
              ("max_var_multiplier", m[2], limits.max_var_multiplier),
              ("max_position_delta", m[3], limits.max_position_delta))
    return [Breach(symbol, name, value, threshold) for name, value, threshold in checks
            if value is not None and value > threshold]


def check_same(result: Any, baseline: Figures, name: str = "loop") -> None:
    """The runner's result equals the baseline's: metrics to 1e-9 (headroom 1e-6), the same
    breaches in the same order; raises naming the first difference."""
    symbols, portfolio, breaches = baseline

    def same(x: float | None, y: float | None, rel: float) -> bool:
        if x is None or y is None:
            return x is y
        return math.isclose(x, y, rel_tol=rel, abs_tol=1e-9)

    if len(result.symbols) != len(symbols):
        raise AssertionError("symbol count differs")
    got = result.symbols
    columns = [got.symbols.tolist(), *(np.asarray(getattr(got, f), dtype=np.float64).tolist()
                                       for f in got.FIELDS)]
    rows = {row[0]: row[1:] for row in zip(*columns, strict=True)}
    pairs = [(sym, rows[sym], m) for sym, m in symbols.items()]
    pm = result.portfolio
    pairs.append(("PORTFOLIO", (pm.worst_pnl, pm.drawdown_pct, pm.var_ratio, pm.delta_change,
                                pm.headroom), portfolio))
    for sym, fields, want in pairs:
        fields = tuple(None if x is not None and x != x else x for x in fields)
        for field, x, y, rel in zip(got.FIELDS, fields, want, (1e-9,) * 4 + (1e-6,),
                                    strict=True):
            if not same(x, y, rel):
                raise AssertionError(f"{sym}.{field}: runner {x!r} != {name} {y!r}")
    got_b = [(b.symbol, b.limit) for b in result.breaches]
    if got_b != [(b.symbol, b.limit) for b in breaches] or not all(
            math.isclose(x.value, y.value, rel_tol=1e-9)
            for x, y in zip(result.breaches, breaches, strict=True)):
        raise AssertionError(f"breaches differ: {result.breaches[:5]} vs {name} "
                             f"{breaches[:5]}")


# -- timing and reporting ----------------------------------------------------------------------


def timed(fn: Callable[[], Any], repeat: int, warmup: int = 2) -> list[float]:
    """Wall times of ``repeat`` calls, in ms, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def interleaved(runs: Sequence[tuple[Callable[[], Any], int]], rounds: int = 10
                ) -> list[list[float]]:
    """Wall times in ms of each (fn, repeat), the repeats split into ``rounds`` slices taken
    in turn: a machine whose speed drifts during a benchmark (this one, by up to 2x over a
    few minutes) then slows every figure alike, so their ratios are side by side in time too,
    not only in one process. Fewer rounds when a fn runs fewer times than that. Each slice
    starts after a ``gc.collect()``, so one fn's garbage (the plain loop's objects) is not
    collected inside another's timings. No warm-up: the caller's first calls are it."""
    rounds = max(1, min(rounds, *(repeat for _, repeat in runs)))
    times: list[list[float]] = [[] for _ in runs]
    for r in range(rounds):
        for (fn, repeat), samples in zip(runs, times, strict=True):
            gc.collect()
            for _ in range(repeat * (r + 1) // rounds - repeat * r // rounds):
                start = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - start) * 1000)
    return times


def pct(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def fmt_ms(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; the first column left-aligned, the others right-aligned."""
    align = ["---"] + ["---:"] * (len(header) - 1)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)


def machine() -> str:
    """One line naming the machine, for the results."""
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                    if ln.startswith("Model name")), cpu)
    except OSError:
        pass
    blas = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")}
    return (f"{cpu}, {os.cpu_count()} CPUs; Python {platform.python_version()}, "
            f"numpy {np.__version__}; {platform.system()} {platform.release()}"
            + (f"; {' '.join(f'{k}={v}' for k, v in sorted(blas.items()))}" if blas else ""))


def quiet_warnings() -> None:
    """Benchmarks print tables; keep the runner's INFO logs and warnings off stdout/stderr."""
    import logging

    logging.getLogger("stress_runner").setLevel(logging.ERROR)

