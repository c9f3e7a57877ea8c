"""The plugin manager: the hooks and their kinds come from the contract's specs, the built-ins
from the distribution's entry points, and an implementation the contract no longer accepts is
refused by name at registration."""

from __future__ import annotations

import inspect
import tomllib

import pytest

import stress_hookspecs
from helpers import ROOT
from stress_hookspecs import hookimpl
from stress_plugin.core.errors import PluginError
from stress_plugin.default_plugins import default_plugins
from stress_plugin.plugins import Plugins, build_manager, first_answer, hook_names


def manager():
    return build_manager(entry_points=False)[0]


def test_the_hooks_are_the_specs_of_the_contract():
    specs = {name for name, value in inspect.getmembers(stress_hookspecs, inspect.isfunction)
             if hasattr(value, "stress_plugin_spec")}
    assert hook_names(manager()) == sorted(specs)
    assert "stress_evaluate" in specs and len(specs) == 8


def test_firstresult_in_the_spec_decides_the_first_answer_hooks():
    pm = manager()
    first = {name for name in hook_names(pm) if first_answer(pm, name)}
    assert first == {"stress_book", "stress_limits", "stress_trading_state", "stress_clock"}
    with pytest.raises(TypeError, match="stress_alert is not a first-answer hook"):
        Plugins(pm)._answering("stress_alert")


def test_the_built_ins_are_the_entry_points_of_pyproject():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][
        "stress_plugin"]
    assert set(default_plugins()) == set(declared) == {"riskagent_v2", "pagerduty",
                                                       "embedded_host"}


def test_an_evaluator_written_for_the_old_contract_is_refused_by_name():
    class Outdated:  # 0.1's signature: the limits were passed twice
        @hookimpl
        def stress_evaluate(self, result, limits):
            return []

    plugins = Plugins(manager())
    with pytest.raises(PluginError, match="plugin house_rules") as caught:
        plugins.register(Outdated(), "house_rules")
    assert "limits" in str(caught.value)
    assert plugins.pm.get_plugin("house_rules") is None  # nothing half-registered


def test_a_sink_written_for_the_old_contract_is_refused_by_name():
    class Outdated:
        @hookimpl
        def stress_alert(self, report, delivery):
            return None

    with pytest.raises(PluginError, match="plugin old_sink"):
        Plugins(manager()).register(Outdated(), "old_sink")
