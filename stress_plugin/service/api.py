"""The runbook's REST API: a thin FastAPI shell over ``StressService``.

Runs execute in a worker thread (``run_in_threadpool``), never on the event loop. Who may call
what is ``security.py``: roles per endpoint here, tokens, Host, cross-site and body checks
there. Error responses echo at most ``ECHO_CHARS`` of what the caller sent and nothing read
from a file.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from stress_hookspecs import LIMIT_NAMES, RunTrigger
from stress_plugin.core.book import SYMBOL_RULE, is_symbol
from stress_plugin.core.errors import (
    ECHO_CHARS,
    UNAVAILABLE_REASONS,
    RunFailure,
    StressError,
    UnknownRun,
    UnknownScenario,
    shown_value,
)
from stress_plugin.core.limits import LIMIT_MAXIMA
from stress_plugin.service.config import ConfigPatch, Finite, Name, ServiceConfig
from stress_plugin.service.security import Guard, Principal, RequestGuard, allowed_hosts
from stress_plugin.service.service import StressService
from stress_plugin.version import __version__

log = logging.getLogger("stress_runner.api")
RECENT_RUNS = 50
"""Runs listed on the index page."""



# -- request bodies ---------------------------------------------------------------------------


class RunRequest(BaseModel):
    """A manual run; both fields optional (the first scheduled scenario, the whole book)."""

    model_config = ConfigDict(extra="forbid")
    scenario: Name | None = Field(None, description="a discovered scenario name (not a path)")
    symbols: list[Annotated[str, Field(max_length=64)]] | None = Field(
        None, max_length=10_000, description=f"symbols to restrict the book to: {SYMBOL_RULE}")

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: list[str] | None) -> list[str] | None:
        for symbol in value or ():
            if not is_symbol(symbol):
                raise ValueError(f"a symbol must be {SYMBOL_RULE}")
        return value


_LIVE_LIMITS: dict[str, Any] = {name: (Annotated[Finite, Field(gt=0, le=maximum)] | None, None)
                                for name, maximum in LIMIT_MAXIMA.items()}
LimitsPatch: type[BaseModel] = create_model(
    "LimitsPatch", __config__=ConfigDict(extra="forbid"),
    __doc__="Live limits to set; ``null`` removes that field's live limit.", **_LIVE_LIMITS)
"""The body of ``PUT /api/v1/risk/limits``: the contract's limit names, core's bounds."""


class ResetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(max_length=1000)] | None = Field(
        None, description="why trading may resume (audited)")


# -- response models (documentation: the handlers return the service's dicts) -----------


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Delivery(BaseModel):
    id: int
    sink: str
    status: str


class RunResult(_Open):
    """One run's result (``StressResult.to_dict()``)."""

    run_id: str
    scenario: str
    status: str = Field(description="passed, breached or failed")
    error: str | None
    failure: str | None
    timestamp: str
    symbols_tested: int
    breach_count: int
    breached_symbols: list[str]
    breaches: list[dict[str, Any]]
    kill_switch: bool
    halted: bool
    runtime_ms: float | None
    headroom: float | None
    limits: dict[str, Any] | None
    portfolio: dict[str, Any] | None
    symbols: dict[str, Any]
    skipped_symbols: list[str]


class RunResponse(RunResult):
    deliveries: list[Delivery] = Field(description="one pending alert delivery per sink")


class FailedRun(BaseModel):
    detail: dict[str, Any]
    result: RunResult
    deliveries: list[Delivery]


class StoredRun(RunResult):
    trigger: RunTrigger
    scheduled_for: str | None


class Results(BaseModel):
    hours: float
    results: list[StoredRun]


class Status(_Open):
    enabled: bool
    scheduler_running: bool
    market_hours_only: bool
    interval_minutes: int
    offset_seconds: int
    last_run: dict[str, Any] | None
    next_run: str | None
    total_runs: int
    total_breaches: int
    scenarios: list[str]
    scheduled_scenarios: list[str]
    halted: bool
    halt: dict[str, Any] | None
    book: str
    replica: str = Field(description="This replica (host:pid).")
    last_slot: dict[str, Any] | None = Field(
        description="The newest scheduled slot with a stored run, and the replica that ran it.")
    replicas: list[dict[str, Any]] = Field(
        description="Replicas seen alive in their last three heartbeats, newest first.")


