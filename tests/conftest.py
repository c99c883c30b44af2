"""Fixtures and the test tiers. Shared helpers (the CLI in a subprocess, LUMI's arguments, a config builder, a
stage context) are in tests/helpers/.

Tiers: everything under tests/e2e/ and every test marked `e2e` (a real training run, a served model, the Slurm
cluster) is the slow tier; `make test-fast` runs the rest (`-m "not e2e"`), `make test` runs both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

E2E_DIR = Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(config, items):
    for item in items:  # the Slurm cluster's tests are end-to-end wherever they live
        if E2E_DIR in Path(item.fspath).resolve().parents or item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.e2e)


def _slurm_up() -> str | None:
    """None when the two-node test cluster answers, else why not."""
    if not shutil.which("sinfo"):
        return "sinfo not found (run: bash slurm/start.sh as root)"
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo timed out"
    nodes = {ln.split()[0]: ln.split()[1] for ln in out.stdout.splitlines() if ln.strip()}
    # sinfo's state suffixes (*: not responding yet, -: planned by the backfill scheduler, ...) are not down
    up = ("idle", "mixed", "allocated", "completing", "planned")
    usable = [n for n, st in nodes.items() if st.rstrip("*~#!%$@^-") in up]
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
