"""Reading a job's life on the test Slurm cluster: its states over its starts, and a rank's pid."""

from __future__ import annotations

import re
import subprocess

from helpers import wait_for


def history(job: str) -> list:
    """The job's states, oldest first (REQUEUED for each earlier start)."""
    out = subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-j", job, "-o", "State"], capture_output=True, text=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]  # "CANCELLED by 0"


def nodes(job: str) -> list:
    """The node list of each start, oldest first."""
    out = subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-j", job, "-o", "NodeList"], capture_output=True, text=True)
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def ended(job: str):
    """The history once the first start has ended (requeued or final), else None."""
    h = history(job)
    return h if "REQUEUED" in h or (h and h[-1] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")) else None


def rank_pid(log) -> int:
    """The pid a rank's log names in its first line, once it has started."""
    return wait_for(lambda: log.exists() and (m := re.search(r"pid (\d+)", log.read_text())) and int(m.group(1)),
                    timeout=300, what=f"{log.name} to start")
