"""Shared helpers: run the real CLI in a subprocess; the local Slurm cluster fixture."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def dfm(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m dfm_hpc ARGS` as a user would type it; returns the finished process."""
    return subprocess.run([sys.executable, "-m", "dfm_hpc", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200", **(env or {})})


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("runs/*/*") if p.is_dir())


def _slurm_up() -> str | None:
    """None when the two-node test cluster answers, else why not."""
    if not shutil.which("sinfo"):
        return "sinfo not found (run: bash slurm/start.sh as root)"
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo timed out"
    nodes = {ln.split()[0]: ln.split()[1] for ln in out.stdout.splitlines() if ln.strip()}
    usable = [n for n, st in nodes.items() if st.rstrip("*") in ("idle", "mixed", "allocated", "completing", "planned")]
    if len(usable) < 2:
        return f"the local Slurm cluster is not up ({nodes or out.stderr.strip()}); run: bash slurm/start.sh"
    return None


@pytest.fixture(scope="session")
def slurm_cluster():
    why = _slurm_up()
    if why:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the real-Slurm tests: {why}")
        pytest.skip(why)
    return True


def wait_for(predicate, timeout: float = 180, every: float = 1.0, what: str = "condition"):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
