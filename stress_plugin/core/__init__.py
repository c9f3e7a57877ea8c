"""The model and its validation: pure (no store, no network, no clock, no plugins); the one
I/O is reading the scenario or book file it is handed (bounded, in ``checks.read_text``).
It imports nothing of the project but the contract, ``stress_hookspecs``."""

DEFAULT_SCENARIO = "flash_crash_lite"
"""What a run stresses when no scenario is named: the built-in pack's scenario."""
