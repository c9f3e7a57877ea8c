"""The plugin manager: the hooks and their kinds come from the contract's specs, the built-ins
from the distribution's entry points, and an implementation the contract no longer accepts is
refused by name at registration."""

from __future__ import annotations

import inspect
import sys
import tomllib

import pytest

import stress_hookspecs
from helpers import ROOT
from stress_hookspecs import hookimpl
from stress_plugin.core.errors import PluginError
from stress_plugin.default_plugins import default_plugins
from stress_plugin.plugins import (
    FoundEntryPoint,
    Plugins,
    build_manager,
    first_answer,
    group_entry_points,
    hook_names,
    scan_entry_points,
)


def manager():
    return build_manager(entry_points=False)[0]


def test_the_hooks_are_the_specs_of_the_contract():
    specs = {name for name, value in inspect.getmembers(stress_hookspecs, inspect.isfunction)
             if hasattr(value, "stress_plugin_spec")}
    assert hook_names(manager()) == sorted(specs)
    assert "stress_evaluate" in specs and len(specs) == 8


def test_firstresult_in_the_spec_decides_the_first_answer_hooks():
    pm = manager()
    first = {name for name in hook_names(pm) if first_answer(pm, name)}
    assert first == {"stress_book", "stress_limits", "stress_trading_state", "stress_clock"}
    with pytest.raises(TypeError, match="stress_alert is not a first-answer hook"):
        Plugins(pm)._answering("stress_alert")


def test_the_built_ins_are_the_entry_points_of_pyproject():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][
        "stress_plugin"]
    assert set(default_plugins()) == set(declared) == {"riskagent_v2", "pagerduty",
                                                       "embedded_host"}


def test_an_evaluator_written_for_the_old_contract_is_refused_by_name():
    class Outdated:  # 0.1's signature: the limits were passed twice
        @hookimpl
        def stress_evaluate(self, result, limits):
            return []

    plugins = Plugins(manager())
    with pytest.raises(PluginError, match="plugin house_rules") as caught:
        plugins.register(Outdated(), "house_rules")
    assert "limits" in str(caught.value)
    assert plugins.pm.get_plugin("house_rules") is None  # nothing half-registered


def test_a_sink_written_for_the_old_contract_is_refused_by_name():
    class Outdated:
        @hookimpl
        def stress_alert(self, report, delivery):
            return None

    with pytest.raises(PluginError, match="plugin old_sink"):
        Plugins(manager()).register(Outdated(), "old_sink")


# -- entry points read without importlib.metadata (cold start) ------------------------------


def _found(eps):
    return [(ep.name, ep.value, ep.group) for ep in eps]


def _metadata_eps(group):
    import importlib.metadata

    return list(importlib.metadata.entry_points(group=group))


@pytest.mark.parametrize("group", ["stress_plugin", "console_scripts", "pytest11"])
def test_the_installed_entry_points_are_those_importlib_metadata_finds(group):
    scanned = scan_entry_points(group)
    assert scanned is not None  # this venv is the usual layout
    expected = _metadata_eps(group)
    assert _found(scanned) == _found(expected) and expected
    assert [ep.dist.name for ep in scanned] == [ep.dist._path.name for ep in expected]


