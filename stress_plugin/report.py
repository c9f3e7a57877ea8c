"""The run report: one self-contained HTML file (inline SVG, inline CSS and script, nothing
fetched), and its two charts as standalone SVG.

The SVG is written by hand: two line charts and a bar need a few dozen lines, where a plotting
library would add tens of megabytes, a slow import and its own fonts and scripts to keep
offline. Everything here reads a stored result (``Store.run``) and what its P&L paths are made
of (``Store.run_paths``); the numbers come from ``engine``'s pure functions.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stress_plugin.core import engine
from stress_plugin.core.engine import PathInputs
from stress_plugin.core.errors import UnknownRun
from stress_plugin.store import Store

WORST_SYMBOLS = 10
"""Symbols drawn on the P&L-path chart beside the portfolio: the largest losses."""
TABLE_ROWS = 5000
"""Per-symbol table rows (largest losses first); the JSON result has every symbol."""
MAX_POINTS = 400
"""Points per line: the grid is resampled (keeping each line's worst point) above this."""
SCALE_POINTS = 241
PALETTE = ("#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")
_SVG_NS = ' xmlns="http://www.w3.org/2000/svg"'


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    x: np.ndarray
    y: np.ndarray
    color: str
    width: float = 1.5


@dataclass(frozen=True, slots=True)
class Rule:
    """A labelled horizontal (``axis`` "y") or vertical ("x") line across the plot."""

    axis: str
    at: float
    label: str
    color: str


def status_of(result: dict[str, Any]) -> str:
    """passed, breached or failed: the result's own word, else from its breach count."""
    return str(result.get("status") or ("breached" if result.get("breach_count") else "passed"))


def loss(value: float) -> float:
    return max(0.0, -value)


# -- the charts ---------------------------------------------------------------------------------


def pnl_series(result: dict[str, Any], paths: PathInputs) -> list[Series]:
    """The lines of the P&L-path chart, in the book's currency against seconds since the
    scenario starts: the portfolio, then the largest-loss symbols (largest first)."""
    names = list(result["symbols"])
    worst = sorted(range(len(names)), key=lambda i: result["symbols"][names[i]]["worst_pnl"])
    chosen = worst[:WORST_SYMBOLS]
    total = paths.coef.with_total()
    rows = [len(names), *chosen]
    coef = total.take(rows)
    pnl = engine.pnl_paths(coef, paths.profile)
    keep = np.union1d(_resample(pnl), [i for i, _ in trough_marks(paths)]).astype(np.intp)
    t = paths.times[keep]
    series = [Series("PORTFOLIO", t, pnl[0, keep], "#000000", 2.5)]
    series += [Series(names[i], t, pnl[k + 1, keep], PALETTE[k % len(PALETTE)])
               for k, i in enumerate(chosen)]
    return series


def pnl_chart(result: dict[str, Any], paths: PathInputs, *, standalone: bool = True) -> str:
    """P&L over the scenario's time: the portfolio and the largest-loss symbols, with the
    trough (and the end of a held trough) marked when the scenario ramps or holds."""
    series = pnl_series(result, paths)
    title = (f"P&L path: portfolio and the {len(series) - 1} largest losses "
             f"({result['scenario']}, run {result['run_id']})")
    rules = [Rule("y", 0.0, "", "#999999")]
    rules += [Rule("x", float(paths.times[i]), label, "#555555")
              for i, label in trough_marks(paths)]
    return _line_chart(title, series, "seconds since the scenario starts", "P&L", rules,
                       standalone=standalone)


def trough_marks(paths: PathInputs) -> list[tuple[int, str]]:
    """Grid points worth a line on the P&L-path chart, from the stored profile (docs/model.md's
    shapes): where a ramped scenario reaches its trough, and where a held trough starts to
    recover. None for a scenario that starts at the trough and recovers at once."""
    at_trough = np.flatnonzero(paths.profile == 1.0)
    if not len(at_trough):
        return []
    first = int(at_trough[0])
    last = first  # the end of the run of trough points that starts at ``first``
    while last + 1 < len(paths.profile) and paths.profile[last + 1] == 1.0:
        last += 1
    marks = [(first, f"trough at {paths.times[first]:g} s")] if first > 0 else []
    if first < last < len(paths.profile) - 1:
        marks.append((last, f"recovery from {paths.times[last]:g} s"))
    return marks


def headroom_chart(result: dict[str, Any], paths: PathInputs, *, standalone: bool = True) -> str:
    """Portfolio loss against the shock's scale, with the loss limits: the headroom is where
    the curve first crosses a limit (or, when a symbol binds, where that symbol does)."""
    limits = result["limits"]
    limit_loss = [(limits["max_drawdown_pct"] * paths.equity,
                   f"drawdown limit {limits['max_drawdown_pct']:.2%} of equity")]
    if paths.book_var is not None:
        limit_loss.append((limits["max_var_multiplier"] * paths.book_var,
                           f"VaR limit {limits['max_var_multiplier']:g}x book VaR"))
    run_headroom = float(result["headroom"])
    book_headroom = float(result["portfolio"]["headroom"])
    top = min(max(2.0, 1.25 * book_headroom), 10.0)
    scales = np.linspace(0.0, top, SCALE_POINTS)
    total = paths.coef.with_total()
    book = total.take([-1])
    losses = np.maximum(0.0, -engine.worst_pnl_by_scale(book, paths.profile, scales)[0])
    rules = [Rule("y", at, label, "#d62728") for at, label in limit_loss]
    rules.append(Rule("x", 1.0, "this scenario (1x)", "#555555"))
    if book_headroom <= top:
        rules.append(Rule("x", book_headroom, f"portfolio headroom {book_headroom:.4g}",
                          "#1f77b4"))
    if run_headroom < book_headroom and run_headroom <= top:
        binding = min(result["symbols"].items(), key=lambda kv: kv[1]["headroom"])[0]
        rules.append(Rule("x", run_headroom, f"run headroom {run_headroom:.4g} ({binding})",
                          "#ff7f0e"))
    title = f"Portfolio loss against shock scale ({result['scenario']}, run {result['run_id']})"
    return _line_chart(title, [Series("portfolio loss", scales, losses, "#000000", 2.5)],
                       "shock scale (1 = this scenario)", "loss", rules,
                       standalone=standalone)


def headroom_gauge(result: dict[str, Any]) -> str:
    """The run's headroom on a 0-3x bar: red at or below 1 (breaches), amber to 1.25."""
    value = float(result["headroom"])
    width, height, left, span = 520, 70, 20, 480
    top_value = 3.0

    def x(v: float) -> float:
        return left + span * min(max(v, 0.0), top_value) / top_value

    shown = ">= 100" if value >= engine.HEADROOM_CAP else f"{value:.4f}"
    parts = [
        f'<svg class="gauge" role="img" aria-label="headroom {shown}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f'<rect x="{left}" y="20" width="{x(1) - left:.1f}" height="18" fill="#f4b6b6"/>',
        f'<rect x="{x(1):.1f}" y="20" width="{x(1.25) - x(1):.1f}" height="18" fill="#f8dc9c"/>',
        f'<rect x="{x(1.25):.1f}" y="20" width="{left + span - x(1.25):.1f}" height="18" '
        'fill="#bfe3bf"/>',
    ]
    for tick in (0, 0.5, 1, 1.5, 2, 2.5, 3):
        parts.append(f'<text x="{x(tick):.1f}" y="54" font-size="11" text-anchor="middle">'
                     f'{tick:g}x</text>')
    parts.append(f'<rect x="{x(value) - 2:.1f}" y="14" width="4" height="30" fill="#000"/>')
    parts.append(f'<text x="{left}" y="12" font-size="12">headroom {html.escape(shown)}'
                 f'{" (off the scale)" if value > top_value else ""}</text>')
    parts.append("</svg>")
    return "".join(parts)


# -- the page -----------------------------------------------------------------------------------


def render_html(result: dict[str, Any], paths: PathInputs | None) -> str:
    """The whole report of one stored run as one HTML document."""
    status = status_of(result)
    e = html.escape
    limits = result.get("limits") or {}
    sources = result.get("limit_sources") or {}
    limit_rows = "".join(
        f"<tr><td>{e(name)}</td><td>{e(_num(value))}</td>"
        f"<td>{e(str(sources.get(name, 'not recorded')))}</td></tr>"
        for name, value in limits.items())
    header = [
        ("scenario", result["scenario"]),
        ("run", result["run_id"]),
        ("time (UTC)", result["timestamp"]),
        ("status", status),
        ("book source", result.get("book_source") or "not recorded"),
        ("symbols tested", str(result["symbols_tested"])),
        ("skipped (STRESS_MAX_SYMBOLS)", str(len(result.get("skipped_symbols") or ()))),
        ("KILL_SWITCH", "published" if result.get("kill_switch") else "no"),
        ("runtime", f"{result['runtime_ms']:.3f} ms"),
        ("halted after the run", "yes" if result.get("halted") else "no"),
    ]
    if result.get("error"):
        header.append(("error", str(result["error"])))
    breaches = result.get("breaches") or []
    breach_rows = "".join(
        f"<tr><td>{e(b['symbol'])}</td><td>{e(b['limit'])}</td>"
        f"<td class=n>{e(_num(b['value']))}</td><td class=n>{e(_num(b['threshold']))}</td></tr>"
        for b in breaches)
    breach_table = (
        '<table id="breaches"><thead><tr><th>symbol</th><th>limit</th><th>value</th>'
        f"<th>threshold</th></tr></thead><tbody>{breach_rows}</tbody></table>"
        if breaches else '<p id="breaches">No breach.</p>')
    if paths is not None and result.get("symbols"):
        charts = (f'<figure id="pnl-chart">{pnl_chart(result, paths, standalone=False)}</figure>'
                  f'<figure id="headroom-chart">'
                  f"{headroom_chart(result, paths, standalone=False)}</figure>")
    else:
        charts = "<p>No P&amp;L paths are stored for this run (a failed run, or one stored " \
                 "before reports existed).</p>"
    return _PAGE.format(
        title=e(f"Stress run {result['run_id']}: {result['scenario']} {status}"),
        status=e(status),
        header="".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in header),
        limits=limit_rows,
        breach_count=len(breaches),
        breaches=breach_table,
        gauge=headroom_gauge(result) if result.get("symbols") else "",
        charts=charts,
        symbols=_symbol_table(result) if result.get("portfolio") else
        "<p>No per-symbol results: the run failed before the book was stressed.</p>",
        script=_SCRIPT,
    )


