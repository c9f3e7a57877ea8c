"""What the tests share, in one module (no test module imports another): book builders, the
real ``stress-runner`` command and ``serve`` process, pip installs into a temp dir, the API over
ASGI, and a real HTTP server on loopback that speaks the PagerDuty Events API v2 contract.

The fake PagerDuty checks events the way the Events API v2 describes the real endpoint, answers
202 or 400 with PagerDuty's bodies, keeps the open/resolved state of alerts by ``dedup_key``, and
can be scripted to answer the next requests with 429 or 5xx, or be taken down and brought back
on the same port. Every request is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from stress_plugin.service.service import StressService

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-api-token-value"
"""The admin API token the API tests set as STRESS_API_TOKEN."""
BAD_SCHEDULES = [
    ({"interval_minutes": 7}, "interval_minutes=7"),
    ({"interval_minutes": 0}, "interval_minutes=0"),
    ({"interval_minutes": 90}, "interval_minutes=90"),
    ({"offset_seconds": 3600}, "offset_seconds=3600"),
    ({"offset_seconds": -1}, "offset_seconds=-1"),
    ({"interval_minutes": 15, "offset_seconds": 900}, "offset_seconds=900"),
    ({"market_hours_only": "yes"}, "market_hours_only='yes'"),
]
"""Schedule settings refused, with how the refusal names them: the schedule's rules, which the
scheduler applies too."""


def position(symbol: str = "MES", quantity: float = 5, price: float = 6000.0,
             spread: float = 0.25, multiplier: float = 5, **extra: float) -> dict:
    return {"symbol": symbol, "quantity": quantity, "price": price, "spread": spread,
            "multiplier": multiplier, **extra}


def book(*positions: dict, equity: float = 100_000, var: float | None = None) -> dict:
    data: dict = {"equity": equity, "positions": list(positions)}
    if var is not None:
        data["var"] = var
    return data


def require(binary: str, package: str) -> str:
    """The binary's path. Missing: a failure under CI (``.ci/run`` installs it, so a skip
    there would hide a red), a skip on a developer's machine."""

    found = shutil.which(binary)
    if found is None:
        message = f"{binary} is not installed (Debian: apt-get install -y {package})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


