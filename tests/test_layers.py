"""The import rules of the house, read from the code itself (every import, at module level or
inside a function): a module may import its own layer and the layers below, never above.

    core/             the model and validation; the contract and numpy/yaml only
    default_plugins/  the built-ins: what a third-party plugin could import too (core, settings)
    runtime           plugins, runner, store (the interface, its SQLite and PostgreSQL
                      backends), delivery, settings, report, version
    service/          service, API, scheduler, metrics, security: the service stack lives here
    cli/              the shell over all of it
    stress_plugin     the package's public names, each loaded on first use
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from helpers import ROOT

PACKAGE = ROOT / "stress_plugin"

SERVICE_STACK = {"fastapi", "fastapi_offline", "starlette", "uvicorn", "apscheduler",
                 "exchange_calendars", "pandas", "prometheus_client"}
"""Imported only inside ``service/``: `stress-runner run` must never pay for them."""

CORE_ALLOWED = {"numpy", "yaml", "stress_hookspecs"}
CORE_STDLIB_FORBIDDEN = {"socket", "sqlite3", "threading", "subprocess", "time", "http",
                         "urllib", "asyncio", "logging", "os"}
"""Nothing in the core talks to the network or a store, keeps time or logs: it computes."""

RUNTIME = {"plugins", "runner", "store", "delivery", "settings", "report", "version"}


def layer(module: str) -> str:
    """The layer of a ``stress_plugin`` module name."""
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    if parts[1] in ("core", "default_plugins", "service", "cli"):
        return parts[1]
    if parts[1] in RUNTIME:
        return "runtime"
    raise AssertionError(f"{module} is in no layer of the house; add it to one")


MAY_IMPORT = {
    "core": {"core"},
    "default_plugins": {"core", "default_plugins", "runtime:settings", "runtime:version"},
    "runtime": {"core", "runtime"},
    "service": {"core", "runtime", "service"},
    "cli": {"core", "runtime", "service", "cli", "default_plugins", "package"},
    "package": {"core", "runtime", "service", "default_plugins", "package"},
}
"""``runtime:settings``, ``runtime:version``: a built-in may read the settings and the version,
as any plugin may; nothing else of the runtime (no store, no runner, no manager), so it has no
capability a third party lacks."""


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, absolute, with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import; write it whole"
            base = node.module or ""
            if base in ("stress_plugin", "stress_plugin.core", "stress_plugin.service",
                        "stress_plugin.cli", "stress_plugin.default_plugins"):
                found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, base))
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def _allowed(source_layer: str, target: str) -> bool:
    target_layer = layer(target)
    rules = MAY_IMPORT[source_layer]
    if target_layer in rules:
        return True
    return f"{target_layer}:{target.split('.')[1]}" in rules


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_its_layer_and_those_below(path: Path):
    source = module_name(path)
    source_layer = layer(source)
    wrong = []
    for line, target in imports(path):
        top = target.split(".")[0]
        if top == "stress_plugin" and target != "stress_plugin" and not _allowed(
                source_layer, target):
            wrong.append(f"line {line}: {target} ({layer(target)})")
        if top in SERVICE_STACK and source_layer != "service":
            wrong.append(f"line {line}: {target} (the service stack)")
        outside = top not in CORE_ALLOWED | {"stress_plugin", "__future__"} and (
            top not in sys.stdlib_module_names or top in CORE_STDLIB_FORBIDDEN)
        if source_layer == "core" and outside:
            wrong.append(f"line {line}: {target} (core imports no I/O, clock or library "
                         "beyond numpy and yaml)")
    assert not wrong, f"{source} ({source_layer}) imports:\n" + "\n".join(wrong)


def test_the_rules_see_every_layer_and_catch_a_violation(tmp_path: Path):
    """The checker itself: a core module importing the store is caught."""
    assert {layer(module_name(p)) for p in MODULES} == set(MAY_IMPORT)
    assert not _allowed("core", "stress_plugin.store")
    assert not _allowed("default_plugins", "stress_plugin.runner")
    assert _allowed("default_plugins", "stress_plugin.settings")
    assert not _allowed("runtime", "stress_plugin.service.metrics")
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import sqlite3\n    from stress_plugin import store\n")
    assert imports(bad) == [(2, "sqlite3"), (3, "stress_plugin.store")]


def test_the_service_package_itself_imports_nothing():
    """Importing ``stress_plugin.service.X`` runs ``service/__init__.py`` first: it stays empty
    so the CLI's ``status`` pays only for the module it uses."""
    assert imports(PACKAGE / "service" / "__init__.py") == []
