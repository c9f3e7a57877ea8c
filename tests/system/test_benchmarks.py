"""The benchmarks keep working: each script runs in its tiny ``--quick`` mode and prints its
table. No timing is asserted here; the figures are for people, on known machines."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import ROOT


@pytest.mark.parametrize(("script", "headings"), [
    ("run_once.py", ["| symbols | full p50 |", "| 1,000 |", "x loop", "x numpy"]),
    ("trading_loop.py", ["| symbols | idle p50 |", "| 100 |", "| positions | p50 |"]),
    ("cold_start.py", ["| `stress-runner run --json` |", "exit code 0", ": none."]),
    ("contention.py", ["| symbols | quiet | busy |", "| 100 |"]),
    ("big_book.py", ["10,000 symbols as BookColumns", "Breaches: 0 (passed)"]),
    ("symbol_shocks.py", ["| 1,000 exact symbols |", "| 1,000 glob patterns |"]),
])
def test_benchmark_runs_in_quick_mode(script, headings):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for text in headings:
        assert text in out.stdout, out.stdout


def test_run_once_reports_the_postgresql_store_beside_sqlite(postgres):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_once.py"), "--quick",
                          "--postgresql", postgres.url()],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    sqlite, _, pg = out.stdout.partition("### run_once with the PostgreSQL store")
    assert "| 1,000 |" in sqlite and "| symbols | full p50 |" in pg and "| 1,000 |" in pg