class Approval(BaseModel):
    operator: str
    actor: str
    at: str
    reason: str | None


class RiskStatus(BaseModel):
    halted: bool
    reason: str | None
    since: str | None
    run_id: str | None
    scenario: str | None
    symbols: list[str]
    approvals: list[Approval] = Field(description="reset approvals pending on this halt")
    approvals_required: int
    expires_at: str | None = Field(description="when the oldest pending approval lapses")


class ResetResponse(BaseModel):
    halted: bool = Field(description="whether trading is still halted after this call")
    cleared: dict[str, Any] | None = Field(description="the halt cleared by this call, if any")
    by: str
    approvals: list[Approval]
    approvals_required: int
    approvals_pending: int = Field(description="approvals still needed to clear the halt")
    expires_at: str | None


_LIMITS_IN_FORCE: dict[str, Any] = {name: (float, ...) for name in LIMIT_NAMES}
LimitsView: type[BaseModel] = create_model(
    "LimitsView", __doc__="The limits in force, where each came from, and the live ones.",
    sources=(dict[str, str], ...), live=(dict[str, float], ...), **_LIMITS_IN_FORCE)


class LimitsHistoryRow(BaseModel):
    at: str
    actor: str = Field(description="operator@client who set them")
    limits: dict[str, float]


class LimitsHistory(BaseModel):
    history: list[LimitsHistoryRow]


class SymbolVolatility(BaseModel):
    samples: int
    realized_volatility: float | None
    last: float
    high: float
    low: float


class Volatility(BaseModel):
    hours: float
    symbols: dict[str, SymbolVolatility]


class Alerts(BaseModel):
    hours: float
    pending: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    recent: list[dict[str, Any]]


class AuditEntry(BaseModel):
    at: str
    actor: str = Field(description="operator@client, os:USER for the CLI, or stress_runner")
    action: str
    details: dict[str, Any]


class Audit(BaseModel):
    hours: float
    entries: list[AuditEntry]


class Health(BaseModel):
    status: str
    total_runs: int


class ErrorBody(BaseModel):
    detail: Any


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in {
        400: "a body that cannot be parsed (not UTF-8 JSON)",
        401: "no valid bearer token where one is needed",
        403: "the role may not do this, or a cross-site or non-loopback change",
        413: "request body over 1 MiB",
        415: "a body that is not application/json",
        421: "a Host this service does not serve (STRESS_ALLOWED_HOSTS)",
        422: "invalid input; the field is named",
    }.items()}


def _doc(model: type[BaseModel], *extra: int, links: dict[str, Any] | None = None
         ) -> dict[str, Any]:
    """The documented responses; ``links`` (OpenAPI links from the 200) say which call
    follows which, for clients and for schemathesis's stateful phase."""
    responses: dict[int | str, dict[str, Any]] = {200: {"model": model}, **_ERRORS}
    if links:
        responses[200]["links"] = links
    for code in extra:
        responses[code] = {"model": ErrorBody, "description": {
            404: "unknown scenario name", 503: "a dependency of the run is unavailable",
        }[code]}
    return {"response_model": None, "responses": responses}


# -- the app ----------------------------------------------------------------------------------

bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description="STRESS_API_TOKEN (admin) or an operator's token from "
                                "STRESS_API_TOKENS_FILE")


def allowed(permission: str) -> Callable[..., Principal]:
    """A dependency: the caller, if its role has ``permission`` (security.Guard)."""

    def dependency(request: Request,
                   _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
                   ) -> Principal:
        return request.app.state.guard.principal(request, permission)

    return dependency


