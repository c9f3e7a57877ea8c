"""Plain frozen values that cross the hook contract. Money is in the book's currency."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, get_args

RunStatus = Literal["passed", "breached", "failed"]
"""How a run ended: within limits, over a limit, or not checked at all (never a pass)."""

TradingState = Literal["ACTIVE", "REDUCING", "HALTED"]
"""A host's trading state: all orders, only risk-reducing orders, or no new orders."""

KillMode = Literal["halt", "reduce"]
"""What a KILL_SWITCH asks for: ``halt`` (HALTED) or ``reduce`` (REDUCING)."""

EventType = Literal["KILL_SWITCH", "RESET"]
"""A risk event: halt trading (``KILL_SWITCH``) or let it resume (``RESET``).

.. versionadded:: 0.2"""

LimitName = Literal["max_drawdown_pct", "max_var_multiplier", "max_position_delta"]
"""The three limits, named as the fields of ``Limits``.

.. versionadded:: 0.2"""

RunTrigger = Literal["schedule", "manual", "cli"]
"""What started a run: the service's scheduler, an API call, or ``stress-runner run``.

.. versionadded:: 0.2"""


@dataclass(frozen=True, slots=True)
class Position:
    """One line of the book."""

    symbol: str
    quantity: float
    """Signed contracts: + long, - short; never 0."""
    price: float
    """Mid price, price units, > 0."""
    spread: float
    """Full bid-ask spread, price units, >= 0."""
    multiplier: float
    """Currency per price unit per contract, > 0."""
    var: float | None = None
    """Normal VaR of this position, currency, > 0; None when unknown."""
    delta: float = 1.0
    """Delta per unit (1 for futures)."""
    gamma: float = 0.0
    """Gamma per unit per price unit of the underlying (0 for futures)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Book:
    """What is stressed: equity, optional book VaR, and the positions."""

    equity: float
    """Account equity, currency, > 0."""
    positions: tuple[Position, ...]
    var: float | None = None
    """Normal VaR of the whole book, currency, > 0; None when unknown."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "equity": self.equity,
            "var": self.var,
            "positions": [p.to_dict() for p in self.positions],
        }


@dataclass(frozen=True, slots=True)
class BookColumns:
    """A book as one column per field, what a host that keeps its positions in arrays can
    answer ``stress_book`` with instead of a ``Position`` per line: row i of every column is
    one position, with ``Position``'s units and rules. A column is a sequence or a numpy array
    of one value per symbol; the runner copies them, so a host may hand over its live arrays.

    .. versionadded:: 0.2
    """

    equity: float
    """Account equity, currency, > 0."""
    symbols: Sequence[str]
    quantity: Sequence[float]
    """Signed contracts per symbol: + long, - short; never 0."""
    price: Sequence[float]
    """Mid price, price units, > 0."""
    spread: Sequence[float]
    """Full bid-ask spread, price units, >= 0."""
    multiplier: Sequence[float]
    """Currency per price unit per contract, > 0."""
    var: float | None = None
    """Normal VaR of the whole book, currency, > 0 (``Book.var``); None when unknown."""
    position_var: Sequence[float | None] | None = None
    """Normal VaR per position (``Position.var``), NaN or None where unknown; None: none."""
    delta: Sequence[float] | None = None
    """Delta per unit; None: 1 for every position (futures)."""
    gamma: Sequence[float] | None = None
    """Gamma per unit per price unit; None: 0 for every position."""

    def __len__(self) -> int:
        return len(self.symbols)

    def to_book(self) -> Book:
        """The same book as ``Position``s (a NaN position VaR becomes None)."""
        n = len(self.symbols)

        def listed(column: Any, default: Any) -> list[Any]:
            if column is None:
                return [default] * n
            return column.tolist() if hasattr(column, "tolist") else list(column)

        var = [None if v is None or v != v else v for v in listed(self.position_var, None)]
        return Book(equity=self.equity, var=self.var, positions=tuple(map(
            Position, listed(self.symbols, None), listed(self.quantity, None),
            listed(self.price, None), listed(self.spread, None),
            listed(self.multiplier, None), var, listed(self.delta, 1.0),
            listed(self.gamma, 0.0))))


