"""The engine against model.md's formulas, worked by hand and by a plain per-point loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stress_hookspecs import Limits
from stress_plugin.core import engine

DEFAULT = Limits()


def run(q, P, h, m, d=1.0, c=0.0, v=math.nan, *, E=100_000.0, V=None, s=-0.03, k=3.0,
        recovery="linear", steps=60, limits=DEFAULT, ramp=0, hold=0):
    arr = [np.atleast_1d(np.asarray(x, dtype=float)) for x in (q, P, h, m, d, c, v)]
    n = max(len(a) for a in arr)
    q, P, h, m, d, c, v = (np.broadcast_to(a, (n,)).copy() for a in arr)
    shocks = np.full(n, s) if np.isscalar(s) else np.asarray(s, dtype=float)
    coef = engine.coefficients(q, P, h, m, d, c, shocks, k)
    profile = engine.recovery_profile(recovery, steps, ramp, hold)
    return engine.stress(coef, np.abs(c * P * shocks), v, E, V, profile, limits)


def reference_pnl(q, P, h, m, d, c, s, k, g):
    """model.md verbatim: one P&L path, point by point."""
    path = []
    for gt in g:
        dP = P * s * gt
        spread_t = h * (1 + (k - 1) * gt)
        path.append(q * m * (d * dP + 0.5 * c * dP**2) - 0.5 * spread_t * abs(q) * m)
    return path


def test_worked_example_single_long():
    out = run(5, 6000, 0.25, 5, v=3000)
    assert out.worst_pnl[0] == pytest.approx(-4509.375, abs=1e-9)
    assert out.drawdown_pct[0] == pytest.approx(0.04509375, abs=1e-12)
    assert out.var_ratio[0] == pytest.approx(1.503125, abs=1e-12)
    assert out.delta_change[0] == 0
    assert out.headroom[0] == pytest.approx(4990.625 / 4500, rel=1e-9)
    assert out.portfolio_headroom == pytest.approx(4990.625 / 4500, rel=1e-9)


def test_worked_example_six_contracts_breaches_drawdown():
    out = run(6, 6000, 0.25, 5, v=3000)
    assert out.worst_pnl[0] == pytest.approx(-5411.25, abs=1e-9)
    assert out.drawdown_pct[0] == pytest.approx(0.0541125, abs=1e-12)
    assert out.headroom[0] < 1


def test_short_puts_delta_limit_binds():
    # docs/model.md (more worked examples): short 10 MES 5900 puts.
    out = run(-10, 5987.5, 0.5, 5, d=-0.40, c=0.0012, v=3000)
    assert out.worst_pnl[0] == pytest.approx(-4597.954, abs=1e-3)
    assert out.delta_change[0] == pytest.approx(0.21555, abs=1e-9)
    assert out.headroom[0] == pytest.approx(0.463929, abs=1e-6)
    assert out.headroom[0] == pytest.approx(0.10 / 0.21555, rel=1e-9)


def test_short_futures_gain_in_a_crash_and_lose_only_the_spread():
    out = run(-4, 2400, 0.10, 5)
    # worst at the end of the window, g = 0: just the normal half spread
    assert out.worst_pnl[0] == pytest.approx(-0.5 * 0.10 * 4 * 5)
    assert out.headroom[0] == engine.HEADROOM_CAP


@pytest.mark.parametrize(("recovery", "worst", "t_worst"),
                         [("linear", -50.707, 54), ("exponential", -50.718, 45)])
def test_long_straddles_worst_point_inside_the_window(recovery, worst, t_worst):
    # docs/model.md (more worked examples): long 10 straddles, the worst point is inside.
    out = run(10, 5987.5, 1.0, 5, d=0.05, c=0.003, recovery=recovery)
    assert out.worst_pnl[0] == pytest.approx(worst, abs=1e-3)
    g = engine.recovery_profile(recovery, 60)
    path = reference_pnl(10, 5987.5, 1.0, 5, 0.05, 0.003, -0.03, 3.0, g)
    assert int(np.argmin(path)) == t_worst
    assert out.worst_pnl[0] == pytest.approx(min(path), rel=1e-12)


def test_none_recovery_holds_the_shock_for_the_whole_window():
    out = run(5, 6000, 0.25, 5, recovery="none")
    assert out.worst_pnl[0] == pytest.approx(-4509.375)
    assert engine.recovery_profile("none", 60).tolist() == [1.0] * 61


def test_exponential_profile_is_95_percent_recovered_at_T():
    g = engine.recovery_profile("exponential", 60)
    assert g[0] == 1 and g[-1] == pytest.approx(math.exp(-3))
    assert len(g) == 61


def test_symbol_shocks_replace_the_scenario_shock():
    out = run([5, 5], [6000, 6000], 0.25, 5, s=np.array([-0.03, -0.10]))
    assert out.worst_pnl[0] == pytest.approx(-4509.375)
    assert out.worst_pnl[1] == pytest.approx(-25 * 600 - 9.375)


def test_portfolio_var_ratio_and_headroom():
    out = run([5, -2], [6000, 2400], [0.25, 0.1], 5, E=100_000, V=2000)
    loss = 4509.375 - (2 * 5 * 72 - 0.5 * 0.3 * 2 * 5)
    assert out.portfolio_worst_pnl == pytest.approx(-loss)
    assert out.portfolio_var_ratio == pytest.approx(loss / 2000)
    # VaR binds for the book: lam * (4500 - 720) + 9.375 + 1.5 = 4000
    assert out.portfolio_headroom == pytest.approx((4000 - 10.875) / 3780, rel=1e-9)


def test_spread_alone_beyond_the_limit_gives_zero_headroom():
    out = run(1000, 100, 5.0, 1, E=1000)  # half of 3x spread on 1000 units: 7,500 > 50
    assert out.headroom[0] == 0.0


def test_headroom_is_capped():
    out = run(1, 6000, 0.25, 5, E=1e9)
    assert out.headroom[0] == engine.HEADROOM_CAP


def _brute_headroom(q, P, h, m, d, c, v, E, s, k, g, limits):
    """Bisection on the plain loop: smallest lam where some limit is exceeded."""

    def breached(lam):
        loss = max(0.0, -min(reference_pnl(q, P, h, m, d, c, s * lam, k, g)))
        if loss > limits.max_drawdown_pct * E:
            return True
        if not math.isnan(v) and loss > limits.max_var_multiplier * v:
            return True
        return abs(c * P * s * lam) * max(abs(x) for x in g) > limits.max_position_delta

    if breached(0.0):
        return 0.0
    if not breached(100.0):
        return 100.0
    lo, hi = 0.0, 100.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if breached(mid) else (mid, hi)
    return hi


def random_positions(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """q, P, h, m, d, c, v of ``n`` random positions: longs and shorts, 60% with gamma of
    either sign, 70% with a VaR."""
    q = rng.choice([-1, 1], n) * rng.integers(1, 50, n)
    P = rng.uniform(10, 10_000, n)
    h = rng.uniform(0, 2, n)
    m = rng.choice([1, 2, 5, 50, 100], n).astype(float)
    d = rng.uniform(-1, 1, n)
    c = rng.uniform(-0.002, 0.004, n) * (rng.random(n) < 0.6)
    v = np.where(rng.random(n) < 0.7, rng.uniform(500, 20_000, n), np.nan)
    return q, P, h, m, d, c, v


@pytest.mark.parametrize("recovery", ["linear", "exponential", "none"])
def test_random_books_match_the_plain_loop(recovery):
    rng = np.random.default_rng(7)
    n = 40
    q, P, h, m, d, c, v = random_positions(rng, n)
    s = rng.uniform(-0.2, 0.2, n)
    E = 1_000_000.0
    out = run(q, P, h, m, d, c, v, E=E, s=s, recovery=recovery, k=2.5)
    g = engine.recovery_profile(recovery, 60)
    for i in range(n):
        path = reference_pnl(q[i], P[i], h[i], m[i], d[i], c[i], s[i], 2.5, g)
        assert out.worst_pnl[i] == pytest.approx(min(path), rel=1e-12, abs=1e-9)
        expected = _brute_headroom(q[i], P[i], h[i], m[i], d[i], c[i], v[i], E, s[i], 2.5, g,
                                   DEFAULT)
        assert out.headroom[i] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    book_path = np.sum([reference_pnl(q[i], P[i], h[i], m[i], d[i], c[i], s[i], 2.5, g)
                        for i in range(n)], axis=0)
    assert out.portfolio_worst_pnl == pytest.approx(book_path.min(), rel=1e-12)


def test_a_profile_whose_trough_is_not_1_matches_the_plain_loop():
    """Every shape of model.md has its trough at g = 1 (the engine skips products by 1.0);
    a profile that peaks lower is still solved exactly."""
    rng = np.random.default_rng(5)
    n = 30
    q, P, h, m, d, c, v = random_positions(rng, n)
    s = rng.uniform(-0.3, 0.3, n)
    g = 0.6 * engine.recovery_profile("exponential", 40, 5, 2)
    coef = engine.coefficients(q, P, h, m, d, c, s, 2.0)
    out = engine.stress(coef, np.abs(c * P * s), v, 200_000.0, None, g, DEFAULT)
    for i in range(n):
        path = reference_pnl(q[i], P[i], h[i], m[i], d[i], c[i], s[i], 2.0, g)
        assert out.worst_pnl[i] == pytest.approx(min(path), rel=1e-12, abs=1e-9)
        assert out.delta_change[i] == pytest.approx(abs(c[i] * P[i] * s[i]) * 0.6, rel=1e-12)
        expected = _brute_headroom(q[i], P[i], h[i], m[i], d[i], c[i], v[i], 200_000.0, s[i],
                                   2.0, g, DEFAULT)
        assert out.headroom[i] == pytest.approx(expected, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("n", [1, 2, 40, 301])
def test_a_big_book_in_passes_gives_the_same_bits_as_one_pass(monkeypatch, n):
    """The rows go through in passes of CHUNK symbols, the portfolio alone last; a small book
    is one pass over n + 1 rows. Every pass size gives every metric bit for bit."""
    rng = np.random.default_rng(n)
    q, P, h, m, d, c, v = random_positions(rng, n)
    s = rng.uniform(-0.3, 0.3, n)
    k = rng.uniform(1, 4, n)
    h[: n // 3] = 0.0  # no spread: zero losses and gains at g = 0 (the ramp's first point)
    results = []
    for chunk in (10**6, 1, 3, 64):
        monkeypatch.setattr(engine, "CHUNK", chunk)
        results.append(run(q, P, h, m, d, c, v, V=50_000.0, s=s, k=k, ramp=7, hold=3, steps=61))
    for out in results[1:]:
        for name in engine.EngineOutput._fields:
            np.testing.assert_array_equal(getattr(out, name), getattr(results[0], name),
                                          err_msg=name, strict=True)


@pytest.mark.parametrize("recovery", ["linear", "exponential", "none"])
def test_headroom_solved_at_the_shock_point_is_the_smallest_over_the_grid(recovery):
    """first_breach_scale solves g = max only; every other grid point breaches no earlier."""
    rng = np.random.default_rng(11)
    n = 400
    q = rng.choice([-1, 1], n) * rng.integers(1, 50, n)
    P, h = rng.uniform(1, 10_000, n), rng.uniform(0, 5, n) * (rng.random(n) < 0.9)
    m, d = rng.choice([1, 2, 5, 50], n).astype(float), rng.uniform(-1, 1, n)
    c = rng.uniform(-0.004, 0.004, n) * (rng.random(n) < 0.6)
    s = rng.uniform(-0.5, 0.5, n) * (rng.random(n) < 0.95)
    max_loss = rng.uniform(0, 20_000, n)
    grid = np.sort(engine.recovery_profile(recovery, 60))
    for k in (1.0, 3.0):
        coef = engine.coefficients(q, P, h, m, d, c, s, k)
        with engine._quiet():  # as inside the engine
            every_point = engine._smallest_negative_root(
                coef.a[:, None] * grid, coef.b[:, None] * grid * grid,
                max_loss[:, None] - coef.c0[:, None] - coef.e[:, None] * grid).min(axis=1)
        assert np.array_equal(engine.first_breach_scale(coef, grid, max_loss), every_point)


# -- shapes: ramp to the trough, hold, then recover (model.md "Shapes and targeted shocks") --


def reference_profile(recovery, T, dt, ramp=0.0, hold=0.0):
    """model.md's g(t) point by point, in seconds, written independently of the engine."""
    R = T - ramp - hold
    g = []
    for j in range(round(T / dt) + 1):
        t = j * dt
        if t < ramp:
            g.append(t / ramp)
        elif t <= ramp + hold:
            g.append(1.0)
        else:
            u = (t - ramp - hold) / R
            g.append({"linear": 1 - u, "exponential": math.exp(-3 * u), "none": 1.0}[recovery])
    return g


