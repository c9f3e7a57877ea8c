"""The stress-runner console script, run as a user would: exit codes, table, JSON, errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import book, cli, position
from stress_plugin.store import Store


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
    assert result["kill_switch_confirmed"] is True  # the embedded host read its state back
    table = cli("run", "--book", str(path), env={"STRESS_DB": str(tmp_path / "s.db")})
    assert "KILL_SWITCH confirmed: the host's trading state shows the halt" in table.stdout


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
    out = cli("run", "--scenario", "nope", env={"STRESS_DB": str(tmp_path / "s")})
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
    assert plugins["embedded_host"]["hooks"] == ["stress_book", "stress_bus_publish",
                                                "stress_trading_state"]
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
    assert "plugin call: riskagent_v2.stress_evaluate(result) -> []" in out.stderr
    assert "plugin call:" not in cli("run", env={"STRESS_DB": str(tmp_path / "s.db")}).stderr


def test_unusable_store_path_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = cli("run", env={"STRESS_DB": str(blocker / "stress.db")})
    assert out.returncode == 2 and "STRESS_DB: cannot open the store" in out.stderr
    assert "Traceback" not in out.stderr


def test_run_imports_none_of_the_services_heavy_modules(tmp_path):
    """`run` stays a quick command: no web framework, scheduler, calendar or pandas, no
    PostgreSQL driver for a SQLite store, no HTTP client or SSL with paging off, no report
    module without --report; and none of what cold start shed: importlib.metadata (entry
    points are read without it) with email, zipfile and csv, the PagerDuty sink's uuid, and
    tempfile (platformdirs' import, once paid to find the default store's folder)."""
    probe = ("import contextlib, io, sys\nfrom stress_plugin.cli import main as cli\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             "    code = cli.main(['-q', 'run', '--json'])\n"
             "heavy = ('fastapi', 'uvicorn', 'starlette', 'apscheduler', 'exchange_calendars',"
             " 'pandas', 'psycopg', 'httpx', 'ssl', 'stress_plugin.report',"
             " 'importlib.metadata', 'email', 'zipfile', 'csv', 'uuid', 'tempfile')\n"
             "print(code, [m for m in heavy if m in sys.modules])")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PD_", "STRESS_", "XDG_"))}  # the default store, under HOME
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env={**env, "HOME": str(tmp_path)}, timeout=120)
    assert out.stdout.split() == ["0", "[]"], out.stderr
    assert (tmp_path / ".local/state/stress-plugin/stress.db").is_file()


def _two_scenarios(tmp_path: Path) -> dict[str, str]:
    """flash_crash_lite plus a GBP-only event file; the history pack blocked by name."""
    extra = tmp_path / "gbp.yaml"
    extra.write_text(yaml.safe_dump({
        "scenario_name": "gbp_only", "event_date": "2016-10-07", "price_shock_pct": 0,
        "symbol_shocks": {"6B*": -0.09}, "ramp_sec": 10, "duration_sec": 60,
        "source": "BIS Markets Committee Papers No 9"}))
    return {"STRESS_SCENARIOS": str(extra), "STRESS_DISABLE_PLUGINS": "history",
            "STRESS_DB": str(tmp_path / "s.db")}


def test_run_several_scenarios_prints_one_row_each_and_kills_once(tmp_path):
    env = _two_scenarios(tmp_path)
    path = tmp_path / "book.yaml"
    path.write_text(yaml.safe_dump(book(position(quantity=6, var=3000), position(
        symbol="6BZ6", quantity=1, price=1.27, spread=0.0001, multiplier=62500))))
    out = cli("run", "--scenario", "flash_crash_lite,gbp_only", "--book", str(path), env=env)
    assert out.returncode == 1, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("2 scenarios on one book snapshot (2 symbols)")
    assert lines[2].split() == ["SCENARIO", "STATUS", "WORST", "P&L", "DRAWDOWN", "BREACHES",
                                "HEADROOM", "BINDING"]
    # flash_crash_lite: MES 5,411.25 + 6B 2,381.25 + its 3x half spread 9.375 (loss 7,801.875)
    assert lines[3].split()[:4] == ["flash_crash_lite", "BREACHED", "-7,801.88", "7.802%"]
    # gbp_only: 1 x 62,500 x 1.27 x 0.09 = 7,143.75 + 3.125, and MES only its half spread 3.75
    assert lines[4].split()[:4] == ["gbp_only", "BREACHED", "-7,150.62", "7.151%"]
    # the book binds first: its loss adds MES's half spread to 6B's
    assert lines[4].split()[-1] == "PORTFOLIO"
    assert "BREACH in flash_crash_lite, gbp_only: KILL_SWITCH triggered once" in out.stdout
    assert "KILL_SWITCH confirmed" in out.stdout
    assert out.stderr.count("KILL_SWITCH triggered") == 1
    assert "scenario=flash_crash_lite,gbp_only" in out.stderr
    # each run's alerts were sent before the exit (no routing key: PagerDuty says disabled)
    with Store(env["STRESS_DB"]) as store:
        rows = store.deliveries_list(newest_first=False)
        runs = {r["run_id"]: r["scenario"] for r in store.runs_since("2000-01-01T00:00:00Z")}
    assert sorted(runs.values()) == ["flash_crash_lite", "gbp_only"]
    assert sorted(r.run_id for r in rows if r.sink == "pagerduty") == sorted(runs)
    assert {(r.status, r.outcome) for r in rows if r.sink == "pagerduty"} == {
        ("delivered", "disabled")}


def test_run_all_json_lists_every_scenario_and_exits_0_when_nothing_breaches(tmp_path):
    env = _two_scenarios(tmp_path)
    out = cli("run", "--all", "--json", env=env)
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    assert [r["scenario"] for r in results] == ["flash_crash_lite", "gbp_only"]
    assert results[0]["symbols"]["MES"]["worst_pnl"] == -9018.75  # the demo book, as above
    assert results[1]["symbols"]["MES"]["worst_pnl"] == -6.25  # not moved: half its spread
    assert cli("run", "--all", "--scenario", "gbp_only", env=env).returncode == 2
    out = cli("run", "--scenario", "flash_crash_lite,nope", env=env)
    assert out.returncode == 2 and "unknown scenario" in out.stderr
    out = cli("run", "--all", "--book", str(tmp_path / "missing.yaml"), env=env)
    assert out.returncode == 2  # no book: every scenario failed, none passed
    assert [line.split()[:2] for line in out.stdout.splitlines()[3:5]] == [
        ["flash_crash_lite", "FAILED"], ["gbp_only", "FAILED"]]
    assert out.stderr.count("stress-runner: error: stress run") == 2  # one line per failed run


def test_run_several_scenarios_writes_one_report_each_and_refuses_top(tmp_path):
    env = _two_scenarios(tmp_path)
    target = tmp_path / "out" / "run.html"
    out = cli("run", "--all", "--report", str(target), env=env)
    assert out.returncode == 2 and "--report: cannot write: No such file or directory" in \
        out.stderr
    with Store(env["STRESS_DB"]) as store:
        assert store.runs_since("2000-01-01T00:00:00Z") == []  # a bad path runs nothing
    target.parent.mkdir()
    out = cli("run", "--scenario", "gbp_only,flash_crash_lite", "--report", str(target),
              env=env)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in target.parent.iterdir()) == [
        "run-flash_crash_lite.html", "run-gbp_only.html"]
    page = (target.parent / "run-gbp_only.html").read_text()
    assert "<th>scenario</th><td>gbp_only</td>" in page and 'id="pnl-chart"' in page
    for flags in (("--top", "3"), ("--breaches-only",)):
        out = cli("run", "--all", *flags, env=env)
        assert out.returncode == 2, out.stderr
        assert f"{flags[0]}: applies to one scenario's symbol table" in out.stderr
    with Store(env["STRESS_DB"]) as store:
        assert len(store.runs_since("2000-01-01T00:00:00Z")) == 2  # the refusals ran nothing


def test_scenarios_table_shows_event_date_moves_and_source(tmp_path):
    out = cli("scenarios", env=_two_scenarios(tmp_path))
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split()[:4] == ["SCENARIO", "EVENT", "DATE", "MOVES"]
    gbp = next(r for r in rows if r.startswith("gbp_only"))
    assert "2016-10-07" in gbp and "6B* -9%" in gbp and "BIS Markets Committee Papers No 9" in gbp
    assert "10 s to the trough" in gbp
    lite = next(r for r in rows if r.startswith("flash_crash_lite"))
    assert "* -3%" in lite and "flash_crash.yaml" in lite  # no source: the file instead


# -- the operator's polish (issue 18) -----------------------------------------------------------

def test_bare_command_prints_help_and_version_lists_the_distributions():
    from importlib.metadata import version

    out = cli()
    assert out.returncode == 0 and out.stdout.startswith("usage: stress-runner")
    assert "validate" in out.stdout and out.stderr == ""
    out = cli("--version")
    assert out.returncode == 0
    assert out.stdout.splitlines() == [f"{name} {version(name)}" for name in (
        "stress-plugin", "stress-hookspecs", "stress-pack-flash-crash", "stress-pack-history")]


def test_a_command_alone_parses_as_the_whole_cli_does(capsys):
    """``main`` builds only the parser of the command argv names: each command's help (all
    of its arguments) is the same from that parser as from the whole CLI, the bare help lists
    every command, and a word that is no command still gets argparse's own error."""
    from stress_plugin.cli.main import COMMANDS, _command, _parser

    def output(parser, argv):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv)
        out = capsys.readouterr()
        return exit_.value.code, out.out, out.err

    for name in COMMANDS:
        argv = ["-q", name, "--help"]
        assert _command(argv) == name
        alone = output(_parser(_command(argv)), argv)
        assert alone == output(_parser(), argv) and alone[0] == 0 and alone[1], name
    assert output(_parser("run"), ["status"])[0] == 2  # only run was built
    code, _, err = output(_parser(_command(["bogus"])), ["bogus"])
    assert code == 2 and "invalid choice: 'bogus'" in err and all(n in err for n in COMMANDS)
    code, out, _ = output(_parser(_command(["--help"])), ["--help"])
    assert code == 0 and all(f"    {name} " in out for name in COMMANDS)