Reader = Annotated[Principal, Depends(allowed("read"))]
Runner = Annotated[Principal, Depends(allowed("run"))]
Configurer = Annotated[Principal, Depends(allowed("config"))]
RiskOfficer = Annotated[Principal, Depends(allowed("limits"))]
Resetter = Annotated[Principal, Depends(allowed("reset"))]
RunId = Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_.-]+$",
                                  description="a run id, as runs and results give it")]
_SVG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/svg+xml": {"schema": {"type": "string"}}}, "description": "SVG"},
    404: {"model": ErrorBody, "description": "unknown run, or no stored P&L paths"}, **_ERRORS}
Hours = Annotated[float, Query(gt=0, le=24 * 366, allow_inf_nan=False,
                               description="look-back window, hours")]


def create_app(service: StressService, *, background: bool = True,
               bound_host: str | None = None) -> FastAPI:
    """The app; with ``background`` its lifespan runs the scheduler and the delivery worker.
    ``bound_host`` (serve's ``--host``) is one of the Host names answered."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if background:
            service.runner.deliveries.start()  # what an earlier process left goes out first
            service.start_scheduler()
        service.metrics.up.set(1)
        try:
            yield
        finally:
            service.stop()

    # FastAPIOffline: /docs and /redoc from the installed package's files, not a CDN
    app = FastAPIOffline(
        title="stress-plugin", version=__version__, lifespan=lifespan,
        description="Flash-Crash Lite stress runner: runs, results, the trading halt (kill "
                    "switch) and its reset, live limits and config. Reads are open on "
                    "loopback; changes need a role (viewer, operator, risk, admin): send "
                    "`Authorization: Bearer <token>` (the Authorize button).",
        swagger_ui_parameters={"persistAuthorization": False})
    app.state.service = service
    app.state.guard = Guard(service.settings)
    app.add_middleware(RequestGuard, allowed_hosts=allowed_hosts(service.settings, bound_host))

    @app.exception_handler(StressError)
    async def stress_error(request: Request, exc: StressError) -> JSONResponse:
        code = 404 if isinstance(exc, UnknownScenario | UnknownRun) else 422
        if isinstance(exc, RunFailure) and exc.reason in UNAVAILABLE_REASONS:
            code = 503
        return JSONResponse(status_code=code, content={"detail": error_detail(exc)})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": [
            {"loc": [p if isinstance(p, int) else str(p)[:ECHO_CHARS] for p in e["loc"]],
             "field": ".".join(str(p) for p in e["loc"][1:])[:ECHO_CHARS] or None,
             "msg": str(e["msg"])[:300], "type": e["type"], "input": echo(e.get("input"))}
            for e in exc.errors()[:20]]})

    @app.get("/api/v1/stress/status", summary="Scheduler, last and next run, halt",
             operation_id="stress_status",
             description="Whether scheduling is on and running, the last stored run, the next "
                         "fire time, run and breach totals, the scenarios and the halt.",
             **_doc(Status))
    async def stress_status(who: Reader) -> dict[str, Any]:
        return await run_in_threadpool(service.status)

    @app.post("/api/v1/stress/run", summary="Run a stress test now",
              description="Stresses the book once with a discovered scenario (by name; a "
                          "path is an unknown name) and returns the stored result. A breach "
                          "trips the KILL_SWITCH. A failed run answers 422 or 503 with the "
                          "stored result. Role: operator, risk or admin.",
              operation_id="stress_run", **_doc(RunResponse, 404, 503, links={
                  "ResetAfterRun": {"operationId": "reset_circuit",
                                    "requestBody": {"reason": "$response.body#/run_id"}},
                  "Results": {"operationId": "stress_results"},
                  "Report": {"operationId": "run_report",
                             "parameters": {"run_id": "$response.body#/run_id"}}}))
    async def stress_run(who: Runner, body: RunRequest | None = None) -> Any:
        body = body or RunRequest()
        result = await run_in_threadpool(lambda: service.run(
            trigger="manual", scenario=body.scenario, symbols=body.symbols))
        log.info("manual run %s by %s", result.run_id, who.actor)
        # the alerts are pending in the outbox: the delivery worker sends them after this
        deliveries = await run_in_threadpool(service.deliveries_of, result.run_id)
        if result.status == "failed":  # stored and alerted as failed; never a 200
            code = 503 if result.failure in UNAVAILABLE_REASONS else 422
            return JSONResponse(status_code=code, content={
                "detail": {"message": f"stress run failed: {result.error}",
                           "failure": result.failure, "run_id": result.run_id},
                "result": result.to_dict(), "deliveries": deliveries})
        return {**result.to_dict(), "deliveries": deliveries}

    @app.get("/api/v1/stress/results", summary="Stored runs of the last hours",
             description="Every stored run (scheduled, manual, CLI) in the window, newest "
                         "first, with its trigger and scheduled time.",
             operation_id="stress_results", **_doc(Results))
    async def stress_results(who: Reader, hours: Hours = 24) -> dict[str, Any]:
        return {"hours": hours, "results": await run_in_threadpool(service.results, hours)}

    @app.get("/", response_class=HTMLResponse, summary="The recent runs (HTML)",
             description="A small page of the recent runs, each linked to its report and "
                         "charts.", operation_id="index",
             responses={200: {"content": {"text/html": {"schema": {"type": "string"}}},
                              "description": "an HTML page"}, **_ERRORS})
    async def index(who: Reader) -> HTMLResponse:
        from stress_plugin import report

        runs = await run_in_threadpool(service.store.recent_runs, RECENT_RUNS)
        return HTMLResponse(report.render_index(runs))

    @app.get("/api/v1/stress/results/{run_id}/report", response_class=HTMLResponse,
             summary="One run's report (HTML)",
             description="The run's self-contained HTML report (the same as `run --report`); "
                         "404 for a run the store does not hold.", operation_id="run_report",
             responses={200: {"content": {"text/html": {"schema": {"type": "string"}}},
                              "description": "an HTML page"},
                        404: {"model": ErrorBody, "description": "unknown run"}, **_ERRORS})
    async def run_report(who: Reader, run_id: RunId) -> HTMLResponse:
        from stress_plugin import report

        stored = await run_in_threadpool(report.stored_report, service.store, run_id)
        return HTMLResponse(await run_in_threadpool(report.render_html, *stored))

    @app.get("/api/v1/stress/results/{run_id}/pnl.svg", summary="One run's P&L paths (SVG)",
             description="The worst symbols' P&L over the scenario's time grid.",
             operation_id="run_pnl_svg", response_class=Response, responses=_SVG)
    async def run_pnl_svg(who: Reader, run_id: RunId) -> Response:
        return await _chart(run_id, "pnl_chart")

    @app.get("/api/v1/stress/results/{run_id}/headroom.svg",
             summary="One run's headroom per symbol (SVG)",
             description="How much deeper a crash each symbol takes before a limit breaches.",
             operation_id="run_headroom_svg", response_class=Response, responses=_SVG)
    async def run_headroom_svg(who: Reader, run_id: RunId) -> Response:
        return await _chart(run_id, "headroom_chart")

    async def _chart(run_id: str, name: str) -> Response:
        from stress_plugin import report

        result, paths = await run_in_threadpool(report.stored_report, service.store, run_id)
        if paths is None or not result["symbols"]:
            raise HTTPException(404, f"run {run_id} has no stored P&L paths")
        svg = await run_in_threadpool(getattr(report, name), result, paths)
        return Response(svg, media_type="image/svg+xml")

    @app.get("/api/v1/stress/config", summary="The live config",
             description="The schedule, symbol cap, runtime budget and scheduled scenarios "
                         "in force.", operation_id="stress_config", **_doc(ServiceConfig, links={
                 "PutBack": {"operationId": "stress_config_update",
                             "requestBody": "$response.body"}}))
    async def stress_config(who: Reader) -> dict[str, Any]:
        return service.config.to_dict()

    @app.put("/api/v1/stress/config", summary="Change the live config",
             description="Validates the whole new config and applies it, or changes nothing; "
                         "persisted with the operator in the config history. Role: operator "
                         "or admin.", operation_id="stress_config_update", **_doc(ServiceConfig))
    async def stress_config_update(patch: ConfigPatch, who: Configurer) -> dict[str, Any]:
        change = patch.model_dump(exclude_none=True)
        new = await run_in_threadpool(service.update_config, change, who.actor)
        return new.to_dict()

    @app.get("/api/v1/risk/status", summary="The trading halt and pending reset approvals",
             description="Whether the KILL_SWITCH halt is latched, why and since when, and "
                         "the reset approvals given so far (STRESS_RESET_APPROVALS).",
             operation_id="risk_status", **_doc(RiskStatus))
    async def risk_status(who: Reader) -> dict[str, Any]:
        halt = await run_in_threadpool(service.halt)
        pending = await run_in_threadpool(service.runner.reset_approvals)
        if halt is None:
            return {"halted": False, "reason": None, "since": None, "run_id": None,
                    "scenario": None, "symbols": [], **pending}
        return {"halted": True, **halt, **pending}

    @app.post("/api/v1/risk/reset_circuit", summary="Approve clearing the trading halt",
              description="Clears the halt when this approval makes STRESS_RESET_APPROVALS "
                          "distinct operators within 15 minutes (default 1: at once), and "
                          "publishes RESET; else records the approval and answers 202 with "
                          "the halt kept. Audited. Role: risk or admin.",
              operation_id="reset_circuit", **_doc(ResetResponse, links={
                  "Status": {"operationId": "risk_status"}}),
              openapi_extra={"responses": {"202": {
                  "description": "approval recorded; the halt stays until enough operators "
                                 "approve (same body as 200, halted true)",
                  "content": {"application/json": {"schema": {
                      "$ref": "#/components/schemas/ResetResponse"}}}}}})
    async def reset_circuit(who: Resetter, body: ResetRequest | None = None) -> Any:
        reason = body.reason if body else None
        outcome = await run_in_threadpool(
            lambda: service.reset_circuit(who.actor, reason, operator=who.name))
        still = outcome["cleared"] is None and bool(outcome["approvals"])
        content = {"halted": still, "cleared": outcome["cleared"], "by": who.actor,
                   "approvals": outcome["approvals"] if still else [],
                   "approvals_required": outcome["required"],
                   "approvals_pending": outcome["required"] - len(outcome["approvals"])
                   if still else 0,
                   "expires_at": outcome["expires_at"]}
        return JSONResponse(status_code=202 if still else 200, content=content)

    @app.get("/api/v1/risk/limits", summary="The limits in force",
             description="The limits a run of the first scheduled scenario would use now, "
                         "each with its source (live, host, scenario, default), and the live "
                         "ones.", operation_id="risk_limits", **_doc(LimitsView, 503, links={
                 "Tighten": {"operationId": "risk_limits_update", "requestBody": {
                     "max_drawdown_pct": "$response.body#/max_drawdown_pct"}}}))
    async def risk_limits(who: Reader) -> dict[str, Any]:
        return await run_in_threadpool(service.limits)

    @app.put("/api/v1/risk/limits", summary="Set live limits",
             description="Sets live limits (null removes one), recorded with the operator in "
                         "the limits history. Role: risk or admin.",
             operation_id="risk_limits_update", **_doc(LimitsView, 503, links={
                 "History": {"operationId": "risk_limits_history"}}))
    async def risk_limits_update(patch: LimitsPatch, who: RiskOfficer) -> dict[str, Any]:
        change = {k: None if v is None else float(v)
                  for k, v in patch.model_dump(exclude_unset=True).items()}
        return await run_in_threadpool(service.update_limits, change, who.actor)

    @app.delete("/api/v1/risk/limits", summary="Remove every live limit",
                description="The host's and the scenario's limits apply again; recorded in "
                            "the limits history. Role: risk or admin.", **_doc(LimitsView, 503))
    async def risk_limits_delete(who: RiskOfficer) -> dict[str, Any]:
        return await run_in_threadpool(service.delete_limits, who.actor)

    @app.get("/api/v1/risk/limits/history", summary="Who set which live limits when",
             description="Every change of the live limits, newest first, with its operator.",
             operation_id="risk_limits_history", **_doc(LimitsHistory))
    async def risk_limits_history(who: Reader) -> dict[str, Any]:
        return {"history": await run_in_threadpool(service.store.limits_history)}

    @app.get("/api/v1/market/volatility", summary="Realized volatility per symbol",
             description="From the prices the runs in the window saw: samples, realized "
                         "volatility (not annualized), last, high and low.",
             **_doc(Volatility))
    async def market_volatility(who: Reader, hours: Hours = 24) -> dict[str, Any]:
        return await run_in_threadpool(service.volatility, hours)

    @app.get("/api/v1/alerts", summary="The alert outbox",
             description="Pending and failed deliveries, and those delivered in the window.",
             **_doc(Alerts))
    async def alerts(who: Reader, hours: Hours = 24) -> dict[str, Any]:
        return await run_in_threadpool(service.alerts, hours)

    @app.get("/api/v1/audit", summary="The audit log",
             description="Halts, reset approvals and resets in the window, newest first, each "
                         "naming its operator.", **_doc(Audit))
    async def audit(who: Reader, hours: Hours = 24) -> dict[str, Any]:
        return {"hours": hours, "entries": await run_in_threadpool(service.audit, hours)}

    @app.get("/metrics", summary="Prometheus metrics",
             description="The text exposition format; open (no token, any Host) for scrapers.",
             response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
                              "description": "Prometheus text format"}})
    async def metrics() -> Response:
        # the gauges read the store at scrape time: a worker thread, never the event loop
        body = await run_in_threadpool(service.metrics.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", summary="Liveness and readiness",
             description="200 when the store answers and, when enabled, the scheduler runs; "
                         "503 otherwise. Open (no token, any Host) for probes.",
             response_model=None,
             responses={200: {"model": Health},
                        503: {"model": ErrorBody,
                              "description": "store unreachable, or scheduler not running"}})
    async def healthz() -> dict[str, Any]:
        try:
            await run_in_threadpool(service.store.ping)
        except Exception as exc:  # the database is down or unreachable: this replica is not
            log.error("healthz: the store does not answer: %s", type(exc).__name__)
            raise HTTPException(503, "the store does not answer") from None
        status = await run_in_threadpool(service.status)
        ok = status["scheduler_running"] or not background or not status["enabled"]
        if not ok:
            raise HTTPException(503, "scheduler is not running")
        return {"status": "ok", "total_runs": status["total_runs"]}

    return app


REQUEST_SOURCES = frozenset({"scenario", "config", "limits", "arguments"})
"""Error sources that are the caller's own input, so the value may be echoed."""


