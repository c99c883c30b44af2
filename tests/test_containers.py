"""containers/: the overlay build scripts parse, and the harness overlay's script says what it builds (they need
LUMI's singularity and container to run: not here)."""

from __future__ import annotations

import subprocess

import pytest

from helpers import REPO

SCRIPTS = sorted((REPO / "containers").glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse_and_answer_help(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    r = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "Usage" in r.stdout, r.stderr


def test_the_harness_overlay_is_built_by_the_main_overlays_script_at_the_jobs_mount():
    from dfm_hpc.login.slurm import HARNESS_MOUNT

    names = {p.name for p in SCRIPTS}
    assert "build_harness.sh" in names and "build_euroeval.sh" not in names  # the plain-venv route is gone
    text = (REPO / "containers" / "build_harness.sh").read_text()
    assert f"MOUNT={HARNESS_MOUNT}" in text and 'bash "$here/build_overlay.sh"' in text
    overlay = (REPO / "containers" / "build_overlay.sh").read_text()
    # every path of the build is $MOUNT's: /user-software only as its default (and the hint of which key to set)
    code = [ln.strip() for ln in overlay.splitlines() if "/user-software" in ln and not ln.lstrip().startswith("#")]
    assert code == ['MOUNT="${MOUNT:-/user-software}"',
                    'if [[ "$MOUNT" != /user-software ]]; then key=harness_overlay; fi']
