"""The history pack: one YAML file per historical flash event, offered through one hook.

Every number in a file comes from the event's cited source or is marked ``assumed`` in its
description with the reason; the pack's README tabulates them.
"""

from pathlib import Path

from stress_hookspecs import hookimpl

SCENARIO_DIR = Path(__file__).parent
SCENARIO_FILES = tuple(sorted(SCENARIO_DIR.glob("*.yaml")))
"""The event files, by name (which starts with the event's name, so this is stable)."""


@hookimpl
def stress_scenarios() -> list[Path]:
    """Every historical event of the pack."""
    return list(SCENARIO_FILES)
