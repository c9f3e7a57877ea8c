"""The limits in force: one function decides them, field by field, for runs and the API alike.

Precedence per field: live limits (set through the API) over the host's ``stress_limits`` over
the scenario's thresholds over the defaults. Each field carries its source, so an operator can
see why a run used the number it used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stress_hookspecs import LIMIT_NAMES, LimitName, Limits
from stress_plugin.core.checks import MAX_MAGNITUDE, known_fields, number
from stress_plugin.core.errors import StressError

LIMIT_MAXIMA: dict[LimitName, float] = {
    name: 1.0 if name == "max_drawdown_pct" else MAX_MAGNITUDE for name in LIMIT_NAMES}
"""The largest value each limit may take (every limit is > 0): a drawdown is a share of the
equity; the others are bounded so no product of the model overflows."""
LIVE, DEFAULT, SCENARIO = "live", "default", "scenario"


def check_limits(data: Any, source: str, error: type[StressError]) -> dict[str, float]:
    """Some or all of the three limits, validated: known names, numbers > 0 and at most
    ``LIMIT_MAXIMA``; ``error`` names the field and value."""
    if isinstance(data, Limits):
        data = data.to_dict()
    data = known_fields(error, source, data, set(LIMIT_NAMES))
    return {name: number(error, source, name, data[name], gt=0, le=LIMIT_MAXIMA[name])
            for name in LIMIT_NAMES if name in data}


def limits_in_force(*, scenario: Mapping[str, float], host: tuple[str, Mapping[str, float]] | None,
                    live: Mapping[str, float] | None) -> tuple[Limits, dict[str, str]]:
    """The limits a run uses now and each field's source. Inputs are checked already:
    ``scenario`` the thresholds its file sets, ``host`` (plugin, fields) from ``stress_limits``,
    ``live`` the fields set through the API."""
    values = Limits().to_dict()
    sources = dict.fromkeys(values, DEFAULT)
    layers = [(SCENARIO, scenario)]
    if host is not None:
        layers.append((f"plugin {host[0]}", host[1]))
    layers.append((LIVE, live or {}))
    for source, layer in layers:
        for name, value in layer.items():
            values[name] = value
            sources[name] = source
    return Limits(**values), sources
