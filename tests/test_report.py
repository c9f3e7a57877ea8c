"""The run report: paths and curves from docs/model.md by hand, the HTML and SVG it makes, the
service's pages, and the file opened in a real headless Chromium with no network."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import Api, book, cli, position, require
from stress_plugin import report
from stress_plugin.core import engine
from stress_plugin.service.service import StressService
from stress_plugin.settings import load_settings
from stress_plugin.store import Store

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")


def coefficients(*rows: tuple[float, float, float, float]) -> engine.Coefficients:
    return engine.Coefficients(np.array(list(zip(*rows, strict=True)), dtype=np.float64))


# -- the engine's paths and curves ----------------------------------------------------------------

def test_pnl_path_of_the_worked_example():
    """docs/model.md: 5 MES long at 6,000, -3%, spreads 3x: -4,509.375 at the shock, then linear."""
    coef = engine.coefficients(*(np.array([v]) for v in (5, 6000, 0.25, 5, 1.0, 0.0, -0.03)),
                               3.0)
    profile = engine.recovery_profile("linear", 60)
    path = engine.pnl_paths(coef, profile)[0]
    assert path[0] == pytest.approx(-4509.375)
    # t = 30 s: g = 0.5, dP = -90: 25 * -90 - 0.5 * 0.25 * (1 + 2 * 0.5) * 25 = -2256.25
    assert path[30] == pytest.approx(-2256.25)
    assert path[60] == pytest.approx(-0.5 * 0.25 * 25)
    # twice as deep: 25 * -360 - 9.375 at the shock
    assert engine.pnl_paths(coef, profile, scale=2.0)[0, 0] == pytest.approx(-9009.375)


def test_worst_pnl_by_scale_matches_the_headroom():
    """The loss curve crosses the 5% drawdown limit (5,000) at the worked headroom 1.109028."""
    coef = engine.coefficients(*(np.array([v]) for v in (5, 6000, 0.25, 5, 1.0, 0.0, -0.03)),
                               3.0)
    profile = engine.recovery_profile("linear", 60)
    scales = np.array([0.0, 1.0, 4990.625 / 4500])
    worst = engine.worst_pnl_by_scale(coef, profile, scales)[0]
    assert worst == pytest.approx([-9.375, -4509.375, -5000.0])


def test_worst_point_inside_the_window_for_a_long_straddle():
    """docs/model.md (more worked examples): long 10 straddles (d 0.05, c 0.003): worst -50.707
    at t = 54 s (linear)."""
    coef = engine.coefficients(*(np.array([v]) for v in (10, 5987.5, 1.0, 5, 0.05, 0.003,
                                                         -0.03)), 3.0)
    path = engine.pnl_paths(coef, engine.recovery_profile("linear", 60))[0]
    assert int(path.argmin()) == 54 and path.min() == pytest.approx(-50.707, abs=1e-3)
    curve = engine.worst_pnl_by_scale(coef, engine.recovery_profile("linear", 60),
                                      np.array([1.0]))
    assert curve[0, 0] == pytest.approx(path.min())


# -- the report -----------------------------------------------------------------------------------

def twelve_symbol_book(tmp_path: Path) -> Path:
    """Twelve longs of growing size; the largest (VaR 900) breaches its 2x VaR limit, the
    portfolio does not breach."""
    positions = [position(f"S{i:02d}", quantity=i, price=1000.0, spread=0.5, multiplier=5,
                          var=900.0 if i == 12 else 2000.0) for i in range(1, 13)]
    path = tmp_path / "book.yaml"
    path.write_text(yaml.safe_dump(book(*positions, equity=1_000_000, var=20_000)))
    return path


def stored(tmp_path: Path) -> tuple[dict, engine.PathInputs]:
    out = cli("run", "--book", str(twelve_symbol_book(tmp_path)), "--json",
              env={"STRESS_DB": str(tmp_path / "s.db")})
    assert out.returncode == 1, out.stderr
    run_id = json.loads(out.stdout)["run_id"]
    with Store(tmp_path / "s.db") as store:
        result, paths = report.stored_report(store, run_id)
    assert paths is not None
    return result, paths


def test_stored_paths_reproduce_the_run(tmp_path: Path):
    result, paths = stored(tmp_path)
    assert paths.equity == 1_000_000 and paths.book_var == 20_000 and paths.step_sec == 1
    pnl = engine.pnl_paths(paths.coef.with_total(), paths.profile)
    names = list(result["symbols"])
    for i, name in enumerate(names):
        assert pnl[i].min() == pytest.approx(result["symbols"][name]["worst_pnl"])
    assert pnl[-1].min() == pytest.approx(result["portfolio"]["worst_pnl"])
    # S12: 12 * 5 * (1000 * -0.03) - 0.5 * 0.5 * 3 * 60 = -1800 - 45
    assert result["symbols"]["S12"]["worst_pnl"] == pytest.approx(-1845.0)


def test_report_paths_follow_a_ramped_held_scenario_with_per_symbol_spreads(tmp_path: Path):
    """docs/model.md's shapes: 20 s down to the trough, 10 s held, 30 s linear recovery on a 5 s
    grid; ES* shocked -5% with ESZ6's spreads 4x, NQ* spreads 3x, the rest -2% and 2x. The
    report's lines are checked against pnl_i(t) worked by hand from the formulas."""
    scenario = tmp_path / "ramped.yaml"
    scenario.write_text(yaml.safe_dump({
        "scenario_name": "ramped", "price_shock_pct": -0.02, "spread_mult": 2,
        "symbol_shocks": {"ES*": -0.05}, "spread_mults": {"ESZ6": 4, "NQ*": 3},
        "duration_sec": 60, "step_sec": 5, "ramp_sec": 20, "hold_sec": 10}))
    path = tmp_path / "book.yaml"
    path.write_text(yaml.safe_dump(book(
        position("ESZ6", quantity=2, price=5000.0, spread=0.5, multiplier=50),
        position("NQZ6", quantity=-1, price=18000.0, spread=1.0, multiplier=20),
        position("CLF7", quantity=3, price=70.0, spread=0.02, multiplier=1000),
        equity=1_000_000)))
    page = tmp_path / "ramped.html"
    env = {"STRESS_DB": str(tmp_path / "s.db"), "STRESS_SCENARIOS": str(scenario)}
    out = cli("run", "--scenario", "ramped", "--book", str(path), "--json", "--report",
              str(page), env=env)
    assert out.returncode == 0, out.stderr
    run = json.loads(out.stdout)
    with Store(tmp_path / "s.db") as store:
        result, paths = report.stored_report(store, run["run_id"])
    assert paths is not None and paths.step_sec == 5
    # g(t): t / 20 on the ramp, 1 from 20 s to 30 s, then 1 - (t - 30) / 30
    g = {0: 0.0, 10: 0.5, 20: 1.0, 25: 1.0, 30: 1.0, 45: 0.5, 60: 0.0}
    # pnl_i = q m dP - 0.5 h (1 + (k_i - 1) g) |q| m with dP = P s_i g:
    # ESZ6: 100 * (5000 * -0.05 g) - 0.5 * 0.5 * (1 + 3 g) * 100 = -25 - 25,075 g
    # NQZ6: -20 * (18000 * -0.02 g) - 0.5 * 1.0 * (1 + 2 g) * 20 = -10 + 7,180 g
    # CLF7: 3000 * (70 * -0.02 g) - 0.5 * 0.02 * (1 + g) * 3000 = -30 - 4,230 g
    model = {"ESZ6": lambda g: -25 - 25_075 * g, "NQZ6": lambda g: -10 + 7_180 * g,
             "CLF7": lambda g: -30 - 4_230 * g}
    model["PORTFOLIO"] = lambda g: -65 - 22_125 * g  # the sum of the three
    lines = {s.label: s for s in report.pnl_series(result, paths)}
    assert list(lines) == ["PORTFOLIO", "ESZ6", "CLF7", "NQZ6"]  # the largest losses first
    for label, pnl in model.items():
        points = dict(zip(lines[label].x.tolist(), lines[label].y.tolist(), strict=True))
        assert len(points) == 13  # every point of the 5 s grid
        for t, g_t in g.items():
            assert points[t] == pytest.approx(pnl(g_t), abs=1e-9), (label, t)
    assert run["symbols"]["ESZ6"]["worst_pnl"] == pytest.approx(-25_100.0)
    assert run["portfolio"]["worst_pnl"] == pytest.approx(-22_190.0)  # at the trough
    # the headroom curve: at scale 0 only the spreads cost, worst at the trough where each
    # is k_i times wide (65 + 75 + 20 + 30); at 1x the run's own worst
    worst = engine.worst_pnl_by_scale(paths.coef.with_total(), paths.profile,
                                      np.array([0.0, 1.0]))[-1]
    assert worst == pytest.approx([-190.0, -22_190.0])
    svg = report.pnl_chart(result, paths)
    assert "trough at 20 s" in svg and "recovery from 30 s" in svg
    assert "seconds since the scenario starts" in svg
    assert 'id="pnl-chart"' in page.read_text()