@dataclass(frozen=True, slots=True)
class Limits:
    """The three risk limits; a breach is strictly greater than its threshold."""

    max_drawdown_pct: float = 0.05
    """Largest loss as a fraction of equity (0.05 = 5%)."""
    max_var_multiplier: float = 2.0
    """Largest loss as a multiple of normal VaR."""
    max_position_delta: float = 0.10
    """Largest change of a position's delta per contract (0.10 = 10%)."""

    def to_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in LIMIT_NAMES}


LIMIT_NAMES: tuple[LimitName, ...] = get_args(LimitName)
"""The limit names, in ``Limits``' field order (a test holds the two together).

.. versionadded:: 0.2"""


@dataclass(frozen=True, slots=True)
class Breach:
    """One limit exceeded by one symbol, or by the whole book (symbol ``PORTFOLIO``)."""

    symbol: str
    limit: LimitName
    value: float
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "limit": self.limit, "value": self.value,
                "threshold": self.threshold}


@dataclass(frozen=True, slots=True)
class Metrics:
    """Stress metrics of one symbol or of the portfolio."""

    worst_pnl: float
    """Lowest P&L over the scenario, currency (negative is a loss)."""
    drawdown_pct: float
    """Loss as a fraction of equity."""
    var_ratio: float | None
    """Loss as a multiple of normal VaR; None when no VaR was given."""
    delta_change: float | None
    """Largest change of delta per contract (symbols only; None for the portfolio)."""
    headroom: float
    """Scale of the price shock at which a limit is first exceeded, capped at 100."""

    def to_dict(self) -> dict[str, Any]:
        # spelled out: asdict() deep-copies and costs ~10x more, paid per symbol per run
        return {"worst_pnl": self.worst_pnl, "drawdown_pct": self.drawdown_pct,
                "var_ratio": self.var_ratio, "delta_change": self.delta_change,
                "headroom": self.headroom}


class ArrayLike(Protocol):
    """A column that is not a list: anything with ``len()`` and ``tolist()`` (a numpy array),
    so the contract needs no numpy.

    .. versionadded:: 0.2"""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> Any: ...

    def tolist(self) -> Any: ...


Column = Sequence[Any] | ArrayLike
"""One value per symbol, in book order: a list, or an array."""


