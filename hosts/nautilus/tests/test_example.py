"""The example backtest, end to end: halt and reduce on a real NautilusTrader engine."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from types import ModuleType

from conftest import ROOT
from stress_plugin.service.schedule import fire_times


def test_halt_denies_every_later_order_and_is_confirmed(example: ModuleType) -> None:
    summary = example.run("halt")
    serve_slots = fire_times(datetime(2024, 1, 17, 14, 0, tzinfo=UTC), 6)
    assert [s.split()[0] for s in summary.slots] == \
        [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in serve_slots]  # serve's slots, simulated
    assert summary.slots_run == 6
    # 4 contracts at 10:00:05 ET lose 2,890 (2.9%): pass; 10 at 11:00:05 lose 7,220: breach
    assert summary.slots[0].endswith("passed")
    assert summary.first_breach == "2024-01-17T16:00:05Z"
    assert summary.kill_switch_confirmed is True
    assert summary.trading_state == "HALTED"
    assert summary.trading_state_events >= 1  # TradingStateChanged seen on events.risk
    # buys at 14:30 .. 16:00 UTC filled (10); every one from 16:10 to 20:50 denied (29)
    assert summary.buys_filled == 10 and summary.sells_filled == 0
    assert summary.orders_denied == 29
    assert summary.first_denied_at == "2024-01-17T16:10:00Z"
    assert summary.denied_reasons == ["TradingState.HALTED"]
    # the sink got the breach page of the first breaching run, confirmed, by simulated time
    assert summary.pages[0]["timestamp"] == "2024-01-17T16:00:05Z"
    assert summary.pages[0]["run_id"].startswith("20240117T160005Z-")
    assert summary.pages[0]["kill_switch_confirmed"] is True
    assert len(summary.pages) == 5


def test_reduce_denies_buys_and_accepts_a_reducing_sell(example: ModuleType) -> None:
    summary = example.run("reduce")
    assert summary.first_breach == "2024-01-17T16:00:05Z"
    assert summary.kill_switch_confirmed is True
    assert summary.trading_state == "REDUCING"
    assert summary.orders_denied == 29
    assert summary.denied_reasons == ["BUY when TradingState.REDUCING and LONG MESH4.XCME"]
    assert summary.buys_filled == 10
    assert summary.sells_filled == 1  # the sell that reduced the long went through


def test_the_script_prints_its_summary() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "nautilus_backtest.py")],
                         capture_output=True, text=True, timeout=120, check=True)
    assert "mode halt: 6 slots run" in out.stdout
    assert "first breach at 2024-01-17T16:00:05Z, kill_switch_confirmed: true; risk engine " \
        "HALTED" in out.stdout
    assert "orders denied: 29" in out.stdout
    data = json.loads(subprocess.run(
        [sys.executable, str(ROOT / "examples" / "nautilus_backtest.py"), "--mode", "reduce",
         "--json"], capture_output=True, text=True, timeout=120, check=True).stdout)
    assert data["trading_state"] == "REDUCING" and data["sells_filled"] == 1