def test_run_paths_is_the_fifth_migration_after_mains_outbox(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch):
    """A store at main's version 4 (runs with status, the outbox) gains run_paths as 5: its
    runs and their pending deliveries are kept, and an old run's report says it has no paths."""
    import stress_plugin.store.base as store_module

    old = stored(tmp_path)[0]  # a run with paths, to copy as one stored before version 5
    path = tmp_path / "v4.db"
    monkeypatch.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:4])
    with Store(path) as store:
        assert store.schema_version == 4
        from stress_hookspecs import StressResult

        result = StressResult.from_dict({**old, "run_id": "old-1"})
        store.save_run(result, trigger="cli", prices=[1000.0] * 12, sinks=["pagerduty"])
    monkeypatch.undo()
    with Store(path) as store:
        assert store.schema_version == len(store_module.MIGRATIONS) >= 5
        assert store_module.MIGRATIONS[3] is store_module._one_outbox_for_every_sink
        assert "CREATE TABLE run_paths" in store_module.MIGRATIONS[4]
        assert [d.run_id for d in store.deliveries_pending()] == ["old-1"]
        result, paths = report.stored_report(store, "old-1")
    assert paths is None and result["symbols"]["S12"]["worst_pnl"] == pytest.approx(-1845.0)
    page = report.render_html(result, paths)
    assert "No P&amp;L paths are stored for this run" in page