def stored_report(store: Store, run_id: str) -> tuple[dict[str, Any], PathInputs | None]:
    """A stored run's result and path inputs; ``UnknownRun`` when there is no such run."""
    result = store.run(run_id)
    if result is None:
        raise UnknownRun("run_id", None, run_id, "no stored run has this id")
    return result, store.run_paths(run_id)


def render_index(runs: Sequence[dict[str, Any]], base: str = "") -> str:
    """The service's front page: recent runs, each with its report and charts."""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(r['timestamp'])}</td><td>{e(r['scenario'])}</td>"
        f"<td>{e(status_of(r))}</td><td class=n>{r['symbols_tested']}</td>"
        f"<td class=n>{e('-' if r['headroom'] is None else _headroom(r['headroom']))}</td>"
        f'<td><a href="{base}/api/v1/stress/results/{e(r["run_id"])}/report">'
        f"{e(r['run_id'])}</a></td>"
        f'<td><a href="{base}/api/v1/stress/results/{e(r["run_id"])}/pnl.svg">P&amp;L</a> '
        f'<a href="{base}/api/v1/stress/results/{e(r["run_id"])}/headroom.svg">headroom</a></td>'
        "</tr>" for r in runs)
    body = (f"<table><thead><tr><th>time (UTC)</th><th>scenario</th><th>status</th>"
            f"<th>symbols</th><th>headroom</th><th>report</th><th>charts</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>" if runs else "<p>No runs stored yet.</p>")
    return _INDEX.format(body=body, count=len(runs))


