"""Fail closed: every way a run can fail to check the book ends in a failed run (or a breach),
never in "No breach". Real plugins: a distribution built here and pip-installed into a temp
dir, used through the real ``stress-runner`` (and a real ``serve``), then picked by name."""

from __future__ import annotations

import json
import math
import sqlite3
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from helpers import (
    book,
    cli,
    free_port,
    install_sources,
    plugin_pyproject,
    position,
    start_serve,
)
from stress_plugin.store import MIGRATIONS, Store

PLUGINS = {
    "broken_host": "stress_failclosed_demo.hosts:broken",
    "tight_host": "stress_failclosed_demo.hosts:tight",
    "silent_host": "stress_failclosed_demo.hosts:silent",
    "raising_limits": "stress_failclosed_demo.hosts:raising_limits",
    "raising_evaluator": "stress_failclosed_demo.evaluators:raising",
    "recorder": "stress_failclosed_demo.recorder",
}
SOURCES = {
    "pyproject.toml": plugin_pyproject("stress-failclosed-demo", PLUGINS, package=True),
    "stress_failclosed_demo/__init__.py": "",
    "stress_failclosed_demo/hosts.py": """
        from stress_hookspecs import hookimpl

        BOOK = {"equity": 100000, "positions": [
            {"symbol": "MES", "quantity": 5, "price": 6000, "spread": 0.25, "multiplier": 5,
             "var": 3000}]}

        class Broken:
            @hookimpl
            def stress_book(self):
                raise ConnectionError("broker connection is down")

        class Tight:
            @hookimpl
            def stress_book(self):
                return BOOK

            @hookimpl
            def stress_limits(self):
                return {"max_drawdown_pct": 0.04, "max_var_multiplier": 1.5}

        class Silent:
            @hookimpl
            def stress_book(self):
                return None  # "no book right now": never a reason to stress the demo book

        class RaisingLimits:
            @hookimpl
            def stress_limits(self):
                raise TimeoutError("RiskAgentV2 did not answer")

        broken, tight, silent, raising_limits = Broken(), Tight(), Silent(), RaisingLimits()
    """,
    "stress_failclosed_demo/evaluators.py": """
        from stress_hookspecs import hookimpl

        class Raising:
            @hookimpl
            def stress_evaluate(self, result):
                raise ValueError("house rules table is missing")

        raising = Raising()
    """,
    "stress_failclosed_demo/recorder.py": """
        import json, os
        from stress_hookspecs import hookimpl

        @hookimpl
        def stress_alert(result):
            with open(os.environ["DEMO_LOG"], "a") as f:
                f.write(json.dumps(result.to_dict()) + "\\n")
    """,
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_sources(SOURCES, tmp_path_factory.mktemp("src"),
                           tmp_path_factory.mktemp("site"))


def env_with(site: Path, tmp_path: Path, *loaded: str, block: str = "",
             **extra: str) -> dict[str, str]:
    """Only the named demo plugins (and the recorder) are loaded; the others, and ``block``,
    are blocked by name."""
    blocked = [name for name in PLUGINS if name not in (*loaded, "recorder")]
    blocked += [block] if block else []
    return {"PYTHONPATH": str(site), "STRESS_DB": str(tmp_path / "s.db"),
            "DEMO_LOG": str(tmp_path / "alerts.log"),
            "STRESS_DISABLE_PLUGINS": ",".join(filter(None, blocked)), **extra}


def alerts(tmp_path: Path) -> list[dict]:
    path = tmp_path / "alerts.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def strict_json(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in JSON output")

    return json.loads(text, parse_constant=refuse)


def stored_runs(tmp_path: Path) -> list[dict]:
    with Store(tmp_path / "s.db") as store:
        return store.runs_since("2000-01-01T00:00:00Z")


def test_a_raising_host_book_fails_the_run_instead_of_the_demo_book(site, tmp_path):
    env = env_with(site, tmp_path, "broken_host")
    listing = cli("plugins", env=env)
    assert "book: supplied by broken_host" in listing.stdout, listing.stdout
    out = cli("run", "--json", env=env)
    assert out.returncode == 2, out.stderr
    result = strict_json(out.stdout)
    assert result["status"] == "failed" and result["failure"] == "book_unavailable"
    assert result["symbols"] == {} and result["portfolio"] is None  # not the demo book
    assert "No breach" not in out.stdout + out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("stress-runner: error: stress run ") and "failed: plugin " \
        "broken_host (stress_book): raised ConnectionError('broker connection is down')" in last
    assert "stress_runner error: stress run failed" in out.stderr  # grep "stress.*error"
    [stored] = stored_runs(tmp_path)
    assert stored["status"] == "failed" and stored["run_id"] == result["run_id"]
    [report] = alerts(tmp_path)  # delivered to the sinks as a failed report
    assert report["status"] == "failed" and report["error"] == result["error"]


