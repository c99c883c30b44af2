"""The run directory: layout, snapshot (config, command, provenance; secrets redacted), markers.

    <runs_root>/<name>/<YYYY-mm-dd_HH-MM-SS>_<6 hex>/
      config.yaml overrides.yaml command.txt provenance.json git.diff requirements.txt plan.json
      stages/<stage>/ sbatch.sh job_id pids DONE|FAILED|CANCELLED logs/rank-<r>.log ranks/<r>.done
                      elapsed.json submitit/ outputs...
A sweep directory holds sweep.yaml and one such run dir per point (0/, 1/, ...).
Everything a rank needs is in its run dir; ranks never compose Hydra.
The names below are the layout's one home: the login node writes and reads them, so do the ranks.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import secrets
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from dfm_hpc import redact

# a run dir's files
CONFIG = "config.yaml"  # the resolved config, secrets redacted: what the ranks run
OVERRIDES = "overrides.yaml"
COMMAND = "command.txt"
PROVENANCE = "provenance.json"
GIT_DIFF = "git.diff"
REQUIREMENTS = "requirements.txt"
PLAN = "plan.json"  # each stage's job and prediction as planned at launch
INCOMPLETE = "INCOMPLETE"  # a run dir whose creation did not finish (status and list say so)
STAGES_DIR = "stages"  # stages/<stage>/: see stage_dir
SWEEP = "sweep.yaml"  # a sweep dir's points
SWEEP_SUBMITIT = ".submitit"  # a sweep dir's submitit folders, one per stage (the points' job arrays)

# a stage dir's bookkeeping (its outputs are the stage's own). The markers say how its last attempt
# ended; they are not Slurm's job states (status shows those when sacct has them).
DONE = "DONE"  # every worker finished
FAILED = "FAILED"  # a worker failed (its traceback), or a local rank exited non-zero
CANCELLED = "CANCELLED"  # cancel stopped it, or the local launcher was interrupted
ENDINGS = (DONE, FAILED, CANCELLED)  # any of them: the attempt is over
JOB_ID = "job_id"  # the Slurm job (or array) id
PIDS = "pids"  # a local stage's processes: pid and start time
RANKS = "ranks"  # ranks/<worker>.done: the workers that finished
LOGS = "logs"  # logs/rank-<r>.log (see rank_log)
ELAPSED = "elapsed.json"  # a local stage's wall time (Slurm's is in sacct)
SBATCH = "sbatch.sh"  # the batch script, as submitted or as a dry run shows it
SUBMITIT = "submitit"  # submitit's folder: its own logs, the accounting records, the requeue marker
BAD_NODES = "bad_nodes"  # a run dir's nodes that hung: "<node[,node]> <time> <stage> job <id>: <why>" per line
# the hang watchdog's heartbeats (job/heartbeat.py writes them, login/watchdog.sh reads them): a folder per job in
# submitit/, named by this variable in the batch script; each file is rewritten every HEARTBEAT_TICK_S
HEARTBEATS_ENV = "DFM_HPC_HEARTBEATS"
HEARTBEAT_TICK_S = 5
# a training stage's checkpoint evaluations (docs/evaluation.md#checkpoint-evaluation): checkpoint_evals/ in its
# stage dir (step-<N>/ a checkpoint's weights, step-<N>.json its scores, curve.png, curve.md); rank 0 names each
# checkpoint to score in the folder this variable names (submitit/, per job), and the batch script queues its job
CHECKPOINT_EVALS = "checkpoint_evals"
CHECKPOINT_QUEUE_ENV = "DFM_HPC_CHECKPOINT_QUEUE"

# a run's name is one path component: runs stay inside runs_root
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
SOURCE_DIR = Path(__file__).resolve().parent.parent
# what reading a damaged run dir can raise (besides the parsers' errors): such a run is reported, not a traceback
UNREADABLE = (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError)


def bad_nodes(run_dir: Path) -> List[str]:
    """The nodes the run found bad (the hang watchdog's records), in order, each once."""
    try:
        lines = (Path(run_dir) / BAD_NODES).read_text().splitlines()
    except OSError:
        return []
    return list(dict.fromkeys(n for line in lines if line.strip() for n in line.split()[0].split(",") if n))


# ---------------------------------------------------------------- creating run dirs

def new_run_dir(parent: Path) -> Path:
    """A fresh <time>_<6 hex> dir under parent; two launches in the same second never collide. It
    carries an INCOMPLETE marker until `complete()`: an interrupted launch leaves no unmarked dir."""
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    while True:
        path = parent / f"{stamp}_{secrets.token_hex(3)}"
        try:
            path.mkdir()  # atomic: fails if another launch took the name
        except FileExistsError:
            continue
        (path / INCOMPLETE).write_text(f"created by pid {os.getpid()} at {stamp}; the launch did not finish\n")
        return path


def complete(path: Path) -> None:
    (Path(path) / INCOMPLETE).unlink(missing_ok=True)


def is_incomplete(path: Path) -> bool:
    return (Path(path) / INCOMPLETE).exists()


def inside(path: Path, root: Path) -> bool:
    """Whether `path` resolves to a place under `root` (no .. or absolute name escapes it)."""
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------- local processes

def proc_start(pid: int) -> Optional[str]:
    """The start time of a process (clock ticks since boot, /proc/<pid>/stat), None if it is gone."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def write_pids(sdir: Path, pids: List[int]) -> None:
    """The processes a local stage started: pid and start time, so that a later cancel signals only
    these very processes (a pid may have been reused since)."""
    (Path(sdir) / PIDS).write_text("".join(f"{p} {proc_start(p) or '-'}\n" for p in pids))


def own_processes(sdir: Path, run_dir: Path) -> Tuple[List[int], List[str]]:
    """(pids still the processes this run started, notes on the records that are not: stale or
    tampered). A pid counts only if > 1, its start time matches the record and its environment
    carries the run's marker (DFM_HPC_RUN_DIR) where it can be read."""
    f = Path(sdir) / PIDS
    if not f.exists():
        return [], []
    ok, notes = [], []
    for line in f.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) <= 1:
            notes.append(f"{f}: ignored the record {line.strip()[:40]!r} (not a pid and start time)")
            continue
        pid, start = int(parts[0]), parts[1]
        now = proc_start(pid)
        if now is None:
            continue  # finished
        if now != start:
            notes.append(f"{f}: pid {pid} is another process now (started later); left alone")
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"DFM_HPC_RUN_DIR={Path(run_dir).resolve()}".encode() not in env:
                notes.append(f"{f}: pid {pid} is not a rank of this run; left alone")
                continue
        except OSError:
            pass  # another user's process: os.kill would be refused anyway
        ok.append(pid)
    return ok, notes