@pytest.mark.parametrize("recovery", ["linear", "exponential", "none"])
def test_default_shape_is_the_original_profile_bit_for_bit(recovery):
    old = {"linear": lambda f: 1.0 - f, "exponential": lambda f: np.exp(-3.0 * f),
           "none": np.ones_like}[recovery](np.arange(61, dtype=np.float64) / 60)
    assert np.array_equal(engine.recovery_profile(recovery, 60), old)
    assert np.array_equal(engine.recovery_profile(recovery, 60, 0, 0), old)


def test_ramp_hold_linear_profile_by_hand():
    # T = 10, dt = 1, ramp 4 s, hold 2 s, linear recovery over the last 4 s
    g = engine.recovery_profile("linear", 10, 4, 2)
    assert g.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    assert g.tolist() == reference_profile("linear", 10, 1, 4, 2)


@pytest.mark.parametrize(("recovery", "ramp", "hold"), [
    ("exponential", 30, 0), ("none", 5, 25), ("linear", 0, 20), ("exponential", 0, 60),
    ("linear", 60, 0), ("none", 30, 30),
])
def test_profiles_match_model_md_pointwise(recovery, ramp, hold):
    g = engine.recovery_profile(recovery, 60, ramp, hold)
    assert g == pytest.approx(reference_profile(recovery, 60, 1, ramp, hold), rel=1e-15)
    assert g.max() == 1.0 and g.min() >= 0  # the trough is a grid point


