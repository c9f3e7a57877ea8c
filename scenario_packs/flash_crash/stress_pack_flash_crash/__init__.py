"""The flash_crash scenario pack: one YAML file, offered through one hook."""

from pathlib import Path

from stress_hookspecs import hookimpl

SCENARIO_FILE = Path(__file__).with_name("flash_crash.yaml")


@hookimpl
def stress_scenarios() -> list[Path]:
    """The flash_crash_lite scenario of the runbook."""
    return [SCENARIO_FILE]