class SymbolMetrics(Mapping[str, Metrics]):
    """The per-symbol metrics of a run held as named columns, read like a
    ``dict[str, Metrics]``.

    The runner's results carry one: for 100,000 symbols, making a ``Metrics`` per symbol costs
    more than the stress model itself, and most runs never read them one by one (the store
    writes the columns, the built-in evaluator compares them). They are made all at once on
    the first read by symbol. Read-only. A column is a list or has ``tolist()`` (a numpy
    array), one value per symbol in book order; a NaN ``var_ratio`` reads as None (no VaR
    given).

    .. versionchanged:: 0.2
       Exported; columns by name (``symbols``, ``worst_pnl``, ...) instead of a tuple.
    """

    __slots__ = ("_metrics", "delta_change", "drawdown_pct", "headroom", "symbols",
                 "var_ratio", "worst_pnl")

    FIELDS = ("worst_pnl", "drawdown_pct", "var_ratio", "delta_change", "headroom")
    """The metric columns, in ``Metrics``' field order."""

    def __init__(self, symbols: Column, worst_pnl: Column, drawdown_pct: Column,
                 var_ratio: Column, delta_change: Column, headroom: Column) -> None:
        self.symbols = symbols
        self.worst_pnl = worst_pnl
        """Lowest P&L per symbol, currency."""
        self.drawdown_pct = drawdown_pct
        self.var_ratio = var_ratio
        """NaN (or None) where no VaR was given."""
        self.delta_change = delta_change
        self.headroom = headroom
        self._metrics: dict[str, Metrics] | None = None

    def _lists(self) -> list[list[Any]]:
        lists = [c.tolist() if hasattr(c, "tolist") else list(c)
                 for c in (self.symbols, *(getattr(self, f) for f in self.FIELDS))]
        lists[3] = [None if v is None or v != v else v for v in lists[3]]
        return lists

    def _dict(self) -> dict[str, Metrics]:
        if self._metrics is None:
            names, *values = self._lists()
            self._metrics = dict(zip(names, map(Metrics, *values), strict=True))
        return self._metrics

    def __getitem__(self, symbol: str) -> Metrics:
        return self._dict()[symbol]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._dict()

    def keys(self) -> Any:
        return self._dict().keys()

    def items(self) -> Any:
        return self._dict().items()

    def values(self) -> Any:
        return self._dict().values()

    def __repr__(self) -> str:
        return repr(self._dict())

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{symbol: Metrics.to_dict()}`` straight from the columns, no ``Metrics`` made."""
        names, w, d, v, c, h = self._lists()
        return {s: {"worst_pnl": w_, "drawdown_pct": d_, "var_ratio": v_, "delta_change": c_,
                    "headroom": h_}
                for s, w_, d_, v_, c_, h_ in zip(names, w, d, v, c, h, strict=True)}


@dataclass(frozen=True, slots=True)
class StressResult:
    """One run of one scenario on one book; ``to_dict()`` is the JSON of the runbook's API.

    A run that could not check the book (no book, no limits, a failed evaluator, a non-finite
    number) is ``failed``: ``error`` says why, ``failure`` labels it, and there are no metrics
    (``portfolio`` and ``headroom`` are None). A failed run is never a pass.
    """

    run_id: str
    scenario: str
    timestamp: str
    """ISO 8601 UTC, e.g. ``2024-01-15T15:00:05Z``."""
    symbols_tested: int
    portfolio: Metrics | None
    symbols: Mapping[str, Metrics]
    """Per symbol in book order: a dict, or (from the runner) a read-only ``SymbolMetrics``."""
    headroom: float | None
    """Smallest headroom over the portfolio and every symbol (None for a failed run)."""
    limits: Limits | None
    """The limits in force (None when a failed run never got them)."""
    runtime_ms: float = 0.0
    breaches: tuple[Breach, ...] = ()
    kill_switch: bool = False
    skipped_symbols: tuple[str, ...] = ()
    error: str | None = None
    """Failed runs: one line naming the plugin (or file and field) and the problem."""
    failure: str | None = None
    """Failed runs: a short label for metrics, e.g. ``book_unavailable``."""
    book_source: str = ""
    """Who supplied the book: ``plugin <name>`` or the book file's path."""
    limit_sources: Mapping[str, str] = field(default_factory=dict)
    """Where each limit in force came from: ``live``, ``plugin <name>``, ``scenario`` or
    ``default``."""
    halted: bool = False
    """Whether trading is halted (the runtime's latch) once this run is done."""
    kill_switch_confirmed: bool | None = None
    """After a KILL_SWITCH: True when the host's ``stress_trading_state`` showed the requested
    state within ``STRESS_KILL_CONFIRM_S``, False when it did not (a separate critical page),
    None when no host can answer or there was no KILL_SWITCH."""
    episode: str | None = None
    """The incident this run belongs to, kept by the runtime per scenario: for a breached run
    the run id that opened the current run of breaches, for a failed run ``failed/`` and the
    run id that opened the current run of failures; None for a passed run. A sink that keeps
    incidents can key them by it (PagerDuty's dedup_key)."""
    resolves: tuple[str, ...] = ()
    """Episodes this run ends: a run that completes ends a failure episode, a passed run also
    ends a breach episode."""

    @property
    def status(self) -> RunStatus:
        if self.error is not None:
            return "failed"
        return "breached" if self.breaches else "passed"

    @property
    def breached_symbols(self) -> list[str]:
        """Symbols with at least one breach, in first-breach order (may include PORTFOLIO)."""
        return list(dict.fromkeys(b.symbol for b in self.breaches))

    @property
    def breach_count(self) -> int:
        return len(self.breached_symbols)

    def to_dict(self, *, symbols: bool = True) -> dict[str, Any]:
        """The result JSON; ``symbols=False`` leaves out the per-symbol section (a store keeps
        it as columns)."""
        data = {
            "run_id": self.run_id,
            "scenario": self.scenario,
            "status": self.status,
            "error": self.error,
            "failure": self.failure,
            "timestamp": self.timestamp,
            "book_source": self.book_source,
            "symbols_tested": self.symbols_tested,
            "breach_count": self.breach_count,
            "breached_symbols": self.breached_symbols,
            "breaches": [b.to_dict() for b in self.breaches],
            "kill_switch": self.kill_switch,
            "halted": self.halted,
            "kill_switch_confirmed": self.kill_switch_confirmed,
            "runtime_ms": self.runtime_ms,
            "headroom": self.headroom,
            "limits": self.limits.to_dict() if self.limits is not None else None,
            "limit_sources": dict(self.limit_sources),
            "portfolio": self.portfolio.to_dict() if self.portfolio is not None else None,
            "episode": self.episode,
            "resolves": list(self.resolves),
        }
        if symbols:
            data["symbols"] = (
                self.symbols.to_dict() if isinstance(self.symbols, SymbolMetrics)
                else {name: m.to_dict() for name, m in self.symbols.items()})
        data["skipped_symbols"] = list(self.skipped_symbols)
        return data


    @classmethod
    def from_dict(cls, data: Mapping[str, Any],
                  symbols: Mapping[str, Metrics] | None = None) -> StressResult:
        """The result back from its ``to_dict()`` JSON (``symbols`` given separately when the
        JSON was made without them); derived keys (status, breach_count, ...) are checked by
        being derived again."""
        def metrics(m: Mapping[str, Any] | None) -> Metrics | None:
            return None if m is None else Metrics(**m)

        limits = data.get("limits")
        if symbols is None:
            symbols = {name: Metrics(**m) for name, m in data.get("symbols", {}).items()}
        return cls(
            run_id=data["run_id"], scenario=data["scenario"], timestamp=data["timestamp"],
            symbols_tested=data["symbols_tested"], portfolio=metrics(data["portfolio"]),
            symbols=symbols, headroom=data["headroom"],
            limits=None if limits is None else Limits(**limits),
            runtime_ms=data.get("runtime_ms", 0.0),
            breaches=tuple(Breach(**b) for b in data.get("breaches", ())),
            kill_switch=data.get("kill_switch", False),
            skipped_symbols=tuple(data.get("skipped_symbols", ())),
            error=data.get("error"), failure=data.get("failure"),
            book_source=data.get("book_source", ""),
            limit_sources=dict(data.get("limit_sources") or {}),
            halted=data.get("halted", False),
            kill_switch_confirmed=data.get("kill_switch_confirmed"), episode=data.get("episode"),
            resolves=tuple(data.get("resolves", ())),
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of one report to one alert sink; the same ``id`` on every retry, so a sink
    can de-duplicate. Delivery is at least once."""

    id: int
    attempt: int
    """1 on the first try, 2 on the first retry, ..."""
    first_attempt_at: str
    """ISO 8601 UTC of the first try."""
    test: bool = False
    """True for ``stress-runner alerts test``: announce it as a test, page nobody for real."""


class DeliveryDeferred(Exception):
    """Raised by ``stress_alert``: not delivered now, try again later (an outage, HTTP 429 or
    5xx). ``retry_after`` (seconds) overrides the runtime's backoff for the next attempt."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeliveryRejected(Exception):
    """Raised by ``stress_alert``: this report can never be delivered (the receiver refused it
    as invalid). Kept as ``failed`` and never retried; ``stress-runner alerts retry ID``
    queues it again by hand."""


@dataclass(frozen=True, slots=True)
class RiskEvent:
    """An event for the host's risk bus: ``KILL_SWITCH`` on a breach (or, with
    ``STRESS_ON_FAILURE=halt``, a failed run); ``RESET`` when an operator clears the halt."""

    type: EventType
    scenario: str
    """The scenario; several, comma-separated, when one event covers the runs of many
    scenarios on one book snapshot (``run --all``, the scheduled scenarios)."""
    symbols: tuple[str, ...]
    """The breached symbols (may include PORTFOLIO), each once across those runs."""
    run_id: str
    """The run (the first breaching one, for many scenarios; ``reason`` names each)."""
    timestamp: str
    """ISO 8601 UTC."""
    reason: str = ""
    """One line saying which limits broke."""
    mode: KillMode = "halt"
    """KILL_SWITCH only: ``halt`` (no new orders) or ``reduce`` (only risk-reducing orders)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["symbols"] = list(self.symbols)
        return data
