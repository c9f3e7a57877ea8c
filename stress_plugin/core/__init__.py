"""The model and its validation: pure (no store, no network, no clock, no plugins); the one
I/O is reading the scenario or book file it is handed (bounded, in ``checks.read_text``).
It imports nothing of the project but the contract, ``stress_hookspecs``."""
