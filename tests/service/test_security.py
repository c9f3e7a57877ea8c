"""Issue 12's reproduced cases against the app (ASGI, in process): browser-safe writes, names
not paths, bounded and escaped input, named operators with roles, four-eyes reset."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, TOKEN, Api, book, position
from stress_plugin.cli.main import OpsFormatter
from stress_plugin.service.api import create_app
from stress_plugin.service.security import new_token, parse_operators

ALICE, BOB, CAROL, VIC = ("alice-token-" + "a" * 20, "bob-token-" + "b" * 20,
                          "carol-token-" + "c" * 20, "vic-token-" + "v" * 20)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def breaching(tmp_path: Path) -> Path:
    path = tmp_path / "breach.yaml"
    path.write_text(yaml.safe_dump(book(position(quantity=6, var=3000))))
    return path


@pytest.fixture
def operators_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """alice and bob (risk), carol (operator), vic (viewer)."""
    path = tmp_path / "operators"
    lines = ["# name role sha256(token)"] + [
        f"{name} {role} {hashlib.sha256(token.encode()).hexdigest()}"
        for name, role, token in [("alice", "risk", ALICE), ("bob", "risk", BOB),
                                  ("carol", "operator", CAROL), ("vic", "viewer", VIC)]]
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("STRESS_API_TOKENS_FILE", str(path))
    return path


# -- browser-safe writes ---------------------------------------------------------------------


def test_cross_site_forgery_cannot_clear_the_halt(make_service, breaching):
    api = Api(make_service(book_path=breaching))
    api("POST", "/api/v1/stress/run")
    forged = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    # the reproduction: evil Host and Origin, a text/plain body, from loopback, no token
    response = api("POST", "/api/v1/risk/reset_circuit", content=b"{}",
                   headers={**forged, "Host": "evil.example:8000"})
    assert response.status_code == 421
    for headers in (forged, {"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                    {"Origin": "http://localhost:3000"}):
        response = api("POST", "/api/v1/risk/reset_circuit", headers=headers)
        assert response.status_code == 403, headers
    text_body = api("POST", "/api/v1/risk/reset_circuit", content=b'{"reason": "x"}',
                    headers={"Content-Type": "text/plain"})
    assert text_body.status_code == 415
    assert api("GET", "/api/v1/risk/status").json()["halted"] is True
    # the browser's own page (same origin) and curl (no Origin) still work
    same = api("POST", "/api/v1/risk/reset_circuit", json={"reason": "checked"},
               headers={"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200 and same.json()["cleared"] is not None


def test_reads_answer_allowed_hosts_only(make_service, book_file, monkeypatch):
    api = Api(make_service(book_path=book_file))
    for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST"):
        assert api("GET", "/api/v1/stress/status", headers={"Host": host}).status_code == 200
    rebound = api("GET", "/api/v1/stress/status", headers={"Host": "evil.example:8000"})
    assert rebound.status_code == 421 and "STRESS_ALLOWED_HOSTS" in rebound.text
    for path in ("/healthz", "/metrics"):  # probes and scrapers use the pod's address
        assert api("GET", path, headers={"Host": "10.1.2.3:8000"}).status_code == 200
    monkeypatch.setenv("STRESS_ALLOWED_HOSTS", "stress-runner, stress-runner.trading.svc")
    named = Api(make_service(book_path=book_file))
    assert named("GET", "/api/v1/stress/status",
                 headers={"Host": "stress-runner.trading.svc:8000"}).status_code == 200
    bound = Api(make_service(book_path=book_file))
    bound.app = create_app(
        bound.app.state.service, background=False, bound_host="10.9.8.7")
    assert bound("GET", "/api/v1/stress/config", headers={"Host": "10.9.8.7:8000"}
                 ).status_code == 200


def test_the_runbooks_curl_requests_still_work(api: Api):
    # curl -X POST http://localhost:8000/api/v1/stress/run (no body, no Content-Type)
    assert api("POST", "/api/v1/stress/run").status_code == 200
    custom = api("POST", "/api/v1/stress/run", content=json.dumps(
        {"scenario": "custom_scenario", "symbols": ["MES", "MNQ"]}),
        headers={"Content-Type": "application/json"})
    assert custom.status_code == 404  # no such scenario here, as before
    assert api("POST", "/api/v1/risk/reset_circuit").status_code == 200
    assert api("GET", "/api/v1/risk/limits/history").status_code == 200
    assert api("GET", "/api/v1/market/volatility?hours=24").status_code == 200


# -- names, not paths; short echoes -----------------------------------------------------------


def test_a_scenario_path_is_an_unknown_name_and_no_file_is_opened(api: Api, tmp_path,
                                                                   monkeypatch):
    secret = tmp_path / "secret.yaml"
    secret.write_text("scenario_name: TOP-SECRET-VALUE\nprice_shock_pct: 7\n")

    def no_files(*args, **kwargs):
        raise AssertionError("the API opened a file it was given")

    monkeypatch.setattr("stress_plugin.core.scenario._read_yaml", no_files)
    monkeypatch.setattr("stress_plugin.core.checks.read_text", no_files)
    for path in (str(secret), "/etc/passwd", "../../etc/shadow.yml"):
        response = api("POST", "/api/v1/stress/run", json={"scenario": path})
        assert response.status_code == 404, response.text
        assert "TOP-SECRET" not in response.text
    long = api("POST", "/api/v1/stress/run", json={"scenario": "x" * 100_000})
    assert long.status_code == 422 and len(long.text) < 1000


# -- bounded input ----------------------------------------------------------------------------

BAD_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e999", "1" * 400]


@pytest.mark.parametrize("number", BAD_NUMBERS)
@pytest.mark.parametrize(("method", "url", "field"), [
    ("PUT", "/api/v1/risk/limits", "max_drawdown_pct"),
    ("PUT", "/api/v1/risk/limits", "max_var_multiplier"),
    ("PUT", "/api/v1/stress/config", "max_runtime_ms"),
    ("PUT", "/api/v1/stress/config", "interval_minutes"),
    ("PUT", "/api/v1/stress/config", "max_symbols"),
])
def test_non_finite_and_overflowing_numbers_answer_422_naming_the_field(api: Api, number,
                                                                        method, url, field):
    response = api(method, url, content=f'{{"{field}": {number}}}',
                   headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["field"] == field
    assert len(response.text) < 1000


def test_hours_must_be_finite(api: Api):
    for hours in ("nan", "inf", "1e999"):
        assert api("GET", "/api/v1/stress/results", params={"hours": hours}).status_code == 422


def test_a_body_over_one_mib_answers_413_before_it_is_read(api: Api):
    big = b'{"scenarios": ["' + b"x" * (2 * 1024 * 1024) + b'"]}'
    response = api("PUT", "/api/v1/stress/config", content=big,
                   headers={"Content-Type": "application/json"})
    assert response.status_code == 413

    async def chunks():  # no Content-Length: counted as it arrives
        yield b'{"scenarios": ["'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"]}'

    chunked = api("PUT", "/api/v1/stress/config", content=chunks(),
                  headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413
    assert api.app.state.service.store.config_history() == []


def test_symbols_must_be_printable_text(api: Api, make_runner):
    for bad in ["MES\nstress_runner critical: KILL_SWITCH triggered: FORGED", "MES\x00",
                "\x1b[31mMES", "MES\u202e", "M" * 65, "", " MES"]:
        response = api("POST", "/api/v1/stress/run", json={"symbols": [bad]})
        assert response.status_code == 422, bad
        result = make_runner().run_once(book=book(position(bad)))
        assert result.status == "failed" and "positions[0].symbol" in result.error, bad
    assert make_runner().run_once(book=book(position("ES1 Index"))).status == "passed"


def test_log_lines_escape_what_users_typed():
    formatter = OpsFormatter("%(name)s %(level)s: %(message)s")
    record = logging.LogRecord("stress_runner", logging.INFO, __file__, 1, "config changed: %s",
                               ("x\nstress_runner critical: KILL_SWITCH triggered: FORGED"
                                "\u202e\x1b[2J",), None)
    line = formatter.format(record)
    assert "\n" not in line and "\x1b" not in line and "\u202e" not in line
    assert line.startswith("stress_runner info: config changed: x\\nstress_runner")


def test_reset_reason_is_escaped_in_the_log(make_service, breaching, caplog):
    api = Api(make_service(book_path=breaching))
    api("POST", "/api/v1/stress/run")
    api("POST", "/api/v1/risk/reset_circuit",
        json={"reason": "ok\nstress_runner critical: KILL_SWITCH triggered: FORGED"})
    [line] = [r.getMessage() for r in caplog.records if "circuit reset by" in r.getMessage()]
    assert "\n" not in line and "\\n" in line


# -- tokens and operators ---------------------------------------------------------------------


def test_a_token_with_a_trailing_newline_still_works(make_service, book_file, monkeypatch):
    monkeypatch.setenv("STRESS_API_TOKEN", TOKEN + "\n")  # from a secret file
    api = Api(make_service(book_path=book_file), headers=bearer(TOKEN))
    assert api("POST", "/api/v1/stress/run").status_code == 200
    padded = Api(api.app.state.service, headers={"Authorization": f"Bearer  {TOKEN} "})
    assert padded("POST", "/api/v1/stress/run").status_code == 200


def test_roles_decide_who_may_do_what(make_service, breaching, operators_file, monkeypatch):
    monkeypatch.setenv("STRESS_API_TOKEN", TOKEN)
    service = make_service(book_path=breaching)
    who = {name: Api(service, client="10.0.0.9", headers=bearer(token))
           for name, token in [("alice", ALICE), ("carol", CAROL), ("vic", VIC),
                               ("admin", TOKEN)]}
    calls = {"run": ("POST", "/api/v1/stress/run", None),
             "config": ("PUT", "/api/v1/stress/config", {"offset_seconds": 10}),
             "limits": ("PUT", "/api/v1/risk/limits", {"max_position_delta": 0.2}),
             "reset": ("POST", "/api/v1/risk/reset_circuit", None)}
    allowed = {"alice": {"run", "limits", "reset"}, "carol": {"run", "config"}, "vic": set(),
               "admin": set(calls)}
    for name, caller in who.items():
        assert caller("GET", "/api/v1/stress/status").status_code == 200, name
        for action, (method, url, body) in calls.items():
            if action == "limits":  # a change that changes nothing would be a 422
                body = {"max_position_delta": 0.2 if name == "alice" else 0.3}
            code = caller(method, url, json=body).status_code
            assert code == (200 if action in allowed[name] else 403), (name, action, code)
    store = service.store
    assert [h["actor"] for h in store.config_history()] == ["admin@10.0.0.9", "carol@10.0.0.9"]
    assert [h["actor"] for h in store.limits_history()] == ["admin@10.0.0.9", "alice@10.0.0.9"]
    audit = Api(service, headers=bearer(VIC))("GET", "/api/v1/audit", params={"hours": 24})
    entries = audit.json()["entries"]
    assert [(e["action"], e["actor"]) for e in entries if e["action"] == "reset_circuit"] == [
        ("reset_circuit", "admin@10.0.0.9"), ("reset_circuit", "alice@10.0.0.9")]
    assert entries[-1]["action"] == "halt"
    for text in (audit.text, json.dumps(store.audit_log())):
        assert ALICE not in text and TOKEN not in text


def test_with_tokens_remote_reads_need_one(make_service, book_file, operators_file):
    service = make_service(book_path=book_file)
    remote = Api(service, client="10.0.0.9")
    assert remote("GET", "/api/v1/stress/status").status_code == 401
    assert remote("GET", "/api/v1/audit").status_code == 401
    assert remote("GET", "/healthz").status_code == 200
    assert remote("GET", "/metrics").status_code == 200
    assert Api(service)("GET", "/api/v1/stress/status").status_code == 200  # loopback
    assert Api(service)("POST", "/api/v1/stress/run").status_code == 401  # but no changes
    bad = Api(service, client="10.0.0.9", headers=bearer("not-a-token"))
    assert bad("GET", "/api/v1/stress/status").status_code == 401


def test_revoking_an_operator_needs_no_restart(make_service, book_file, operators_file):
    api = Api(make_service(book_path=book_file), client="10.0.0.9", headers=bearer(CAROL))
    assert api("POST", "/api/v1/stress/run").status_code == 200
    operators_file.write_text("\n".join(
        line for line in operators_file.read_text().splitlines() if not line.startswith("carol")))
    assert api("POST", "/api/v1/stress/run").status_code == 401
    operators_file.write_text("carol operator not-a-digest\n")  # a broken file fails closed
    assert api("POST", "/api/v1/stress/run").status_code == 401


def test_the_tokens_file_format_is_checked_line_by_line(tmp_path):
    digest = "0" * 64
    assert parse_operators(f"# c\n\nann risk {digest}  # trailing\n", "f") == {
        digest: ("ann", "risk")}
    for text, problem in [("ann risk", "NAME ROLE SHA256HEX"), (f"ann boss {digest}", "ROLE"),
                          ("ann risk s3cret-token", "SHA256HEX"),
                          (f"admin risk {digest}", "reserved"),
                          (f"ann risk {digest}\nann viewer {'1' * 64}", "duplicate"),
                          ("a\nb c d e", "line 1")]:
        with pytest.raises(Exception, match=problem):
            parse_operators(text, "f")
    token, line = new_token("dana", "operator")
    assert token not in line
    assert parse_operators(line, "f") == {hashlib.sha256(token.encode()).hexdigest():
                                          ("dana", "operator")}


# -- four-eyes reset --------------------------------------------------------------------------


def test_four_eyes_reset_needs_two_different_risk_operators(make_service, breaching,
                                                            operators_file, monkeypatch):
    monkeypatch.setenv("STRESS_RESET_APPROVALS", "2")
    service = make_service(book_path=breaching)
    alice, bob, carol = (Api(service, headers=bearer(t)) for t in (ALICE, BOB, CAROL))
    run = carol("POST", "/api/v1/stress/run").json()
    first = alice("POST", "/api/v1/risk/reset_circuit", json={"reason": "positions cut"})
    assert first.status_code == 202
    body = first.json()
    assert body["halted"] is True and body["cleared"] is None
    assert body["approvals_required"] == 2 and body["approvals_pending"] == 1
    assert [a["operator"] for a in body["approvals"]] == ["alice"]
    again = alice("POST", "/api/v1/risk/reset_circuit", json={"reason": "really"})
    assert again.status_code == 202 and again.json()["approvals_pending"] == 1  # same eyes
    assert carol("POST", "/api/v1/risk/reset_circuit").status_code == 403  # not risk
    status = carol("GET", "/api/v1/risk/status").json()
    assert status["halted"] is True and [a["operator"] for a in status["approvals"]] == ["alice"]
    assert status["approvals_required"] == 2 and status["expires_at"]
    assert service.runner.halt() is not None
    second = bob("POST", "/api/v1/risk/reset_circuit", json={"reason": "agreed"})
    assert second.status_code == 200
    assert second.json()["cleared"]["run_id"] == run["run_id"]
    assert carol("GET", "/api/v1/risk/status").json()["halted"] is False
    [reset] = [e for e in service.store.audit_log() if e["action"] == "reset_circuit"]
    assert [a["operator"] for a in reset["details"]["approvals"]] == ["alice", "bob"]


def test_an_approval_older_than_fifteen_minutes_no_longer_counts(make_service, breaching,
                                                                 operators_file, monkeypatch):
    monkeypatch.setenv("STRESS_RESET_APPROVALS", "2")
    service = make_service(book_path=breaching)
    Api(service, headers=bearer(CAROL))("POST", "/api/v1/stress/run")
    Api(service, headers=bearer(ALICE))("POST", "/api/v1/risk/reset_circuit")
    with sqlite3.connect(service.store.path) as conn:  # the approval was 16 minutes ago
        conn.execute("UPDATE audit_log SET at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', "
                     "'-16 minutes') WHERE action = 'reset_approval'")
    late = Api(service, headers=bearer(BOB))("POST", "/api/v1/risk/reset_circuit")
    assert late.status_code == 202 and [a["operator"] for a in late.json()["approvals"]] == [
        "bob"]


def test_default_one_approval_clears_at_once(make_service, breaching, operators_file):
    service = make_service(book_path=breaching)
    Api(service, headers=bearer(CAROL))("POST", "/api/v1/stress/run")
    response = Api(service, headers=bearer(ALICE))("POST", "/api/v1/risk/reset_circuit")
    assert response.status_code == 200 and response.json()["halted"] is False
    assert response.json()["by"] == "alice@127.0.0.1"


def test_the_readme_example_tokens_file_parses():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```text\n# /etc/stress-runner/operators")[1].split("```")[0]
    operators = parse_operators("#" + block, "README")
    assert sorted(operators.values()) == [("alice", "risk"), ("bob", "risk"),
                                          ("carol", "operator"), ("grafana", "viewer")]
    assert hashlib.sha256(b"example-token-of-alice").hexdigest() in operators