def test_pnl_chart_draws_the_portfolio_and_the_ten_largest_losses(tmp_path: Path):
    result, paths = stored(tmp_path)
    svg = report.pnl_chart(result, paths)
    assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    labels = re.findall(r'<polyline class="series" data-label="([^"]+)" points="([^"]+)"', svg)
    assert [label for label, _ in labels] == ["PORTFOLIO", *(f"S{i:02d}" for i in
                                                             range(12, 2, -1))]
    assert all(len(points.split()) == 61 for _, points in labels)  # the whole grid


def test_headroom_chart_marks_the_limits_and_the_headroom(tmp_path: Path):
    result, paths = stored(tmp_path)
    svg = report.headroom_chart(result, paths)
    assert "drawdown limit 5.00% of equity" in svg and "VaR limit 2x book VaR" in svg
    assert f"portfolio headroom {result['portfolio']['headroom']:.4g}" in svg
    # the run's headroom is a symbol's (S12 breaches), below the portfolio's
    assert result["headroom"] < 1 < result["portfolio"]["headroom"]
    assert f"run headroom {result['headroom']:.4g} (S12)" in svg


def test_html_report_is_self_contained_with_header_breaches_and_sorted_table(tmp_path: Path):
    result, paths = stored(tmp_path)
    page = report.render_html(result, paths)
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", page)  # nothing to fetch
    assert "<link" not in page and " src=" not in page
    assert "<th>status</th><td>breached</td>" in page
    assert "<th>scenario</th><td>flash_crash_lite</td>" in page
    assert page.count('id="pnl-chart"') == page.count('id="headroom-chart"') == 1
    breaches = re.search(r'<table id="breaches">.*?</table>', page, re.S).group(0)
    assert "<td>S12</td><td>max_var_multiplier</td>" in breaches
    rows = re.findall(r"<tr(?: class=breach)?><td>([^<]+)</td>", re.search(
        r'<table id="symbols".*?</table>', page, re.S).group(0))
    assert rows[:3] == ["PORTFOLIO", "S12", "S11"] and len(rows) == 13
    assert re.search(r"<tr class=breach><td>S12</td>", page)


