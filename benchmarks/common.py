"""Shared by the benchmarks: a synthetic host book, the full runner, a plain-loop model, tables.

The book is built to look like a desk's: mixed longs and shorts over six multipliers, 80%
futures and 20% options (delta and gamma), VaR on 90% of the lines and on the book, sized so
that a normal run does not breach (the everyday case: a run every hour that finds nothing).
"""

from __future__ import annotations

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
from stress_hookspecs import Book, Breach, Limits, Position, hookimpl
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

    @hookimpl
    def stress_book(self) -> Book:
        return self.snapshot()


def synthetic_book(n: int, seed: int = 0) -> HostBook:
    """``n`` positions; deterministic for a seed."""
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
    has_var = rng.random(n) < 0.9
    gross = float(notional.sum())
    equity = round(max(gross * 0.2, notional.max()), 2)  # 5x gross leverage at most
    return HostBook(
        symbols=[f"S{i:06d}" for i in range(n)],
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


def temp_store() -> tuple[Store, tempfile.TemporaryDirectory]:
    folder = tempfile.TemporaryDirectory(prefix="stress-bench-")
    return Store(Path(folder.name) / "stress.db"), folder


# -- the plain per-symbol loop: model.md written directly --------------------------------------


def loop_model(book: Book, scenario: StressScenario, limits: Limits
               ) -> tuple[dict[str, tuple], tuple, list[Breach]]:
    """model.md as plain Python: per symbol, per grid point; headroom by the closed form.

    Returns ({symbol: (worst, drawdown, var_ratio, delta_change, headroom)}, portfolio, breaches).
    """
    steps, T = scenario.steps, scenario.duration_sec
    k = scenario.spread_mult
    g = []
    for j in range(steps + 1):
        t = j * T / steps
        g.append({"linear": 1 - t / T, "exponential": math.exp(-3 * t / T),
                  "none": 1.0}[scenario.recovery_type])
    E = book.equity
    symbols: dict[str, tuple] = {}
    breaches: list[Breach] = []
    book_path = [0.0] * len(g)
    book_coef = [[0.0] * len(g) for _ in range(3)]  # A, G, C per grid point
    for p in book.positions:
        s = scenario.symbol_shocks.get(p.symbol, scenario.price_shock_pct)
        worst = math.inf
        A, G, C = [], [], []
        for j, gt in enumerate(g):
            dP = p.price * s * gt
            spread_t = p.spread * (1 + (k - 1) * gt)
            a = p.quantity * p.multiplier * p.delta * dP
            b = p.quantity * p.multiplier * 0.5 * p.gamma * dP * dP
            c = 0.5 * spread_t * abs(p.quantity) * p.multiplier
            pnl = a + b - c
            worst = min(worst, pnl)
            book_path[j] += pnl
            A.append(a)
            G.append(b)
            C.append(c)
            book_coef[0][j] += a
            book_coef[1][j] += b
            book_coef[2][j] += c
        loss = max(0.0, -worst)
        var_ratio = None if p.var is None else loss / p.var
        delta_change = max(abs(p.gamma * p.price * s * gt) for gt in g)
        lam = min(_first_scale(A, G, C, limits.max_drawdown_pct * E),
                  _first_scale(A, G, C, limits.max_var_multiplier * p.var)
                  if p.var is not None else math.inf,
                  limits.max_position_delta / delta_change if delta_change else math.inf,
                  100.0)
        m = (worst, loss / E, var_ratio, delta_change, lam)
        symbols[p.symbol] = m
        breaches += _loop_breaches(p.symbol, m, limits)
    worst = min(book_path)
    loss = max(0.0, -worst)
    A, G, C = book_coef
    lam = min(_first_scale(A, G, C, limits.max_drawdown_pct * E),
              _first_scale(A, G, C, limits.max_var_multiplier * book.var)
              if book.var is not None else math.inf, 100.0)
    portfolio = (worst, loss / E, None if book.var is None else loss / book.var, None, lam)
    breaches += _loop_breaches("PORTFOLIO", portfolio, limits)
    return symbols, portfolio, breaches


def _first_scale(A: list[float], G: list[float], C: list[float], max_loss: float) -> float:
    """Smallest lam >= 0 with lam A + lam^2 G - C < -max_loss at some grid point (scalar).

    Per point: G lam^2 + A lam + K < 0 with K = max_loss - C; roots in the form that does not
    cancel (2K / (r - A) for the smaller positive root).
    """
    best = math.inf
    for a, b, c in zip(A, G, C, strict=True):
        K = max_loss - c
        if K < 0:
            return 0.0  # beyond the limit before any shock
        disc = a * a - 4 * b * K
        r = math.sqrt(max(disc, 0.0))
        if b >= 0:  # convex (or linear): negative between the roots, both >= 0 when a < 0
            lam = 2 * K / (r - a) if a < 0 and (b == 0 or disc > 0) else math.inf
        elif a > 0:  # concave: negative beyond the larger root
            lam = (a + r) / (-2 * b)
        else:
            lam = 0.0 if K == 0 else 2 * K / (r - a)
        best = min(best, lam)
    return best


def _loop_breaches(symbol: str, m: tuple, limits: Limits) -> list[Breach]:
    checks = (("max_drawdown_pct", m[1], limits.max_drawdown_pct),
              ("max_var_multiplier", m[2], limits.max_var_multiplier),
              ("max_position_delta", m[3], limits.max_position_delta))
    return [Breach(symbol, name, value, threshold) for name, value, threshold in checks
            if value is not None and value > threshold]


def check_same(result: Any, loop: tuple[dict[str, tuple], tuple, list[Breach]]) -> None:
    """The vectorized result equals the loop's: metrics to 1e-9 (headroom 1e-6), same breaches."""
    symbols, portfolio, breaches = loop

    def same(x: float | None, y: float | None, rel: float) -> bool:
        if x is None or y is None:
            return x is y
        return math.isclose(x, y, rel_tol=rel, abs_tol=1e-9)

    pairs = [(name, result.symbols[name], m) for name, m in symbols.items()]
    pairs.append(("PORTFOLIO", result.portfolio, portfolio))
    for name, got, want in pairs:
        fields = (got.worst_pnl, got.drawdown_pct, got.var_ratio, got.delta_change, got.headroom)
        for field, x, y, rel in zip(("worst_pnl", "drawdown_pct", "var_ratio", "delta_change",
                                     "headroom"), fields, want, (1e-9,) * 4 + (1e-6,),
                                    strict=True):
            if not same(x, y, rel):
                raise AssertionError(f"{name}.{field}: vectorized {x!r} != loop {y!r}")
    if len(result.symbols) != len(symbols):
        raise AssertionError("symbol count differs")
    got = [(b.symbol, b.limit) for b in result.breaches]
    if got != [(b.symbol, b.limit) for b in breaches] or not all(
            math.isclose(x.value, y.value, rel_tol=1e-9)
            for x, y in zip(result.breaches, breaches, strict=True)):
        raise AssertionError(f"breaches differ: {result.breaches[:5]} vs {breaches[:5]}")


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