def test_a_host_that_answers_no_book_fails_the_run(site, tmp_path):
    out = cli("run", env=env_with(site, tmp_path, "silent_host"))
    assert out.returncode == 2 and "no plugin provided a book (asked: silent_host)" in out.stderr


def test_the_demo_book_answers_only_when_no_host_is_installed(site, tmp_path):
    env = env_with(site, tmp_path)
    assert "book: supplied by embedded_host" in cli("plugins", env=env).stdout
    result = strict_json(cli("run", "--json", env=env).stdout)
    assert result["status"] == "passed" and result["book_source"] == "plugin embedded_host"


def test_blocking_the_only_evaluator_is_refused_at_start(site, tmp_path):
    breaching = tmp_path / "book.yaml"
    breaching.write_text(yaml.safe_dump(book(position(quantity=6, var=3000))))
    env = env_with(site, tmp_path, block="riskagent_v2")
    for args in (("run", "--book", str(breaching)), ("plugins",)):
        out = cli(*args, env=env)
        assert out.returncode == 2, out.stdout
        assert "stress_evaluate: no implementation is loaded" in out.stderr
        assert "riskagent_v2" in out.stderr and "No breach" not in out.stdout
    assert not (tmp_path / "s.db").exists() or not stored_runs(tmp_path)


def test_a_raising_evaluator_fails_the_run_even_beside_the_built_in(site, tmp_path):
    breaching = tmp_path / "book.yaml"
    breaching.write_text(yaml.safe_dump(book(position(quantity=6, var=3000))))
    for env in (env_with(site, tmp_path, "raising_evaluator"),
                env_with(site, tmp_path, "raising_evaluator", block="riskagent_v2")):
        out = cli("run", "--book", str(breaching), "--json", env=env)
        assert out.returncode == 2, out.stderr
        result = strict_json(out.stdout)
        assert result["status"] == "failed" and result["failure"] == "evaluator_failed"
        assert "plugin raising_evaluator (stress_evaluate): raised ValueError" in result["error"]
        assert result["breaches"] == []  # the built-in's breaches are not reported as a pass


def test_raising_host_limits_fail_the_run_instead_of_the_scenario_thresholds(site, tmp_path):
    out = cli("run", "--json", env=env_with(site, tmp_path, "raising_limits"))
    assert out.returncode == 2
    result = strict_json(out.stdout)
    assert result["failure"] == "limits_unavailable" and result["limits"] is None
    assert "raised TimeoutError('RiskAgentV2 did not answer')" in result["error"]


def test_on_failure_halt_trips_the_kill_switch(site, tmp_path):
    env = env_with(site, tmp_path, "broken_host", STRESS_ON_FAILURE="halt")
    out = cli("run", "--json", env=env)
    assert out.returncode == 2
    result = strict_json(out.stdout)
    assert result["kill_switch"] is True and result["halted"] is True
    assert "KILL_SWITCH triggered" in out.stderr and "run failed (book_unavailable)" in out.stderr
    status = json.loads(cli("status", "--json", env=env).stdout)
    assert status["halt"]["run_id"] == result["run_id"]


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("price", 1.0e308, "must be at most 1e+12"),
    ("quantity", -2.0e12, "must be at most 1e+12 in absolute value"),
    ("gamma", 5000.0, "must be at most 1000 in absolute value"),
])
def test_a_book_that_would_overflow_is_a_named_input_error(tmp_path, field, value, problem):
    path = tmp_path / "book.yaml"
    path.write_text(yaml.safe_dump(book(position(**{field: value}))))
    out = cli("run", "--book", str(path), "--json", env={"STRESS_DB": str(tmp_path / "s.db")})
    assert out.returncode == 2
    result = strict_json(out.stdout)
    assert result["status"] == "failed" and result["failure"] == "book_invalid"
    assert f"positions[0] (MES).{field}: {problem} (got {value!r})" in result["error"]


def test_a_non_finite_metric_fails_the_run(make_runner):
    # equity inside its bounds, but so small that the drawdown overflows to infinity
    result = make_runner().run_once(book=book(position(), equity=1e-320))
    assert result.status == "failed" and result.failure == "non_finite"
    assert "MES.drawdown_pct" in result.error and result.portfolio is None
    json.dumps(result.to_dict(), allow_nan=False)


