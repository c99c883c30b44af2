"""Recording stand-ins for sbatch, scancel, squeue, sacct, srun ... on PATH: each call is appended
to calls.log; sbatch answers like Slurm, so that submitit believes it queued a job."""

from __future__ import annotations

import os
from pathlib import Path

STUB = """#!/bin/bash
printf '%s' "$(basename "$0")" >> "{log}"
for a in "$@"; do printf ' [%s]' "$a" >> "{log}"; done
echo >> "{log}"
{body}
"""
BODIES = {
    "sbatch": 'echo "Submitted batch job 4242"',
    "squeue": 'cat "{dir}/squeue.out" 2>/dev/null; exit 0',
}


def install(bin_dir: Path, names=("sbatch", "scancel", "squeue", "sacct", "srun", "scontrol", "module",
                                  "singularity"), bodies: dict | None = None) -> Path:
    """Writes the stubs into bin_dir; returns the log every call goes to. `bodies`: a stub's own shell
    lines after the logging (e.g. srun leaving a marker, scontrol failing), instead of `exit 0`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    log = bin_dir / "calls.log"
    log.touch()
    for name in names:
        body = (bodies or {}).get(name) or BODIES.get(name, "exit 0").format(dir=bin_dir)
        f = bin_dir / name
        f.write_text(STUB.format(log=log, body=body))
        f.chmod(0o755)
    return log


def env(bin_dir: Path) -> dict:
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def calls(bin_dir: Path, name: str) -> list:
    log = bin_dir / "calls.log"
    return [ln for ln in log.read_text().splitlines() if ln.split(" ")[0] == name] if log.exists() else []
