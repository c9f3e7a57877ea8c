"""The example backtest is the fixture: a real BacktestEngine, venue, account and strategy."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No stray PD_*/STRESS_* variable from the machine changes what the actor does."""
    for name in list(os.environ):
        if name.startswith(("PD_", "STRESS_")) or name == "MARKET_HOURS_ONLY":
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def example() -> ModuleType:
    """``examples/nautilus_backtest.py`` imported as a module."""
    path = ROOT / "examples" / "nautilus_backtest.py"
    spec = importlib.util.spec_from_file_location("nautilus_backtest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["nautilus_backtest"] = module
    spec.loader.exec_module(module)
    return module
