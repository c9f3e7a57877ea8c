"""The stress model of model.md as pure numpy functions: no I/O, no clock, no globals.

Every path depends on time only through the recovery profile g(t), so each symbol's P&L is a
quadratic in g:  pnl(g) = (a - e) g + b g^2 - c0,  with a the delta term, b the gamma term,
c0 the half spread and e its widening. The portfolio is the same quadratic with summed
coefficients. Its minimum over the grid lies at an end of the g range or next to the vertex,
so the worst P&L costs O(symbols) after one sort of the grid; the headroom is solved at the
trough alone (``first_breach_scale``), also O(symbols).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from stress_hookspecs import Limits

HEADROOM_CAP = 100.0


def recovery_profile(recovery_type: str, steps: int, ramp_steps: int = 0,
                     hold_steps: int = 0) -> np.ndarray:
    """g on the grid t = 0, dt, ..., T (``steps + 1`` points), model.md's shapes.

    A fall to the trough over ``ramp_steps`` (g = t / ramp), ``hold_steps`` at the trough
    (g = 1), then the recovery over the rest, R: with u = (t - ramp - hold) / R, linear 1 - u,
    exponential exp(-3 u), none 1. Without ramp and hold this is the original profile,
    computed the same way, so old scenarios give the same paths bit for bit.
    """
    if not (ramp_steps >= 0 and hold_steps >= 0 and ramp_steps + hold_steps <= steps):
        raise ValueError(f"ramp {ramp_steps} + hold {hold_steps} steps exceed {steps} steps")
    rest = steps - ramp_steps - hold_steps
    # u on the recovery's grid; a window that ends at the trough has only u = 0
    fraction = np.arange(rest + 1, dtype=np.float64) / rest if rest else np.zeros(1)
    if recovery_type == "linear":
        recovery = 1.0 - fraction
    elif recovery_type == "exponential":
        recovery = np.exp(-3.0 * fraction)
    elif recovery_type == "none":
        recovery = np.ones_like(fraction)
    else:
        raise ValueError(f"unknown recovery_type {recovery_type!r}")
    if not ramp_steps and not hold_steps:
        return recovery
    ramp = np.arange(ramp_steps, dtype=np.float64) / ramp_steps if ramp_steps else np.empty(0)
    return np.concatenate([ramp, np.ones(hold_steps), recovery])


class Coefficients(NamedTuple):
    """pnl(lam, g) = lam a g + lam^2 b g^2 - c0 - e g, per row (symbol or portfolio), held as
    one (4, rows) block of a, b, c0 and e: what a stored run keeps, written as it is."""

    block: np.ndarray

    @property
    def a(self) -> np.ndarray:
        return self._row(0)

    @property
    def b(self) -> np.ndarray:
        return self._row(1)

    @property
    def c0(self) -> np.ndarray:
        return self._row(2)

    @property
    def e(self) -> np.ndarray:
        return self._row(3)

    def _row(self, i: int) -> np.ndarray:
        row: np.ndarray = self.block[i]  # a view
        return row

    def with_total(self) -> Coefficients:
        """These rows and one more, the portfolio: the same quadratic with summed coefficients
        (each row's own sum)."""
        n = self.block.shape[1]
        block = np.empty((4, n + 1))
        block[:, :n] = self.block
        for row in block:
            row[n] = row[:n].sum()
        return Coefficients(block)

    def take(self, rows: list[int] | np.ndarray) -> Coefficients:
        """The rows at ``rows``, in that order."""
        return Coefficients(self.block[:, rows])


class EngineOutput(NamedTuple):
    """Per-symbol arrays in book order; ``var_ratio`` is NaN where no VaR was given."""

    worst_pnl: np.ndarray
    drawdown_pct: np.ndarray
    var_ratio: np.ndarray
    delta_change: np.ndarray
    headroom: np.ndarray
    portfolio_worst_pnl: float
    portfolio_drawdown_pct: float
    portfolio_var_ratio: float
    portfolio_headroom: float


CHUNK = 8_192
"""Rows per pass of ``stress``: every temporary of a pass (64 KiB) stays in a core's cache
and below malloc's mmap threshold (at 1,000,000 symbols, fresh full-size temporaries cost
more in page faults than in arithmetic)."""


def coefficients(
    quantity: np.ndarray,
    price: np.ndarray,
    spread: np.ndarray,
    multiplier: np.ndarray,
    delta: np.ndarray,
    gamma: np.ndarray,
    shocks: np.ndarray,
    spread_mult: float | np.ndarray,
) -> Coefficients:
    """model.md's a, b, c0, e per symbol; ``spread_mult`` is k, or k_i per symbol. Products
    in the formulas' order (the same bits), each into its row of the block."""
    block = np.empty((4, len(quantity)))
    a, b, c0, e = block
    move = price * shocks  # dP at g = 1
    size = np.multiply(quantity, multiplier, out=b)  # b is made from it, in place, below
    np.abs(size, out=c0)
    c0 *= 0.5 * spread
    np.multiply(size, delta, out=a)
    a *= move
    b *= 0.5  # 0.5 size gamma move move
    b *= gamma
    b *= move
    b *= move
    np.multiply(c0, spread_mult - 1.0, out=e)
    return Coefficients(block)


def _quiet() -> np.errstate:
    """The engine's one ``np.errstate``, silent on a 0/0 or an overflow: the NaN or inf is
    kept, and the runner fails any run whose metrics are not finite."""
    return np.errstate(divide="ignore", invalid="ignore", over="ignore")


def _worst(linear: np.ndarray, b: np.ndarray, c0: np.ndarray, grid: np.ndarray,
           out: np.ndarray | None = None) -> np.ndarray:
    """Minimum of each row's P&L over the grid (the profile sorted ascending) at lam = 1,
    from pnl(g) = linear g + b g^2 - c0. The candidates are the two ends
    and, where the quadratic is convex, the two grid points around its vertex (elsewhere the
    first two points: fewer numpy calls than picking the convex rows out); each is evaluated
    as a whole column, in place (a candidates x rows block costs more in broadcasting than
    it saves in calls)."""
    worst: np.ndarray = np.minimum(_pnl(linear, b, c0, float(grid[0])),
                                   _pnl(linear, b, c0, float(grid[-1])), out=out)
    convex = b > 0
    if len(grid) > 2 and convex.any():
        vertex = np.empty(len(b))  # -linear / 2b where convex (the same bits), else grid[0]
        vertex.fill(grid[0])
        np.divide(linear, -2.0 * b, out=vertex, where=convex)
        left = np.searchsorted(grid[1:-1], vertex)  # the point left of it, 0 .. len - 2
        np.minimum(worst, _pnl(linear, b, c0, grid[left]), out=worst)
        np.minimum(worst, _pnl(linear, b, c0, grid[1:][left]), out=worst)
    return worst


def _pnl(linear: np.ndarray, b: np.ndarray, c0: np.ndarray, g: float | np.ndarray
         ) -> np.ndarray:
    """linear g + b g g - c0, in that order (the formulas' bits), in place."""
    if isinstance(g, float) and g == 1.0:  # the trough: x * 1.0 is x, the same bits
        value: np.ndarray = linear + b
        value -= c0
        return value
    value = linear * g
    square = b * g
    square *= g
    value += square
    value -= c0
    return value


def first_breach_scale(coef: Coefficients, grid: np.ndarray, max_loss: np.ndarray) -> np.ndarray:
    """Smallest lam >= 0 at which some grid point loses more than ``max_loss``; inf if none.

    Only the trough g_max = max(grid) needs solving (1 for every profile, whether the window
    starts at the trough or ramps down to it from g = 0): a point g at scale lam moves prices
    exactly as far as the trough does at scale lam g / g_max <= lam, where the spread costs at
    least as much (every e_i >= 0 as every k_i >= 1, and g >= 0), so no point breaches before
    the trough. There the condition is a quadratic in lam, G lam^2 + A lam + K < 0
    with A = a g, G = b g^2, K = max_loss - c0 - e g, solved in closed form (the
    cancellation-free root): O(rows), not O(rows x grid). A NaN ``max_loss`` never breaches.
    """
    with _quiet():
        return _trough_scale(coef.a, coef.b, coef.c0, coef.e, float(grid[-1]),
                             np.array(max_loss, dtype=np.float64))  # a copy: K is made in it


def _trough_scale(a: np.ndarray, b: np.ndarray, c0: np.ndarray, e: np.ndarray, g: float,
                  max_loss: np.ndarray) -> np.ndarray:
    """``first_breach_scale`` at the trough ``g``: A = a g, G = b g^2, K = max_loss - c0 - e g
    (``max_loss`` is overwritten with K). At g = 1 the products are skipped: x * 1.0 is x,
    the same bits, four products fewer."""
    max_loss -= c0
    if g == 1.0:
        max_loss -= e
        return _smallest_negative_root(a, b, max_loss)
    max_loss -= e * g
    return _smallest_negative_root(a * g, b * g * g, max_loss)


def _smallest_negative_root(A: np.ndarray, G: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Infimum of {lam >= 0 : G lam^2 + A lam + K < 0}, elementwise (inf if empty); under
    ``_quiet()``.

    The concave branch (G < 0: short gamma) is computed only when some row has it: a book of
    futures and long options skips a third of the passes over its columns."""
    disc = A * A  # A A - 4 G K
    product = 4.0 * G
    product *= K
    disc -= product
    root_disc = np.maximum(disc, 0.0, out=product)
    np.sqrt(root_disc, out=root_disc)
    near = 2.0 * K
    near /= root_disc - A  # the smaller root when A < 0, no cancellation
    lam = np.where((A < 0) & ((G == 0) | (disc > 0)), near, np.inf)  # G >= 0: convex
    concave = G < 0
    if concave.any():
        far = (A + root_disc) / (-2.0 * G)  # the positive root when G < 0 and A > 0
        lam = np.where(concave, np.where(A > 0, far, np.where(K == 0, 0.0, near)), lam)
    lam[K < 0] = 0.0  # already beyond the limit before any shock
    lam[np.isnan(lam)] = np.inf
    return lam


def stress(
    coef: Coefficients,
    gamma_move: np.ndarray,
    position_var: np.ndarray,
    equity: float,
    book_var: float | None,
    profile: np.ndarray,
    limits: Limits,
) -> EngineOutput:
    """All metrics of model.md for every symbol and the portfolio.

    ``gamma_move`` is |gamma * dP| at g = 1 per symbol (the delta change before the profile).
    The portfolio is row n of the outputs; the rows go through in passes (``_passes``), each
    written into the outputs.
    """
    grid = np.sort(profile)  # ascending; repeats are harmless (np.unique imports numpy.ma: 6 ms)
    g = float(grid[-1])  # the trough: 1 for every profile
    g_moved = max(abs(float(grid[0])), abs(g))  # max |g|: at an end of the sorted grid
    n = len(coef.a)
    # the outputs' rows, in SymbolMetrics' field order; a big book's symbols are one (5, n)
    # block with the portfolio apart, which the store writes as it is (no 5-column copy)
    small = n < CHUNK
    block = np.empty((5, n + 1 if small else n))
    book = block[:, n:] if small else np.empty((5, 1))
    drawdown_limit = limits.max_drawdown_pct * equity
    with _quiet():
        for (a, b, c0, e), var, move, out in _passes(coef, gamma_move, position_var, book_var,
                                                     block, book):
            worst, drawdown_pct, var_ratio, delta_change, headroom = out
            _worst(a - e, b, c0, grid, worst)
            loss = np.negative(worst)
            np.maximum(0.0, loss, out=loss)
            loss += 0.0  # a zero loss is 0.0, never -0.0
            np.divide(loss, var, out=var_ratio)
            np.divide(loss, equity, out=drawdown_pct)
            # losing more than either limit is losing more than the smaller one: one search
            max_loss = np.fmin(drawdown_limit,  # fmin: NaN (no VaR) ignored
                               limits.max_var_multiplier * var)
            scale = _trough_scale(a, b, c0, e, g, max_loss)
            np.multiply(move, g_moved, out=delta_change)  # 0 for the portfolio: no limit
            np.minimum(scale, limits.max_position_delta / delta_change, out=headroom)
            np.minimum(headroom, HEADROOM_CAP, out=headroom)
    book_worst, _, _, _, book_headroom = book[:, 0].tolist()
    book_loss = max(0.0, -book_worst) + 0.0
    worst_pnl, drawdown_pct, var_ratio, delta_change, headroom = block[:, :n]
    return EngineOutput(
        worst_pnl=worst_pnl,
        drawdown_pct=drawdown_pct,
        var_ratio=var_ratio,
        delta_change=delta_change,
        headroom=headroom,
        portfolio_worst_pnl=book_worst,
        portfolio_drawdown_pct=book_loss / equity,
        portfolio_var_ratio=book_loss / book_var if book_var is not None else float("nan"),
        portfolio_headroom=book_headroom,
    )


def _passes(coef: Coefficients, gamma_move: np.ndarray, position_var: np.ndarray,
            book_var: float | None, block: np.ndarray, book: np.ndarray
            ) -> Iterator[tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray, np.ndarray]]:
    """The rows of ``stress``, n symbols then the portfolio (summed coefficients, the book's
    VaR, no delta limit), as (a, b, c0, e), VaR, delta move and the (5, rows) outputs to
    write: ``block``'s columns for the symbols, ``book``'s one for the portfolio. A small
    book is one pass over n + 1 rows (half the numpy calls of two; ``book`` is then
    ``block``'s last column); a big one goes in views of ``CHUNK`` symbols (no copy), then
    the portfolio alone."""
    n = len(coef.a)
    total = np.nan if book_var is None else book_var
    if n < CHUNK:
        rows = np.empty((6, n + 1))
        rows[:4, :n] = coef.block
        rows[4, :n] = position_var
        rows[5, :n] = gamma_move
        rows[:4, n] = rows[:4, :n].sum(axis=1)  # as with_total: each row's own pairwise sum
        rows[4:, n] = (total, 0.0)
        a, b, c0, e, var, move = rows
        yield (a, b, c0, e), var, move, block
        return
    for lo in range(0, n, CHUNK):
        at = slice(lo, min(lo + CHUNK, n))
        yield tuple(coef.block[:, at]), position_var[at], gamma_move[at], block[:, at]
    yield (tuple(coef.block.sum(axis=1, keepdims=True)), np.array([total]), np.zeros(1), book)


# -- paths and curves (the run report) --------------------------------------------------------


class PathInputs(NamedTuple):
    """What a run's P&L paths are made of, kept with the stored run for its report: the
    per-symbol coefficients (book order, with each symbol's own shock s_i and spread
    multiplier k_i already in a, b and e), the scenario's profile g in time order (ramp,
    hold and recovery: model.md's shapes) and its step. Nothing else is needed to redraw
    every path: pnl_i(t) = a_i g(t) + b_i g(t)^2 - c0_i - e_i g(t)."""

    coef: Coefficients
    profile: np.ndarray
    step_sec: float
    equity: float
    book_var: float | None

    @property
    def times(self) -> np.ndarray:
        """Seconds since the scenario starts (t = 0: the shock, or the start of a ramp) of
        each grid point."""
        return np.arange(len(self.profile), dtype=np.float64) * self.step_sec


def pnl_paths(coef: Coefficients, profile: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Each row's P&L at every grid point (rows x points, the profile in time order) with the
    price shocks scaled by ``scale``: model.md's pnl(t), for the report's P&L-path chart."""
    g = np.asarray(profile, dtype=np.float64)[None, :]
    paths: np.ndarray = (scale * coef.a[:, None] * g + scale * scale * coef.b[:, None] * g * g
                         - coef.c0[:, None] - coef.e[:, None] * g)
    return paths


def worst_pnl_by_scale(coef: Coefficients, profile: np.ndarray, scales: np.ndarray
                       ) -> np.ndarray:
    """The worst P&L over the grid of each row (rows x scales) at each shock scale lam: the
    loss-against-depth curve whose first crossing of a loss limit is the headroom."""
    g = np.asarray(profile, dtype=np.float64)[None, None, :]
    lam = np.asarray(scales, dtype=np.float64)[None, :, None]
    pnl = (lam * coef.a[:, None, None] * g + lam * lam * coef.b[:, None, None] * g * g
           - coef.c0[:, None, None] - coef.e[:, None, None] * g)
    worst: np.ndarray = pnl.min(axis=2)
    return worst
