"""The runbook's REST API: a thin FastAPI shell over ``StressService``.

Runs execute in a worker thread (``run_in_threadpool``), never on the event loop. Mutating
endpoints need ``Authorization: Bearer <STRESS_API_TOKEN>`` when a token is set, and answer
loopback clients only when it is not.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt

from stress_plugin import __version__
from stress_plugin.errors import (
    UNAVAILABLE_REASONS,
    RunFailure,
    StressError,
    UnknownRun,
    UnknownScenario,
)
from stress_plugin.service import StressService

log = logging.getLogger("stress_runner.api")
RECENT_RUNS = 50
"""Runs listed on the index page."""


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scenario: str | None = None
    symbols: list[str] | None = None


class ConfigPatch(BaseModel):
    """Fields left out (or null) keep their value."""

    model_config = ConfigDict(extra="forbid")
    enabled: StrictBool | None = None
    market_hours_only: StrictBool | None = None
    interval_minutes: StrictInt | None = None
    offset_seconds: StrictInt | None = None
    max_symbols: StrictInt | None = None
    max_runtime_ms: StrictFloat | StrictInt | None = None
    scenarios: list[str] | None = None
    kill_mode: Literal["halt", "reduce"] | None = None


class LimitsPatch(BaseModel):
    """Live limits to set; ``null`` removes that field's live limit."""

    model_config = ConfigDict(extra="forbid")
    max_drawdown_pct: StrictFloat | StrictInt | None = None
    max_var_multiplier: StrictFloat | StrictInt | None = None
    max_position_delta: StrictFloat | StrictInt | None = None


class ResetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = None