def test_validate_lists_every_problem_capped_at_50(tmp_path):
    positions = [position(f"S{i}", price=-1.0) for i in range(60)]
    positions += [position("MES", spread=-1, colour="red"), position("MES")]
    path = tmp_path / "book.yaml"
    path.write_text(yaml.safe_dump(book(*positions, equity=0)))
    out = cli("validate", str(path))
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert lines[0] == f"stress-runner: {path}: 63 problems"
    assert lines[1] == f"stress-runner: error: {path}: equity: must be > 0 (got 0.0)"
    assert lines[2] == (f"stress-runner: error: {path}: positions[0] (S0).price: must be a "
                        "finite number > 0 (got -1.0)")
    assert len(lines) == 1 + 50 + 1 and lines[-1] == "stress-runner: ... and 13 more"


def test_validate_scenario_reports_each_bad_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("scenario_name: x\nprice_shock_pct: 0.9\nspread_mult: 0.5\nstep_sec: 7\n"
                   "colour: red\n")
    out = cli("validate", str(bad))
    assert out.returncode == 2
    problems = [line.removeprefix("stress-runner: error: ") for line in
                out.stderr.splitlines()[1:]]
    assert problems[:3] == [f"{bad}: price_shock_pct: must be <= 0.5 (got 0.9)",
                            f"{bad}: spread_mult: must be >= 1 (got 0.5)",
                            f"{bad}: step_sec: duration_sec 60 must be a whole multiple of it "
                            "(got 7)"]
    assert problems[3].startswith(f"{bad}: colour: unknown field") and len(problems) == 4