def test_symbols_are_escaped(tmp_path: Path):
    result, paths = stored(tmp_path)
    result["symbols"]["<b>X&Y</b>"] = result["symbols"].pop("S12")
    page = report.render_html(result, paths)
    assert "<b>X&Y</b>" not in page and "&lt;b&gt;X&amp;Y&lt;/b&gt;" in page


def test_cli_writes_the_report_and_names_an_unwritable_path(tmp_path: Path):
    target = tmp_path / "run.html"
    out = cli("run", "--book", str(twelve_symbol_book(tmp_path)), "--report", str(target),
              env={"STRESS_DB": str(tmp_path / "s.db")})
    assert out.returncode == 1, out.stderr
    assert "BREACH on" in out.stdout and target.read_text().startswith("<!DOCTYPE html>")
    out = cli("run", "--report", str(tmp_path / "no" / "such" / "dir.html"),
              env={"STRESS_DB": str(tmp_path / "s.db")})
    assert out.returncode == 2
    assert "--report: cannot write: No such file or directory" in out.stderr


# -- the service ----------------------------------------------------------------------------------

@pytest.mark.stores
def test_service_serves_index_report_and_charts(make_plugins, tmp_path: Path):
    settings = load_settings()
    api = Api(StressService(settings, book_path=twelve_symbol_book(tmp_path),
                            plugins=make_plugins(), store=Store(settings.db_path)))
    assert "No runs stored yet" in api("GET", "/").text
    run_id = api("POST", "/api/v1/stress/run").json()["run_id"]
    index = api("GET", "/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert f'href="/api/v1/stress/results/{run_id}/report"' in index.text
    page = api("GET", f"/api/v1/stress/results/{run_id}/report")
    assert page.status_code == 200 and 'id="pnl-chart"' in page.text
    for chart, text in (("pnl.svg", "P&amp;L path"), ("headroom.svg", "against shock scale")):
        svg = api("GET", f"/api/v1/stress/results/{run_id}/{chart}")
        assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
        assert text in svg.text
    missing = api("GET", "/api/v1/stress/results/nope/report")
    assert missing.status_code == 404 and "no stored run" in missing.json()["detail"]["message"]
    assert api("GET", "/api/v1/stress/results/nope/pnl.svg").status_code == 404


# -- in a real browser ----------------------------------------------------------------------------

def chromium(tmp_path: Path, page: Path, *extra: str) -> tuple[str, list[str]]:
    """The DOM after load and the URLs the page itself requested (Chromium's own update and
    account requests carry no page initiator and are left out)."""
    binary = require("chromium", "chromium")
    netlog = tmp_path / f"{page.stem}.netlog.json"
    out = subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / ('profile-' + page.stem)}",
         f"--log-net-log={netlog}", *extra, "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-2000:]
    log = json.loads(netlog.read_text())
    types = {code: name for name, code in log["constants"]["logEventTypes"].items()}
    starts = [e.get("params", {}) for e in log["events"]
              if types[e["type"]] == "URL_REQUEST_START_JOB"]
    requested = [p["url"] for p in starts if "url" in p and p.get("initiator") != "not an origin"]
    return out.stdout, requested


def test_netlog_check_sees_a_page_that_fetches(tmp_path: Path):
    """The control: a page with an image and a fetch is caught by the same check."""
    page = tmp_path / "fetches.html"
    page.write_text('<!DOCTYPE html><img src="http://127.0.0.1:9/x.png">'
                    '<script>fetch("http://127.0.0.1:9/y")</script>')
    _, requested = chromium(tmp_path, page)
    assert set(requested) == {"http://127.0.0.1:9/x.png", "http://127.0.0.1:9/y"}


