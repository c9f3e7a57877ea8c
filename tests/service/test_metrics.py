"""The metrics an operator's Alertmanager and dashboard read: the breach episode, the breach
and per-symbol series of the latest run, and runtime buckets past the budget."""

from __future__ import annotations

from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from helpers import Api, book, position
from stress_plugin.service.metrics import RUNTIME_BUCKETS, SYMBOL_SERIES
from stress_plugin.service.service import StressService
from stress_plugin.settings import load_settings
from stress_plugin.store import Store


def samples(service: StressService) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(service.metrics.render().decode())
            for s in family.samples}


def service_on(tmp_path: Path, make_plugins, positions: list[dict], **book_fields) -> StressService:
    path = tmp_path / "book.yaml"
    path.write_text(yaml.safe_dump(book(*positions, **book_fields)))
    settings = load_settings()
    return StressService(settings, book_path=path, plugins=make_plugins(),
                         store=Store(settings.db_path))


def labels(**pairs: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(pairs.items()))


def test_breach_episode_and_series_follow_the_latest_run(tmp_path, make_plugins):
    service = service_on(tmp_path, make_plugins, [position(quantity=6, var=3000)])
    scenario = "flash_crash_lite"
    assert samples(service)[("stress_breach_active", labels(scenario=scenario))] == 0
    service.run(trigger="manual")
    got = samples(service)
    assert got[("stress_breach_active", labels(scenario=scenario))] == 1
    key = labels(scenario=scenario, symbol="MES", limit="max_drawdown_pct")
    assert got[("stress_breach_value", key)] == 0.0541125  # model.md, q = 6
    assert got[("stress_breach_threshold", key)] == 0.05
    assert got[("stress_breach_timestamp_seconds", key)] > 1.7e9
    assert got[("stress_symbol_loss", labels(scenario=scenario, symbol="MES"))] == 5411.25

    # the book is fixed: the next run passes, the episode ends and no breach series is left
    service.book_path.write_text(yaml.safe_dump(book(position(quantity=5, var=3000))))
    service.run(trigger="manual")
    got = samples(service)
    assert got[("stress_breach_active", labels(scenario=scenario))] == 0
    assert not [k for k in got if k[0] == "stress_breach_value"]
    assert got[("stress_symbol_loss", labels(scenario=scenario, symbol="MES"))] == 4509.375


def test_per_symbol_series_keep_the_largest_losses_only(tmp_path, make_plugins, monkeypatch):
    monkeypatch.setenv("STRESS_MAX_SYMBOLS", "1000")
    positions = [position(f"S{i:03d}", quantity=1 + i) for i in range(SYMBOL_SERIES + 20)]
    service = service_on(tmp_path, make_plugins, positions, equity=1e9)
    service.run(trigger="manual")
    symbols = {dict(k[1])["symbol"] for k in samples(service) if k[0] == "stress_symbol_loss"}
    assert len(symbols) == SYMBOL_SERIES
    assert "S119" in symbols and "S019" not in symbols  # the 20 smallest losses are left out


def test_a_restart_restores_the_breach_episode_and_series(tmp_path, make_plugins):
    service_on(tmp_path, make_plugins, [position(quantity=6, var=3000)]).run(trigger="manual")
    restarted = samples(service_on(tmp_path, make_plugins, [position(quantity=6, var=3000)]))
    assert restarted[("stress_breach_active", labels(scenario="flash_crash_lite"))] == 1
    assert restarted[("stress_breach_value", labels(
        scenario="flash_crash_lite", symbol="PORTFOLIO", limit="max_drawdown_pct"))] > 0.05


def test_runtime_buckets_reach_past_the_budget():
    assert 0.05 in RUNTIME_BUCKETS and max(RUNTIME_BUCKETS) >= 1.0
    # a 300 ms run lands in a bucket no wider than 100 ms, so p99 quotes about 300 ms
    above = next(b for b in RUNTIME_BUCKETS if b >= 0.3)
    below = [b for b in RUNTIME_BUCKETS if b < 0.3][-1]
    assert above - below <= 0.1


