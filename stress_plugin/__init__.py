"""Flash-Crash Lite: an intraday stress runner built as pluggy plugins.

Importing this package starts nothing and reads no environment; the names below load on first
use so that ``stress-runner run`` pays only for what it needs.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from stress_plugin.version import __version__

_EXPORTS = {
    "StressScenario": "stress_plugin.core.scenario",
    "StressRunner": "stress_plugin.runner",
    "HourlyStressScheduler": "stress_plugin.service.scheduler",
    "PagerDutyAlerter": "stress_plugin.default_plugins.pagerduty",
    "load_book": "stress_plugin.core.book",
    "load_settings": "stress_plugin.settings",
    "StressError": "stress_plugin.core.errors",
}

__all__ = [
    "HourlyStressScheduler",
    "PagerDutyAlerter",
    "StressError",
    "StressRunner",
    "StressScenario",
    "__version__",
    "load_book",
    "load_settings",
]

if TYPE_CHECKING:
    from stress_plugin.core.book import load_book
    from stress_plugin.core.errors import StressError
    from stress_plugin.core.scenario import StressScenario
    from stress_plugin.default_plugins.pagerduty import PagerDutyAlerter
    from stress_plugin.runner import StressRunner
    from stress_plugin.service.scheduler import HourlyStressScheduler
    from stress_plugin.settings import load_settings


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'stress_plugin' has no attribute {name!r}")
