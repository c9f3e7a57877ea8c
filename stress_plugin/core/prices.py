"""What the prices the runs saw say about a symbol: how many, the last, the range, and the
volatility realized between them. Pure: the caller reads the prices from the store."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any


def price_summary(prices: Sequence[float]) -> dict[str, Any]:
    """``samples``, ``realized_volatility``, ``last``, ``high``, ``low`` of one symbol's prices
    in time order (at least one).

    Realized volatility is sqrt(sum of squared log returns) between consecutive snapshots: the
    volatility actually realized over that window, not annualized; None with one price.
    """
    returns = [math.log(b / a) for a, b in itertools.pairwise(prices)]
    return {
        "samples": len(prices),
        "realized_volatility": math.sqrt(sum(r * r for r in returns)) if returns else None,
        "last": prices[-1],
        "high": max(prices),
        "low": min(prices),
    }
