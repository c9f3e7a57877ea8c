"""Issue 12 on a real ``stress-runner serve``: forwarded headers, a huge body, offline docs in
a real headless Chromium, and a schemathesis run (fuzzing and stateful phases)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from helpers import STRESS_RUNNER, book, free_port, position, require

TOKEN = "serve-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def book_path(tmp_path: Path) -> Path:
    path = tmp_path / "book.yaml"
    path.write_text(yaml.safe_dump(book(position(quantity=6, var=3000))))
    return path


def serving(tmp_path: Path, book_path: Path, **env: str) -> tuple[subprocess.Popen[str], str]:
    """A real serve whose output goes to a file: a long run (schemathesis) would fill a pipe
    nobody reads and block its logging."""
    port = free_port()
    log = (tmp_path / f"serve-{port}.log").open("w")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PD_", "STRESS_"))}
    full_env.update({"STRESS_DB": str(tmp_path / "stress.db"), **env})
    proc = subprocess.Popen([STRESS_RUNNER, "serve", "--port", str(port), "--book",
                             str(book_path)], env=full_env, stdout=log,
                            stderr=subprocess.STDOUT, text=True)
    proc.log_path = log.name  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, f"http://127.0.0.1:{port}"
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"serve did not start: {Path(log.name).read_text()}")


def stop(proc: subprocess.Popen[str]) -> str:
    """Stop it; its whole output."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    return Path(proc.log_path).read_text()  # type: ignore[attr-defined]


@pytest.fixture
def served(tmp_path: Path, book_path: Path) -> Iterator[str]:
    proc, base = serving(tmp_path, book_path, STRESS_API_TOKEN=TOKEN)
    try:
        yield base
    finally:
        output = stop(proc)
        assert TOKEN not in output


def audit_actors(base: str) -> list[str]:
    entries = httpx.get(f"{base}/api/v1/audit?hours=24").json()["entries"]
    return [e["actor"] for e in entries if e["action"] == "reset_circuit"]


def test_forwarded_headers_are_ignored_unless_from_a_trusted_proxy(tmp_path, book_path):
    forged = {**AUTH, "X-Forwarded-For": "203.0.113.77", "X-Forwarded-Proto": "https"}
    proc, base = serving(tmp_path, book_path, STRESS_API_TOKEN=TOKEN)
    try:
        assert httpx.post(f"{base}/api/v1/risk/reset_circuit", headers=forged).status_code == 200
        assert audit_actors(base) == ["admin@127.0.0.1"]
    finally:
        stop(proc)
    proc, base = serving(tmp_path, book_path, STRESS_API_TOKEN=TOKEN,
                         STRESS_TRUSTED_PROXIES="127.0.0.1")
    try:
        httpx.post(f"{base}/api/v1/risk/reset_circuit", headers=forged)
        # now the proxy's word is taken: the client is remote, so reads need the token
        assert httpx.get(f"{base}/api/v1/audit?hours=24",
                         headers={"X-Forwarded-For": "203.0.113.77"}).status_code == 401
        assert audit_actors(base)[0] == "admin@203.0.113.77"
    finally:
        stop(proc)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_105_mb_body_is_refused_before_it_is_read(tmp_path, book_path):
    proc, base = serving(tmp_path, book_path)
    try:
        before = rss_kb(proc.pid)
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"PUT /api/v1/stress/config HTTP/1.1\r\nHost: localhost\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 110000000\r\n\r\n"
                         b'{"scenarios": ["' + b"x" * 65536)
            started = time.monotonic()
            reply = sock.recv(4096)
            assert time.monotonic() - started < 5
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        chunked = httpx.put(f"{base}/api/v1/stress/config", headers={
            "Content-Type": "application/json"}, content=(b"x" * 65536 for _ in range(40)))
        assert chunked.status_code == 413
        assert rss_kb(proc.pid) - before < 20_000
        assert httpx.get(f"{base}/api/v1/stress/config").json()["scenarios"] == [
            "flash_crash_lite"]
    finally:
        output = stop(proc)
    assert max(map(len, output.splitlines())) < 2000  # no 110 MB log line


def test_docs_render_offline_in_a_real_chromium(served: str, tmp_path: Path):
    chromium = require("chromium", "chromium")  # CI: a failure, never a skip
    html = httpx.get(f"{served}/docs").text
    assert "cdn" not in html.lower() and "https://" not in html
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'chromium'}",
               # no name resolves but loopback: the page must need nothing from the internet
               "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
               "--virtual-time-budget=20000", "--dump-dom", f"{served}/docs"]
    root = {"HOME": str(tmp_path)} if os.geteuid() == 0 else {}
    out = subprocess.run(command, capture_output=True, text=True, timeout=120,
                         env={**os.environ, **root})
    dom = out.stdout
    assert "opblock" in dom, (out.returncode, out.stderr[-2000:])
    for text in ("/api/v1/risk/reset_circuit", "/api/v1/stress/run", "/api/v1/audit",
                 "Approve clearing the trading halt", "authorize"):
        assert text in dom, text


def test_the_openapi_document_is_complete(served: str):
    spec = httpx.get(f"{served}/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer",
        "description": "STRESS_API_TOKEN (admin) or an operator's token from "
                       "STRESS_API_TOKENS_FILE"}
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            assert op.get("summary") and op.get("description"), (method, path)
            ok = op["responses"]["200"]["content"]
            schema = next(iter(ok.values()))["schema"]
            assert schema.get("$ref") or schema.get("type") == "string", (method, path)
    assert httpx.get(f"{served}/redoc").status_code == 200


def test_schemathesis_finds_no_server_error(served: str, tmp_path: Path):
    schemathesis = Path(sys.executable).with_name("schemathesis")
    out = subprocess.run(
        [str(schemathesis), "run", f"{served}/openapi.json", "--checks", "not_a_server_error",
         "--phases", "examples,coverage,fuzzing,stateful", "--max-examples", "60",
         "--header", f"Authorization: Bearer {TOKEN}", "--request-timeout", "30",
         "--seed", "12", "--no-color"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    summary = out.stdout[-4000:]
    assert out.returncode == 0, summary + out.stderr[-2000:]
    assert "✅ Fuzzing" in out.stdout and "✅ Stateful" in out.stdout, summary
    assert "API Links:" in out.stdout, summary
    # every generated case passed (a warning that HTML bodies are not schema-checked is fine)
    assert re.search(r"(\d+) generated, \1 passed\n", out.stdout), summary