class Api:
    """A synchronous face over httpx's ASGI transport; ``client`` is the caller's address."""

    def __init__(self, service: StressService, client: str = "127.0.0.1",
                 headers: dict[str, str] | None = None) -> None:
        from stress_plugin.service.api import create_app

        self.app = create_app(service, background=False)
        self.client = client
        self.headers = headers or {}

    def __call__(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return asyncio.run(self.request(method, url, **kwargs))

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app, client=(self.client, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            headers = {**self.headers, **kwargs.pop("headers", {})}
            return await client.request(method, url, headers=headers, **kwargs)


STRESS_RUNNER = str(Path(sys.executable).with_name("stress-runner"))


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PD_", "STRESS_"))}
    # never the user's own store: a test's migrations must not reach ~/.local/state
    full_env["STRESS_DB"] = str(Path(tempfile.mkdtemp(prefix="stress-cli-")) / "stress.db")
    full_env.update(env or {})
    return subprocess.run([STRESS_RUNNER, *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess(subprocess.Popen[str]):
    """A ``serve`` whose output a thread reads all along, so a long test never fills the pipe
    and blocks the server on its next log line; ``communicate()`` gives everything read."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.stdout is not None
        for line in self.stdout:
            self.lines.append(line)

    def communicate(self, input: str | None = None, timeout: float | None = None
                    ) -> tuple[str, None]:
        self.wait(timeout)
        self._reader.join(5)
        return "".join(self.lines), None

    def stop(self) -> str:
        """Stop it (SIGTERM, then SIGKILL after 10 s); everything it wrote."""
        self.terminate()
        try:
            return self.communicate(timeout=10)[0]
        except subprocess.TimeoutExpired:
            self.kill()
            return self.communicate(timeout=10)[0]


def start_serve(port: int, env: dict[str, str], book_path: Path) -> ServeProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PD_", "STRESS_"))}
    full_env.update(env)
    proc = ServeProcess([STRESS_RUNNER, "serve", "--port", str(port), "--book",
                         str(book_path)], env=full_env, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"serve did not start: {proc.communicate()[0]}")


PG_BIN = Path("/usr/lib/postgresql/15/bin")
"""Debian's PostgreSQL 15 (``apt-get install postgresql``)."""


class PostgresServer:
    """A real PostgreSQL server of the tests' own: ``initdb`` into a temporary directory and
    ``pg_ctl`` on a free loopback port, as the ``postgres`` user when running as root (the
    server refuses root). Trust authentication on loopback; ``stop()`` removes everything.
    ``url(schema)`` names an empty schema of its own, so each test starts from nothing."""

    def __init__(self) -> None:
        initdb = PG_BIN / "initdb"
        if not initdb.exists():
            message = "PostgreSQL 15 is not installed (Debian: apt-get install -y postgresql)"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        self.dir = Path(tempfile.mkdtemp(prefix="stress-pg-"))
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        data = self.dir / "data"
        self._run(str(initdb), "-D", str(data), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8")
        options = (f"-c port={self.port} -c listen_addresses=127.0.0.1 -c fsync=off"
                   f" -c unix_socket_directories={self.dir} -c max_connections=300")
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "log"),
                  "-o", options, "-w", "start")
        self.base = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        subprocess.run([*self._as, *argv], check=True, capture_output=True, timeout=60)

    def url(self, schema: str | None = None) -> str:
        """The database's URL; with ``schema``, one whose tables go in that (new) schema."""
        if schema is None:
            return self.base
        import psycopg

        with psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        return f"{self.base}?options=-csearch_path%3D{schema}"

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate",
                      "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def pip_install_target(source: Path, target: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        check=True, capture_output=True, text=True, timeout=300,
    )


def install_sources(files: dict[str, str], src: Path, site: Path) -> Path:
    """Write a distribution's ``files`` (dedented) under ``src`` and pip-install it into
    ``site``, a directory to put on PYTHONPATH; returns ``site``."""
    for name, text in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(textwrap.dedent(text))
    pip_install_target(src, site)
    return site


def plugin_pyproject(distribution: str, entry_points: dict[str, str], *,
                     version: str = "1.0.0", package: bool = False) -> str:
    """A third-party plugin distribution's pyproject.toml: its ``stress_plugin`` entry points
    (name -> ``module[:object]``), and its code as one module or one package of its name."""
    module = distribution.replace("-", "_")
    points = "\n".join(f'{name} = "{target}"' for name, target in entry_points.items())
    code = f'packages = ["{module}"]' if package else f'py-modules = ["{module}"]'
    return (f'[build-system]\nrequires = ["setuptools>=64"]\n'
            f'build-backend = "setuptools.build_meta"\n\n'
            f'[project]\nname = "{distribution}"\nversion = "{version}"\n'
            f'dependencies = ["stress-hookspecs"]\n\n'
            f"[project.entry-points.stress_plugin]\n{points}\n\n[tool.setuptools]\n{code}\n")


def one_module_plugin(distribution: str, entry_point: str, source: str) -> dict[str, str]:
    """The files of a third-party plugin: one module (``source``), one entry point."""
    module = distribution.replace("-", "_")
    return {"pyproject.toml": plugin_pyproject(distribution, {entry_point: module}),
            f"{module}.py": source}


# -- the fake PagerDuty ----------------------------------------------------------------------

EVENT_ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")
MAX_EVENT_BYTES = 512 * 1024


@dataclass
class Received:
    """One request as the server saw it, and what it answered."""

    at: float
    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any
    status: int = 0
    answer: dict[str, Any] = field(default_factory=dict)
    retry_after: str | None = None


@dataclass
class Scripted:
    status: int
    retry_after: str | None = None
    body: dict[str, Any] | None = None


def validate(raw: bytes) -> tuple[Any, list[str]]:
    """The parsed event and the list of problems (empty when PagerDuty would accept it)."""
    if len(raw) >= MAX_EVENT_BYTES:
        return None, [f"Event is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES}"]
    try:
        event = json.loads(raw)
    except ValueError:
        return None, ["Event is not valid JSON"]
    if not isinstance(event, dict):
        return event, ["Event must be a JSON object"]
    errors = []
    key = event.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        errors.append("'routing_key' is missing or not 32 characters")
    action = event.get("event_action")
    if action not in EVENT_ACTIONS:
        errors.append(f"'event_action' must be one of {', '.join(EVENT_ACTIONS)}")
    dedup_key = event.get("dedup_key")
    if dedup_key is not None and (not isinstance(dedup_key, str) or len(dedup_key) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not dedup_key:
        errors.append(f"'dedup_key' is required for {action}")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            errors.append("'payload' is missing")
        else:
            summary = payload.get("summary")
            if not isinstance(summary, str) or not summary or len(summary) > 1024:
                errors.append("'payload.summary' is missing or longer than 1024 characters")
            if not isinstance(payload.get("source"), str) or not payload["source"]:
                errors.append("'payload.source' is missing")
            if payload.get("severity") not in SEVERITIES:
                errors.append(f"'payload.severity' must be one of {', '.join(SEVERITIES)}")
    return event, errors


class FakePagerDuty:
    """``with FakePagerDuty() as pd:`` serves on ``pd.url`` until the block ends."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.alerts: dict[str, str] = {}
        """dedup_key -> ``triggered`` or ``resolved``, as PagerDuty would hold them."""
        self.opened: list[str] = []
        """dedup_key of every alert opened (a trigger on a new or resolved key)."""
        self._script: deque[Scripted] = deque()
        self.hang_s = 0.0
        """Hold every request this long before answering (a hanging PagerDuty)."""
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> FakePagerDuty:
        """Listen (again) on the same port: port 0 the first time."""
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Go down: stop listening and cut kept-alive connections, so clients get errors."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            with contextlib.suppress(OSError):  # the client may have closed it already
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakePagerDuty:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2/enqueue"

    # -- scripting and inspection -----------------------------------------------------------

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        retry_after: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        """Answer the next ``count`` requests with ``status`` instead of processing them."""
        with self._lock:
            self._script.extend(Scripted(status, retry_after, body) for _ in range(count))

    def accepted(self) -> list[dict[str, Any]]:
        """The events answered 202, in order."""
        with self._lock:
            return [r.body for r in self.requests if r.status == 202]

    # -- the endpoint -----------------------------------------------------------------------

    def _handle(self, path: str, headers: dict[str, str], raw: bytes) -> Received:
        with self._lock:
            received = Received(time.monotonic(), path, headers, raw, None)
            self.requests.append(received)
            if self._script:
                scripted = self._script.popleft()
                received.status = scripted.status
                received.answer = scripted.body or {
                    "status": "throttle" if scripted.status == 429 else "error",
                    "message": "Scripted failure",
                }
                received.retry_after = scripted.retry_after
                return received
            if path != "/v2/enqueue":
                received.status, received.answer = 404, {"status": "not found", "message": path}
                return received
            event, errors = validate(raw)
            received.body = event
            if errors:
                received.status = 400
                received.answer = {
                    "status": "invalid event",
                    "message": "Event object is invalid",
                    "errors": errors,
                }
                return received
            dedup_key = event.get("dedup_key") or uuid.uuid4().hex
            if event["event_action"] == "trigger":
                if self.alerts.get(dedup_key) != "triggered":
                    self.opened.append(dedup_key)
                self.alerts[dedup_key] = "triggered"
            elif event["event_action"] == "resolve" and dedup_key in self.alerts:
                self.alerts[dedup_key] = "resolved"
            received.status = 202
            received.answer = {
                "status": "success",
                "message": "Event processed",
                "dedup_key": dedup_key,
            }
            return received

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with fake._lock:
                    fake._connections.add(self.connection)

            def finish(self) -> None:
                with fake._lock:
                    fake._connections.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if fake.hang_s:
                    time.sleep(fake.hang_s)
                received = fake._handle(self.path, dict(self.headers.items()), raw)
                data = json.dumps(received.answer).encode()
                self.send_response(received.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if received.retry_after:
                    self.send_header("Retry-After", received.retry_after)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reads ``fake.requests`` instead."""

        return Handler