def test_ramp_starts_at_zero_so_the_first_point_costs_only_the_spread():
    out = run(5, 6000, 0.25, 5, recovery="linear", steps=60, ramp=10)
    # worst at the trough (t = 10 s): the same as the shock point of the default scenario
    assert out.worst_pnl[0] == pytest.approx(-4509.375)
    assert out.headroom[0] == pytest.approx(4990.625 / 4500, rel=1e-9)


def test_per_symbol_spread_multipliers_by_hand():
    # two identical longs, spreads 3x and 10x: -4500 - 0.5 * 0.25 * k * 25 at the trough
    out = run([5, 5], [6000, 6000], 0.25, 5, k=np.array([3.0, 10.0]))
    assert out.worst_pnl.tolist() == pytest.approx([-4509.375, -4500 - 31.25])


def _scan_headroom(q, P, h, m, d, c, v, E, s, k, g, limits):
    """Brute force: scan lam over [0, 100] at every grid point, then bisect the first step
    where some point breaches. Needs no monotonicity in lam, unlike a plain bisection."""
    g = np.asarray(g)
    lam = np.linspace(0.0, 100.0, 20_001)[:, None]
    dP = P * s * lam * g  # (lam, t)
    pnl = q * m * (d * dP + 0.5 * c * dP**2) - 0.5 * h * (1 + (k - 1) * g) * abs(q) * m
    loss = np.maximum(0.0, -pnl.min(axis=1))

    def breached(loss, scale):
        out = loss > limits.max_drawdown_pct * E
        if not math.isnan(v):
            out = out | (loss > limits.max_var_multiplier * v)
        return out | (np.abs(c * P * s * scale) * g.max() > limits.max_position_delta)

    hit = breached(loss, lam[:, 0])
    if not hit.any():
        return 100.0
    first = int(np.argmax(hit))
    if first == 0:
        return 0.0

    def at(x):
        x_dP = P * s * x * g
        x_pnl = q * m * (d * x_dP + 0.5 * c * x_dP**2) - 0.5 * h * (1 + (k - 1) * g) * abs(q) * m
        return bool(breached(np.array([max(0.0, -x_pnl.min())]), x)[0])

    lo, hi = float(lam[first - 1, 0]), float(lam[first, 0])
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if at(mid) else (mid, hi)
    return hi