def _symbol_table(result: dict[str, Any]) -> str:
    e = html.escape
    breached: dict[str, list[str]] = {}
    for b in result.get("breaches") or []:
        breached.setdefault(b["symbol"], []).append(b["limit"])
    items = [*result["symbols"].items(), ("PORTFOLIO", result["portfolio"])]
    items.sort(key=lambda kv: kv[1]["worst_pnl"])
    shown = items[:TABLE_ROWS]
    rows = []
    for symbol, m in shown:
        cells = [
            (m["worst_pnl"], f"{m['worst_pnl']:,.2f}"),
            (loss(m["worst_pnl"]), f"{loss(m['worst_pnl']):,.2f}"),
            (m["drawdown_pct"], f"{m['drawdown_pct']:.3%}"),
            (m["var_ratio"], "-" if m["var_ratio"] is None else f"{m['var_ratio']:.3f}x"),
            (m["delta_change"], "-" if m["delta_change"] is None else f"{m['delta_change']:.4f}"),
            (m["headroom"], _headroom(m["headroom"])),
        ]
        tds = "".join(f'<td class=n data-v="{"" if v is None else repr(float(v))}">{e(t)}</td>'
                      for v, t in cells)
        mark = ", ".join(breached.get(symbol, []))
        rows.append(f'<tr{" class=breach" if mark else ""}><td>{e(symbol)}</td>{tds}'
                    f"<td>{e(mark)}</td></tr>")
    more = (f"<p>{len(items) - len(shown):,} more symbols with smaller losses are not shown; "
            "the JSON result has them all.</p>" if len(items) > len(shown) else "")
    head = "".join(f'<th data-col="{i}">{name}</th>' for i, name in enumerate(
        ("symbol", "worst P&amp;L", "loss", "drawdown", "VaR ratio", "delta change",
         "headroom", "breached")))
    return (f'<table id="symbols" class="sortable"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>{more}")


def _line_chart(title: str, series: Sequence[Series], x_label: str, y_label: str,
                rules: Sequence[Rule], *, standalone: bool) -> str:
    width, height = 900, 420
    left, right, top, bottom = 90, 190, 40, 50
    pw, ph = width - left - right, height - top - bottom
    xs = np.concatenate([s.x for s in series])
    ys = np.concatenate([s.y for s in series] + [np.array([r.at for r in rules if r.axis == "y"])])
    x0, x1 = float(xs.min()), float(xs.max())
    y0, y1 = float(ys.min()), float(ys.max())
    if x1 == x0:
        x1 = x0 + 1.0
    pad = (y1 - y0) * 0.05 or max(abs(y0), 1.0) * 0.05
    y0, y1 = y0 - pad, y1 + pad

    def sx(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * pw

    def sy(v: float) -> float:
        return top + (y1 - v) / (y1 - y0) * ph

    e = html.escape
    out = [f'<svg{_SVG_NS if standalone else ""} class="chart" role="img" '
           f'aria-label="{e(title)}" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="{left}" y="22" font-size="14" font-weight="bold">{e(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" '
           'stroke="#cccccc"/>']
    for tick in _ticks(x0, x1):
        out.append(f'<line x1="{sx(tick):.1f}" y1="{top + ph}" x2="{sx(tick):.1f}" '
                   f'y2="{top + ph + 5}" stroke="#333"/><text x="{sx(tick):.1f}" '
                   f'y="{top + ph + 18}" font-size="11" text-anchor="middle">{_tick(tick)}'
                   "</text>")
    for tick in _ticks(y0, y1):
        out.append(f'<line x1="{left}" y1="{sy(tick):.1f}" x2="{left + pw}" y2="{sy(tick):.1f}" '
                   f'stroke="#eeeeee"/><text x="{left - 6}" y="{sy(tick) + 4:.1f}" '
                   f'font-size="11" text-anchor="end">{_tick(tick)}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 10}" font-size="12" '
               f'text-anchor="middle">{e(x_label)}</text>')
    out.append(f'<text transform="translate(16 {top + ph / 2}) rotate(-90)" font-size="12" '
               f'text-anchor="middle">{e(y_label)}</text>')
    for r in rules:
        if r.axis == "y":
            out.append(f'<line class="rule" x1="{left}" y1="{sy(r.at):.1f}" x2="{left + pw}" '
                       f'y2="{sy(r.at):.1f}" stroke="{r.color}" stroke-dasharray="6 4"/>')
            if r.label:
                out.append(f'<text x="{left + pw - 4}" y="{sy(r.at) - 4:.1f}" font-size="11" '
                           f'text-anchor="end" fill="{r.color}">{e(r.label)}</text>')
        else:
            out.append(f'<line class="rule" x1="{sx(r.at):.1f}" y1="{top}" x2="{sx(r.at):.1f}" '
                       f'y2="{top + ph}" stroke="{r.color}" stroke-dasharray="4 3"/>'
                       f'<text x="{sx(r.at) + 4:.1f}" y="{top + 14 + 14 * rules.index(r)}" '
                       f'font-size="11" fill="{r.color}">{e(r.label)}</text>')
    for k, s in enumerate(series):
        points = " ".join(f"{sx(a):.1f},{sy(b):.1f}" for a, b in zip(s.x.tolist(), s.y.tolist(),
                                                                     strict=True))
        out.append(f'<polyline class="series" data-label="{e(s.label)}" points="{points}" '
                   f'fill="none" stroke="{s.color}" stroke-width="{s.width}"/>')
        ly = top + 10 + 16 * k
        out.append(f'<line x1="{left + pw + 12}" y1="{ly}" x2="{left + pw + 32}" y2="{ly}" '
                   f'stroke="{s.color}" stroke-width="{s.width}"/><text x="{left + pw + 38}" '
                   f'y="{ly + 4}" font-size="11">{e(s.label[:24])}</text>')
    out.append("</svg>")
    return "".join(out)


def _resample(pnl: np.ndarray) -> np.ndarray:
    """Grid indices to draw: evenly spread, plus each line's worst point."""
    n = pnl.shape[1]
    if n <= MAX_POINTS:
        return np.arange(n)
    even = np.linspace(0, n - 1, MAX_POINTS).round().astype(np.intp)
    return np.unique(np.concatenate([even, pnl.argmin(axis=1)]))


def _ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2, 5 x 10^k steps) inside [low, high]."""
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)]


def _tick(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _headroom(value: float) -> str:
    return ">= 100" if value >= engine.HEADROOM_CAP else f"{value:.4f}"


_STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
thead th { background: #f3f3f3; }
table.sortable thead th { cursor: pointer; }
tr.breach td { background: #fde8e8; }
.status-breached, .status-failed { color: #b00000; }
.status-passed { color: #1a7f1a; }
figure { margin: 8px 0 24px; }
"""

_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (th) {
    th.addEventListener("click", function () {
      var col = Number(th.dataset.col), body = table.tBodies[0];
      var down = th.dataset.dir !== "desc";
      th.dataset.dir = down ? "desc" : "asc";
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col], y = b.cells[col];
        var u = x.dataset.v, v = y.dataset.v;
        if (u !== undefined && v !== undefined) {
          u = u === "" ? -Infinity : Number(u); v = v === "" ? -Infinity : Number(v);
          return down ? v - u : u - v;
        }
        return down ? y.textContent.localeCompare(x.textContent)
                    : x.textContent.localeCompare(y.textContent);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>""" + _STYLE.replace("{", "{{").replace("}", "}}") + """</style></head>
<body>
<h1>{title}</h1>
<h2 class="status-{status}">Status: {status}</h2>
<table id="header">{header}</table>
<h2>Limits</h2>
<table id="limits"><thead><tr><th>limit</th><th>value</th><th>source</th></tr></thead>
<tbody>{limits}</tbody></table>
<h2>Breaches ({breach_count})</h2>
{breaches}
<h2>Headroom</h2>
{gauge}
<h2>Charts</h2>
{charts}
<h2>Symbols (largest loss first; click a column to sort)</h2>
{symbols}
<script>{script}</script>
</body></html>
"""

_INDEX = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>stress-runner: recent runs</title>
<style>""" + _STYLE.replace("{", "{{").replace("}", "}}") + """</style></head>
<body><h1>stress-runner: the {count} most recent runs</h1>
<p><a href="/api/v1/stress/status">status</a> | <a href="/metrics">metrics</a> |
<a href="/api/v1/risk/status">halt</a></p>
{body}
</body></html>
"""
