"""Plain frozen values that cross the hook contract. Money is in the book's currency."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


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
class Limits:
    """The three risk limits; a breach is strictly greater than its threshold."""

    max_drawdown_pct: float = 0.05
    """Largest loss as a fraction of equity (0.05 = 5%)."""
    max_var_multiplier: float = 2.0
    """Largest loss as a multiple of normal VaR."""
    max_position_delta: float = 0.10
    """Largest change of a position's delta per contract (0.10 = 10%)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Breach:
    """One limit exceeded by one symbol, or by the whole book (symbol ``PORTFOLIO``)."""

    symbol: str
    limit: str
    """``max_drawdown_pct``, ``max_var_multiplier`` or ``max_position_delta``."""
    value: float
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
        return asdict(self)


@dataclass(frozen=True, slots=True)
class StressResult:
    """One run of one scenario on one book; ``to_dict()`` is the JSON of the runbook's API."""

    run_id: str
    scenario: str
    timestamp: str
    """ISO 8601 UTC, e.g. ``2024-01-15T15:00:05Z``."""
    symbols_tested: int
    portfolio: Metrics
    symbols: dict[str, Metrics]
    headroom: float
    """Smallest headroom over the portfolio and every symbol."""
    limits: Limits
    runtime_ms: float = 0.0
    breaches: tuple[Breach, ...] = ()
    kill_switch: bool = False
    skipped_symbols: tuple[str, ...] = ()

    @property
    def breached_symbols(self) -> list[str]:
        """Symbols with at least one breach, in first-breach order (may include PORTFOLIO)."""
        return list(dict.fromkeys(b.symbol for b in self.breaches))

    @property
    def breach_count(self) -> int:
        return len(self.breached_symbols)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "scenario": self.scenario,
            "timestamp": self.timestamp,
            "symbols_tested": self.symbols_tested,
            "breach_count": self.breach_count,
            "breached_symbols": self.breached_symbols,
            "breaches": [b.to_dict() for b in self.breaches],
            "kill_switch": self.kill_switch,
            "runtime_ms": self.runtime_ms,
            "headroom": self.headroom,
            "limits": self.limits.to_dict(),
            "portfolio": self.portfolio.to_dict(),
            "symbols": {name: m.to_dict() for name, m in self.symbols.items()},
            "skipped_symbols": list(self.skipped_symbols),
        }


@dataclass(frozen=True, slots=True)
class RiskEvent:
    """An event for the host's risk bus; ``type`` is ``KILL_SWITCH`` on a breach."""

    type: str
    scenario: str
    symbols: tuple[str, ...]
    """The breached symbols (may include PORTFOLIO)."""
    run_id: str
    timestamp: str
    """ISO 8601 UTC."""
    reason: str = ""
    """One line saying which limits broke."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["symbols"] = list(self.symbols)
        return data
