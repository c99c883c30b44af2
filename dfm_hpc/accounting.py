"""Slurm accounting (sacct): the one reader that status and the card share.

Status runs sacct on the login node. The card runs inside a container on LUMI, where no Slurm
tool exists, so each stage's batch script records its job's accounting host side after its step
(`record_line`), and the card reads those files. Both parse the same `sacct -P` format here.
Pure: imported on the login node.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional

FIELDS = "JobID,State,NNodes,ElapsedRaw"
RECORD_DIR = "accounting"  # under a stage job's submitit folder: <job id>.psv, one per job
# a Slurm job id, or ID_N of an array task: what a run's job_id file may name (status and cancel pass on no other)
JOB_ID_RE = re.compile(r"^\d+(_\d+)?$")


@dataclass(frozen=True)
class Row:
    job_id: str  # 123, 123_4 (array task), 123_[0-3] (pending array)
    state: str  # first word: "CANCELLED by 0" -> CANCELLED
    nodes: int
    elapsed_s: int


def command(job_ids: Iterable[str], history: bool = False) -> List[str]:
    """sacct for these jobs, one line per job (-X); `history`: also earlier runs of requeued jobs (-D)."""
    return ["sacct", "-X", *(["-D"] if history else []), "-P", "-n", "-j", ",".join(job_ids), f"--format={FIELDS}"]


def parse(text: str) -> List[Row]:
    rows = []
    for line in (text or "").splitlines():
        parts = line.split("|")
        if len(parts) >= 4 and parts[0]:
            state = parts[1].split()[0] if parts[1].split() else ""
            rows.append(Row(parts[0], state, _int(parts[2]), _int(parts[3])))
    return rows


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def latest(rows: Iterable[Row]) -> Dict[str, Row]:
    """job id -> its last row (sacct lists a requeued job's runs oldest first)."""
    return {r.job_id: r for r in rows}


def record_line(folder: Path) -> str:
    """Batch-script line, run host side after the step: this job's accounting (all its runs so far)
    into <folder>/accounting/<job id>.psv. Never fails the job."""
    d = shlex.quote(str(Path(folder) / RECORD_DIR))
    sacct = " ".join(command(["$SLURM_JOB_ID"], history=True)).replace("$SLURM_JOB_ID", '"$SLURM_JOB_ID"')
    return f'mkdir -p {d} && {sacct} >{d}/"$SLURM_JOB_ID".psv 2>/dev/null || true'


def recorded(folders: Iterable[Path], job_id: str) -> List[Row]:
    """The rows recorded for job `job_id` (and, for an array job id, its tasks) in these folders."""
    rows: List[Row] = []
    for folder in folders:
        d = Path(folder) / RECORD_DIR
        for f in sorted(d.glob("*.psv")) if d.is_dir() else []:
            rows += [r for r in parse(f.read_text()) if r.job_id == job_id or r.job_id.startswith(job_id + "_")]
    return rows


def node_hours(rows: Iterable[Row]) -> Optional[float]:
    """Sum of elapsed x nodes over the rows (every run of a requeued job), in hours; None without rows."""
    rows = list(rows)
    if not rows:
        return None
    return sum(r.elapsed_s * max(r.nodes, 1) for r in rows) / 3600
