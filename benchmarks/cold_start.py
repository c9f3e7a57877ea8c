"""CLI cold start: ``stress-runner run --json`` on the demo book, next to ``import numpy``.

Each command is a fresh process (this venv's interpreter; HOME a temporary folder, so
``run`` finds and opens the default store as a user's first run does), timed from
spawn to exit. Modules are read from bytecode, as from an installed wheel (pip compiles it):
a temporary PYTHONPYCACHEPREFIX, filled by each command's untimed warm-up, so a
PYTHONDONTWRITEBYTECODE environment (or an editable checkout without ``__pycache__``) does
not time compiling the sources; ``--source`` times that case instead. Also checks that ``run``
imports none of the service's heavy modules (nor importlib.metadata).

    python benchmarks/cold_start.py [--repeat 20] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import fmt_ms, machine, pct, table

HEAVY = ("fastapi", "uvicorn", "starlette", "apscheduler", "exchange_calendars", "pandas",
         "importlib.metadata", "email", "zipfile", "csv", "uuid", "tempfile")
"""What ``run`` must not import: what ``serve`` needs, and what cold start shed (entry points
are read without importlib.metadata; the PagerDuty sink imports email and uuid when sending;
the default store's folder is found without platformdirs, which imports tempfile)."""
_PROBE = """
import contextlib, io, json, sys
from stress_plugin.cli import main as cli
with contextlib.redirect_stdout(io.StringIO()):
    code = cli.main(["-q", "run", "--json"])
print(json.dumps({"exit": code, "modules": sorted(sys.modules)}))
"""


def _time(commands: list[tuple[str, list[str], dict[str, str]]], repeat: int
          ) -> list[list[float]]:
    """Wall times in ms of ``repeat`` fresh processes of each command, after one untimed
    warm-up each (disk cache, bytecode); the commands take turns, so a machine whose speed
    drifts slows each alike and their ratio holds."""
    times: list[list[float]] = [[] for _ in commands]
    for i in range(repeat + 1):
        for (_, argv, env), samples in zip(commands, times, strict=True):
            start = time.perf_counter()
            subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            if i:
                samples.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="3 repeats (CI)")
    parser.add_argument("--source", action="store_true",
                        help="keep PYTHONDONTWRITEBYTECODE as it is set: time the compile too")
    args = parser.parse_args()
    repeat = 3 if args.quick else args.repeat
    python = sys.executable
    runner = str(Path(python).with_name("stress-runner"))
    with tempfile.TemporaryDirectory(prefix="stress-bench-") as folder:
        env = {k: v for k, v in os.environ.items() if k not in ("STRESS_DB", "XDG_STATE_HOME")}
        env["HOME"] = folder  # the default store: ~/.local/state/stress-plugin/stress.db
        if not args.source:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(Path(folder) / "pycache")
        probe = subprocess.run([python, "-c", _PROBE], env=env, check=True,
                               capture_output=True, text=True)
        seen = json.loads(probe.stdout.splitlines()[-1])
        blocked = {**env, "STRESS_DISABLE_PLUGINS": "pagerduty"}
        commands = [
            ("python -c pass", [python, "-c", "pass"], env),
            ('python -c "import numpy"', [python, "-c", "import numpy"], env),
            ("stress-runner --help", [runner, "--help"], env),
            ("stress-runner run --json", [runner, "run", "--json"], env),
            ("STRESS_DISABLE_PLUGINS=pagerduty stress-runner run --json",
             [runner, "run", "--json"], blocked),
        ]
        times = _time(commands, repeat)
        numpy = pct(times[1], 50)
        rows = [[f"`{label}`", fmt_ms(pct(samples, 50)), fmt_ms(min(samples)),
                 fmt_ms(pct(samples, 90)), f"{pct(samples, 50) / numpy:.2f}x"]
                for (label, _, _), samples in zip(commands, times, strict=True)]
    loaded = [name for name in HEAVY if name in seen["modules"]]
    code = ("bytecode as this environment has it (--source)" if args.source
            else "read from bytecode")
    print(f"### Cold start (ms, {repeat} runs each)\n\nMachine: {machine()}; load "
          f"{os.getloadavg()[0]:.2f}; modules {code}\n")
    print(table(["command", "p50", "min", "p90", "p50 / numpy's"], rows))
    print("\nTarget: `stress-runner run --json` <= 1.8x `python -c \"import numpy\"`.")
    print(f"\n`run` exit code {seen['exit']}; imports {len(seen['modules'])} modules; "
          f"of {', '.join(HEAVY)}: {', '.join(loaded) or 'none'}.")
    if loaded:
        sys.exit(f"run imported {', '.join(loaded)}")


if __name__ == "__main__":
    main()
