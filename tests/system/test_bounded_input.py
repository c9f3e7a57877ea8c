"""Issue 12's bad files and stores through the real console script: each is exit 2 with one
line naming the file (or STRESS_DB), fast, and never a traceback."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
import yaml

from helpers import book, cli, position
from stress_plugin.core.checks import parse_yaml
from stress_plugin.runner import StressRunner
from stress_plugin.settings import load_settings
from stress_plugin.store import Store


def alias_bomb() -> str:
    """The billion laughs: nine levels of nine aliases, 9**9 strings from about 370 bytes."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\n"


def assert_clean_exit_2(out, *names: str) -> None:
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    error = [line for line in out.stderr.splitlines() if line.startswith("stress-runner: error")]
    assert len(error) == 1 and len(error[0]) < 600, out.stderr
    for name in names:
        assert name in error[0], error[0]


@pytest.mark.parametrize("command", ["run --book", "validate"])
def test_an_alias_bomb_fails_fast_naming_the_file(tmp_path, command):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    assert len(path.read_bytes()) < 400
    started = time.monotonic()
    out = cli(*command.split(), str(path), env={"STRESS_DB": str(tmp_path / "s.db")})
    assert_clean_exit_2(out, str(path), "aliases expand")
    assert time.monotonic() - started < 10  # the process start; the check itself is below


def test_the_alias_check_takes_milliseconds():
    started = time.perf_counter()
    with pytest.raises(yaml.YAMLError, match="aliases expand"):
        parse_yaml(alias_bomb())
    assert time.perf_counter() - started < 0.5
    # a few honest anchors are fine
    assert parse_yaml("base: &b {x: 1}\none: *b\ntwo: *b\n") == {
        "base": {"x": 1}, "one": {"x": 1}, "two": {"x": 1}}


@pytest.mark.parametrize(("name", "content", "problem"), [
    ("latin1.yaml", "scenario_name: caf\xe9\n".encode("latin-1"), "not UTF-8"),
    ("deep.yaml", b"a: " + b"[" * 100_000 + b"]" * 100_000, "invalid YAML"),
    ("deep.json", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ("tiny.yaml", b"scenario_name: tiny\nprice_shock_pct: -0.03\nstep_sec: 1.0e-320\n",
     "step_sec"),
    ("newline.yaml", b'scenario_name: "t\\n"\nprice_shock_pct: -0.03\n', "scenario_name"),
])
def test_bad_files_are_exit_2_naming_the_file(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content)
    command = ("run", "--book", str(path)) if name.endswith(".json") else ("validate", str(path))
    out = cli(*command, env={"STRESS_DB": str(tmp_path / "s.db")})
    assert_clean_exit_2(out, str(path), problem)


def test_files_over_the_size_limit_are_refused_unread(tmp_path):
    path = tmp_path / "book.yaml"
    path.write_text(yaml.safe_dump(book(*(position(f"S{i}") for i in range(2000)))))
    assert path.stat().st_size > 100_000  # the packs' scenario files are smaller
    env = {"STRESS_DB": str(tmp_path / "s.db"), "STRESS_MAX_FILE_BYTES": "100000"}
    out = cli("run", "--book", str(path), env=env)
    assert_clean_exit_2(out, str(path), "larger than 100,000 bytes", "STRESS_MAX_FILE_BYTES")
    env["STRESS_MAX_FILE_BYTES"] = str(10 * 1024 * 1024)
    assert cli("run", "--book", str(path), env=env).returncode in (0, 1)


def test_a_forged_kill_switch_line_in_a_symbol_stays_on_one_line(tmp_path):
    path = tmp_path / "book.json"
    path.write_text(json.dumps(book(position(
        "MES\n2026-12-01 stress_runner critical: KILL_SWITCH triggered: FORGED"))))
    out = cli("run", "--book", str(path), env={"STRESS_DB": str(tmp_path / "s.db")})
    assert out.returncode == 2
    assert not any(line.lstrip().startswith(("2026-12-01 stress_runner", "stress_runner"))
                   and "FORGED" in line for line in out.stderr.splitlines())
    assert "FORGED" not in out.stdout


def corrupt(db: Path) -> None:
    """Overwrite pages in the middle of the file: it still opens, then queries fail."""
    data = bytearray(db.read_bytes())
    page = 4096
    for offset in range(2 * page, len(data) - page, 2 * page):
        data[offset:offset + page] = b"\xde\xad\xbe\xef" * (page // 4)
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("command", [("alerts", "list"), ("serve", "--port", "0"), ("status",)])
def test_a_corrupted_store_is_exit_2_naming_stress_db(tmp_path, command, make_plugins):
    db = tmp_path / "s.db"
    store = Store(db)
    runner = StressRunner(plugins=make_plugins(), settings=load_settings(), store=store)
    for _ in range(30):
        runner.run_once(book=book(position(quantity=6, var=3000)))
    store.close()  # checkpoint the WAL into the file
    corrupt(db)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    out = cli(*command, env={"STRESS_DB": str(db)})
    assert_clean_exit_2(out, "STRESS_DB", str(db))


def test_token_command_prints_a_token_and_the_line_for_it(tmp_path):
    out = cli("token", "dana", "risk")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    token, line = lines[1], lines[3]
    assert len(token) >= 40 and token not in line
    assert line == f"dana risk {hashlib.sha256(token.encode()).hexdigest()}"
    assert cli("token", "dana", "admin").returncode == 2  # not a file role (argparse)
    bad = cli("token", "da na\nx", "risk")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_cli_reset_follows_the_four_eyes_rule_for_the_os_user(tmp_path):
    path = tmp_path / "book.yaml"
    path.write_text(yaml.safe_dump(book(position(quantity=6, var=3000))))
    env = {"STRESS_DB": str(tmp_path / "s.db"), "STRESS_RESET_APPROVALS": "2"}
    assert cli("run", "--book", str(path), env=env).returncode == 1
    first = cli("reset", "--reason", "checked", env=env)
    assert first.returncode == 0 and "stays HALTED" in first.stdout and "1 of 2" in first.stdout
    again = cli("reset", "--reason", "me again", env=env)  # the same OS user: still one pair
    assert "stays HALTED" in again.stdout
    status = json.loads(cli("status", "--json", env=env).stdout)
    assert status["halted"] is True
    store = Store(env["STRESS_DB"])
    approvals = store.reset_approvals(900)
    assert len(approvals) == 1 and approvals[0]["operator"].startswith("os:")
    # a second operator (here: through the store, as the API would) clears it
    outcome = store.reset_approve("alice", "alice@127.0.0.1", "agreed", required=2,
                                  window_s=900)
    assert outcome["cleared"] is not None
    assert "not halted" in cli("reset", "--reason", "x", env=env).stdout


def test_serve_refuses_a_tokens_file_with_a_raw_token_without_echoing_it(tmp_path):
    path = tmp_path / "operators"
    path.write_text("alice risk my-raw-secret-token-value\n")
    out = cli("serve", "--port", "0", env={"STRESS_DB": str(tmp_path / "s.db"),
                                            "STRESS_API_TOKENS_FILE": str(path)})
    assert_clean_exit_2(out, str(path), "line 1", "SHA256HEX")
    assert "my-raw-secret" not in out.stderr + out.stdout