def writer(request: Request) -> str:
    """The actor of a mutating call, for the audit trail; 401/403 when not allowed."""
    client = request.client.host if request.client else "unknown"
    token = request.app.state.service.settings.stress_api_token
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected):
            raise HTTPException(401, "a valid bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        return f"token@{client}"
    if not _is_loopback(client):
        raise HTTPException(403, "without STRESS_API_TOKEN, changes are accepted from "
                                 "loopback clients only")
    return f"loopback@{client}"


Writer = Annotated[str, Depends(writer)]
Hours = Annotated[float, Query(gt=0, le=24 * 366, description="look-back window, hours")]


def create_app(service: StressService, *, background: bool = True) -> FastAPI:
    """The app; with ``background`` its lifespan runs the scheduler and the delivery worker."""

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

    app = FastAPI(title="stress-plugin", version=__version__, lifespan=lifespan,
                  description="Flash-Crash Lite stress runner: runs, results, halt, limits.")
    app.state.service = service

    @app.exception_handler(StressError)
    async def stress_error(request: Request, exc: StressError) -> JSONResponse:
        code = 404 if isinstance(exc, UnknownScenario | UnknownRun) else 422
        if isinstance(exc, RunFailure) and exc.reason in UNAVAILABLE_REASONS:
            code = 503
        return JSONResponse(status_code=code, content={"detail": {
            "message": str(exc), "source": exc.source, "field": exc.field,
            "value": exc.value if isinstance(exc.value, str | int | float | list) else None,
            **({"failure": exc.reason} if isinstance(exc, RunFailure) else {}),
        }})

    @app.get("/api/v1/stress/status")
    async def stress_status() -> dict[str, Any]:
        return await run_in_threadpool(service.status)

    @app.post("/api/v1/stress/run")
    async def stress_run(actor: Writer, body: RunRequest | None = None) -> dict[str, Any]:
        body = body or RunRequest()
        result = await run_in_threadpool(lambda: service.run(
            trigger="manual", scenario=body.scenario, symbols=body.symbols))
        log.info("manual run %s by %s", result.run_id, actor)
        # the alerts are pending in the outbox: the delivery worker sends them after this
        deliveries = await run_in_threadpool(service.deliveries_of, result.run_id)
        if result.status == "failed":  # stored and alerted as failed; never a 200
            code = 503 if result.failure in UNAVAILABLE_REASONS else 422
            return JSONResponse(status_code=code, content={
                "detail": {"message": f"stress run failed: {result.error}",
                           "failure": result.failure, "run_id": result.run_id},
                "result": result.to_dict(), "deliveries": deliveries})
        return {**result.to_dict(), "deliveries": deliveries}

    @app.get("/api/v1/stress/results")
    async def stress_results(hours: Hours = 24) -> dict[str, Any]:
        return {"hours": hours, "results": await run_in_threadpool(service.results, hours)}

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        """A small page of the recent runs, each linked to its report and charts."""
        from stress_plugin import report

        runs = await run_in_threadpool(service.store.recent_runs, RECENT_RUNS)
        return HTMLResponse(report.render_index(runs))

    @app.get("/api/v1/stress/results/{run_id}/report", response_class=HTMLResponse)
    async def run_report(run_id: str) -> HTMLResponse:
        """The run's self-contained HTML report (the same as ``run --report``)."""
        from stress_plugin import report

        stored = await run_in_threadpool(report.stored_report, service.store, run_id)
        return HTMLResponse(await run_in_threadpool(report.render_html, *stored))

    @app.get("/api/v1/stress/results/{run_id}/pnl.svg")
    async def run_pnl_svg(run_id: str) -> Response:
        return await _chart(run_id, "pnl_chart")

    @app.get("/api/v1/stress/results/{run_id}/headroom.svg")
    async def run_headroom_svg(run_id: str) -> Response:
        return await _chart(run_id, "headroom_chart")

    async def _chart(run_id: str, name: str) -> Response:
        from stress_plugin import report

        result, paths = await run_in_threadpool(report.stored_report, service.store, run_id)
        if paths is None or not result["symbols"]:
            raise HTTPException(404, f"run {run_id} has no stored P&L paths")
        svg = await run_in_threadpool(getattr(report, name), result, paths)
        return Response(svg, media_type="image/svg+xml")

    @app.get("/api/v1/stress/config")
    async def stress_config() -> dict[str, Any]:
        return service.config.to_dict()

    @app.put("/api/v1/stress/config")
    async def stress_config_update(patch: ConfigPatch, actor: Writer) -> dict[str, Any]:
        change = patch.model_dump(exclude_none=True)
        new = await run_in_threadpool(service.update_config, change, actor)
        return new.to_dict()

    @app.get("/api/v1/risk/status")
    async def risk_status() -> dict[str, Any]:
        halt = await run_in_threadpool(service.halt)
        if halt is None:
            return {"halted": False, "reason": None, "since": None, "run_id": None,
                    "scenario": None, "symbols": []}
        return {"halted": True, **halt}

    @app.post("/api/v1/risk/reset_circuit")
    async def reset_circuit(actor: Writer, body: ResetRequest | None = None) -> dict[str, Any]:
        reason = body.reason if body else None
        cleared = await run_in_threadpool(service.reset_circuit, actor, reason)
        return {"halted": False, "cleared": cleared, "by": actor}

    @app.get("/api/v1/risk/limits")
    async def risk_limits() -> dict[str, Any]:
        return await run_in_threadpool(service.limits)

    @app.put("/api/v1/risk/limits")
    async def risk_limits_update(patch: LimitsPatch, actor: Writer) -> dict[str, Any]:
        change = {k: None if v is None else float(v)
                  for k, v in patch.model_dump(exclude_unset=True).items()}
        return await run_in_threadpool(service.update_limits, change, actor)

    @app.delete("/api/v1/risk/limits")
    async def risk_limits_delete(actor: Writer) -> dict[str, Any]:
        return await run_in_threadpool(service.delete_limits, actor)

    @app.get("/api/v1/risk/limits/history")
    async def risk_limits_history() -> dict[str, Any]:
        return {"history": await run_in_threadpool(service.store.limits_history)}

    @app.get("/api/v1/market/volatility")
    async def market_volatility(hours: Hours = 24) -> dict[str, Any]:
        return await run_in_threadpool(service.volatility, hours)

    @app.get("/api/v1/alerts")
    async def alerts(hours: Hours = 24) -> dict[str, Any]:
        """The alert outbox: pending and failed deliveries, and those delivered recently."""
        return await run_in_threadpool(service.alerts, hours)

    @app.get("/metrics")
    async def metrics() -> Response:
        body = await run_in_threadpool(service.metrics.render)  # it reads the store
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness and readiness: the store answers and, when enabled, the scheduler runs."""
        status = await run_in_threadpool(service.status)
        ok = status["scheduler_running"] or not background or not status["enabled"]
        if not ok:
            raise HTTPException(503, "scheduler is not running")
        return {"status": "ok", "total_runs": status["total_runs"]}

    return app


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
