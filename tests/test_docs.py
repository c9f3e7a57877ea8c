"""The docs cannot drift from the contract or from CI."""

from __future__ import annotations

import inspect
import re

import stress_hookspecs
from conftest import ROOT
from stress_plugin.plugins import HOOK_NAMES

README = (ROOT / "README.md").read_text()


def test_every_hook_and_argument_is_documented():
    specs = {name: getattr(stress_hookspecs, name) for name in HOOK_NAMES}
    assert set(specs) == {n for n in dir(stress_hookspecs) if n.startswith("stress_")}
    for name, spec in specs.items():
        args = ", ".join(inspect.signature(spec).parameters)
        assert f"`{name}({args})`" in README, f"README lacks {name}({args})"
        assert spec.__doc__ and "Called" in spec.__doc__, f"{name} docstring lacks when"


def test_ci_runs_the_readme_commands_verbatim():
    block = re.search(r"```bash\n(# 1\..*?)```", README, re.S).group(1)
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text()
    for command in commands:
        assert command in ci.splitlines()


def test_runbook_env_vars_are_documented():
    for name in ("PD_ROUTING_KEY", "STRESS_ENABLED", "MARKET_HOURS_ONLY", "STRESS_MAX_SYMBOLS",
                 "STRESS_MAX_RUNTIME_MS", "PD_EVENTS_URL", "STRESS_API_TOKEN", "STRESS_DB",
                 "STRESS_DISABLE_PLUGINS", "STRESS_SCENARIOS"):
        assert f"`{name}`" in README
