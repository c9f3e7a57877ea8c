"""The docs cannot drift from the contract or from CI."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import stress_hookspecs
from helpers import ROOT
from stress_plugin.plugins import build_manager, hook_names

README = (ROOT / "README.md").read_text()


def test_every_hook_and_argument_is_documented():
    specs = {name: getattr(stress_hookspecs, name)
             for name in hook_names(build_manager(entry_points=False)[0])}
    assert set(specs) == {n for n in dir(stress_hookspecs) if n.startswith("stress_")}
    for name, spec in specs.items():
        args = ", ".join(inspect.signature(spec).parameters)
        assert f"`{name}({args})`" in README, f"README lacks {name}({args})"
        assert spec.__doc__ and "Called" in spec.__doc__, f"{name} docstring lacks when"


def test_ci_runs_the_readme_commands_verbatim():
    block = re.search(r"```bash\n(# 1\..*?)```", README, re.S).group(1)
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text()
    for command in commands:
        assert command in ci.splitlines()


def test_runbook_env_vars_are_documented():
    for name in ("PD_ROUTING_KEY", "STRESS_ENABLED", "MARKET_HOURS_ONLY", "STRESS_MAX_SYMBOLS",
                 "STRESS_MAX_RUNTIME_MS", "PD_EVENTS_URL", "STRESS_API_TOKEN", "STRESS_DB",
                 "STRESS_DISABLE_PLUGINS", "STRESS_SCENARIOS", "STRESS_LOG_FORMAT",
                 "STRESS_PUBLIC_URL"):
        assert f"`{name}`" in README


def test_every_python_snippet_runs_as_printed(tmp_path):
    """Each ```python block of the README, and each `python -c` line of its bash blocks, runs
    with exit 0 in a fresh interpreter (the store in a temporary file)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PD_", "STRESS_"))}
    env["STRESS_DB"] = str(tmp_path / "stress.db")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # the NautilusTrader fragment needs an engine and ~670 MB of NautilusTrader: the host's own
    # tests and examples/nautilus_backtest.py run it, in CI's second venv
    snippets = [code for code in re.findall(r"```python\n(.*?)```", README, re.S)
                if "stress_host_nautilus" not in code]
    commands = [line for block in re.findall(r"```bash\n(.*?)```", README, re.S)
                for line in block.splitlines() if line.startswith("python -c ")]
    assert len(snippets) >= 2 and commands
    for i, code in enumerate(snippets):
        script = tmp_path / f"snippet{i}.py"
        script.write_text(code)
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                             cwd=ROOT, env=env, timeout=60)
        assert out.returncode == 0, f"README snippet {i}:\n{code}\n{out.stderr}"
        # what a snippet says it prints (``# -> ...``) is what it prints
        for expected in re.findall(r"^# -> (.*)$", code, re.M):
            assert expected in out.stdout.splitlines(), (i, expected, out.stdout)
    printed = [e for code in snippets for e in re.findall(r"^# -> (.*)$", code, re.M)]
    assert {"passed plugin trading_host plugin trading_host",
            "passed 2 plugin array_host"} <= set(printed)
    for command in commands:
        out = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                             cwd=ROOT, env=env, timeout=60)
        assert out.returncode == 0, f"{command}\n{out.stderr}"


def test_every_setting_is_documented():
    from stress_plugin.settings import SETTING_NAMES

    for name in SETTING_NAMES:
        assert f"`{name.upper()}`" in README, name


def test_every_document_a_comment_cites_is_in_the_repository():
    """A ``*.md`` named in code or tests is a file of this repository (docs/model.md, the
    README, a pack's README, ...), so a reader can follow every citation."""
    cited = re.compile(r"[\w./-]*\w\.md\b")
    missing = []
    for path in [*ROOT.glob("stress_plugin/**/*.py"), *ROOT.glob("hookspecs/**/*.py"),
                 *ROOT.glob("tests/**/*.py"), *ROOT.glob("benchmarks/*.py"),
                 *ROOT.glob("hosts/nautilus/**/*.py"), *ROOT.glob("scenario_packs/**/*.py")]:
        for name in cited.findall(path.read_text(encoding="utf-8")):
            where = [ROOT / name, ROOT / "docs" / name, path.parent / name]
            if not any(p.is_file() for p in where):
                missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert not missing, "cited but not in the repository:\n" + "\n".join(missing)