@pytest.mark.parametrize(("recovery", "ramp", "hold"), [
    ("linear", 20, 10), ("exponential", 15, 0), ("none", 40, 5), ("linear", 0, 30),
    ("exponential", 60, 0),
])
def test_random_books_with_shapes_and_spread_multipliers_match_brute_force(recovery, ramp,
                                                                             hold):
    rng = np.random.default_rng(ramp * 100 + hold)
    n = 30
    q, P, h, m, d, c, v = random_positions(rng, n)
    s = rng.uniform(-0.2, 0.2, n) * (rng.random(n) < 0.9)  # some symbols not moved
    k = rng.choice([1.0, 2.0, 26.0], n)
    E = 1_000_000.0
    out = run(q, P, h, m, d, c, v, E=E, s=s, k=k, recovery=recovery, ramp=ramp, hold=hold)
    g = reference_profile(recovery, 60, 1, ramp, hold)
    paths = []
    for i in range(n):
        path = reference_pnl(q[i], P[i], h[i], m[i], d[i], c[i], s[i], k[i], g)
        paths.append(path)
        assert out.worst_pnl[i] == pytest.approx(min(path), rel=1e-12, abs=1e-9)
        expected = _scan_headroom(q[i], P[i], h[i], m[i], d[i], c[i], v[i], E, s[i], k[i], g,
                                  DEFAULT)
        assert out.headroom[i] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert out.portfolio_worst_pnl == pytest.approx(np.sum(paths, axis=0).min(), rel=1e-12)


