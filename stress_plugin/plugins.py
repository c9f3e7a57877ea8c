"""The plugin manager and the one facade the runner, CLI and service call plugins through.

Built-in plugins (``riskagent_v2``, ``pagerduty``, ``embedded_host``) live beside this file and
are registered through the same ``stress_plugin`` entry-point group as third-party ones, so each
can be listed and blocked by name. Input hooks (book, limits, evaluators) fail closed: an
exception or an unusable answer raises ``RunFailure`` and the run fails. Output hooks (bus,
sinks) are isolated: an exception in one is logged and counted, and never stops the others.
"""

from __future__ import annotations

import importlib.machinery
import logging
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import pluggy

import stress_hookspecs
from stress_hookspecs import PROJECT_NAME, Breach, RiskEvent, StressResult
from stress_plugin.core.errors import NO_VALUE, PluginError, RunFailure

if TYPE_CHECKING:
    from importlib.metadata import Distribution, EntryPoint

log = logging.getLogger("stress_runner.plugins")

def hook_names(pm: pluggy.PluginManager) -> list[str]:
    """The hooks of the contract, as the manager read them from ``stress_hookspecs``."""
    return sorted(name for name, caller in vars(pm.hook).items()
                  if isinstance(caller, pluggy.HookCaller) and caller.spec is not None)


def first_answer(pm: pluggy.PluginManager, hook: str) -> bool:
    """Whether ``hook`` takes the first non-None answer: the spec's ``firstresult`` decides."""
    spec = getattr(pm.hook, hook).spec
    return bool(spec is not None and spec.opts.get("firstresult"))


TRADING_STATES = ("ACTIVE", "REDUCING", "HALTED")
"""What ``stress_trading_state`` may answer (a string, case-insensitive)."""


class PluginObserver(Protocol):
    """Told of every failed plugin call and every alert outcome (the service's metrics)."""

    def plugin_error(self, plugin: str) -> None: ...

    def alert_outcome(self, sink: str, outcome: str) -> None: ...


class PluginInfo(NamedTuple):
    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "distribution": self.distribution,
                "version": self.version, "hooks": list(self.hooks)}


class CallOutcome(NamedTuple):
    """The outcome of one plugin's call: ``error`` is None when it succeeded."""

    plugin: str
    error: str | None
    duration_ms: float


def build_manager(disabled: Iterable[str] = (), *, entry_points: bool = True
                  ) -> tuple[pluggy.PluginManager, dict[str, Distribution | Path]]:
    """One PluginManager with the contract and every plugin of the entry-point group.

    Loads entry points one by one (rather than pluggy's loader) so that a plugin that fails to
    import is named in the error; the operator can then block it with STRESS_DISABLE_PLUGINS.
    Each plugin's distribution is kept as found: a ``Distribution``, or the path of its
    metadata folder (read by ``describe``).
    """
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(stress_hookspecs)
    for name in disabled:
        pm.set_blocked(name)
    dists: dict[str, Distribution | Path] = {}
    found = group_entry_points(PROJECT_NAME) if entry_points else []
    for ep in found:
        if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
            continue
        where = f"plugin {ep.name} ({ep.value})"
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(where, None, NO_VALUE, str(exc)) from None
        except Exception as exc:
            raise PluginError(where, None, NO_VALUE, f"failed to load: {exc!r}; block it with "
                              f"STRESS_DISABLE_PLUGINS={ep.name}") from None
        if ep.dist is not None:
            dists[ep.name] = ep.dist
    if entry_points:
        _warn_unknown(disabled, {ep.name for ep in found})
    check(pm)
    return pm, dists


_EP_PATTERN = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?"
                         r"((?P<extras>\[.*\])\s*)?$")
"""``importlib.metadata.EntryPoint.pattern``: what an entry point's value may be."""


class FoundEntryPoint(NamedTuple):
    """An entry point read by ``scan_entry_points``: the name, value and ``load`` of
    ``importlib.metadata.EntryPoint``; ``dist`` is its distribution's metadata folder. A named
    tuple: made in a tenth of a frozen dataclass's time, on the cold-start path."""

    name: str
    value: str
    group: str
    dist: Path

    def load(self) -> Any:
        """``EntryPoint.load``, step for step, so a bad value fails with the same error."""
        match = _EP_PATTERN.match(self.value)
        module = import_module(match.group("module"))  # type: ignore[union-attr]
        attrs = filter(None, (match.group("attr") or "").split("."))  # type: ignore[union-attr]
        result: Any = module
        for attr in attrs:
            result = getattr(result, attr)
        return result


