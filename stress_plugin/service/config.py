"""The service's live config, described once.

``ServiceConfig`` is the stored config, the answer of ``GET /api/v1/stress/config``, and (every
field optional, ``ConfigPatch``) the body of its ``PUT``; a field that the runbook also lets
the environment set names its variable, so ``effective_config`` finds the overrides without a
second list. A bad value is a ``ConfigError`` naming the field and the value, straight from the
model's validation.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic.fields import FieldInfo

from stress_hookspecs import KillMode
from stress_plugin.core import DEFAULT_SCENARIO
from stress_plugin.core.errors import ConfigError
from stress_plugin.service.schedule import interval_problem, offset_problem
from stress_plugin.settings import Settings

log = logging.getLogger("stress_runner.service")

Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A JSON number that is finite and fits a float (NaN, Infinity, 1e999 are refused)."""
Whole = Annotated[int, Field(strict=True, ge=-(2**31), le=2**31)]
"""A JSON integer (not a bool, not a float) of at most 32 bits."""
Name = Annotated[str, Field(min_length=1, max_length=100)]


def _env(variable: str) -> dict[str, Any]:
    """The field's environment variable (a deployment change wins over the stored value)."""
    return {"env": variable}


class ServiceConfig(BaseModel):
    """What ``PUT /api/v1/stress/config`` may change; persisted with an audit trail."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: Annotated[bool, Field(strict=True)] = Field(
        description="schedule runs at all", json_schema_extra=_env("STRESS_ENABLED"))
    market_hours_only: Annotated[bool, Field(strict=True)] = Field(
        description="only inside the regular XNYS session",
        json_schema_extra=_env("MARKET_HOURS_ONLY"))
    interval_minutes: Annotated[Whole, Field(ge=1, le=60)] = Field(
        60, description="minutes between scheduled runs; divides 60")
    offset_seconds: Annotated[Whole, Field(ge=0)] = Field(
        5, description="seconds after each interval boundary, within one interval")
    max_symbols: Annotated[Whole, Field(ge=1, le=10_000_000)] = Field(
        description="symbols per run (the largest gross notionals)",
        json_schema_extra=_env("STRESS_MAX_SYMBOLS"))
    max_runtime_ms: Annotated[Finite, Field(gt=0)] = Field(
        description="runtime budget of one run", json_schema_extra=_env("STRESS_MAX_RUNTIME_MS"))
    scenarios: Annotated[tuple[Name, ...], Field(min_length=1, max_length=100)] = Field(
        (DEFAULT_SCENARIO,), description="scenarios each scheduled run stresses, in order")
    kill_mode: KillMode = Field(
        description="what a KILL_SWITCH asks of the host", json_schema_extra=_env(
            "STRESS_KILL_MODE"))

    @field_validator("interval_minutes")
    @classmethod
    def _divides_an_hour(cls, value: int) -> int:
        problem = interval_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("offset_seconds")
    @classmethod
    def _within_one_interval(cls, value: int, info: ValidationInfo) -> int:
        interval = info.data.get("interval_minutes")
        problem = offset_problem(value, interval) if interval is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("scenarios")
    @classmethod
    def _known_once_each(cls, value: tuple[str, ...], info: ValidationInfo
                         ) -> tuple[str, ...]:
        known = (info.context or {}).get("known_scenarios")
        unknown = [name for name in value if known is not None and name not in known]
        if unknown:
            raise ValueError(f"unknown scenario {', '.join(unknown)} (known: "
                             f"{', '.join(sorted(known or ()))})")
        return tuple(dict.fromkeys(value))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


ENV_FIELDS: dict[str, str] = {
    name: str(field.json_schema_extra["env"]) for name, field in ServiceConfig.model_fields.items()
    if isinstance(field.json_schema_extra, dict)}
"""Config field -> environment variable, read off the model."""

def _constrained(field: FieldInfo) -> Any:
    """The field's type with its bounds, for the patch model."""
    return Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation


ConfigPatch: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "ConfigPatch", __config__=ConfigDict(extra="forbid"),
    __doc__="Fields left out (or null) keep their value; the merged whole is validated.",
    **{name: (_constrained(field) | None, Field(None, description=field.description))
       for name, field in ServiceConfig.model_fields.items()})
"""The body of ``PUT /api/v1/stress/config``: every field of ``ServiceConfig``, optional."""


def check_config(data: dict[str, Any], *, known: set[str] | None = None) -> ServiceConfig:
    """The whole config, or a ``ConfigError`` naming the first bad field and its value;
    ``known`` (the discovered scenarios) checks ``scenarios``."""
    try:
        return ServiceConfig.model_validate(data, context={"known_scenarios": known})
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else None
        value = data.get(field, error.get("input")) if field else error.get("input")
        raise ConfigError("config", field, value, error["msg"].removeprefix("Value error, ")
                          ) from None


def from_settings(settings: Settings) -> dict[str, Any]:
    """The defaults: the model's own, and for each field with a variable, the settings' value
    (its default, or what the environment set)."""
    defaults = {name: field.default for name, field in ServiceConfig.model_fields.items()
                if not field.is_required()}
    return {**defaults, **{name: getattr(settings, variable.lower())
                           for name, variable in ENV_FIELDS.items()}}


def effective_config(settings: Settings, stored: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults, then the stored config (what operators last set through the API), then any of
    the runbook's variables set explicitly in the environment: a deployment change such as
    ``kubectl set env STRESS_ENABLED=false`` is the newest intent and must work. Unvalidated;
    ``stress-runner schedule`` reads it too, so it lists what the service would schedule."""
    base = from_settings(settings)
    stored = stored or {}
    explicit = {}
    for name, variable in ENV_FIELDS.items():
        if variable.lower() in settings.model_fields_set:
            explicit[name] = base[name]
            if name in stored and stored[name] != base[name]:
                log.warning("%s=%s from the environment overrides the stored %s=%s",
                            variable, base[name], name, stored[name])
    return {**base, **stored, **explicit}
