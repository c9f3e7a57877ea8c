"""Replicas on one store, in one process (each service its own replica id): every slot runs
once, a slot whose holder died is taken over once its lease expires, a replica that lost its
claim mid-run publishes and stores nothing, and a reset or a config change on one is seen by the
other. On SQLite and on PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from helpers import Api, book, position
from stress_hookspecs import hookimpl

pytestmark = pytest.mark.stores

SLOT = datetime(2026, 12, 1, 15, 0, 5, tzinfo=UTC)


@pytest.fixture
def breaching(tmp_path):
    path = tmp_path / "breach.yaml"
    path.write_text(yaml.safe_dump(book(position(quantity=6, var=3000))))
    return path


def replica(make_service, name: str, *extra: object, book_path=None):
    service = make_service(*extra, book_path=book_path)
    service.replica = name
    return service


def wait_for(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_two_replicas_run_each_slot_once(make_service, book_file):
    a, b = (replica(make_service, n, book_path=book_file) for n in "ab")
    slots = [SLOT + timedelta(minutes=i) for i in range(10)]
    for i, slot in enumerate(slots):
        first, second = (a, b) if i % 2 else (b, a)
        first.scheduled_run(slot)
        second.scheduled_run(slot)
    runs = a.store.runs_since("2000-01-01T00:00:00Z")
    assert sorted(r["scheduled_for"] for r in runs) == sorted(
        s.strftime("%Y-%m-%dT%H:%M:%SZ") for s in slots)
    assert a.duplicate_runs + b.duplicate_runs == 10
    last = b.status()["last_slot"]
    assert (last["replica"], last["attempt"]) == ("a", 1)  # the last slot went to a first


def test_a_slot_whose_holder_died_is_taken_over_after_its_lease(make_service, book_file,
                                                                monkeypatch):
    monkeypatch.setenv("STRESS_SLOT_LEASE_S", "0.5")
    b = replica(make_service, "b", book_path=book_file)
    key = SLOT.strftime("%Y-%m-%dT%H:%M:%SZ")
    monkeypatch.setattr("stress_plugin.service.service.SLOT_GRACE_S", 10**9)  # an old slot
    assert b.store.claim_slot("flash_crash_lite", key, 0.5, "a").state == "claimed"  # a dies
    b.scheduled_run(SLOT)
    assert b.store.runs_since("2000-01-01T00:00:00Z") == []  # a's lease still holds it
    wait_for(lambda: b.store.runs_since("2000-01-01T00:00:00Z"))
    last = b.status()["last_slot"]
    assert (last["replica"], last["attempt"]) == ("b", 2)
    b.scheduled_run(SLOT)  # once run, never again
    assert len(b.store.runs_since("2000-01-01T00:00:00Z")) == 1


def test_a_replica_that_lost_its_claim_mid_run_publishes_and_stores_nothing(
        make_service, breaching, caplog):
    published = []

    class Thief:
        """An evaluator during whose call another replica takes the slot over."""

        @hookimpl
        def stress_evaluate(self, result):
            with a.store.transaction() as conn:
                conn.execute("UPDATE slot_claims SET replica = 'b', attempt = attempt + 1")
            return []

    class Bus:
        @hookimpl
        def stress_bus_publish(self, event):
            published.append(event)
            return True

    a = replica(make_service, "a", Thief(), Bus(), book_path=breaching)
    a.scheduled_run(SLOT)
    assert published == [] and a.halt() is None
    assert a.store.runs_since("2000-01-01T00:00:00Z") == [] and a.store.deliveries_list() == []
    assert "lost its claim mid-run" in caplog.text


def test_a_reset_and_a_config_change_on_one_replica_hold_on_the_other(make_service, breaching):
    a, b = (replica(make_service, n, book_path=breaching) for n in "ab")
    a.scheduled_run(SLOT)
    assert b.halt() is not None and b.halt()["run_id"] == a.store.last_run_summary()["run_id"]
    a.reset_circuit("ops", "checked the book")
    assert b.halt() is None
    a.update_config({"max_symbols": 7}, actor="ops")
    b.scheduled_run(SLOT + timedelta(minutes=1))  # b's next run reads the stored config
    assert b.config.max_symbols == 7 and b.runner.settings.stress_max_symbols == 7


def test_healthz_fails_while_the_database_is_unreachable(make_service, book_file,
                                                         store_backend):
    service = make_service(book_path=book_file)
    api = Api(service)
    assert api("GET", "/healthz").status_code == 200
    if store_backend == "sqlite":
        return  # an open file does not go away
    service.store._conn.close()
    good = service.store._url
    service.store._url = good.replace(f":{good.split(':')[2].split('/')[0]}/", ":1/")
    answer = api("GET", "/healthz")
    assert answer.status_code == 503 and "does not answer" in answer.text
    service.store._url = good  # the database is back: so is the replica
    assert api("GET", "/healthz").status_code == 200


def test_status_names_this_replica_and_those_seen(make_service, book_file):
    a, b = (replica(make_service, n, book_path=book_file) for n in "ab")
    a.store.replica_seen("a")
    b.store.replica_seen("b")
    status = a.status()
    assert status["replica"] == "a"
    assert {r["replica"] for r in status["replicas"]} == {"a", "b"}
    text = a.metrics.render().decode()
    assert "stress_replicas 2.0" in text and "stress_replicas_expected 1.0" in text
