"""Shared fixtures. Tests never pick up whatever plugins happen to be installed: runners are
built from the built-in plugins and the flash_crash pack only, plus what a test registers."""

from __future__ import annotations

import inspect
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

import stress_pack_flash_crash
from helpers import Api, PostgresServer, book, position
from stress_plugin.default_plugins import default_plugins
from stress_plugin.default_plugins.embedded_host import EmbeddedHost
from stress_plugin.plugins import Plugins, build_manager
from stress_plugin.runner import StressRunner
from stress_plugin.service.service import StressService
from stress_plugin.settings import load_settings
from stress_plugin.store import Store


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked ``stores`` (or taking ``store_url``) runs once per store backend."""
    asked = "store_url" in inspect.signature(metafunc.function).parameters
    if metafunc.definition.get_closest_marker("stores") or asked:
        metafunc.parametrize("store_backend", ["sqlite", "postgresql"])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "stores: run once on SQLite and once on PostgreSQL")


@pytest.fixture
def store_backend() -> str:
    """The backend of the test's store: SQLite unless the test runs on both (``stores``)."""
    return "sqlite"


@pytest.fixture
def store_url(request: pytest.FixtureRequest, store_backend: str, tmp_path: Path) -> str:
    """The test's new, empty store (also its ``STRESS_DB``): a SQLite file, or a schema of its
    own on the session's PostgreSQL server."""
    if store_backend == "sqlite":
        return str(tmp_path / "stress.db")
    server = request.getfixturevalue("postgres")
    return server.url(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, store_url: str) -> None:
    """No stray PD_*/STRESS_* variable from the machine; the store in a temp dir (or a fresh
    schema on PostgreSQL)."""
    for name in list(os.environ):
        if name.startswith(("PD_", "STRESS_")) or name in ("MARKET_HOURS_ONLY",):
            monkeypatch.delenv(name)
    monkeypatch.setenv("STRESS_DB", store_url)


@pytest.fixture
def host() -> EmbeddedHost:
    return EmbeddedHost()


@pytest.fixture
def make_plugins(host: EmbeddedHost) -> Callable[..., Plugins]:
    """The evaluator, the embedded host, the pack and the given extra plugins; nothing else."""

    def make(*extra: object, **named: object) -> Plugins:
        pm, _ = build_manager(entry_points=False)
        plugins = Plugins(pm)
        for name, plugin in default_plugins().items():
            if name != "pagerduty":  # sinks only when a test asks for one
                plugins.register(host if name == "embedded_host" else plugin, name)
        plugins.register(stress_pack_flash_crash, "flash_crash")
        for i, plugin in enumerate(extra):
            plugins.register(plugin, f"extra{i}")
        for name, plugin in named.items():
            plugins.register(plugin, name)
        return plugins

    return make


@pytest.fixture
def make_runner(make_plugins: Callable[..., Plugins]) -> Callable[..., StressRunner]:
    """A runner over ``make_plugins``, keeping no store."""

    def make(*extra: object, **named: object) -> StressRunner:
        return StressRunner(plugins=make_plugins(*extra, **named), settings=load_settings())

    return make


@pytest.fixture
def book_file(tmp_path: Path) -> Path:
    path = tmp_path / "book.yaml"
    path.write_text(yaml.safe_dump(book(position(var=3000), position("MNQ", 2, 21000, 0.5, 2),
                                        equity=200_000)))
    return path


@pytest.fixture
def make_service(make_plugins, tmp_path: Path) -> Callable[..., StressService]:
    def make(*extra: object, book_path: Path | None = None) -> StressService:
        settings = load_settings()
        return StressService(settings, book_path=book_path, plugins=make_plugins(*extra),
                             store=Store(settings.db_path))

    return make


@pytest.fixture
def api(make_service, book_file) -> Api:
    return Api(make_service(book_path=book_file))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the whole session, stopped at its end."""
    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()