def group_entry_points(group: str) -> Sequence[FoundEntryPoint | EntryPoint]:
    """``importlib.metadata.entry_points(group=group)``: read by ``scan_entry_points`` when
    the environment is laid out as usual, else by importlib.metadata itself."""
    found = scan_entry_points(group)
    if found is None:
        import importlib.metadata

        return list(importlib.metadata.entry_points(group=group))
    return found


def scan_entry_points(group: str) -> list[FoundEntryPoint] | None:
    """The entry points importlib.metadata finds, found its way: the ``*.dist-info`` and
    ``*.egg-info`` folders of each ``sys.path`` directory in order, the first distribution of
    a (normalized) name winning, ``entry_points.txt`` parsed as it parses it. Importing
    importlib.metadata (email, zipfile, csv, importlib.resources) was ~20 ms of every
    ``stress-runner run``. Only the usual layout is read here: None (ask importlib.metadata)
    when a zip or an egg is on the path, another finder offers distributions, a folder's
    name does not give its distribution's name, or a line is malformed."""
    finders = [f for f in sys.meta_path if getattr(f, "find_distributions", None)]
    if finders != [importlib.machinery.PathFinder]:
        return None
    seen: set[str] = set()
    found: list[FoundEntryPoint] = []
    for root in sys.path:
        if not isinstance(root, str) or os.path.basename(root).lower().endswith(".egg"):
            return None
        try:
            children = os.listdir(root or ".")
        except Exception:
            if os.path.isfile(root):  # a zip: importlib.metadata reads it
                return None
            continue
        first: dict[str, str] = {}
        for child in children:
            if not child.lower().endswith((".dist-info", ".egg-info")):
                continue
            stem, ext = os.path.splitext(child)
            name = re.sub(r"[-_.]+", "-", stem.partition("-")[0]).lower().replace("-", "_")
            if ext not in (".dist-info", ".egg-info") or not name:
                return None  # named from its METADATA: importlib.metadata reads it
            first.setdefault(name, child)
        for name, child in first.items():
            if name not in seen:
                seen.add(name)
                entries = _parse_entry_points(Path(root, child), group)
                if entries is None:
                    return None
                found += entries
    return found


def _parse_entry_points(folder: Path, group: str) -> list[FoundEntryPoint] | None:
    """``group``'s entry points in ``folder/entry_points.txt`` (none without one). Every
    line of every group is checked, as importlib.metadata parses them all: None at a line
    without ``=``, so importlib.metadata raises its own error for it."""
    try:
        text = (folder / "entry_points.txt").read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        return []
    found = []
    section = None
    for line in map(str.strip, text.splitlines()):
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
            continue
        if section is not None:
            name, equals, value = line.partition("=")
            if not equals:
                return None
            if section == group:
                found.append(FoundEntryPoint(name.strip(), value.strip(), section, folder))
    return found


def _warn_unknown(disabled: Iterable[str], known: set[str]) -> None:
    """A misspelled STRESS_DISABLE_PLUGINS name blocks nothing: say so, with the real names."""
    unknown = sorted(set(disabled) - known)
    if unknown:
        log.warning("STRESS_DISABLE_PLUGINS names no installed plugin: %s (known plugins: %s)",
                    ", ".join(unknown), ", ".join(sorted(known)) or "none")