def error_detail(exc: StressError) -> dict[str, Any]:
    """A StressError as the API shows it: the value only if it came from the request, and
    truncated; nothing read from a file (a book's values stay on the server)."""
    from_caller = exc.from_request or exc.source in REQUEST_SOURCES
    return {"message": exc.describe(echo=from_caller)[:500], "source": exc.source[:200],
            "field": exc.field[:ECHO_CHARS] if exc.field else None,
            "value": echo(exc.value) if from_caller else None,
            **({"failure": exc.reason} if isinstance(exc, RunFailure) else {})}


def echo(value: Any) -> Any:
    """``value`` safe to put in a JSON response: short strings and finite numbers as they are,
    anything else as a truncated repr (NaN, 1e999 and a 400-digit integer included)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) < 2**53:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, str) and len(value) <= ECHO_CHARS:
        return value
    return shown_value(value)


def serve(app: FastAPI, host: str, port: int, trusted_proxies: Sequence[str]) -> None:
    """Serve ``app`` with uvicorn until stopped: one worker (one scheduler per process)."""
    import uvicorn

    # forwarded headers only from STRESS_TRUSTED_PROXIES: uvicorn's own default trusts
    # 127.0.0.1, so any local process could set the client address the audit trail records
    uvicorn.run(app, host=host, port=port, log_config=None, workers=1,
                proxy_headers=bool(trusted_proxies),
                forwarded_allow_ips=",".join(trusted_proxies) or "", server_header=False)
