"""The history pack: every scenario against the table in its README (the one place its numbers
are written for people), each run on a multi-asset book, and the pack found after a real pip
install. Expected figures are worked from the table with docs/model.md's formulas, not from the
YAML.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

import stress_pack_history
from helpers import ROOT, cli, pip_install_target
from stress_plugin import StressScenario
from stress_plugin.plugins import Plugins
from stress_plugin.runner import StressRunner

PACK = ROOT / "scenario_packs" / "history"
EQUITY = 5_000_000.0
LIMIT = 0.05  # the default max_drawdown_pct; no VaR and no gamma in the book below


def readme_table() -> dict[str, dict]:
    """The README's events table, parsed: one dict per scenario."""
    text = (PACK / "README.md").read_text(encoding="utf-8")
    section = text.split("## The events", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        name, date, shocks, spreads, ramp, hold, recovery, window, source = cells
        rows[name.strip("`")] = {
            "event_date": date,
            "symbol_shocks": _groups(shocks, r"([+-]\d+(?:\.\d+)?)%", scale=0.01),
            "spread_mults": {} if spreads == "-" else _groups(spreads, r"(\d+(?:\.\d+)?)x"),
            "ramp_sec": float(ramp),
            "hold_sec": float(hold),
            "recovery_type": recovery,
            "duration_sec": float(window),
            "source": source,
        }
    return rows


def _groups(cell: str, value: str, scale: float = 1.0) -> dict[str, float]:
    """'`A*` `B*` -5%; `C*` +1%' -> {'A*': -0.05, 'B*': -0.05, 'C*': 0.01}."""
    out = {}
    for group in cell.split("; "):
        number = re.search(value + "$", group)
        assert number, f"cannot read {group!r}"
        for pattern in re.findall(r"`([^`]+)`", group):
            out[pattern] = float(number.group(1)) * scale
    return out


TABLE = readme_table()
SCENARIOS = {s.name: s for s in map(StressScenario, stress_pack_history.SCENARIO_FILES)}

BOOK = {"equity": EQUITY, "positions": [
    {"symbol": s, "quantity": q, "price": p, "spread": h, "multiplier": m}
    for s, q, p, h, m in [
        ("ESM6", 2, 6000.0, 0.25, 50), ("MES", 10, 6000.0, 0.25, 5),
        ("NQ", 1, 21000.0, 0.5, 20), ("MNQ", 5, 21000.0, 0.5, 2),
        ("YM", 1, 44000.0, 1.0, 5), ("MYM", 5, 44000.0, 1.0, 0.5),
        ("RTY", 2, 2400.0, 0.1, 50), ("M2K", 10, 2400.0, 0.1, 5),
        ("ZN", -5, 111.0, 1 / 64, 1000), ("ZF", 5, 108.0, 1 / 128, 1000),
        ("ZB", 2, 118.0, 1 / 32, 1000), ("TN", 2, 114.0, 1 / 64, 1000),
        ("6B", 3, 1.27, 0.0001, 62500), ("M6B", 10, 1.27, 0.0001, 6250),
        ("6J", -4, 0.0067, 0.0000005, 12_500_000), ("6A", 5, 0.65, 0.00005, 100_000),
        ("M6A", 10, 0.65, 0.0001, 10_000),
        ("OMXS30", 10, 2500.0, 0.25, 100), ("OMXC25", 5, 1900.0, 0.5, 100),
        ("OMXH25", 5, 5000.0, 0.5, 10),
        ("NKD", 2, 40000.0, 5.0, 5), ("NIY", 2, 40000.0, 5.0, 5),
        ("MCL", 10, 70.0, 0.02, 100),  # moved by no event
    ]]}


def table_value(entries: dict[str, float], symbol: str, default: float) -> float:
    """The table's value for a symbol: exact key, longest pattern, first in the table."""
    if symbol in entries:
        return entries[symbol]
    matches = [(len(k), -i, v) for i, (k, v) in enumerate(entries.items())
               if re.fullmatch(re.escape(k).replace(r"\*", ".*").replace(r"\?", "."), symbol)]
    return max(matches)[2] if matches else default


def test_the_table_and_the_pack_list_the_same_events():
    assert set(TABLE) == set(SCENARIOS)
    assert len(TABLE) == 8


@pytest.mark.parametrize("name", sorted(TABLE))
def test_each_scenario_has_the_tables_numbers(name):
    row, s = TABLE[name], SCENARIOS[name]
    assert s.event_date == row["event_date"]
    assert s.price_shock_pct == 0  # only the event's instruments move
    assert s.symbol_shocks == pytest.approx(row["symbol_shocks"], rel=1e-12)
    assert list(s.symbol_shocks) == list(row["symbol_shocks"])
    assert s.spread_mults == pytest.approx(row["spread_mults"], rel=1e-12)
    assert s.spread_mult == 1.0
    assert (s.ramp_sec, s.hold_sec, s.duration_sec, s.recovery_type) == (
        row["ramp_sec"], row["hold_sec"], row["duration_sec"], row["recovery_type"])
    assert s.ramp_sec > 0  # so g(0) = 0: the expected figures below rely on it
    assert s.thresholds.to_dict() == {"max_drawdown_pct": 0.05, "max_var_multiplier": 2.0,
                                      "max_position_delta": 0.10}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_each_number_is_explained_and_each_file_names_its_source(name):
    s = SCENARIOS[name]
    assert len(s.source) > 40 and len(s.description) > 200
    assert "Assumed" in s.description or "assumed" in s.description
    for shock in set(TABLE[name]["symbol_shocks"].values()):
        shown = f"{shock * 100:+.2f}".rstrip("0").rstrip(".") + "%"
        assert shown in s.description, f"{name}: {shown} is not explained in the description"


@pytest.fixture
def history_runner(make_plugins: Callable[..., Plugins]) -> StressRunner:
    """The built-ins and this pack only (conftest's rule: nothing else that is installed)."""
    return StressRunner(plugins=make_plugins(history=stress_pack_history))


@pytest.mark.parametrize("name", sorted(TABLE))
def test_each_scenario_on_a_multi_asset_book_gives_the_hand_worked_figures(
        history_runner: StressRunner, name: str):
    row = TABLE[name]
    result = history_runner.run_once(book=BOOK, scenario=name)
    assert result.symbols_tested == len(BOOK["positions"])

    # linear futures: pnl(g) = a g - c0 (1 + (k - 1) g), lowest at g = 1 or at g = 0
    a_sum = spread_sum = c0_sum = 0.0
    expected_breached = set()
    for p in BOOK["positions"]:
        s = table_value(row["symbol_shocks"], p["symbol"], 0.0)
        k = table_value(row["spread_mults"], p["symbol"], 1.0)
        a = p["quantity"] * p["multiplier"] * p["price"] * s
        c0 = 0.5 * p["spread"] * abs(p["quantity"]) * p["multiplier"]
        worst = min(a - c0 * k, -c0)
        got = result.symbols[p["symbol"]]
        assert got.worst_pnl == pytest.approx(worst, rel=1e-12, abs=1e-9), p["symbol"]
        assert got.drawdown_pct == pytest.approx(-worst / EQUITY, rel=1e-12, abs=1e-15)
        assert got.headroom == pytest.approx(_headroom(a, c0 * k), rel=1e-9)
        if -worst > LIMIT * EQUITY:
            expected_breached.add(p["symbol"])
        a_sum, spread_sum, c0_sum = a_sum + a, spread_sum + c0 * k, c0_sum + c0
    book_worst = min(a_sum - spread_sum, -c0_sum)
    assert result.portfolio.worst_pnl == pytest.approx(book_worst, rel=1e-12)
    assert result.portfolio.headroom == pytest.approx(_headroom(a_sum, spread_sum), rel=1e-9)
    if -book_worst > LIMIT * EQUITY:
        expected_breached.add("PORTFOLIO")
    assert set(result.breached_symbols) == expected_breached
    moved = {p["symbol"] for p in BOOK["positions"]
             if table_value(row["symbol_shocks"], p["symbol"], 0.0)}
    assert moved and "MCL" not in moved  # every event moves something in this book


def _headroom(a: float, spread_at_trough: float) -> float:
    """Smallest lam with a loss at the trough above the limit: lam (-a) + spread > 5% E."""
    room = LIMIT * EQUITY - spread_at_trough
    if room < 0:
        return 0.0
    return min(100.0, room / -a) if a < 0 else 100.0


def test_some_events_breach_this_book_and_others_do_not(history_runner: StressRunner):
    outcomes = {name: bool(history_runner.run_once(book=BOOK, scenario=name).breach_count)
                for name in sorted(TABLE)}
    assert any(outcomes.values()) and not all(outcomes.values()), outcomes


def test_pack_is_found_after_a_real_pip_install(tmp_path: Path):
    site = tmp_path / "site"
    pip_install_target(PACK, site)
    installed = site / "stress_pack_history"
    assert sorted(p.name for p in installed.glob("*.yaml")) == sorted(
        f"{n}.yaml" for n in TABLE)  # the YAML files ship inside the wheel
    env = {"PYTHONPATH": str(site), "STRESS_DB": str(tmp_path / "s.db")}
    out = cli("scenarios", "--json", env=env)
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    for name in TABLE:
        assert listed[name]["origin"] == str(installed / f"{name}.yaml")
        assert listed[name]["event_date"] == TABLE[name]["event_date"]
    # the demo book holds MES, MNQ and M2K: the 2020 limit-down moves them
    run = cli("run", "--scenario", "covid_limit_down_2020_03", "--json", env=env)
    assert run.returncode in (0, 1), run.stderr
    result = json.loads(run.stdout)
    assert result["scenario"] == "covid_limit_down_2020_03"
    assert result["symbols"]["MES"]["worst_pnl"] == pytest.approx(
        10 * 5 * 6000 * -0.07 - 0.5 * 0.25 * 10 * 5)
    assert result["symbols"]["MCL"]["worst_pnl"] == pytest.approx(-0.5 * 0.02 * 10 * 100)
