"""Flash-Crash Lite: an intraday stress runner built as pluggy plugins.

Importing this package starts nothing and reads no environment; the names below load on first
use so that ``stress-runner run`` pays only for what it needs.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "StressScenario": "stress_plugin.scenario",
    "StressRunner": "stress_plugin.runner",
    "HourlyStressScheduler": "stress_plugin.scheduler",
    "PagerDutyAlerter": "stress_plugin.plugins.pagerduty",
    "load_book": "stress_plugin.book",
    "load_settings": "stress_plugin.settings",
    "StressError": "stress_plugin.errors",
}

__all__ = [
    "HourlyStressScheduler",
    "PagerDutyAlerter",
    "StressError",
    "StressRunner",
    "StressScenario",
    "load_book",
    "load_settings",
]

if TYPE_CHECKING:
    from stress_plugin.book import load_book
    from stress_plugin.errors import StressError
    from stress_plugin.plugins.pagerduty import PagerDutyAlerter
    from stress_plugin.runner import StressRunner
    from stress_plugin.scenario import StressScenario
    from stress_plugin.scheduler import HourlyStressScheduler
    from stress_plugin.settings import load_settings


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'stress_plugin' has no attribute {name!r}")
