"""Who may do what, from where: operators and roles, bearer tokens, and the checks every request
passes before the API sees it (Host allow-list, cross-site writes, JSON bodies, body size).

The service controls a kill switch, so a browser on the same host is a threat too: a page it
has open may send requests to loopback (forgery) or resolve its own name to 127.0.0.1 (DNS
rebinding). The README's security section states the threat model.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from stress_plugin.core.errors import NO_VALUE, ConfigError
from stress_plugin.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PERMISSIONS = ("read", "run", "config", "limits", "reset")
ROLES: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "operator": frozenset({"read", "run", "config"}),
    "risk": frozenset({"read", "run", "limits", "reset"}),
    "admin": frozenset(PERMISSIONS),
}
"""What each role may do. ``admin`` is ``STRESS_API_TOKEN`` (and loopback without tokens)."""
FILE_ROLES = ("viewer", "operator", "risk")
"""The roles an operator in STRESS_API_TOKENS_FILE may have."""
MAX_BODY_BYTES = 1024 * 1024
"""Request bodies larger than this answer 413 before they are read whole."""
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
OPEN_PATHS = frozenset({"/healthz", "/metrics"})
"""Probes and Prometheus reach these by pod IP: no Host check, no token."""
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an operator's name and role, and the client address."""

    name: str
    role: str
    client: str

    @property
    def actor(self) -> str:
        """How the audit trail, limits history and config history name the caller."""
        return f"{self.name}@{self.client}"

    def may(self, permission: str) -> bool:
        return permission in ROLES[self.role]


# -- the tokens file ------------------------------------------------------------------------


def parse_operators(text: str, source: str) -> dict[str, tuple[str, str]]:
    """``NAME ROLE SHA256HEX`` per line (``#`` comments, blank lines) as digest -> (name,
    role); a ``ConfigError`` names the file and line of anything else."""
    operators: dict[str, tuple[str, str]] = {}
    names: set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"line {number}"
        parts = line.split()
        if len(parts) != 3:
            raise ConfigError(source, where, NO_VALUE, "must be NAME ROLE SHA256HEX")
        name, role, digest = parts
        if not _NAME.fullmatch(name):
            raise ConfigError(source, where, name, "NAME must be 1-64 letters, digits, "
                              "'_', '.' or '-'")
        if name in {"admin", "loopback"} or name.startswith("os:"):
            raise ConfigError(source, where, name, "is a reserved name")
        if role not in FILE_ROLES:
            raise ConfigError(source, where, role, f"ROLE must be one of {', '.join(FILE_ROLES)}")
        digest = digest.lower()
        if not _DIGEST.fullmatch(digest):
            raise ConfigError(source, where, NO_VALUE, "SHA256HEX must be the 64 hex digits of "
                              "the token's SHA-256 (never the token itself)")
        if name in names:
            raise ConfigError(source, where, name, "duplicate operator name")
        if digest in operators:
            raise ConfigError(source, where, name, "same token as another operator")
        names.add(name)
        operators[digest] = (name, role)
    return operators


class Operators:
    """The operators of STRESS_API_TOKENS_FILE, re-read when the file changes (revoking an
    operator needs no restart). A file that stops parsing refuses every file token until it is
    fixed (fail closed), logged once per change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._operators: dict[str, tuple[str, str]] = {}
        self._error: str | None = None
        self._load(strict=True)

    def _load(self, *, strict: bool) -> None:
        import logging

        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp == self._stamp:
                return
            text = self.path.read_text(encoding="utf-8")
            self._operators, self._error = parse_operators(text, str(self.path)), None
        except (OSError, UnicodeDecodeError, ConfigError) as exc:
            problem = exc if isinstance(exc, ConfigError) else ConfigError(
                "environment", "STRESS_API_TOKENS_FILE", str(self.path), f"cannot read: {exc}")
            if strict:
                raise problem from None
            if str(problem) != self._error:
                logging.getLogger("stress_runner.security").error(
                    "operators file refused, file tokens rejected until fixed: %s", problem)
            self._operators, self._error, stamp = {}, str(problem), None
        self._stamp = stamp

    def match(self, token: str) -> tuple[str, str] | None:
        """(name, role) of the token's operator; every digest is compared, in constant time."""
        with self._lock:
            self._load(strict=False)
            operators = self._operators
        given = hashlib.sha256(token.encode()).hexdigest().encode()
        found = None
        for digest, who in operators.items():
            if hmac.compare_digest(given, digest.encode()):
                found = who
        return found


def new_token(name: str, role: str) -> tuple[str, str]:
    """A new random token and the STRESS_API_TOKENS_FILE line for it (the digest only)."""
    token = secrets.token_urlsafe(32)
    line = f"{name} {role} {hashlib.sha256(token.encode()).hexdigest()}"
    parse_operators(line, "arguments")  # the same rules as the file
    return token, line