def test_portfolio_headroom_with_a_ramp_matches_brute_force():
    """The book's headroom binds at the trough too (every e_i >= 0): scan lam for the sum."""
    q = np.array([10.0, -4.0, 3.0])
    P = np.array([6000.0, 2400.0, 80.0])
    h, m = np.array([0.25, 0.1, 0.02]), np.array([5.0, 5.0, 1000.0])
    d, c = np.ones(3), np.array([0.0, 0.0, 0.0])
    s, k = np.array([-0.05, -0.05, 0.0]), np.array([26.0, 1.0, 5.0])
    E = 150_000.0
    out = run(q, P, h, m, d, c, E=E, s=s, k=k, recovery="exponential", ramp=20, hold=5)
    g = np.array(reference_profile("exponential", 60, 1, 20, 5))
    lam = np.linspace(0, 100, 200_001)[:, None]
    book = sum(q[i] * m[i] * P[i] * s[i] * lam * g - 0.5 * h[i] * (1 + (k[i] - 1) * g)
               * abs(q[i]) * m[i] for i in range(3))
    first = int(np.argmax(-book.min(axis=1) > 0.05 * E))
    assert out.portfolio_headroom == pytest.approx(lam[first, 0], abs=5e-4)


# -- the seeded property test: 1,000+ random books and scenarios ------------------------------


