"""One durable delivery path: the halt never waits for a page, and no page is lost.

Real parts: a real ``stress-runner serve`` (killed with SIGKILL), the real CLI, a loopback
server speaking the PagerDuty Events API v2, the example webhook sink pip-installed, and a
third-party sink that hangs forever, pip-installed too."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
import yaml

from helpers import (
    ROOT,
    FakePagerDuty,
    book,
    cli,
    free_port,
    install_sources,
    one_module_plugin,
    pip_install_target,
    position,
    start_serve,
)

KEY = "D3L1V3RYK3Y" + "z" * 21
BREACHING = book(position(quantity=6, var=3000))


@pytest.fixture
def breaching(tmp_path: Path) -> Path:
    path = tmp_path / "breach.yaml"
    path.write_text(yaml.safe_dump(BREACHING))
    return path


def pd_env(tmp_path: Path, pd: FakePagerDuty, **extra: str) -> dict[str, str]:
    return {"STRESS_DB": str(tmp_path / "s.db"), "PD_ROUTING_KEY": KEY, "PD_EVENTS_URL": pd.url,
            "STRESS_ALERT_RETRY_BASE_S": "0.2", "STRESS_ALERT_RETRY_MAX_S": "1", **extra}


def test_a_hanging_pagerduty_delays_no_halt_and_no_answer(tmp_path, breaching):
    with FakePagerDuty() as pd:
        pd.hang_s = 30  # accepts the connection, never answers in time
        port = free_port()
        proc = start_serve(port, pd_env(tmp_path, pd, STRESS_ALERT_TIMEOUT_S="20"), breaching)
        base = f"http://127.0.0.1:{port}/api/v1"
        try:
            run_ids = []
            for _ in range(2):  # back to back: the second must not wait for the first's page
                started = time.monotonic()
                response = httpx.post(f"{base}/stress/run", timeout=10)
                assert time.monotonic() - started < 1.0, "the run waited for a sink"
                run = response.json()
                assert run["status"] == "breached" and run["halted"] is True
                assert run["deliveries"] == [{"id": run["deliveries"][0]["id"],
                                              "sink": "pagerduty", "status": "pending"}]
                status = httpx.get(f"{base}/risk/status", timeout=1).json()
                assert status["halted"] is True
                assert time.monotonic() - started < 1.0
                run_ids.append(run["run_id"])
            alerts = httpx.get(f"{base}/../../api/v1/alerts", timeout=2).json()
            assert sorted(d["run_id"] for d in alerts["pending"]) == sorted(run_ids)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=15)


def test_kill_minus_nine_before_delivery_loses_no_page_and_sends_it_once(tmp_path, breaching):
    pd = FakePagerDuty().start()
    pd.stop()  # PagerDuty is unreachable while the breach happens: nothing is delivered
    port = free_port()
    env = pd_env(tmp_path, pd)
    # a failed attempt would wait a minute: the restart must send it at once regardless
    proc = start_serve(port, {**env, "STRESS_ALERT_RETRY_BASE_S": "60"}, breaching)
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        run = httpx.post(f"{base}/stress/run").json()
        assert run["status"] == "breached"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    pd.start()  # back on the same port
    proc = start_serve(port, env, breaching)
    try:
        deadline = time.monotonic() + 15
        while not pd.accepted():
            assert time.monotonic() < deadline, "the pending page was not delivered"
            time.sleep(0.05)
        time.sleep(1.0)  # time for a duplicate to show, if there were one
        triggers = [e["dedup_key"] for e in pd.accepted() if e["event_action"] == "trigger"]
        assert triggers == [f"stress_runner/flash_crash_lite/{run['run_id']}"]
        [delivered] = httpx.get(f"{base}/alerts").json()["recent"]
        assert delivered["run_id"] == run["run_id"] and delivered["status"] == "delivered"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
        pd.stop()


def test_a_claim_of_a_process_that_died_mid_attempt_is_taken_over(make_runner, store_url):
    from stress_hookspecs import hookimpl
    from stress_plugin.store import Store

    calls = []

    class Sink:
        @hookimpl
        def stress_alert(self, result, delivery):
            calls.append((result.run_id, delivery.attempt))

    store = Store(store_url)
    runner = make_runner(sink=Sink())
    runner.store = store
    runner.deliveries.store = store
    runner.deliver_in_background = False
    result = runner.run_once(book=BREACHING)
    [row] = store.deliveries_pending()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with store.transaction() as conn:  # as a worker killed mid-attempt leaves it
        conn.execute("UPDATE deliveries SET claimed_until = '2999-01-01T00:00:00.000Z',"
                     " claimed_by = ?, attempts = 1 WHERE id = ?",
                     (f"{os.uname().nodename}:{dead}", row.id))
    assert runner.deliveries.deliver(force=True).attempts == []  # the lease holds it
    runner.deliveries.start()  # a restarted worker frees the dead process's claim
    deadline = time.monotonic() + 5
    while store.deliveries_pending():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    runner.deliveries.stop()
    assert calls == [(result.run_id, 2)]


class Flaky(http.server.BaseHTTPRequestHandler):
    """A webhook that answers 500 three times, then 200."""

    received: ClassVar[list[tuple[int, dict]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status = 500 if len(Flaky.received) < 3 else 200
        Flaky.received.append((status, body))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_the_webhook_example_is_retried_by_the_runtime_until_delivered_once(tmp_path,
                                                                           breaching):
    source = (ROOT / "examples" / "webhook_sink" / "stress_sink_webhook.py").read_text()
    assert "retry" not in source.lower().replace("no retry", "")  # the sink has none of its own
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Flaky.received = []
    try:
        site = tmp_path / "site"
        pip_install_target(ROOT / "examples" / "webhook_sink", site)
        env = {"PYTHONPATH": str(site), "STRESS_DB": str(tmp_path / "s.db"),
               "STRESS_WEBHOOK_URL": f"http://127.0.0.1:{server.server_port}/hook",
               "STRESS_ALERT_RETRY_BASE_S": "0.05", "STRESS_ALERT_RETRY_MAX_S": "0.2"}
        out = cli("run", "--book", str(breaching), env=env)
        assert out.returncode == 1, out.stderr
        assert [status for status, _ in Flaky.received] == [500, 500, 500, 200]
        assert len({json.dumps(body) for _, body in Flaky.received}) == 1  # the same message
        assert "Stress test breach" in Flaky.received[-1][1]["text"]
        listing = json.loads(cli("alerts", "list", "--json", env=env).stdout)
        webhook = [d for d in listing if d["sink"] == "webhook"]
        assert [(d["status"], d["attempts"]) for d in webhook] == [("delivered", 4)]
        assert "webhook answered HTTP 500" in out.stderr  # the project's own retry lines
        assert "Traceback" not in out.stderr
    finally:
        server.shutdown()


HANGING = one_module_plugin("stress-hanging-sink", "hanging", """
    import threading
    from stress_hookspecs import hookimpl

    @hookimpl
    def stress_alert(result, delivery):
        threading.Event().wait()  # forever
