"""NautilusTrader as a stress-plugin host: the book from the cache, the halt on the risk engine.

``attach(engine_or_node, config=StressActorConfig(...))`` adds a ``StressActor`` to a
``BacktestEngine`` or a ``TradingNode``. The actor runs the stress at the same slots as ``stress-
runner serve`` (``stress_plugin.service.schedule.fire_times``), on the engine's own clock, so a
backtest replays the schedule on simulated time. Its runner answers the hooks through
``NautilusHost``: ``stress_book`` from the open positions, instruments, latest quotes and the
account; ``stress_bus_publish`` sets the risk engine's trading state (KILL_SWITCH: HALTED or
REDUCING; RESET: ACTIVE); ``stress_trading_state`` reads it back, so the runner confirms that the
halt took effect; ``stress_clock`` gives the engine's time.
"""

from __future__ import annotations

from stress_host_nautilus.actor import StressActor, StressActorConfig, attach
from stress_host_nautilus.host import HOST_PLUGIN_NAME, BookUnavailable, NautilusHost

__all__ = ["HOST_PLUGIN_NAME", "BookUnavailable", "NautilusHost", "StressActor",
           "StressActorConfig", "attach"]
