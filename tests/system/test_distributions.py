"""Real pip installs: the flash_crash pack, and a third-party distribution built here.

Each is installed with pip into a temporary directory (``--target``) and used through a real
``stress-runner`` process with that directory on PYTHONPATH, so the test venv stays clean.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helpers import ROOT, cli, install_sources, pip_install_target, plugin_pyproject

THIRD_PARTY = {
    "pyproject.toml": plugin_pyproject(
        "stress-thirdparty-demo", {"demo": "stress_thirdparty_demo",
                                   "demo_raising": "stress_thirdparty_demo.raising"},
        version="2.5.0", package=True),
    "stress_thirdparty_demo/__init__.py": """
        import json, os
        from stress_hookspecs import hookimpl

        def _log(kind, data):
            with open(os.environ["DEMO_LOG"], "a") as f:
                f.write(json.dumps({"kind": kind, **data}) + "\\n")

        @hookimpl
        def stress_scenarios():
            return [{"scenario_name": "deep_crash", "price_shock_pct": -0.10, "spread_mult": 2}]

        @hookimpl
        def stress_book():
            return {"equity": 200000, "positions": [
                {"symbol": "MNQ", "quantity": 10, "price": 21000, "spread": 0.5,
                 "multiplier": 2}]}

        @hookimpl
        def stress_bus_publish(event):
            _log("bus", event.to_dict())

        @hookimpl
        def stress_alert(result):
            _log("alert", result.to_dict())
    """,
    "stress_thirdparty_demo/raising.py": """
        from stress_hookspecs import hookimpl

        @hookimpl
        def stress_alert(result):
            raise RuntimeError("demo sink is broken")
    """,
}


@pytest.fixture(scope="module")
def third_party(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_sources(THIRD_PARTY, tmp_path_factory.mktemp("src"),
                           tmp_path_factory.mktemp("site"))


def test_pack_is_found_after_a_real_pip_install(tmp_path: Path):
    site = tmp_path / "site"
    pip_install_target(ROOT / "scenario_packs" / "flash_crash", site)
    installed = site / "stress_pack_flash_crash" / "flash_crash.yaml"
    assert installed.is_file()  # the YAML ships inside the wheel
    env = {"PYTHONPATH": str(site), "STRESS_DB": str(tmp_path / "s.db")}
    out = cli("scenarios", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["flash_crash_lite"]["origin"] == str(installed)
    assert cli("run", "--json", env=env).returncode == 0


def test_third_party_pack_sink_bus_and_book_are_used(third_party: Path, tmp_path: Path):
    log = tmp_path / "demo.log"
    env = {"PYTHONPATH": str(third_party), "DEMO_LOG": str(log),
           "STRESS_DB": str(tmp_path / "s.db")}
    listing = {p["name"]: p for p in json.loads(cli("plugins", "--json", env=env).stdout)[
        "plugins"]}
    assert listing["demo"]["distribution"] == "stress-thirdparty-demo"
    assert listing["demo"]["version"] == "2.5.0"
    assert listing["demo"]["hooks"] == ["stress_alert", "stress_book", "stress_bus_publish",
                                        "stress_scenarios"]

    out = cli("run", "--scenario", "deep_crash", "--json", env=env)
    assert out.returncode == 1, out.stderr
    result = json.loads(out.stdout)
    assert list(result["symbols"]) == ["MNQ"]  # the third-party host's book won
    # 10 MNQ x $2 x 2,100 points + half of a 2x spread: 42,010 = 21% of 200,000
    assert result["symbols"]["MNQ"]["worst_pnl"] == pytest.approx(-42010.0)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["kind"] for e in events] == ["bus", "alert"]
    assert events[0]["type"] == "KILL_SWITCH" and events[0]["run_id"] == result["run_id"]
    assert "demo sink is broken" in out.stderr  # the raising sink was isolated
    # the runbook's greps: grep "stress.*error", grep "KILL_SWITCH triggered"
    assert re.search(r"stress.*error.*demo sink is broken", out.stderr)
    assert re.search(r"stress_runner.*KILL_SWITCH triggered", out.stderr)


def test_third_party_plugins_can_be_blocked_by_name(third_party: Path, tmp_path: Path):
    env = {"PYTHONPATH": str(third_party), "DEMO_LOG": str(tmp_path / "demo.log"),
           "STRESS_DISABLE_PLUGINS": "demo,demo_raising", "STRESS_DB": str(tmp_path / "s.db")}
    listing = json.loads(cli("plugins", "--json", env=env).stdout)
    assert {"demo", "demo_raising"} <= set(listing["blocked"])
    assert "demo" not in {p["name"] for p in listing["plugins"]}
    out = cli("run", "--scenario", "deep_crash", env=env)
    assert out.returncode == 2 and "unknown scenario" in out.stderr
    assert cli("run", env=env).returncode == 0  # back on the demo book


def test_example_webhook_sink_installs_with_pip_and_posts_breaches(tmp_path: Path):
    import http.server
    import threading

    received: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        site = tmp_path / "site"
        pip_install_target(ROOT / "examples" / "webhook_sink", site)
        book_path = tmp_path / "book.json"
        book_path.write_text(json.dumps({"equity": 100000, "positions": [
            {"symbol": "MES", "quantity": 6, "price": 6000, "spread": 0.25, "multiplier": 5}]}))
        env = {"PYTHONPATH": str(site), "STRESS_DB": str(tmp_path / "s.db"),
               "STRESS_WEBHOOK_URL": f"http://127.0.0.1:{server.server_port}/hook"}
        listing = {p["name"]: p for p in json.loads(cli("plugins", "--json", env=env).stdout)[
            "plugins"]}
        assert listing["webhook"]["distribution"] == "stress-sink-webhook"
        assert cli("run", "--book", str(book_path), env=env).returncode == 1
        assert len(received) == 1 and "flash_crash_lite on MES, PORTFOLIO" in received[0]["text"]
        assert cli("run", env=env).returncode == 0  # a passing run posts nothing
        assert len(received) == 1
    finally:
        server.shutdown()