def stage_dir(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / STAGES_DIR / stage


# libyaml's emitter when PyYAML has it (the same text, 3x faster: a 64-point sweep writes 129 files)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def write_yaml(path: Path, data: Any) -> None:
    path.write_text(yaml.dump(data, Dumper=_DUMPER, sort_keys=False, allow_unicode=True))


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(Path(path).read_text())


def is_dry_run(run_dir: Path) -> bool:
    """Whether the run was a dry run (nothing was submitted); False if its config.yaml is unreadable."""
    try:
        cfg = read_yaml(Path(run_dir) / CONFIG)
    except UNREADABLE + (yaml.YAMLError,):
        return False
    return isinstance(cfg, dict) and cfg.get("dry_run") is True


def rank_log(sdir: Path, rank: int, array_index: Optional[int] = None) -> Path:
    """A rank's log: logs/rank-<r>.log, or logs/array-<i>-rank-<r>.log in copy i of an array stage."""
    return Path(sdir) / LOGS / (f"rank-{rank}.log" if array_index is None else f"array-{array_index}-rank-{rank}.log")


def rank_logs(sdir: Path) -> List[Path]:
    """A stage's logs in worker order: rank-R.log, or array-I-rank-R.log for array stages."""
    def key(p: Path):
        return [int(x) for x in p.stem.split("-") if x.isdigit()]
    logs = Path(sdir) / LOGS
    return sorted(logs.glob("*rank-*.log"), key=key) if logs.is_dir() else []


def clear_attempt(sdir: Path) -> None:
    """Forget how a stage's last attempt ended (not its outputs), before it runs again."""
    import shutil

    for name in (FAILED, CANCELLED, JOB_ID, PIDS):
        (Path(sdir) / name).unlink(missing_ok=True)
    shutil.rmtree(Path(sdir) / RANKS, ignore_errors=True)


# ---------------------------------------------------------------- provenance

def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", str(SOURCE_DIR), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state() -> Dict[str, Any]:
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "diff": ""}
    status = _git("status", "--porcelain", "--untracked-files=no") or ""
    return {"commit": commit.strip(), "dirty": bool(status.strip()), "diff": _git("diff", "HEAD") or ""}