def test_validate_judges_rules_across_fields_with_the_files_own_fields(tmp_path):
    """A zero price_shock_pct with a moving symbol_shocks entry, and a ramp and hold that fit
    the file's own duration, are not problems beside a real one; a ramp that does not fit is
    named with the file's duration."""
    shaped = {"scenario_name": "gbp", "price_shock_pct": 0, "symbol_shocks": {"6B*": -0.09},
              "spread_mults": {"6B*": 5}, "duration_sec": 300, "step_sec": 5,
              "ramp_sec": 120, "hold_sec": 60}
    path = tmp_path / "gbp.yaml"
    path.write_text(yaml.safe_dump({**shaped, "spread_mult": 0.5}))
    out = cli("validate", str(path))
    assert out.returncode == 2
    assert out.stderr.splitlines()[1:] == [
        f"stress-runner: error: {path}: spread_mult: must be >= 1 (got 0.5)"]
    path.write_text(yaml.safe_dump({**shaped, "duration_sec": 150, "spread_mult": 0.5}))
    problems = cli("validate", str(path)).stderr.splitlines()[1:]
    assert problems == [
        f"stress-runner: error: {path}: hold_sec: ramp_sec + hold_sec = 180 must be <= "
        "duration_sec 150 (got 60)",
        f"stress-runner: error: {path}: spread_mult: must be >= 1 (got 0.5)"]
    path.write_text(yaml.safe_dump(shaped))
    assert cli("validate", str(path)).stdout.startswith("OK: scenario gbp")