def _random_case(rng: np.random.Generator) -> dict:
    """One random book and scenario: 1-8 positions with gamma of both signs, shocks all
    negative, all positive or mixed per symbol, every recovery, odd step counts, ramps and
    holds, per-symbol spread multipliers, random limits and VaRs (some missing)."""
    n = int(rng.integers(1, 9))
    q, P, h, m, d, c, v = random_positions(rng, n)
    base = rng.uniform(0.005, 0.5) * rng.choice([-1.0, 1.0])
    kind = rng.choice(["same", "positive", "mixed"])
    s = {"same": np.full(n, base), "positive": rng.uniform(0.005, 0.5, n),
         "mixed": rng.uniform(-0.5, 0.5, n)}[kind]
    steps = int(rng.choice([1, 3, 5, 7, 13, 31, 61]))
    ramp = int(rng.integers(0, steps + 1)) if rng.random() < 0.3 else 0
    hold = int(rng.integers(0, steps - ramp + 1)) if rng.random() < 0.3 else 0
    return dict(q=q, P=P, h=h, m=m, d=d, c=c, v=v, s=s, k=rng.choice([1.0, 1.5, 3.0, 26.0], n),
                E=float(rng.uniform(5e4, 5e6)), V=float(rng.uniform(1e3, 1e5))
                if rng.random() < 0.7 else None,
                recovery=str(rng.choice(["linear", "exponential", "none"])), steps=steps,
                dt=float(rng.choice([1, 3, 7])), ramp=ramp, hold=hold,
                limits=Limits(float(rng.uniform(0.005, 0.2)), float(rng.uniform(0.5, 4)),
                              float(rng.uniform(0.02, 0.5))))


