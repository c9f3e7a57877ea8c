"""The plugins this distribution ships: the limit evaluator, the embedded host (with its demo
book) and PagerDuty. They get no capability a third-party plugin could not have: each is an
entry point in ``pyproject.toml`` like any other."""

from __future__ import annotations

from stress_hookspecs import PROJECT_NAME
from stress_plugin.version import DISTRIBUTION


def default_plugins() -> dict[str, object]:
    """The built-in plugins by entry-point name, loaded from this distribution's own entry
    points, so ``pyproject.toml`` is the one list the manager, the tests and the benchmarks use.
    importlib.metadata is imported here, not with the package: the embedded host is loaded on
    every ``stress-runner run``, which reads entry points without it."""
    from importlib.metadata import distribution

    return {ep.name: ep.load() for ep in distribution(DISTRIBUTION).entry_points
            if ep.group == PROJECT_NAME}