def test_state_gauges_are_read_at_scrape_time(tmp_path, make_plugins):
    """No code path refreshes them: a halt set or cleared by another process (the CLI) shows
    at the next scrape, and the next slot is the scheduler's."""
    service = service_on(tmp_path, make_plugins, [position(quantity=6, var=3000)])
    got = samples(service)
    assert got[("stress_halted", ())] == 0 and got[("stress_scheduler_next_run", ())] == 0
    service.run(trigger="manual")  # breaches: KILL_SWITCH latched in the store
    assert samples(service)[("stress_halted", ())] == 1
    other = Store(service.store.path)  # `stress-runner reset` in another process
    other.halt_clear("os:someone", "fixed")
    assert samples(service)[("stress_halted", ())] == 0
    service.start_scheduler()
    try:
        next_run = service.scheduler.next_run_time
        assert samples(service)[("stress_scheduler_next_run", ())] == next_run.timestamp()
        service.update_config({"enabled": False}, "test")
        assert samples(service)[("stress_scheduler_next_run", ())] == 0
    finally:
        service.stop()


def test_the_outbox_is_counted_not_loaded(tmp_path, make_plugins, monkeypatch):
    from stress_hookspecs import hookimpl

    class Down:
        @hookimpl
        def stress_alert(self, result, delivery):
            from stress_hookspecs import DeliveryDeferred

            raise DeliveryDeferred("down")

    path = tmp_path / "book.yaml"
    path.write_text(yaml.safe_dump(book(position())))
    settings = load_settings()
    service = StressService(settings, book_path=path, plugins=make_plugins(Down()),
                            store=Store(settings.db_path))
    service.run(trigger="manual")
    service.run(trigger="manual")

    def loaded(*args, **kwargs):
        raise AssertionError("a scrape loaded the outbox's rows")

    monkeypatch.setattr(service.store, "deliveries_list", loaded)
    monkeypatch.setattr(service.store, "deliveries_pending", loaded)
    got = samples(service)
    assert got[("stress_alert_outbox_pending", labels(sink="extra0"))] == 2
    assert got[("stress_alert_outbox_oldest_seconds", labels(sink="extra0"))] >= 0


def test_the_scrape_reads_the_store_off_the_event_loop(tmp_path, make_plugins, monkeypatch):
    import asyncio

    service = service_on(tmp_path, make_plugins, [position()])
    on_loop: list[bool] = []
    query = service.store._query

    def recording(*args):
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # no loop in this thread: a worker thread
            on_loop.append(False)
        return query(*args)

    monkeypatch.setattr(service.store, "_query", recording)
    response = Api(service)("GET", "/metrics")
    assert response.status_code == 200 and "stress_halted 0.0" in response.text
    assert on_loop and not any(on_loop)  # the halt and the outbox, both in a worker thread


def test_scheduled_slots_come_from_the_stored_runs(tmp_path, make_plugins):
    from datetime import UTC, datetime, timedelta

    service = service_on(tmp_path, make_plugins, [position()])
    slot = datetime(2026, 1, 14, 15, 0, 5, tzinfo=UTC)
    service.scheduled_run(slot)
    service.scheduled_run(slot)  # done already: counted as a duplicate, not run again
    service.run(trigger="manual")
    assert service.store.scheduled_slots("2026-01-14T15:00:05Z", "2026-01-14T15:00:05Z") == {
        "2026-01-14T15:00:05Z"}
    assert service._slots_done(slot - timedelta(hours=1), slot + timedelta(hours=1)) == {slot}
    assert service._slots_done(slot + timedelta(seconds=1), slot + timedelta(hours=1)) == set()
    got = samples(service)
    assert got[("stress_scheduler_missed_runs_total", labels(reason="duplicate"))] == 1