def check(pm: pluggy.PluginManager) -> None:
    """Fail loudly on a misspelled hook or a hook wrapper (calls are made one by one)."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        raise PluginError(f"plugin {name}", None, NO_VALUE, str(exc)) from None
    for name in hook_names(pm):
        for impl in getattr(pm.hook, name).get_hookimpls():
            if impl.hookwrapper or impl.wrapper:
                raise PluginError(f"plugin {impl.plugin_name}", name, NO_VALUE,
                                  "hook wrappers are not supported by stress_plugin hooks")


class Plugins:
    """Typed access to the hooks; isolation, timing, counting and tracing live here only."""

    def __init__(self, pm: pluggy.PluginManager, *, trace: bool = False,
                 distributions: dict[str, Distribution | Path] | None = None,
                 observer: PluginObserver | None = None) -> None:
        self.pm = pm
        self.observer = observer
        self.distributions = distributions or {}
        self.trace = trace
        self.errors: Counter[str] = Counter()
        """Failed calls per plugin name, since this facade was made."""

    @classmethod
    def load(cls, disabled: Iterable[str] = (), *, trace: bool = False) -> Plugins:
        pm, dists = build_manager(disabled)
        return cls(pm, trace=trace, distributions=dists)

    def register(self, plugin: object, name: str | None = None) -> None:
        """Add a plugin object by hand (a host embedding the runner, or a test); one that does
        not fit the contract (an argument its spec does not have) is a ``PluginError``."""
        try:
            registered = self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name or repr(exc.plugin)}", None, NO_VALUE,
                              " ".join(str(exc).split())) from None
        try:
            check(self.pm)
        except PluginError:
            self.pm.unregister(name=registered)
            raise

    # -- the hooks ----------------------------------------------------------------------------

    def scenarios(self) -> list[tuple[str, Any]]:
        """Every scenario definition offered, as (plugin name, path or mapping)."""
        found = []
        for plugin, answer in self._each("stress_scenarios", {}):
            if answer is None:
                continue
            if not isinstance(answer, list | tuple):
                self._fail(plugin, "stress_scenarios", f"returned {type(answer).__name__}, "
                           "not a list")
                continue
            found += [(plugin, item) for item in answer]
        return found

    def book(self) -> tuple[str, Any] | None:
        """The first non-None book, as (plugin name, answer); a raising host fails the run."""
        return self._first("stress_book", {}, "book_unavailable")

    def limits(self) -> tuple[str, Any] | None:
        """The first non-None ``stress_limits`` answer; a raising host fails the run."""
        return self._first("stress_limits", {}, "limits_unavailable")

    def book_suppliers(self) -> list[str]:
        """The plugins asked for the book, in order (a ``trylast`` default only if alone)."""
        return [impl.plugin_name for impl in self._answering("stress_book")]

    def require_evaluator(self) -> None:
        """Refuse a plugin set that could not judge a run (the built-in evaluator blocked with
        no other loaded)."""
        if not self._impls("stress_evaluate"):
            blocked = ", ".join(self.blocked()) or "none"
            raise PluginError("plugins", "stress_evaluate", NO_VALUE,
                              "no implementation is loaded, so no run could be judged; "
                              "block the built-in riskagent_v2 only when another evaluator is "
                              f"installed (blocked: {blocked})")

    def evaluate(self, result: StressResult) -> list[Breach]:
        """The merged breaches of every evaluator, identical ones once; any evaluator that
        raises or answers something else fails the run."""
        impls = self._impls("stress_evaluate")
        if not impls:
            raise RunFailure("no_evaluator", "plugins", "stress_evaluate", NO_VALUE,
                             "no implementation is loaded")
        breaches: dict[Breach, None] = {}
        kwargs = {"result": result}
        for impl in impls:
            answer = self._call_strict(impl, "stress_evaluate", kwargs, "evaluator_failed")
            if answer is None:
                continue
            if not isinstance(answer, list | tuple) or not all(
                isinstance(b, Breach) for b in answer
            ):
                problem = f"must return a list of Breach, not {_short(answer, 80)}"
                self._fail(impl.plugin_name, "stress_evaluate", problem)
                raise RunFailure("evaluator_failed", f"plugin {impl.plugin_name} "
                                 "(stress_evaluate)", None, NO_VALUE, problem)
            breaches.update(dict.fromkeys(answer))
        return list(breaches)

    def bus_publish(self, event: RiskEvent) -> list[CallOutcome]:
        return self._deliver_each("stress_bus_publish", {"event": event})

    def trading_state(self) -> tuple[str, str | None] | None:
        """(plugin, state) from the first host answering ``stress_trading_state``: the state
        upper-cased, or None when it raised, answered None or something that is not a state;
        None when no plugin implements the hook (nobody can confirm)."""
        impls = self._answering("stress_trading_state")
        if not impls:
            return None
        for impl in impls:
            ok, answer, _ = self._call(impl, "stress_trading_state", {})
            if not ok or answer is None:
                continue
            state = answer.upper() if isinstance(answer, str) else None
            if state in TRADING_STATES:
                return impl.plugin_name, state
            self._fail(impl.plugin_name, "stress_trading_state",
                       f"answered {_short(answer, 80)}, not one of {', '.join(TRADING_STATES)}")
        return impls[-1].plugin_name, None

    def clock(self) -> datetime | None:
        """The host's time from ``stress_clock`` as an aware UTC datetime; None for the wall
        clock (no host clock, or one that raised or answered something unusable)."""
        for impl in self._answering("stress_clock"):
            ok, answer, _ = self._call(impl, "stress_clock", {})
            if not ok or answer is None:
                continue
            if isinstance(answer, datetime) and answer.utcoffset() is not None:
                return answer.astimezone(UTC)
            if isinstance(answer, int) and not isinstance(answer, bool) and answer >= 0:
                return datetime.fromtimestamp(answer / 1e9, UTC)
            self._fail(impl.plugin_name, "stress_clock", f"answered {_short(answer, 80)}, not "
                       "an aware datetime or int UNIX nanoseconds; using the wall clock")
        return None

    def sinks(self) -> list[str]:
        """The loaded alert sinks: the plugins implementing ``stress_alert``, in call order."""
        return [impl.plugin_name for impl in self._impls("stress_alert")]

    def alert_impl(self, sink: str) -> pluggy.HookImpl | None:
        """The ``stress_alert`` implementation of one sink; the delivery worker calls it."""
        return next((i for i in self._impls("stress_alert") if i.plugin_name == sink), None)

    # -- listing --------------------------------------------------------------------------------

    def describe(self) -> list[PluginInfo]:
        """Name, distribution, version and hooks of every registered plugin."""
        infos = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:  # blocked
                continue
            hooks = tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or ()))
            dist = self.distributions.get(name)
            if isinstance(dist, Path):
                from importlib.metadata import PathDistribution

                dist = PathDistribution(dist)
            infos.append(PluginInfo(
                name=name,
                distribution=dist.metadata["name"] if dist else "-",
                version=dist.version if dist else "-",
                hooks=hooks,
            ))
        return sorted(infos, key=lambda info: info.name)

    def blocked(self) -> list[str]:
        return sorted(name for name, plugin in self.pm.list_name_plugin() if plugin is None)

    # -- mechanics ------------------------------------------------------------------------------

    def _impls(self, hook: str) -> list[pluggy.HookImpl]:
        """Implementations in pluggy's call order (tryfirst first, trylast last)."""
        return list(reversed(getattr(self.pm.hook, hook).get_hookimpls()))

    def invoke(self, impl: pluggy.HookImpl, hook: str, kwargs: dict[str, Any]) -> Any:
        """Call one implementation with the arguments it names (traced on demand); raises what
        it raises. The delivery worker calls sinks through this too."""
        started = time.perf_counter()
        answer = impl.function(*(kwargs[arg] for arg in impl.argnames))
        if self.trace:
            log.info("plugin call: %s.%s(%s) -> %s in %.3f ms", impl.plugin_name, hook,
                     ", ".join(kwargs), _short(answer), (time.perf_counter() - started) * 1000)
        return answer

    def count_error(self, plugin: str) -> None:
        """One failed call of ``plugin``, in ``errors`` and for the observer (metrics)."""
        self.errors[plugin] += 1
        if self.observer is not None:
            self.observer.plugin_error(plugin)

    def _call(self, impl: pluggy.HookImpl, hook: str, kwargs: dict[str, Any]
              ) -> tuple[bool, Any, float]:
        started = time.perf_counter()
        try:
            answer = self.invoke(impl, hook, kwargs)
        except Exception as exc:
            self._fail(impl.plugin_name, hook, f"raised {exc!r}", exc_info=exc)
            return False, None, (time.perf_counter() - started) * 1000
        return True, answer, (time.perf_counter() - started) * 1000

    def _each(self, hook: str, kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
        results = []
        for impl in self._impls(hook):
            ok, answer, _ = self._call(impl, hook, kwargs)
            if ok:
                results.append((impl.plugin_name, answer))
        return results

    def _answering(self, hook: str) -> list[pluggy.HookImpl]:
        """A first-answer hook's implementations (``firstresult`` in its spec); ``trylast``
        ones are defaults, asked only when no other plugin implements the hook (a real host
        never falls through to a demo)."""
        if not first_answer(self.pm, hook):
            raise TypeError(f"{hook} is not a first-answer hook (no firstresult in its spec)")
        impls = self._impls(hook)
        real = [impl for impl in impls if not impl.trylast]
        return real or impls

    def _first(self, hook: str, kwargs: dict[str, Any], reason: str) -> tuple[str, Any] | None:
        """The first non-None answer; an exception fails the run (the next is not asked)."""
        for impl in self._answering(hook):
            answer = self._call_strict(impl, hook, kwargs, reason)
            if answer is not None:
                return impl.plugin_name, answer
        return None

    def _call_strict(self, impl: pluggy.HookImpl, hook: str, kwargs: dict[str, Any],
                     reason: str) -> Any:
        """Call an input hook: its exception becomes a ``RunFailure`` naming the plugin."""
        try:
            return self.invoke(impl, hook, kwargs)
        except Exception as exc:
            self._fail(impl.plugin_name, hook, f"raised {exc!r}", exc_info=exc)
            raise RunFailure(reason, f"plugin {impl.plugin_name} ({hook})", None, NO_VALUE,
                             f"raised {_short(exc, 200)}") from None

    def _deliver_each(self, hook: str, kwargs: dict[str, Any]) -> list[CallOutcome]:
        outcomes = []
        for impl in self._impls(hook):
            ok, _, ms = self._call(impl, hook, kwargs)
            outcomes.append(CallOutcome(impl.plugin_name, None if ok else "failed", ms))
        return outcomes

    def _fail(self, plugin: str, hook: str, problem: str,
              exc_info: BaseException | None = None) -> None:
        self.count_error(plugin)
        log.error("plugin %s failed in %s: %s", plugin, hook, problem, exc_info=exc_info)


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
