"""The runtime's distribution name and version, written once (``pyproject.toml`` reads the
version from here); a leaf module, so any layer may say what it is."""

DISTRIBUTION = "stress-plugin"
__version__ = "0.2.0"