def test_zero_loss_prints_zero_not_minus_zero(make_runner):
    result = make_runner().run_once(book=book(position(spread=0.0, price=6000.0)),
                                    scenario=_gap_up(make_runner))
    data = result.to_dict()
    assert data["symbols"]["MES"]["worst_pnl"] == 0.0
    assert math.copysign(1.0, data["symbols"]["MES"]["drawdown_pct"]) == 1.0
    assert math.copysign(1.0, data["portfolio"]["drawdown_pct"]) == 1.0


def _gap_up(make_runner):
    from stress_plugin.core.scenario import StressScenario

    return StressScenario({"scenario_name": "gap_up", "price_shock_pct": 0.02})


def test_host_limits_hold_field_by_field_and_show_their_sources(site, tmp_path):
    """Case 4 on a real serve: the host's tighter limits are what runs and the GET use, a
    live PUT of one field keeps the host's others, and live limits can be removed."""
    book_path = tmp_path / "book.yaml"
    book_path.write_text(yaml.safe_dump(book(position(var=3000))))
    port = free_port()
    env = env_with(site, tmp_path, "tight_host")
    proc = start_serve(port, env, book_path)
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        limits = httpx.get(f"{base}/risk/limits").json()
        assert (limits["max_drawdown_pct"], limits["max_var_multiplier"],
                limits["max_position_delta"]) == (0.04, 1.5, 0.10)
        assert limits["sources"] == {"max_drawdown_pct": "plugin tight_host",
                                     "max_var_multiplier": "plugin tight_host",
                                     "max_position_delta": "scenario"}
        run = httpx.post(f"{base}/stress/run").json()  # MES loses 4.51%: over the host's 4%
        assert run["limits"] == {"max_drawdown_pct": 0.04, "max_var_multiplier": 1.5,
                                 "max_position_delta": 0.10}
        assert run["limit_sources"] == limits["sources"] and run["status"] == "breached"
        put = httpx.put(f"{base}/risk/limits", json={"max_position_delta": 0.2}).json()
        assert (put["max_drawdown_pct"], put["max_var_multiplier"],
                put["max_position_delta"]) == (0.04, 1.5, 0.2)
        assert put["sources"]["max_position_delta"] == "live"
        assert httpx.post(f"{base}/stress/run").json()["limits"]["max_var_multiplier"] == 1.5
        looser = httpx.put(f"{base}/risk/limits", json={"max_drawdown_pct": 0.06}).json()
        assert looser["max_drawdown_pct"] == 0.06  # allowed, but logged with both values
        for nothing in ({}, {"max_drawdown_pct": 0.06}, {"max_var_multiplier": None}):
            response = httpx.put(f"{base}/risk/limits", json=nothing)
            assert response.status_code == 422 and "changes nothing" in response.text, nothing
        one = httpx.put(f"{base}/risk/limits", json={"max_drawdown_pct": None}).json()
        assert one["sources"]["max_drawdown_pct"] == "plugin tight_host"
        gone = httpx.delete(f"{base}/risk/limits").json()
        assert gone["live"] == {} and gone["max_position_delta"] == 0.10
        history = httpx.get(f"{base}/risk/limits/history").json()["history"]
        assert [h["limits"] for h in history] == [
            {}, {"max_position_delta": 0.2}, {"max_drawdown_pct": 0.06,
                                               "max_position_delta": 0.2},
            {"max_position_delta": 0.2}]
    finally:
        output = proc.stop()
    assert "live max_drawdown_pct=0.06 loosens the 0.04 that plugin tight_host sets" in output


def test_a_failed_run_over_the_api_is_a_clear_503_and_is_counted(site, tmp_path):
    book_path = tmp_path / "book.yaml"
    book_path.write_text(yaml.safe_dump(book(position(var=3000))))
    port = free_port()
    proc = start_serve(port, env_with(site, tmp_path, "raising_limits"), book_path)
    base = f"http://127.0.0.1:{port}"
    try:
        response = httpx.post(f"{base}/api/v1/stress/run")
        assert response.status_code == 503
        detail = response.json()["detail"]
        assert detail["failure"] == "limits_unavailable" and "TimeoutError" in detail["message"]
        assert httpx.get(f"{base}/api/v1/risk/limits").status_code == 503
        metrics = httpx.get(f"{base}/metrics").text
        assert ('stress_runs_failed_total{reason="limits_unavailable",'
                'scenario="flash_crash_lite"} 1.0') in metrics
        results = httpx.get(f"{base}/api/v1/stress/results").json()["results"]
        assert [r["status"] for r in results] == ["failed"]
    finally:
        proc.stop()


