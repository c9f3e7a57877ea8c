"""The environment, read once: defaults as the README's table states them, a bad value named by
its variable (a secret never echoed), lists and paths parsed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stress_plugin.core.errors import ConfigError
from stress_plugin.settings import load_settings


def test_the_defaults_are_the_readmes():
    s = load_settings()
    assert (s.stress_max_symbols, s.stress_max_runtime_ms) == (100, 50.0)
    assert s.stress_enabled and s.market_hours_only and s.pd_auto_resolve
    assert s.pd_events_url == "https://events.pagerduty.com/v2/enqueue"
    assert s.pd_routing_key is None and s.stress_api_token is None
    assert (s.stress_alert_wait_s, s.stress_alert_timeout_s) == (10.0, 30.0)
    assert (s.stress_alert_retry_base_s, s.stress_alert_retry_max_s) == (2.0, 300.0)
    assert (s.stress_kill_mode, s.stress_kill_confirm_s, s.stress_on_failure) == (
        "halt", 5.0, "page")
    assert s.stress_reset_approvals == 1 and s.stress_max_file_bytes == 64 * 1024 * 1024
    assert s.stress_log_format == "text" and s.stress_public_url is None


def test_the_default_store_is_under_the_users_state_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("STRESS_DB")
    monkeypatch.setenv("HOME", str(tmp_path))
    for unset in (None, "", "relative/state"):  # the XDG rule: only an absolute path counts
        if unset is None:
            monkeypatch.delenv("XDG_STATE_HOME", raising=False)
        else:
            monkeypatch.setenv("XDG_STATE_HOME", unset)
        assert load_settings().db_path == tmp_path / ".local/state/stress-plugin/stress.db"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert load_settings().db_path == tmp_path / "xdg/stress-plugin/stress.db"


@pytest.mark.parametrize(("variable", "value", "shown"), [
    ("STRESS_MAX_SYMBOLS", "lots", "'lots'"),
    ("STRESS_MAX_SYMBOLS", "0", "'0'"),
    ("STRESS_MAX_RUNTIME_MS", "-1", "'-1'"),
    ("STRESS_KILL_MODE", "panic", "'panic'"),
    ("STRESS_RESET_APPROVALS", "9", "'9'"),
    ("PD_EVENTS_URL", "ftp://x", "'ftp://x'"),
    ("STRESS_ENABLED", "maybe", "'maybe'"),
    ("STRESS_API_TOKEN", "   ", "<redacted>"),
])
def test_a_bad_value_names_its_variable(monkeypatch, variable, value, shown):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.field == variable and shown in str(caught.value)


def test_a_secret_is_stripped_and_never_shown(monkeypatch):
    monkeypatch.setenv("STRESS_API_TOKEN", " tok-123\n")
    monkeypatch.setenv("PD_ROUTING_KEY", "R" * 32)
    s = load_settings()
    assert s.stress_api_token.get_secret_value() == "tok-123"
    assert "tok-123" not in repr(s) and "R" * 32 not in repr(s)


def test_lists_and_urls_are_parsed(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("STRESS_DISABLE_PLUGINS", " pagerduty, ,embedded_host ")
    monkeypatch.setenv("STRESS_SCENARIOS", os.pathsep.join([str(tmp_path / "a.yaml"), ""]))
    monkeypatch.setenv("STRESS_ALLOWED_HOSTS", "Stress.Example.com, ")
    monkeypatch.setenv("STRESS_PUBLIC_URL", " https://stress.example.com/ ")
    s = load_settings()
    assert s.disabled_plugins == ["pagerduty", "embedded_host"]
    assert s.scenario_files == [tmp_path / "a.yaml"]
    assert s.allowed_hosts == ["stress.example.com"]
    assert s.stress_public_url == "https://stress.example.com"