def test_report_renders_in_chromium_with_charts_and_no_network(tmp_path: Path):
    page = tmp_path / "report.html"
    out = cli("run", "--book", str(twelve_symbol_book(tmp_path)), "--report", str(page),
              env={"STRESS_DB": str(tmp_path / "s.db")})
    assert out.returncode == 1, out.stderr
    dom, requested = chromium(tmp_path, page)
    assert requested == []
    assert dom.count('<svg class="chart"') == 2 and '<svg class="gauge"' in dom
    assert dom.count('<polyline class="series"') == 12  # 11 paths + 1 loss curve
    assert re.search(r'<table id="breaches">.*<td>S12</td><td>max_var_multiplier</td>', dom, re.S)

    shot = tmp_path / "report.png"
    chromium(tmp_path, page, "--window-size=1000,2000", f"--screenshot={shot}")
    colours = png_colours(shot)
    for hex_colour in report.PALETTE[:10]:  # every symbol's line is on screen
        rgb = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
        assert colours.get(rgb, 0) >= 20, hex_colour


def png_colours(path: Path) -> dict[tuple[int, int, int], int]:
    """Pixel counts by colour of an 8-bit RGB/RGBA PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and colour_type in (2, 6)
            channels = 3 if colour_type == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) *
                                                          (stride + 1)])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up, corner = previous[x], previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 255
            elif kind == 2:
                line[x] = (line[x] + up) & 255
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[x] = (line[x] + (left if pa <= pb and pa <= pc else up if pb <= pc
                                      else corner)) & 255
        rows.append(bytes(line))
        previous = line
    counts: dict[tuple[int, int, int], int] = {}
    for line in rows:
        for x in range(0, stride, channels):
            rgb = (line[x], line[x + 1], line[x + 2])
            counts[rgb] = counts.get(rgb, 0) + 1
    return counts


def test_a_failed_run_has_a_report_with_its_error(tmp_path: Path):
    bad = tmp_path / "book.yaml"
    bad.write_text(yaml.safe_dump(book(position(price=-1.0))))
    target = tmp_path / "failed.html"
    out = cli("run", "--book", str(bad), "--report", str(target),
              env={"STRESS_DB": str(tmp_path / "s.db")})
    assert out.returncode == 2
    page = target.read_text()
    assert "<th>status</th><td>failed</td>" in page
    assert "positions[0] (MES).price: must be a finite number &gt; 0" in page
    assert "No P&amp;L paths are stored for this run" in page
    with Store(tmp_path / "s.db") as store:
        assert "failed" in report.render_index(store.recent_runs())


def test_report_header_shows_book_source_and_limit_sources(tmp_path: Path):
    result, paths = stored(tmp_path)
    page = report.render_html(result, paths)
    assert f"<th>book source</th><td>{tmp_path / 'book.yaml'}</td>" in page
    assert "<tr><td>max_drawdown_pct</td><td>0.05</td><td>scenario</td></tr>" in page


def test_symbol_table_sorts_by_a_clicked_column_in_chromium(tmp_path: Path):
    """The report's own script, in the browser: a click on "headroom" sorts the table by it
    (largest first), a second click reverses it. The test appends only the clicks."""
    result, paths = stored(tmp_path)
    clicks = """<script>
    var th = document.querySelector('#symbols th[data-col="6"]');
    function order() {
      return Array.prototype.map.call(document.querySelectorAll('#symbols tbody tr'),
        function (tr) { return tr.cells[0].textContent; }).join(',');
    }
    th.click(); document.body.dataset.first = order();
    th.click(); document.body.dataset.second = order();
    </script></body>"""
    page = tmp_path / "sorted.html"
    page.write_text(report.render_html(result, paths).replace("</body>", clicks))
    dom, requested = chromium(tmp_path, page)
    assert requested == []
    first = re.search(r'data-first="([^"]+)"', dom).group(1).split(",")
    second = re.search(r'data-second="([^"]+)"', dom).group(1).split(",")
    by_headroom = sorted([*result["symbols"], "PORTFOLIO"], key=lambda s: (
        result["portfolio"] if s == "PORTFOLIO" else result["symbols"][s])["headroom"])
    assert first == by_headroom[::-1] and second == by_headroom