def _dist(root, folder, entry_points=None, name="x"):
    path = root / folder
    path.mkdir(parents=True)
    (path / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    if entry_points is not None:
        (path / "entry_points.txt").write_text(entry_points)
    return path


def test_a_synthetic_path_is_read_as_importlib_metadata_reads_it(tmp_path, monkeypatch):
    """Order of sys.path, the first distribution of a normalized name wins (within a folder
    and across folders), comments, blank lines and lines before any section skipped, other
    groups ignored, a missing or unreadable entry_points.txt is none, a missing folder too."""
    one, two = tmp_path / "one", tmp_path / "two"
    _dist(one, "alpha-1.0.dist-info", "# c\nstray = line\n[stress_plugin]\n a = alpha.m:A \n"
          "\n[console_scripts]\nx = y:z\n[stress_plugin]\nb=alpha.m\n", name="alpha")
    _dist(one, "beta.egg-info", "[stress_plugin]\nbeta = beta.mod:Plugin.attr[extra]\n",
          name="beta")
    _dist(one, "gamma-1.dist-info", name="gamma")  # no entry_points.txt
    _dist(one, "delta-1.dist-info", name="delta").joinpath("entry_points.txt").mkdir()
    _dist(two, "Foo_Bar-1.0.dist-info", "[stress_plugin]\nfoo = foo\n", name="Foo_Bar")
    _dist(two, "alpha-3.0.dist-info", "[stress_plugin]\nlater = no.where\n", name="alpha")
    _dist(tmp_path / "three", "foo.bar-1.0.dist-info", "[stress_plugin]\ndup = no\n",
          name="foo.bar")
    _dist(tmp_path / "cwd", "cwd-1.dist-info", "[stress_plugin]\nhere = c\n", name="cwd")
    for version in ("1", "2"):  # one name twice in a folder: listing order picks, in both
        _dist(tmp_path / "four", f"Twice-{version}.dist-info",
              f"[stress_plugin]\ntwice = v{version}\n", name="Twice")
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "missing"), str(one), "", str(two),
                                      str(tmp_path / "three"), str(tmp_path / "four")])
    scanned = scan_entry_points("stress_plugin")
    assert scanned is not None
    assert _found(scanned) == _found(_metadata_eps("stress_plugin"))
    assert [ep.dist for ep in scanned] == [ep.dist._path for ep in _metadata_eps(
        "stress_plugin")]
    assert [(name, value) for name, value, _ in _found(scanned)][:-1] == [
        ("a", "alpha.m:A"), ("b", "alpha.m"), ("beta", "beta.mod:Plugin.attr[extra]"),
        ("here", "c"), ("foo", "foo")]
    assert _found(scanned)[-1][:1] == ("twice",)
    assert _found(scan_entry_points("console_scripts")) == [("x", "y:z", "console_scripts")]
    plugins = Plugins(manager(), distributions={"a": scanned[0].dist})
    plugins.register(type("A", (), {})(), "a")
    info = next(i for i in plugins.describe() if i.name == "a")
    assert (info.distribution, info.version) == ("alpha", "1.0")


def test_a_malformed_line_fails_as_in_importlib_metadata(tmp_path, monkeypatch):
    _dist(tmp_path, "bad-1.dist-info", "[other_group]\nno equals sign\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    assert scan_entry_points("stress_plugin") is None
    with pytest.raises(TypeError) as ours:
        group_entry_points("stress_plugin")
    with pytest.raises(TypeError) as theirs:
        _metadata_eps("stress_plugin")
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("value", ["json:dumps", "json", "os.path:join", "json:JSONDecoder.decode",
                                   "json : dumps [x]", "not a value!", "json:nothing_here",
                                   "no_such_module_xyz:f"])
def test_an_entry_point_loads_as_importlib_metadata_loads_it(value, tmp_path):
    import importlib.metadata

    ours = FoundEntryPoint("e", value, "stress_plugin", tmp_path)
    theirs = importlib.metadata.EntryPoint("e", value, "stress_plugin")
    try:
        expected = theirs.load()
    except Exception as exc:
        with pytest.raises(type(exc)) as caught:
            ours.load()
        assert repr(caught.value) == repr(exc)
    else:
        assert ours.load() is expected


def test_an_unusual_layout_is_left_to_importlib_metadata(tmp_path, monkeypatch):
    """A zip or an egg on the path, a folder named unlike its distribution, or another finder
    of distributions: importlib.metadata reads them, and the manager finds the same plugins."""
    import zipfile

    archive = tmp_path / "plugins.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("zipped-1.0.dist-info/METADATA", "Name: zipped\nVersion: 1.0\n")
        z.writestr("zipped-1.0.dist-info/entry_points.txt", "[stress_plugin]\nz = json\n")
    odd = tmp_path / "odd"
    _dist(odd, "Odd-1.0.DIST-INFO", "[stress_plugin]\no = json\n", name="odd")
    egg = tmp_path / "thing-1.0.egg"
    _dist(egg, "EGG-INFO", "[stress_plugin]\ne = json\n", name="thing")
    for path in (archive, odd, egg):
        monkeypatch.setattr(sys, "path", [str(path)])
        assert scan_entry_points("stress_plugin") is None
        assert _found(group_entry_points("stress_plugin")) == _found(
            _metadata_eps("stress_plugin")) != []

    class Finder:
        @staticmethod
        def find_distributions(context=None):
            return iter(())

    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, Finder])
    assert scan_entry_points("stress_plugin") is None
