"""Every environment variable the runner reads, parsed and checked in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from stress_plugin.core.checks import MAX_FILE_BYTES_DEFAULT
from stress_plugin.core.errors import ConfigError
from stress_plugin.version import DISTRIBUTION

PD_EVENTS_URL_DEFAULT = "https://events.pagerduty.com/v2/enqueue"
SECRET_VARIABLES = frozenset({"PD_ROUTING_KEY", "STRESS_API_TOKEN"})


class Settings(BaseSettings):
    """The runbook's variables and ours; names match the environment variables."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

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
    stress_max_symbols: int = Field(100, gt=0)
    """STRESS_MAX_SYMBOLS: symbols stressed per run; the largest gross notionals are kept."""
    stress_max_runtime_ms: float = Field(50.0, gt=0)
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
    stress_reset_approvals: int = Field(1, ge=1, le=5)
    """STRESS_RESET_APPROVALS: distinct operators who must approve a reset within
    ``RESET_WINDOW`` before the halt clears (2: four eyes)."""
    stress_max_file_bytes: int = Field(MAX_FILE_BYTES_DEFAULT, gt=0)
    """STRESS_MAX_FILE_BYTES: largest scenario or book file read (default 64 MiB)."""
    stress_db: Path | None = None
    """STRESS_DB: SQLite file of the store; default under the user's state directory."""
    stress_disable_plugins: str = ""
    """STRESS_DISABLE_PLUGINS: comma-separated entry-point names of plugins not to load."""
    stress_scenarios: str = ""
    """STRESS_SCENARIOS: extra scenario YAML files, separated by ':' (the OS path separator)."""
    stress_trace_plugins: bool = False
    """STRESS_TRACE_PLUGINS: log every plugin call with its answer and duration."""
    stress_alert_wait_s: float = Field(10.0, ge=0)
    """STRESS_ALERT_WAIT_S: how long ``stress-runner run`` waits for its alerts to go out;
    what is still pending then goes out with the service or ``stress-runner alerts flush``."""
    stress_alert_timeout_s: float = Field(30.0, gt=0)
    """STRESS_ALERT_TIMEOUT_S: one sink call longer than this is abandoned and retried."""
    stress_alert_retry_base_s: float = Field(2.0, gt=0)
    """STRESS_ALERT_RETRY_BASE_S: the first retry's delay; it doubles per attempt (jittered)."""
    stress_alert_retry_max_s: float = Field(300.0, gt=0)
    """STRESS_ALERT_RETRY_MAX_S: the longest delay between two attempts of one delivery."""
    stress_on_failure: Literal["page", "halt"] = "page"
    """STRESS_ON_FAILURE: a failed run always pages; ``halt`` also trips the KILL_SWITCH."""
    stress_kill_mode: Literal["halt", "reduce"] = "halt"
    """STRESS_KILL_MODE: what a KILL_SWITCH asks of the host: ``halt`` (no new orders) or
    ``reduce`` (only orders that reduce a position)."""
    stress_kill_confirm_s: float = Field(5.0, ge=0, le=60)
    """STRESS_KILL_CONFIRM_S: how long the runner reads the host's trading state back after a
    KILL_SWITCH or RESET before it calls the switch unconfirmed (and pages)."""

    stress_log_format: Literal["text", "json"] = "text"
    """STRESS_LOG_FORMAT: text (UTC time, logger, level, message) or json, one object a line."""
    stress_public_url: str | None = None
    """STRESS_PUBLIC_URL: the service's URL as on-call people reach it; pages link the run's
    report there when set."""

    @field_validator("stress_api_token")
    @classmethod
    def _stripped(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        token = value.get_secret_value().strip()
        if not token:
            raise ValueError("must not be empty or whitespace")
        return SecretStr(token)

    @field_validator("pd_events_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("stress_public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return cls._http_url(value.strip()).rstrip("/")

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
        import os

        return [Path(p) for p in self.stress_scenarios.split(os.pathsep) if p.strip()]

    @property
    def db_path(self) -> Path:
        if self.stress_db is not None:
            return self.stress_db
        from platformdirs import user_state_path

        return user_state_path(DISTRIBUTION) / "stress.db"


def load_settings() -> Settings:
    """Read the environment now; a bad value raises ConfigError naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        variable = str(error["loc"][0]).upper() if error["loc"] else "environment"
        value = "<redacted>" if variable in SECRET_VARIABLES else error.get("input")
        raise ConfigError("environment", variable, value, error["msg"]) from None
