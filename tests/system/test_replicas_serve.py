"""Two real ``serve`` processes on one PostgreSQL database (the suite's own server), a slot
every 2 s (``STRESS_TEST_INTERVAL_S``, for tests only) and a breaching book: every slot has
exactly one run; ``kill -9`` of the replica holding the current slot mid-run makes the other
run that slot; one KILL_SWITCH per slot and one page per slot and dedup key reach the fake
PagerDuty; a reset on one replica is seen by the other."""

from __future__ import annotations

import os
import signal
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import yaml

from helpers import (
    TOKEN,
    FakePagerDuty,
    book,
    free_port,
    install_sources,
    one_module_plugin,
    position,
    start_serve,
)
from stress_plugin.store import Store

KEY = "R3PL1CAK3Y" + "q" * 22
INTERVAL_S = 2
SLOW = one_module_plugin("stress-slow-evaluator", "slow", """
    import time
    from stress_hookspecs import hookimpl

    @hookimpl
    def stress_evaluate(result):
        time.sleep(0.5)  # long enough to kill a replica mid-run
        return []
""")


def slots_stored(store: Store) -> list[dict]:
    return [r for r in store.runs_since("2000-01-01T00:00:00Z") if r["trigger"] == "schedule"]


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_serves_run_every_slot_once_and_take_over_a_killed_one(postgres, tmp_path: Path):
    url = postgres.url(f"t_{uuid.uuid4().hex[:12]}")
    site = install_sources(SLOW, tmp_path / "src", tmp_path / "site")
    breaching = tmp_path / "book.yaml"
    breaching.write_text(yaml.safe_dump(book(position(quantity=6, var=3000))))
    store = Store(url)
    procs = {}
    with FakePagerDuty() as pd:
        env = {"STRESS_DB": url, "MARKET_HOURS_ONLY": "false", "PYTHONPATH": str(site),
               "STRESS_TEST_INTERVAL_S": str(INTERVAL_S), "STRESS_SLOT_LEASE_S": "1",
               "STRESS_REPLICAS": "2", "STRESS_API_TOKEN": TOKEN, "PD_ROUTING_KEY": KEY,
               "PD_EVENTS_URL": pd.url, "STRESS_ALERT_RETRY_BASE_S": "0.2",
               "STRESS_ALERT_TIMEOUT_S": "2"}
        ports = {name: free_port() for name in "ab"}
        try:
            for name, port in ports.items():
                procs[name] = start_serve(port, env, breaching)
            api = {name: f"http://127.0.0.1:{port}/api/v1" for name, port in ports.items()}
            auth = {"Authorization": f"Bearer {TOKEN}"}
            wait_for(lambda: len(slots_stored(store)) >= 5, 60, "5 slots")

            # a reset on a is seen by b at once, and b's next breaching run halts again
            halted = httpx.get(f"{api['b']}/risk/status").json()
            assert halted["halted"]
            cleared = httpx.post(f"{api['a']}/risk/reset_circuit", headers=auth,
                                 json={"reason": "checked"})
            assert cleared.status_code == 200, cleared.text
            after = httpx.get(f"{api['b']}/risk/status").json()
            assert not after["halted"] or after["run_id"] != halted["run_id"]
            wait_for(lambda: httpx.get(f"{api['b']}/risk/status").json()["halted"], 30,
                     "the next run halting again")

            # kill -9 the replica holding a slot whose run is not stored yet (mid-run)
            def running():
                rows = store._query("SELECT c.scheduled_for, c.replica FROM slot_claims AS c"
                                    " WHERE NOT EXISTS (SELECT 1 FROM runs AS r WHERE"
                                    " r.scenario = c.scenario AND r.scheduled_for ="
                                    " c.scheduled_for) ORDER BY c.scheduled_for DESC LIMIT 1")
                return rows[0] if rows else None

            slot, holder = wait_for(running, 30, "a slot being run")
            victim = next(n for n, p in procs.items() if holder.endswith(f":{p.pid}"))
            os.kill(procs[victim].pid, signal.SIGKILL)
            procs[victim].wait(10)
            survivor = "b" if victim == "a" else "a"

            def taken_over():
                rows = store._query("SELECT replica, attempt FROM slot_claims"
                                    " WHERE scheduled_for = ?", (slot,))
                done = [r for r in slots_stored(store) if r["scheduled_for"] == slot]
                return (rows[0], done) if done else None

            (replica, attempt), done = wait_for(taken_over, 30, "the killed slot's run")
            assert replica.endswith(f":{procs[survivor].pid}") and attempt == 2
            assert len(done) == 1
            last = slots_stored(store)[0]["scheduled_for"]
            wait_for(lambda: slots_stored(store)[0]["scheduled_for"] > last, 30, "later slots")
            wait_for(lambda: len(slots_stored(store)) >= 10, 60, "10 slots")
            status = httpx.get(f"{api[survivor]}/stress/status").json()
            assert status["replica"].endswith(f":{procs[survivor].pid}")
            assert status["last_slot"]["replica"] == status["replica"]
            wait_for(lambda: not store.deliveries_pending(), 30, "every page sent")
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                proc.communicate(timeout=15)
        accepted = pd.accepted()

    runs = slots_stored(store)
    times = sorted(datetime.fromisoformat(r["scheduled_for"].replace("Z", "+00:00"))
                   for r in runs)
    assert len(times) == len(set(times)) >= 10  # no slot ran twice
    assert times == [times[0] + timedelta(seconds=INTERVAL_S * i)
                     for i in range(len(times))]  # none was lost, the killed one included
    assert all(r["kill_switch"] for r in runs)  # each slot breached: one KILL_SWITCH each
    halts = [e for e in store.audit_log() if e["action"] == "halt"]
    assert len(halts) == 2  # latched once, reset, latched once again
    triggers = [e for e in accepted if e["event_action"] == "trigger"]
    paged = {e["payload"]["custom_details"]["run_id"] for e in triggers}
    assert paged == {r["run_id"] for r in runs}  # every slot's run paged (at least once)
    assert pd.opened == [triggers[0]["dedup_key"]]  # one page for the one breach episode
    store.close()
