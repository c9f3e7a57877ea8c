"""Every environment variable the runner reads, parsed and checked in one place.

Plain Python, no pydantic: importing pydantic-settings (and pydantic with it) was ~80 ms of
every ``stress-runner run``'s ~250 ms cold start, for some twenty-five scalars. Each field
says its type, default and bounds once (``_FIELDS``); ``load_settings`` parses the
environment by them and names the variable of the first bad value (a secret never shown).
The object keeps the small part of the pydantic API the runtime uses: ``model_fields_set``
and ``model_copy(update=...)``; ``SETTING_NAMES`` lists every setting.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

from stress_plugin.core.checks import MAX_FILE_BYTES_DEFAULT
from stress_plugin.core.errors import ConfigError
from stress_plugin.version import DISTRIBUTION

PD_EVENTS_URL_DEFAULT = "https://events.pagerduty.com/v2/enqueue"
SECRET_VARIABLES = frozenset({"PD_ROUTING_KEY", "STRESS_API_TOKEN"})


class SecretStr:
    """A secret that never shows itself in a ``repr``, a log line or an error."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "SecretStr('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class Settings(NamedTuple):
    """The runbook's variables and ours; names match the environment variables."""

    pd_routing_key: SecretStr | None = None
    """PD_ROUTING_KEY: PagerDuty Events API v2 routing key; paging is off without it."""
    pd_events_url: str = PD_EVENTS_URL_DEFAULT
    """PD_EVENTS_URL: Events API enqueue URL (the EU endpoint, or a local server in tests)."""
    pd_auto_resolve: bool = True
    """PD_AUTO_RESOLVE: resolve the incident on the first passing run after a breach."""
    pd_runbook_url: str | None = None
    """PD_RUNBOOK_URL: runbook link shown on every page; none when unset."""
    pd_dashboard_url: str | None = None
    """PD_DASHBOARD_URL: dashboard (Grafana) link shown on every page; none when unset."""
    stress_enabled: bool = True
    """STRESS_ENABLED: false schedules nothing (manual runs still work)."""
    market_hours_only: bool = True
    """MARKET_HOURS_ONLY: false runs every interval, around the clock."""
    stress_max_symbols: int = 100
    """STRESS_MAX_SYMBOLS: symbols stressed per run; the largest gross notionals are kept."""
    stress_max_runtime_ms: float = 50.0
    """STRESS_MAX_RUNTIME_MS: runtime budget of one run; exceeding it is logged, not fatal."""
    stress_api_token: SecretStr | None = None
    """STRESS_API_TOKEN: the ``admin`` bearer token (every permission); surrounding whitespace
    (a trailing newline from a secret file) is stripped. Unset with no STRESS_API_TOKENS_FILE:
    changes from loopback only."""
    stress_api_tokens_file: Path | None = None
    """STRESS_API_TOKENS_FILE: named operators, one ``NAME ROLE SHA256HEX`` line each (README,
    security); ``stress-runner token NAME ROLE`` makes a token and its line."""
    stress_allowed_hosts: str = ""
    """STRESS_ALLOWED_HOSTS: comma-separated extra ``Host`` names the API answers (beside
    localhost, 127.0.0.1, ::1 and the bound address); ``*`` answers any."""
    stress_trusted_proxies: str = ""
    """STRESS_TRUSTED_PROXIES: comma-separated proxy addresses whose X-Forwarded-For and
    X-Forwarded-Proto are believed; unset, forwarded headers are ignored."""
    stress_reset_approvals: int = 1
    """STRESS_RESET_APPROVALS: distinct operators who must approve a reset within
    ``RESET_WINDOW`` before the halt clears (2: four eyes); 1 to 5."""
    stress_max_file_bytes: int = MAX_FILE_BYTES_DEFAULT
    """STRESS_MAX_FILE_BYTES: largest scenario or book file read (default 64 MiB)."""
    stress_db: str | None = None
    """STRESS_DB: the store: a SQLite file (a path or ``sqlite:///path``; default under the
    user's state directory) or a PostgreSQL database (``postgresql://user:pass@host/db``, for
    several replicas); a URL's password never appears in a log or an answer."""
    stress_slot_lease_s: float = 30.0
    """STRESS_SLOT_LEASE_S: how long a replica's claim of a scheduled slot lasts unless renewed
    (it is, every third of this, while the slot runs); once it expired with no run stored,
    another replica takes the slot over."""
    stress_replicas: int = 1
    """STRESS_REPLICAS: how many replicas the deployment runs; ``stress_replicas`` below it
    for long is an alert."""
    stress_test_interval_s: int | None = None
    """STRESS_TEST_INTERVAL_S: FOR TESTS ONLY: slots every this many seconds (aligned on the
    UTC epoch, so replicas agree), every day and hour, instead of the schedule; the replica
    tests need many slots in seconds. Never set it in production."""
    stress_disable_plugins: str = ""
    """STRESS_DISABLE_PLUGINS: comma-separated entry-point names of plugins not to load."""
    stress_scenarios: str = ""
    """STRESS_SCENARIOS: extra scenario YAML files, separated by ':' (the OS path separator)."""
    stress_trace_plugins: bool = False
    """STRESS_TRACE_PLUGINS: log every plugin call with its answer and duration."""
    stress_alert_wait_s: float = 10.0
    """STRESS_ALERT_WAIT_S: how long ``stress-runner run`` waits for its alerts to go out;
    what is still pending then goes out with the service or ``stress-runner alerts flush``."""
    stress_alert_timeout_s: float = 30.0
    """STRESS_ALERT_TIMEOUT_S: one sink call longer than this is abandoned and retried."""
    stress_alert_retry_base_s: float = 2.0
    """STRESS_ALERT_RETRY_BASE_S: the first retry's delay; it doubles per attempt (jittered)."""
    stress_alert_retry_max_s: float = 300.0
    """STRESS_ALERT_RETRY_MAX_S: the longest delay between two attempts of one delivery."""
    stress_on_failure: Literal["page", "halt"] = "page"
    """STRESS_ON_FAILURE: a failed run always pages; ``halt`` also trips the KILL_SWITCH."""
    stress_kill_mode: Literal["halt", "reduce"] = "halt"
    """STRESS_KILL_MODE: what a KILL_SWITCH asks of the host: ``halt`` (no new orders) or
    ``reduce`` (only orders that reduce a position)."""
    stress_kill_confirm_s: float = 5.0
    """STRESS_KILL_CONFIRM_S: how long the runner reads the host's trading state back after a
    KILL_SWITCH or RESET before it calls the switch unconfirmed (and pages); 0 to 60."""
    stress_log_format: Literal["text", "json"] = "text"
    """STRESS_LOG_FORMAT: text (UTC time, logger, level, message) or json, one object a line."""
    stress_public_url: str | None = None
    """STRESS_PUBLIC_URL: the service's URL as on-call people reach it; pages link the run's
    report there when set."""

    model_fields_set: frozenset[str] = frozenset()
    """The fields the environment set (the rest are defaults), as pydantic names it."""

    def model_copy(self, *, update: Mapping[str, Any] | None = None) -> Settings:
        """A copy with some fields replaced (unchecked, as pydantic's ``model_copy``)."""
        return self._replace(**dict(update or {}))

    @property
    def allowed_hosts(self) -> list[str]:
        return [h.strip().lower() for h in self.stress_allowed_hosts.split(",") if h.strip()]

    @property
    def trusted_proxies(self) -> list[str]:
        return [h.strip() for h in self.stress_trusted_proxies.split(",") if h.strip()]

    @property
    def disabled_plugins(self) -> list[str]:
        return [name.strip() for name in self.stress_disable_plugins.split(",") if name.strip()]

    @property
    def scenario_files(self) -> list[Path]:
        return [Path(p) for p in self.stress_scenarios.split(os.pathsep) if p.strip()]

    @property
    def db_path(self) -> Path | str:
        """What ``Store`` opens: the SQLite file (``STRESS_DB`` or the default), or the
        PostgreSQL URL as given."""
        if self.stress_db and "://" in self.stress_db:
            return self.stress_db
        if self.stress_db:
            return Path(self.stress_db)
        return state_home() / DISTRIBUTION / "stress.db"


def state_home() -> Path:
    """``$XDG_STATE_HOME``, or ``~/.local/state`` when it is unset, empty or relative (the XDG
    Base Directory rule, on every platform: the path the docs give). Written out rather than
    asked of platformdirs, whose import (tempfile, random) was ~5 ms of every cold start."""
    given = os.environ.get("XDG_STATE_HOME", "")
    if given and os.path.isabs(given):
        return Path(given)
    return Path.home() / ".local" / "state"


SETTING_NAMES = tuple(name for name in Settings._fields if name != "model_fields_set")
"""Every setting, in ``Settings``' order (``model_fields_set`` aside)."""


# -- parsing: one parser per field, each raising ValueError with what the value must be -------

_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no"}


def _bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise ValueError("must be a boolean (true/false, yes/no, on/off, 1/0)")


def _number(kind: type[int] | type[float], low: float | None = None, high: float | None = None,
            *, strict_low: bool = False) -> Callable[[str], Any]:
    """A parser for an int or float within [low, high] (``strict_low``: above low)."""
    name = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text.strip())
        except ValueError:
            raise ValueError(f"must be {name}") from None
        if low is not None and not (value > low if strict_low else value >= low):
            raise ValueError(f"must be {'>' if strict_low else '>='} {low:g}")
        if high is not None and not value <= high:
            raise ValueError(f"must be <= {high:g}")
        return value

    return parse


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return text

    return parse