# -- authentication -------------------------------------------------------------------------


class Guard:
    """Authentication and authorization of one app, from the settings read at start-up."""

    def __init__(self, settings: Settings) -> None:
        token = settings.stress_api_token
        self._admin = token.get_secret_value().encode() if token is not None else None
        self.operators = (Operators(settings.stress_api_tokens_file)
                          if settings.stress_api_tokens_file is not None else None)

    @property
    def tokens_configured(self) -> bool:
        return self._admin is not None or self.operators is not None

    def principal(self, request: Request, permission: str) -> Principal:
        """The caller if allowed ``permission``: 401 without a valid token where one is needed,
        403 for a role without the permission or a non-loopback change without tokens."""
        client = request.client.host if request.client else "unknown"
        given = _bearer(request)
        if given is not None:
            who = self._match(given)
            if who is None:
                raise _unauthorized()
            principal = Principal(*who, client)
        elif not self.tokens_configured:
            if permission != "read" and not is_loopback(client):
                raise HTTPException(403, "without STRESS_API_TOKEN or STRESS_API_TOKENS_FILE, "
                                         "changes are accepted from loopback clients only")
            principal = Principal("loopback", "admin", client)
        elif permission == "read" and is_loopback(client):
            principal = Principal("loopback", "viewer", client)
        else:
            raise _unauthorized()
        if not principal.may(permission):
            raise HTTPException(403, f"role {principal.role} may not {permission} "
                                     f"(roles: {_roles_with(permission)})")
        return principal

    def _match(self, given: str) -> tuple[str, str] | None:
        found = None
        if self._admin is not None and hmac.compare_digest(given.encode(), self._admin):
            found = ("admin", "admin")
        if self.operators is not None:
            found = self.operators.match(given) or found
        return found


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise _unauthorized()
    return given.strip()


def _unauthorized() -> HTTPException:
    return HTTPException(401, "a valid bearer token is required",
                         headers={"WWW-Authenticate": "Bearer"})


def _roles_with(permission: str) -> str:
    return ", ".join(role for role, allowed in ROLES.items() if permission in allowed)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- the checks before the app ----------------------------------------------------------------


class RequestGuard:
    """ASGI middleware: Host allow-list (421), no cross-site writes (403), JSON bodies only
    (415) and at most ``max_body`` bytes of body (413, counted as it arrives)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], *,
                 allowed_hosts: frozenset[str] | None, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            code, message = refusal
            await JSONResponse({"detail": message}, status_code=code)(scope, receive, send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge(413, _too_large(self.max_body))
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if started:
                raise
            await JSONResponse({"detail": _too_large(self.max_body)}, status_code=413)(
                scope, receive, send)

    def _refusal(self, scope: Scope, headers: Headers) -> tuple[int, str] | None:
        method = scope["method"]
        host = headers.get("host", "")
        if scope["path"] not in OPEN_PATHS and not self._host_allowed(host):
            return 421, ("Host not served here; add it to STRESS_ALLOWED_HOSTS if it is this "
                         "service's name")
        if method in MUTATING:
            site = headers.get("sec-fetch-site")
            if site is not None and site.lower() not in ("same-origin", "none"):
                return 403, "cross-site requests may not change anything"
            origin = headers.get("origin")
            if origin is not None and origin.lower() != f"{scope['scheme']}://{host}".lower():
                return 403, "cross-origin requests may not change anything"
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return 413, _too_large(self.max_body)
        has_body = (length is not None and int(length) > 0) or \
            "chunked" in headers.get("transfer-encoding", "").lower()
        if has_body and method in MUTATING:
            media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media != "application/json":
                return 415, "request bodies must be Content-Type: application/json"
        return None

    def _host_allowed(self, header: str) -> bool:
        if self.allowed_hosts is None:
            return True
        return host_name(header) in self.allowed_hosts


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes the limit; an HTTPException, so FastAPI's
    body reader passes it on (it turns any other exception into a 400)."""


def _too_large(limit: int) -> str:
    return f"request body larger than {limit:,} bytes"


def host_name(header: str) -> str:
    """The name of a ``Host`` header, without port, lower case: ``[::1]:8000`` -> ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    if header.count(":") == 1:
        header = header.partition(":")[0]
    return header.rstrip(".")


def allowed_hosts(settings: Settings, bound: str | None) -> frozenset[str] | None:
    """Loopback names, the bound address (unless a wildcard) and STRESS_ALLOWED_HOSTS; None
    (any Host) when STRESS_ALLOWED_HOSTS has ``*``."""
    extra = settings.allowed_hosts
    if "*" in extra:
        return None
    names = set(LOOPBACK_NAMES) | {host_name(h) for h in extra}
    if bound and bound not in ("0.0.0.0", "::", ""):
        names.add(host_name(bound if ":" not in bound else f"[{bound}]"))
    return frozenset(names)
