"""Field checks shared by the scenario, book and limits loaders; errors name source and field."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import yaml

from stress_plugin.errors import StressError

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_MAGNITUDE = 1e12
"""Largest |quantity|, price, spread, multiplier, equity and VaR: with |delta| and |gamma| at
most ``MAX_GREEK`` no product of the model can overflow a float64 (model.md, finite numbers)."""
MAX_GREEK = 1e3


def parse_yaml(text: str) -> Any:
    """Safe YAML, with libyaml's C loader when present (several times faster)."""
    return yaml.load(text, Loader=_YAML_LOADER)


def number(
    error: type[StressError],
    source: str,
    field: str,
    value: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
) -> float:
    """``value`` as a finite float within the bounds, or ``error`` naming the field."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(source, field, value, "must be a number")
    result = float(value)
    if not math.isfinite(result):
        raise error(source, field, value, "must be a finite number")
    if gt is not None and not result > gt:
        raise error(source, field, value, f"must be > {gt:g}")
    if ge is not None and not result >= ge:
        raise error(source, field, value, f"must be >= {ge:g}")
    if le is not None and not result <= le:
        raise error(source, field, value, f"must be <= {le:g}")
    return result


def known_fields(
    error: type[StressError], source: str, data: Any, allowed: set[str], prefix: str = ""
) -> Mapping[str, Any]:
    """``data`` as a mapping with only ``allowed`` keys, or ``error`` naming the first stranger."""
    if not isinstance(data, Mapping):
        raise error(source, prefix.rstrip(".") or None, type(data).__name__, "must be a mapping")
    for key in data:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise error(source, f"{prefix}{key}", data[key], f"unknown field (known: {known})")
    return data


def required(error: type[StressError], source: str, data: Mapping[str, Any], field: str,
             prefix: str = "") -> Any:
    if field not in data:
        from stress_plugin.errors import NO_VALUE

        raise error(source, f"{prefix}{field}", NO_VALUE, "is required")
    return data[field]