def _loss_paths(x: dict, g: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """P&L of every symbol at every scale and grid point (symbols x scales x points), the
    prices moved by lam * s_i * g(t): model.md's pnl_i(t), written directly."""
    dP = (x["P"] * x["s"])[:, None, None] * lam[None, :, None] * g[None, None, :]
    size = (x["q"] * x["m"])[:, None, None]
    spread = (x["h"][:, None] * (1 + (x["k"][:, None] - 1) * g[None, :]))[:, None, :]
    return size * (x["d"][:, None, None] * dP + 0.5 * x["c"][:, None, None] * dP * dP) \
        - 0.5 * spread * np.abs(size)


def _brute_force_headroom(x: dict, g: np.ndarray) -> tuple[np.ndarray, float]:
    """Each symbol's and the book's headroom by brute force: the worst P&L over the grid on
    a scan of lam over [0, 100], the first scale that breaches any limit, refined by
    bisection between that scan point and the one before (no monotonicity assumed).

    A long-gamma book can breach in a band of lam narrower than any even scan (0.0205 to
    0.0246 in one seeded case), so the scan also holds each grid point's loss peak in lam
    (the vertex of lam a + lam^2 b, per symbol and for the book): every breach band contains
    one, so the first scan point that breaches lies in the first band, and the bisection
    before it finds that band's start."""
    limits, E = x["limits"], x["E"]
    var = np.where(np.isnan(x["v"]), np.inf, x["v"])
    gmax = float(np.abs(g).max())

    def symbol_breached(lam: np.ndarray) -> np.ndarray:  # symbols x scales
        loss = np.maximum(0.0, -_loss_paths(x, g, lam).min(axis=2))
        return ((loss > limits.max_drawdown_pct * E)
                | (loss > limits.max_var_multiplier * var[:, None])
                | (np.abs(x["c"] * x["P"] * x["s"])[:, None] * lam * gmax
                   > limits.max_position_delta))

    def book_breached(lam: np.ndarray) -> np.ndarray:  # scales
        loss = np.maximum(0.0, -_loss_paths(x, g, lam).sum(axis=0).min(axis=1))
        out = loss > limits.max_drawdown_pct * E
        return out | (loss > limits.max_var_multiplier * x["V"]) if x["V"] else out

    move = (x["P"] * x["s"])[:, None] * g[None, :]
    a = (x["q"] * x["m"] * x["d"])[:, None] * move
    b = (0.5 * x["q"] * x["m"] * x["c"])[:, None] * move * move
    with np.errstate(divide="ignore", invalid="ignore"):
        peaks = np.concatenate([(-a / (2 * b))[b > 0],
                                (-a.sum(axis=0) / (2 * b.sum(axis=0)))[b.sum(axis=0) > 0]])
    scan = np.unique(np.concatenate([np.linspace(0.0, 100.0, 1001),
                                     peaks[(peaks > 0) & (peaks < 100)]]))

    def first(breached, row: np.ndarray) -> float:
        if not row.any():
            return 100.0
        i = int(np.argmax(row))
        if i == 0:
            return 0.0
        lo, hi = float(scan[i - 1]), float(scan[i])
        for _ in range(45):  # 0.1 / 2^45: far below 1e-6
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if breached(mid) else (mid, hi)
        return hi

    hits = symbol_breached(scan)
    symbols = np.array([first(lambda lam, i=i: bool(symbol_breached(np.array([lam]))[i, 0]),
                              hits[i]) for i in range(len(x["q"]))])
    book = first(lambda lam: bool(book_breached(np.array([lam]))[0]), book_breached(scan))
    return symbols, book


def test_seeded_random_books_and_scenarios_match_the_plain_loop_and_brute_force():
    """1,200 random cases: every metric to 1e-9 against model.md point by point, every
    headroom (symbols and portfolio) to 1e-6 against a brute-force search."""
    rng = np.random.default_rng(20261201)
    seen = {"gamma+": 0, "gamma-": 0, "positive": 0, "mixed": 0, "linear": 0,
            "exponential": 0, "none": 0, "odd": 0}
    for case in range(1_200):
        x = _random_case(rng)
        out = run(x["q"], x["P"], x["h"], x["m"], x["d"], x["c"], x["v"], E=x["E"], V=x["V"],
                  s=x["s"], k=x["k"], recovery=x["recovery"], steps=x["steps"],
                  limits=x["limits"], ramp=x["ramp"], hold=x["hold"])
        g = np.array(reference_profile(x["recovery"], x["steps"] * x["dt"], x["dt"],
                                       x["ramp"] * x["dt"], x["hold"] * x["dt"]))
        paths = _loss_paths(x, g, np.ones(1))[:, 0, :]
        worst = paths.min(axis=1)
        loss = np.maximum(0.0, -worst)
        where = f"case {case}: {x}"
        np.testing.assert_allclose(out.worst_pnl, worst, rtol=1e-9, atol=1e-9, err_msg=where)
        np.testing.assert_allclose(out.drawdown_pct, loss / x["E"], rtol=1e-9, atol=1e-12,
                                   err_msg=where)
        np.testing.assert_allclose(out.var_ratio, loss / x["v"], rtol=1e-9, atol=1e-12,
                                   equal_nan=True, err_msg=where)
        np.testing.assert_allclose(
            out.delta_change, np.abs(x["c"][:, None] * (x["P"] * x["s"])[:, None] * g).max(
                axis=1), rtol=1e-9, atol=1e-12, err_msg=where)
        book = paths.sum(axis=0)
        assert out.portfolio_worst_pnl == pytest.approx(book.min(), rel=1e-9, abs=1e-9), where
        book_loss = max(0.0, -book.min())
        assert out.portfolio_drawdown_pct == pytest.approx(book_loss / x["E"], rel=1e-9,
                                                           abs=1e-12), where
        if x["V"] is not None:
            assert out.portfolio_var_ratio == pytest.approx(book_loss / x["V"], rel=1e-9,
                                                            abs=1e-12), where
        symbols, portfolio = _brute_force_headroom(x, g)
        np.testing.assert_allclose(out.headroom, symbols, rtol=1e-6, atol=1e-9, err_msg=where)
        assert out.portfolio_headroom == pytest.approx(portfolio, rel=1e-6, abs=1e-9), where
        seen["gamma+"] += bool((x["c"] > 0).any())
        seen["gamma-"] += bool((x["c"] < 0).any())
        seen["positive"] += bool((x["s"] > 0).all())
        seen["mixed"] += bool((x["s"] > 0).any() and (x["s"] < 0).any())
        seen[x["recovery"]] += 1
        seen["odd"] += x["steps"] % 2
    assert min(seen.values()) >= 100, seen  # every kind of case is well represented
