"""The stress-runner console script, run as a user would: exit codes, table, JSON, errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import book, position

STRESS_RUNNER = str(Path(sys.executable).with_name("stress-runner"))


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PD_", "STRESS_"))}
    full_env.update(env or {})
    return subprocess.run([STRESS_RUNNER, *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=120)


def test_run_on_the_demo_book_prints_the_table(tmp_path):
    out = cli("run", env={"STRESS_DB": str(tmp_path / "s.db")})
    assert out.returncode == 0, out.stderr
    for text in ("flash_crash_lite", "SYMBOL", "WORST P&L", "HEADROOM", "MES", "MNQ", "M2K",
                 "MCL", "PORTFOLIO", "No breach. Headroom"):
        assert text in out.stdout
    assert "symbols_tested=5" in out.stderr and "stress_runner" in out.stderr


def test_breaching_book_exits_1_after_kill_switch(tmp_path):
    path = tmp_path / "book.yaml"
    path.write_text(yaml.safe_dump(book(position(quantity=6, var=3000))))
    out = cli("run", "--book", str(path), "--json", env={"STRESS_DB": str(tmp_path / "s.db")})
    assert out.returncode == 1, out.stderr
    result = json.loads(out.stdout)
    assert result["kill_switch"] is True and result["breached_symbols"] == ["MES", "PORTFOLIO"]
    assert result["symbols"]["MES"]["worst_pnl"] == -5411.25
    assert "KILL_SWITCH triggered" in out.stderr
    assert "trading halted by KILL_SWITCH" in out.stderr


def test_table_marks_breaches(tmp_path):
    path = tmp_path / "book.yaml"
    path.write_text(yaml.safe_dump(book(position(quantity=6, var=3000))))
    out = cli("run", "--book", str(path), env={"STRESS_DB": str(tmp_path / "s.db")})
    assert out.returncode == 1
    assert "5.411% !" in out.stdout and "BREACH on MES, PORTFOLIO" in out.stdout


def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path):
    path = tmp_path / "book.json"
    path.write_text(json.dumps(book(position(price=-6000))))
    out = cli("run", "--book", str(path), env={"STRESS_DB": str(tmp_path / "s.db")})
    assert out.returncode == 2
    assert re.fullmatch(rf"stress-runner: error: stress run \S+ failed: {re.escape(str(path))}: "
                        r"positions\[0\] \(MES\)\.price: must be a finite number > 0 "
                        r"\(got -6000\.0\)", out.stderr.strip().splitlines()[-1])
    assert out.stdout == "" and "Traceback" not in out.stderr


def test_bad_environment_variable_is_named(tmp_path):
    out = cli("run", env={"STRESS_MAX_SYMBOLS": "lots"})
    assert out.returncode == 2
    assert "STRESS_MAX_SYMBOLS" in out.stderr and "'lots'" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_scenario_and_symbols(tmp_path):
    out = cli("run", "--scenario", "nope")
    assert out.returncode == 2 and "unknown scenario" in out.stderr and "'nope'" in out.stderr
    out = cli("run", "--symbols", "MES,MNQ", "--json", env={"STRESS_DB": str(tmp_path / "s")})
    assert out.returncode == 0 and list(json.loads(out.stdout)["symbols"]) == ["MES", "MNQ"]


def test_validate_scenario_and_book(tmp_path):
    from stress_pack_flash_crash import SCENARIO_FILE

    out = cli("validate", str(SCENARIO_FILE))
    assert out.returncode == 0 and "OK: scenario flash_crash_lite" in out.stdout
    path = tmp_path / "book.yaml"
    path.write_text(yaml.safe_dump(book(position())))
    assert "OK: book" in cli("validate", str(path)).stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("scenario_name: x\nprice_shock_pct: 0.9\n")
    out = cli("validate", str(bad))
    assert out.returncode == 2 and f"{bad}: price_shock_pct: must be <= 0.5" in out.stderr


def test_plugins_lists_name_distribution_version_hooks():
    out = cli("plugins", "--json")
    assert out.returncode == 0, out.stderr
    plugins = {p["name"]: p for p in json.loads(out.stdout)["plugins"]}
    assert plugins["riskagent_v2"]["distribution"] == "stress-plugin"
    assert plugins["riskagent_v2"]["hooks"] == ["stress_evaluate"]
    assert plugins["flash_crash"]["distribution"] == "stress-pack-flash-crash"
    assert plugins["embedded_host"]["hooks"] == ["stress_book", "stress_bus_publish"]
    assert plugins["pagerduty"]["hooks"] == ["stress_alert"]
    table = cli("plugins", env={"STRESS_DISABLE_PLUGINS": "pagerduty"}).stdout
    assert "NAME" in table and "pagerduty" not in table.splitlines()[1:-1][0]
    assert "blocked by STRESS_DISABLE_PLUGINS: pagerduty" in table


def test_scenarios_lists_the_pack_and_extra_files(tmp_path):
    extra = tmp_path / "gap.yaml"
    extra.write_text("scenario_name: gap_down\nprice_shock_pct: -0.07\n")
    # the history pack, when installed, is blocked by name: the listing stays exactly these
    env = {"STRESS_SCENARIOS": str(extra), "STRESS_DISABLE_PLUGINS": "history"}
    out = cli("scenarios", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert set(json.loads(out.stdout)) == {"flash_crash_lite", "gap_down"}


def test_plugin_tracing_on_demand(tmp_path):
    out = cli("run", env={"STRESS_TRACE_PLUGINS": "1", "STRESS_DB": str(tmp_path / "s.db")})
    assert out.returncode == 0, out.stderr
    assert "plugin call: embedded_host.stress_book()" in out.stderr
    assert "plugin call: riskagent_v2.stress_evaluate(result, limits) -> []" in out.stderr
    assert "plugin call:" not in cli("run", env={"STRESS_DB": str(tmp_path / "s.db")}).stderr


def test_unusable_store_path_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = cli("run", env={"STRESS_DB": str(blocker / "stress.db")})
    assert out.returncode == 2 and "STRESS_DB: cannot open the store" in out.stderr
    assert "Traceback" not in out.stderr


def test_run_imports_none_of_the_services_heavy_modules(tmp_path):
    """`run` stays a quick command: no web framework, scheduler, calendar or pandas."""
    probe = ("import contextlib, io, sys\nfrom stress_plugin import cli\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             "    code = cli.main(['-q', 'run', '--json'])\n"
             "heavy = ('fastapi', 'uvicorn', 'starlette', 'apscheduler', 'exchange_calendars',"
             " 'pandas')\nprint(code, [m for m in heavy if m in sys.modules])")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PD_", "STRESS_"))}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env={**env, "STRESS_DB": str(tmp_path / "s.db")}, timeout=120)
    assert out.stdout.split() == ["0", "[]"], out.stderr