def test_validate_reads_a_json_file_as_json(tmp_path):
    path = tmp_path / "book.json"
    path.write_text(json.dumps(book(*(position(f"S{i}") for i in range(20_000)))))
    out = cli("validate", str(path))
    assert out.returncode == 0 and "OK: book" in out.stdout and "20000 positions" in out.stdout
    yaml_only = tmp_path / "yaml.json"
    yaml_only.write_text("equity: 1\npositions: []\n")  # YAML, not JSON
    out = cli("validate", str(yaml_only))
    assert out.returncode == 2 and f"{yaml_only}: invalid JSON" in out.stderr


def test_run_top_and_breaches_only(tmp_path):
    path = tmp_path / "book.yaml"
    path.write_text(yaml.safe_dump(book(*(position(f"S{i}", quantity=i, var=900.0 if i == 9
                                                   else 50_000.0) for i in range(1, 10)),
                                        equity=10_000_000)))
    env = {"STRESS_DB": str(tmp_path / "s.db")}
    out = cli("run", "--book", str(path), "--top", "3", env=env)
    assert out.returncode == 1, out.stderr
    table = [line.split()[0] for line in out.stdout.splitlines()[5:9]]
    assert table == ["S9", "S8", "S7", "PORTFOLIO"]
    assert "Shown: 3 of 9 symbols (the largest losses among the tested ones)" in out.stdout
    out = cli("run", "--book", str(path), "--breaches-only", env=env)
    assert [line.split()[0] for line in out.stdout.splitlines()[5:7]] == ["S9", "PORTFOLIO"]
    assert "Shown: 1 of 9 symbols (breached ones)" in out.stdout
    out = cli("run", "--top", "0", env=env)
    assert out.returncode == 2 and "must be a whole number >= 1" in out.stderr


def test_unknown_symbol_lists_close_matches_and_case_is_ignored(tmp_path):
    env = {"STRESS_DB": str(tmp_path / "s.db")}
    out = cli("run", "--symbols", "mes,Mnq", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert list(json.loads(out.stdout)["symbols"]) == ["MES", "MNQ"]
    out = cli("run", "--symbols", "MESS,XYZ", env=env)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "stress-runner: error: symbols: not in the book of plugin embedded_host: "
        "MESS: did you mean MES?; XYZ: no close match; the book has MES, MNQ, M2K, "
        "MCL, MES_P5700 (got 'MESS,XYZ')")


def test_unknown_disabled_plugin_is_a_warning_naming_the_known_ones(tmp_path):
    out = cli("plugins", env={"STRESS_DISABLE_PLUGINS": "pagerdty",
                              "STRESS_DB": str(tmp_path / "s.db")})
    assert out.returncode == 0
    assert ("STRESS_DISABLE_PLUGINS names no installed plugin: pagerdty (known plugins: "
            "embedded_host, flash_crash, history, pagerduty, riskagent_v2") in out.stderr
    assert "pagerduty" in out.stdout  # nothing real was blocked


def test_plugins_lists_what_the_service_runs_with(tmp_path):
    from stress_plugin.service.service import StressService
    from stress_plugin.settings import load_settings

    out = cli("plugins", "--json", env={"STRESS_DB": str(tmp_path / "s.db")})
    listed = json.loads(out.stdout)["plugins"]
    service = StressService(load_settings())
    assert listed == [info.to_dict() for info in service.plugins.describe()]
    assert {p["name"] for p in listed} >= {"embedded_host", "flash_crash", "pagerduty",
                                           "riskagent_v2"}


def test_log_lines_have_utc_timestamps_and_a_json_format(tmp_path):
    import re

    env = {"STRESS_DB": str(tmp_path / "s.db")}
    out = cli("run", env=env)
    first = out.stderr.splitlines()[0]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z stress_runner info: stress run ",
                    first), first
    out = cli("run", env={**env, "STRESS_LOG_FORMAT": "json"})
    lines = [json.loads(line) for line in out.stderr.splitlines()]
    assert lines[0]["logger"] == "stress_runner" and lines[0]["level"] == "info"
    assert "symbols_tested=5" in lines[0]["message"]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", lines[0]["time"])
    out = cli("run", env={**env, "STRESS_LOG_FORMAT": "xml"})
    assert out.returncode == 2 and "STRESS_LOG_FORMAT" in out.stderr