""")


def test_run_with_a_sink_that_hangs_forever_exits_on_time_and_leaves_it_pending(tmp_path):
    site = install_sources(HANGING, tmp_path / "src", tmp_path / "site")
    env = {"PYTHONPATH": str(site), "STRESS_DB": str(tmp_path / "s.db"),
           "STRESS_ALERT_WAIT_S": "1.5", "STRESS_ALERT_TIMEOUT_S": "1"}
    started = time.monotonic()
    out = cli("run", env=env)
    elapsed = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    assert elapsed < 1.5 + 2, elapsed
    assert "No breach" in out.stdout
    assert "waiting up to 1.5 s for 1 alert delivery (hanging)" in out.stderr
    assert "1 alert delivery still pending (hanging: timed out after 1 s" in out.stderr
    listing = json.loads(cli("alerts", "list", "--json", env=env).stdout)
    assert {(d["sink"], d["status"]) for d in listing} == {("hanging", "pending"),
                                                           ("pagerduty", "delivered")}
    flush = cli("alerts", "flush", "--timeout", "0.5", env=env)  # still there for a flush
    assert flush.returncode == 1 and "still pending 1" in flush.stdout


def test_the_runtime_imports_nothing_from_the_pagerduty_sink():
    code = ("import sys, stress_plugin.runner, stress_plugin.service.service, "
            "stress_plugin.service.api, stress_plugin.delivery, stress_plugin.store, "
            "stress_plugin.cli.main, stress_plugin.cli.alerts; "
            "print('stress_plugin.default_plugins.pagerduty' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ}, check=True)
    assert out.stdout.strip() == "False"