def test_a_halt_from_the_cli_is_shown_and_cleared_from_the_cli(tmp_path):
    breaching = tmp_path / "breach.yaml"
    breaching.write_text(yaml.safe_dump(book(position(quantity=6, var=3000))))
    env = {"STRESS_DB": str(tmp_path / "s.db")}
    first = strict_json(cli("run", "--book", str(breaching), "--json", env=env).stdout)
    assert first["halted"] is True
    later = cli("run", env=env)  # the demo book passes, but trading stays halted
    assert later.returncode == 0 and "No breach" in later.stdout
    assert (f"Trading is HALTED since {first['timestamp']} by run {first['run_id']} "
            "(flash_crash_lite); clear it with stress-runner reset") in later.stdout
    status = cli("status", env=env)
    assert status.returncode == 0 and first["run_id"] in status.stdout
    assert "max_drawdown_pct" in status.stdout and "scenario" in status.stdout
    assert cli("reset", env=env).returncode == 2  # --reason is required
    reset = cli("reset", "--reason", "positions cut", env=env)
    assert reset.returncode == 0 and first["run_id"] in reset.stdout
    assert "trading resumed after RESET" in reset.stderr
    assert json.loads(cli("status", "--json", env=env).stdout)["halted"] is False
    assert "HALTED" not in cli("run", env=env).stdout
    with Store(tmp_path / "s.db") as store:
        audit = store.audit_log()[0]
    assert audit["action"] == "reset_circuit" and audit["actor"].startswith("os:")
    assert audit["details"]["reason"] == "positions cut"


def old_store_with_a_nan_run(path: Path) -> None:
    """A store as version 0.1.0 left it after an overflowing book: NaN tokens in the JSON."""
    with sqlite3.connect(path) as conn:
        for script in MIGRATIONS[:2]:
            conn.executescript(script)
        conn.execute("PRAGMA user_version = 2")
        an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        result = {"run_id": "old-nan", "scenario": "flash_crash_lite",
                  "timestamp": an_hour_ago, "symbols_tested": 1, "breach_count": 0,
                  "breached_symbols": [], "breaches": [], "kill_switch": False,
                  "runtime_ms": 0.4, "headroom": 100.0,
                  "limits": {"max_drawdown_pct": 0.05, "max_var_multiplier": 2.0,
                             "max_position_delta": 0.1},
                  "portfolio": {"worst_pnl": float("nan"), "drawdown_pct": float("nan"),
                                "var_ratio": None, "delta_change": None,
                                "headroom": 100.0},
                  "skipped_symbols": []}
        nan = b"\x00\x00\x00\x00\x00\x00\xf8\x7f"
        conn.execute("INSERT INTO runs VALUES (?, ?, ?, 'manual', NULL, 0, 0, ?, 0.4, ?, ?, ?, ?)",
                     ("old-nan", result["timestamp"], "flash_crash_lite", 100.0,
                      json.dumps(result), json.dumps(["MES"]), nan * 5,
                      struct.pack("<d", 1.0e308)))


def test_a_store_with_an_old_nan_run_starts_and_serves(tmp_path):
    old_store_with_a_nan_run(tmp_path / "s.db")
    book_path = tmp_path / "book.yaml"
    book_path.write_text(yaml.safe_dump(book(position(var=3000))))
    port = free_port()
    proc = start_serve(port, {"STRESS_DB": str(tmp_path / "s.db")}, book_path)
    base = f"http://127.0.0.1:{port}"
    try:
        [old] = httpx.get(f"{base}/api/v1/stress/results").json()["results"]
        assert old["run_id"] == "old-nan" and old["status"] == "failed"
        assert old["failure"] == "non_finite" and old["headroom"] is None
        assert httpx.post(f"{base}/api/v1/stress/run").status_code == 200
        assert httpx.get(f"{base}/metrics").status_code == 200
        assert httpx.get(f"{base}/api/v1/stress/status").json()["total_runs"] == 2
    finally:
        proc.stop()


def test_the_runbooks_four_classes_import_from_the_package():
    import stress_plugin

    for name in ("StressRunner", "HourlyStressScheduler", "PagerDutyAlerter", "StressScenario"):
        assert getattr(stress_plugin, name).__name__ == name