def canonical(name: str) -> str:
    """A distribution's name as PEP 503 compares them: huggingface_hub and Huggingface-Hub are one."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_packages() -> List[str]:
    """pip freeze without starting pip (which costs most of a second on a login node). Names and versions
    come from the `<name>-<version>.dist-info` directory names, as on the first path entry that has them
    (parsing every METADATA file took a third of a second of each launch); anything else from metadata."""
    seen: Dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for d in names:
            stem, dot, kind = d.rpartition(".")
            parts = stem.split("-")
            if kind == "dist-info" and len(parts) == 2 and parts[1][:1].isdigit():
                seen.setdefault(canonical(parts[0]), f"{canonical(parts[0])}=={parts[1]}")
            elif kind in ("dist-info", "egg-info"):
                try:
                    dist = metadata.Distribution.at(Path(entry or ".") / d)
                    name = dist.metadata.get("Name")
                except Exception:  # a broken leftover dir: pip freeze skips it too
                    continue
                if name:
                    seen.setdefault(canonical(name), f"{canonical(name)}=={dist.version}")
    return sorted(seen.values())


def lock_hashes() -> Dict[str, str]:
    """sha256 of each lock file (requirements/*.txt, made by `make lock`) of the source checkout;
    empty where dfm_hpc is installed without its checkout (the LUMI overlay)."""
    locks = sorted((SOURCE_DIR / "requirements").glob("*.txt"))
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in locks}


def package_drift(run_dir: Path, now: Optional[List[str]] = None, limit: int = 8) -> List[str]:
    """How the installed packages differ from a run's requirements.txt ("name: then -> now")."""
    f = Path(run_dir) / REQUIREMENTS
    if not f.exists():
        return []

    def parse(lines):
        return {canonical(k): v for k, v in (ln.split("==", 1) for ln in lines if "==" in ln)}

    then, cur = parse(f.read_text().split()), parse(now if now is not None else installed_packages())
    diff = [f"{k}: {then.get(k, '-')} -> {cur.get(k, '-')}" for k in sorted(set(then) | set(cur))
            if then.get(k) != cur.get(k)]
    return diff[:limit] + ([f"... and {len(diff) - limit} more"] if len(diff) > limit else [])


def write_plan(run_dir: Path, jobs: List[Dict[str, Any]]) -> None:
    """plan.json: each stage's job and prediction as planned at launch; status and the card read
    it, so that a run is described by the code that launched it, not by today's."""
    (Path(run_dir) / PLAN).write_text(json.dumps({"version": 1, "stages": jobs}, indent=2) + "\n")


def read_plan(run_dir: Path) -> Optional[List[Dict[str, Any]]]:
    """plan.json's stages; None for run dirs made before plan.json existed."""
    f = Path(run_dir) / PLAN
    return json.loads(f.read_text())["stages"] if f.exists() else None


def image_fingerprint(path: Optional[str]) -> Optional[Dict[str, Any]]:
    if not path or not os.path.isfile(path):
        return {"path": path, "exists": False} if path else None
    st = os.stat(path)  # once per image version, not per sweep point: each reads 32 MiB from Lustre
    return dict(_fingerprint(path, st.st_size, st.st_mtime))


@functools.lru_cache(maxsize=8)
def _fingerprint(path: str, size: int, mtime: float) -> Dict[str, Any]:
    """Size, mtime and sha256 of the first and last 16 MiB: cheap for 20 GB images, and changes
    whenever the image is rebuilt (a full hash would take a minute on Lustre)."""
    h = hashlib.sha256(str(size).encode())
    chunk = 16 * 1024 * 1024
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(chunk, size - chunk))
            h.update(f.read(chunk))
    return {"path": path, "exists": True, "size": size, "mtime": mtime, "sha256_head_tail_16MiB": h.hexdigest()}


@functools.lru_cache(maxsize=4)
def _redacted(text: str, values: tuple) -> str:
    """A sweep's points write the same git diff: its redaction (a regex pass per secret) is made once."""
    return redact.redact_text(text, list(values))


def snapshot(run_dir: Path, config: Dict[str, Any], overrides: List[str], argv: List[str],
             extra: Optional[Dict[str, Any]] = None, git: Optional[Dict[str, Any]] = None,
             packages: Optional[List[str]] = None, plan: Optional[List[Dict[str, Any]]] = None,
             files=None) -> None:
    """Write everything needed to understand and reproduce the run. `git` and `packages` can be
    passed in so that a sweep computes them once; `plan` (plan.stage_records) becomes plan.json; `files`: a
    sweep's login.sweep_files.Files, which gives the same secrets and config.yaml doing the shared parts once."""
    git = git if git is not None else git_state()
    run_dir = Path(run_dir)
    values = redact.secret_values(config) if files is None else files.secret_values(config)
    if files is None:
        write_yaml(run_dir / CONFIG, redact.redact_all(config, values))
    else:
        (run_dir / CONFIG).write_text(files.config_text(config, values))
    write_yaml(run_dir / OVERRIDES, [redact.redact_text(redact.redact_override(o), values) for o in overrides])
    command = " ".join(redact.redact_override(a) for a in argv)
    (run_dir / COMMAND).write_text(redact.redact_text(command, values) + "\n")
    (run_dir / GIT_DIFF).write_text(_redacted(git["diff"], tuple(values)))
    (run_dir / REQUIREMENTS).write_text("\n".join(packages or installed_packages()) + "\n")
    image = (config.get("cluster") or {}).get("container", {}).get("image")
    prov = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "user": os.environ.get("USER"),
        "host": platform.node(),
        "cwd": os.getcwd(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "dfm_hpc_source": str(SOURCE_DIR),
        "git_commit": git["commit"],
        "git_dirty": git["dirty"],
        "lock_sha256": lock_hashes(),  # beside requirements.txt (what was installed)
        "container_image": image_fingerprint(image),
    }
    prov.update(extra or {})
    (run_dir / PROVENANCE).write_text(json.dumps(prov, indent=2) + "\n")
    if plan is not None:
        write_plan(run_dir, plan)


def provenance(run_dir: Path) -> Dict[str, Any]:
    p = Path(run_dir) / PROVENANCE
    return json.loads(p.read_text()) if p.exists() else {}


# ---------------------------------------------------------------- finding runs

def is_run_dir(path: Path) -> bool:
    return (Path(path) / CONFIG).is_file() or is_incomplete(path)


def is_sweep_dir(path: Path) -> bool:
    return (Path(path) / SWEEP).is_file()


def resolve(ref: str, runs_root: str = "runs") -> Path:
    """A run given as a path, or as its directory name (or a unique suffix of it) under runs_root."""
    p = Path(ref)
    if p.is_dir() and (is_run_dir(p) or is_sweep_dir(p)):
        return p
    root = Path(runs_root)
    hits = [d for d in root.glob("*/*") if d.is_dir() and d.name.endswith(ref)] if root.is_dir() else []
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise LookupError(f"{ref!r} matches {len(hits)} runs: " + ", ".join(str(h) for h in hits[:5]))
    raise LookupError(f"no run {ref!r} (give a run directory, or its name under {root}/)")


def point_dirs(path: Path) -> List[Path]:
    """The run dirs of a run (itself) or of a sweep (its points, in order)."""
    path = Path(path)
    if is_sweep_dir(path):
        return [path / str(p["run_dir"]) for p in read_yaml(path / SWEEP)["points"]]
    return [path]


def recent_runs(runs_root: str = "runs", limit: int = 15) -> List[Path]:
    root = Path(runs_root)
    if not root.is_dir():
        return []
    found = [d for d in root.glob("*/*") if d.is_dir() and (is_run_dir(d) or is_sweep_dir(d))]
    return sorted(found, key=lambda d: d.name, reverse=True)[:limit]
