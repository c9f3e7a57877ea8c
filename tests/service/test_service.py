"""The service object itself (no HTTP): a config change is validated whole and applied or
nothing changes, a scheduled slot runs once, and the status tells what happened."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import yaml

from helpers import book, position
from stress_plugin.core.errors import ConfigError

pytestmark = pytest.mark.stores


def test_a_bad_config_change_changes_nothing(make_service, book_file):
    service = make_service(book_path=book_file)
    before = service.config
    with pytest.raises(ConfigError) as caught:
        service.update_config({"max_symbols": 1, "interval_minutes": 7}, actor="ops")
    assert caught.value.field == "interval_minutes"
    assert service.config == before and service.store.current_config() is None
    new = service.update_config({"max_symbols": 1}, actor="ops")
    assert new.max_symbols == 1 and service.store.config_history()[0]["actor"] == "ops"
    assert service.runner.settings.stress_max_symbols == 1  # applied to the next run
    assert service.run(trigger="manual").skipped_symbols == ("MNQ",)


def test_a_scheduled_slot_runs_once(make_service, book_file):
    service = make_service(book_path=book_file)
    slot = datetime(2024, 1, 15, 15, 0, 5, tzinfo=UTC)
    service.scheduled_run(slot)
    service.scheduled_run(slot)  # a second worker, or a retry, on the same slot
    runs = service.store.runs_since("2000-01-01T00:00:00Z")
    assert [(r["trigger"], r["scheduled_for"]) for r in runs] == [
        ("schedule", "2024-01-15T15:00:05Z")]
    assert service.duplicate_runs == 1


def test_the_status_names_the_last_run_and_the_halt(make_service, tmp_path):
    breaching = tmp_path / "breach.yaml"
    breaching.write_text(yaml.safe_dump(book(position(quantity=6, var=3000))))
    service = make_service(book_path=breaching)
    result = service.run(trigger="manual")
    status = service.status()
    assert status["last_run"]["run_id"] == result.run_id
    assert status["total_breaches"] == 2  # breached symbols: MES and PORTFOLIO
    assert status["halted"] and status["halt"]["run_id"] == result.run_id
    latest = status["scenario_results"]["flash_crash_lite"]
    assert latest["status"] == "breached" and latest["breached_symbols"] == ["MES", "PORTFOLIO"]