def _http_url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return text


def _public_url(text: str) -> str | None:
    if not text.strip():
        return None
    return _http_url(text.strip()).rstrip("/")


def _token(text: str) -> SecretStr:
    token = text.strip()
    if not token:
        raise ValueError("must not be empty or whitespace")
    return SecretStr(token)


_FIELDS: dict[str, Callable[[str], Any]] = {
    "pd_routing_key": SecretStr,
    "pd_events_url": _http_url,
    "pd_auto_resolve": _bool,
    "pd_runbook_url": str,
    "pd_dashboard_url": str,
    "stress_enabled": _bool,
    "market_hours_only": _bool,
    "stress_max_symbols": _number(int, 0, strict_low=True),
    "stress_max_runtime_ms": _number(float, 0, strict_low=True),
    "stress_api_token": _token,
    "stress_api_tokens_file": Path,
    "stress_allowed_hosts": str,
    "stress_trusted_proxies": str,
    "stress_reset_approvals": _number(int, 1, 5),
    "stress_max_file_bytes": _number(int, 0, strict_low=True),
    "stress_db": str,  # a path, or a URL (Path would fold its "//")
    "stress_slot_lease_s": _number(float, 0, strict_low=True),
    "stress_replicas": _number(int, 1),
    "stress_test_interval_s": _number(int, 1),
    "stress_disable_plugins": str,
    "stress_scenarios": str,
    "stress_trace_plugins": _bool,
    "stress_alert_wait_s": _number(float, 0),
    "stress_alert_timeout_s": _number(float, 0, strict_low=True),
    "stress_alert_retry_base_s": _number(float, 0, strict_low=True),
    "stress_alert_retry_max_s": _number(float, 0, strict_low=True),
    "stress_on_failure": _choice("page", "halt"),
    "stress_kill_mode": _choice("halt", "reduce"),
    "stress_kill_confirm_s": _number(float, 0, 60),
    "stress_log_format": _choice("text", "json"),
    "stress_public_url": _public_url,
}
"""How each variable's text becomes its value."""
if set(_FIELDS) != set(SETTING_NAMES):  # one parser per field, or the import fails
    raise ImportError(f"settings without a parser: {set(SETTING_NAMES) ^ set(_FIELDS)}")


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the environment now (variable names in any case); a bad value raises ConfigError
    naming the variable."""
    given = {name.lower(): value for name, value in (os.environ if environ is None
                                                     else environ).items()}
    values: dict[str, Any] = {}
    for name, parse in _FIELDS.items():
        if name in given:
            try:
                values[name] = parse(given[name])
            except ValueError as exc:
                variable = name.upper()
                shown = "<redacted>" if variable in SECRET_VARIABLES else given[name]
                raise ConfigError("environment", variable, shown, str(exc)) from None
    return Settings(**values, model_fields_set=frozenset(values))
