"""status / list: read run dirs and Slurm (sacct, falling back to squeue); each run's (sweep point's)
outcome, which compare shows too and `rerun --failed` chooses by."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from rich.markup import escape

from dfm_hpc import accounting, checkpoint_scores, config_io, gate_verdict, predict, rundir
from dfm_hpc.login import usage
from dfm_hpc.login.errors import errors, fail, why
from dfm_hpc.plan import billing, billing_pool, gpu_hours, run_jobs

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE"}


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _run(cmd: List[str]) -> Optional[str]:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def slurm_states(job_ids: List[str]) -> Dict[str, Tuple[str, int, int]]:
    """job id -> (state, nodes, elapsed seconds), from sacct, else squeue."""
    if not job_ids:
        return {}
    found = accounting.latest(accounting.parse(_run(accounting.command(job_ids))))
    rows: Dict[str, Tuple[str, int, int]] = {j: (r.state, r.nodes, r.elapsed_s) for j, r in found.items()}
    missing = [j for j in job_ids if _lookup(rows, j) is None]
    if missing:
        out = _run(["squeue", "-h", "-j", ",".join(missing), "-o", "%i|%T|%D|%M"])
        for line in (out or "").splitlines():
            jid, state, nodes, elapsed = (line.split("|") + ["", "", ""])[:4]
            rows[jid] = (state, int(nodes or 0), _seconds(elapsed))
    return rows


def _seconds(text: str) -> int:
    days, _, rest = text.rpartition("-")
    parts = [int(x) for x in rest.split(":") if x.isdigit()]
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


_PRIORITY = ("FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "CANCELLED", "RUNNING", "PENDING", "COMPLETED")


def _lookup(rows, job_id: str):
    if job_id in rows:
        return rows[job_id]
    base, _, task = job_id.partition("_")
    if task:
        for jid, row in rows.items():  # a pending array shows as 123_[0-3]
            if jid.startswith(base + "_[") and row[0] == "PENDING":
                return row
        return None
    tasks = [row for jid, row in rows.items() if jid.startswith(base + "_")]  # a stage array as a whole
    if not tasks:
        return None
    states = {r[0] for r in tasks}
    state = next((st for st in _PRIORITY if st in states), tasks[0][0])
    return (state, sum(r[1] for r in tasks), max(r[2] for r in tasks))


def _pids_alive(sdir: Path) -> bool:
    """A local stage whose recorded processes are still the ones it started (rundir.own_processes)."""
    return bool(rundir.own_processes(sdir, sdir.parent.parent)[0])


def _last_line(sdir: Path) -> str:
    logs = rundir.rank_logs(sdir)
    if not logs:
        return ""
    log = logs[0]
    with open(log, "rb") as f:
        f.seek(max(0, log.stat().st_size - 4096))
        lines = [x for x in f.read().decode(errors="replace").splitlines()
                 if x.strip() and not x.startswith("submitit ")]
    return lines[-1][-90:] if lines else ""


def _predicted(pred: Optional[dict], secs: int, state: str) -> str:
    """The launch's prediction (plan.json), and while the job runs how much of it has elapsed."""
    if not pred or pred.get("hours") is None:
        return "-"
    h = pred["hours"]
    text = predict.duration(h * 3600)  # as elapsed is shown
    text += "~" if pred.get("basis") == "fixed" else ""  # a fixed guess, not counted from the work
    if state.split()[0] == "RUNNING" and h > 0:
        text += f" ({secs / 3600 / h:.0%})"
    return text


def stage_rows(run: Path, rows: Dict[str, Tuple[str, int, int]]) -> List[dict]:
    from omegaconf.errors import OmegaConfBaseException

    raw = rundir.read_yaml(run / rundir.CONFIG)
    try:
        cfg = config_io.typed(raw)
    except OmegaConfBaseException:  # made by another dfm_hpc version: show what today's schema knows
        cfg = config_io.typed(config_io.known_keys(raw))
    out = []
    for job, pred in run_jobs(cfg, run):  # as planned at launch (plan.json); older runs: planned again
        sdir = rundir.stage_dir(run, job.stage)
        jid = (sdir / rundir.JOB_ID).read_text().strip() if (sdir / rundir.JOB_ID).exists() else ""
        state, nodes, secs = "-", job.nodes, 0
        row = _lookup(rows, jid) if jid else None
        if row:
            state, nodes, secs = row[0], row[1] or job.nodes, row[2]
        elif (sdir / rundir.DONE).exists():  # the markers, shown as Slurm's states
            state = "COMPLETED"
        elif (sdir / rundir.CANCELLED).exists():
            state = "CANCELLED"
        elif (sdir / rundir.FAILED).exists():
            state = "FAILED"
        elif _pids_alive(sdir):
            state = "RUNNING"
        elif jid:
            state = "UNKNOWN"
        if not row and (sdir / rundir.ELAPSED).exists():  # a local run's wall time (local.py)
            import json

            secs = int(json.loads((sdir / rundir.ELAPSED).read_text())["elapsed_s"])
        if sdir.is_symlink():  # linked from (and run in) an earlier run's dir
            state += f" (in {sdir.resolve().parent.parent.name})"
        hours = secs / 3600
        b = billing(job, job.cluster, hours)
        last = _last_line(sdir)
        if not last and out:  # never started: say what it is waiting for, or why it will not run
            before = out[-1]
            if before["state"].split()[0] in ("FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"):
                last = f"not run: {before['stage']} did not finish"  # (its state is in its own row)
            elif state.split()[0] in ("PENDING", "-"):
                last = f"waits for {before['stage']}"
        predicted = _predicted(pred, secs, state)
        out.append({"stage": job.stage, "job": jid or ("local" if cfg.cluster.scheduler == "local" else "-"),
                    "state": state, "nodes": nodes, "elapsed": predict.duration(secs),
                    "predicted": predicted, "gpu_h": gpu_hours(job, hours), "billing": b,
                    "pool": billing_pool(job, job.cluster), "last": last})
    return out


_COLORS = {"COMPLETED": "green", "RUNNING": "cyan", "PENDING": "yellow", "FAILED": "red", "CANCELLED": "magenta",
           "TIMEOUT": "red"}


def _job_ids(runs: List[Path]) -> List[str]:
    """The job ids the run dirs record; anything that is not a Slurm job id is never passed on."""
    ids = []
    for run in runs:
        for f in (run / rundir.STAGES_DIR).glob(f"*/{rundir.JOB_ID}"):
            try:
                jid = f.read_text().strip()
            except rundir.UNREADABLE:
                continue
            if accounting.JOB_ID_RE.match(jid):
                ids.append(jid)
    return ids


def _point_rows(point: Path, rows) -> List[dict]:
    """stage_rows, or one row saying why the run dir cannot be shown (it never hides the others)."""
    blank = {"job": "-", "nodes": 0, "elapsed": "-", "predicted": "-", "gpu_h": 0.0, "billing": None, "last": ""}
    if rundir.is_incomplete(point):
        return [{**blank, "stage": "-", "state": "INCOMPLETE", "last": "its launch did not finish (safe to delete)"}]
    try:
        return stage_rows(point, rows)
    except errors() as e:
        return [{**blank, "stage": "-", "state": "UNREADABLE", "last": f"unreadable: {why(e)}"}]


# ---------------------------------------------------------------- a point's outcome

# Slurm's (and the markers') states that end a point without its result
_BROKEN = ("FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE")
_RUNNING = ("RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STAGE_OUT", "SIGNALING")
_QUEUED = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED", "RESIZING")
RERUN = ("failed", "cancelled", "unfinished")  # the outcomes `rerun --failed` runs again


@dataclass
class Outcome:
    """How a run (or sweep point) stands as a whole: done, failed, cancelled, running, queued,
    unfinished (stopped without an ending: no job, no marker), dry run, incomplete or unreadable."""
    state: str
    stage: str = ""  # the stage it is at: where it failed, was cancelled, runs or waits
    reason: str = ""  # failed: the first line of the error

    def __str__(self) -> str:
        where = "" if not self.stage else f" ({self.stage})" if self.state in ("running", "queued") \
            else f" at {self.stage}"
        return self.state + where + (f": {self.reason}" if self.reason else "")


def error_line(text: str) -> str:
    """The first line of a FAILED marker's error: the exception line of its (last) traceback."""
    lines = text.splitlines()
    tb = [i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last)")]
    body = lines[tb[-1] + 1:] if tb else lines
    for ln in body:  # the frames are indented; the exception's own line is not
        if ln.strip() and not ln.startswith((" ", "\t")) and not (not tb and ln.startswith("worker ")):
            return ln.strip()[:200]
    return ""


def _failure(sdir: Path, state: str) -> str:
    marker = sdir / rundir.FAILED
    try:
        line = error_line(marker.read_text(errors="replace")) if marker.is_file() else ""
    except OSError:
        line = ""
    if state == "FAILED":
        return line or "the job failed before the stage could say why (see its logs)"
    return state + (f" ({line})" if line else "")  # TIMEOUT, OUT_OF_MEMORY, NODE_FAIL: Slurm's word is the cause


def outcome(point: Path, stage_rows_: List[dict]) -> Outcome:
    """A point's outcome from its stage rows (stage_rows, or _point_rows' one-line stand-ins)."""
    states = [(r["stage"], r["state"].split()[0]) for r in stage_rows_]
    if states and states[0][1] in ("INCOMPLETE", "UNREADABLE"):
        return Outcome(states[0][1].lower(), reason=stage_rows_[0]["last"])
    if rundir.is_dry_run(point):
        return Outcome("dry run")
    for stage, st in states:
        if st in _BROKEN:
            return Outcome("failed", stage, _failure(rundir.stage_dir(point, stage), st))
    for stage, st in states:
        if st == "CANCELLED":
            return Outcome("cancelled", stage)
    if all(st == "COMPLETED" for _, st in states):
        return Outcome("done")
    for kind, which in (("running", _RUNNING), ("queued", _QUEUED)):
        stage = next((s for s, st in states if st in which), None)
        if stage:
            return Outcome(kind, stage)
    stage, st = next((s, st) for s, st in states if st != "COMPLETED")
    return Outcome("unfinished", stage, "never started" if st == "-" else f"{st}: no job and no ending marker")


def outcomes(points: List[Path]) -> List[Outcome]:
    """Each point's outcome, with one Slurm query for all of them."""
    rows = slurm_states(_job_ids(points))
    return [outcome(p, _point_rows(p, rows)) for p in points]


def point_labels(points: List[Path]) -> List[str]:
    """What each sweep point varies (its overrides that the others do not share), else its dir's name."""
    def effective(ovs: List[str]) -> List[str]:  # a rerun's override replaces the point's own of that key
        last = {o.split("=")[0].lstrip("+~"): i for i, o in enumerate(ovs)}
        return [o for i, o in enumerate(ovs) if last[o.split("=")[0].lstrip("+~")] == i]

    overrides = [effective(_overrides(p)) for p in points]
    common = set.intersection(*map(set, overrides)) if len(points) > 1 else set()
    return [" ".join(o for o in ovs if o not in common) or p.name for p, ovs in zip(points, overrides)]


def outcome_lines(top: Path, points: List[Path], outs: List[Outcome]) -> List[str]:
    """The summary under the table: each point's outcome, and how to rerun the ones that did not finish."""
    if len(points) == 1:  # a finished run's table already says it
        return [] if outs[0].state == "done" else [f"outcome: {outs[0]}"]
    counts: Dict[str, int] = {}
    for o in outs:
        counts[o.state] = counts.get(o.state, 0) + 1
    lines = ["points: " + ", ".join(f"{n} {st}" for st, n in counts.items())]
    for p, label, o in zip(points, point_labels(points), outs):
        lines.append(f"  {p.name}  {label}  {o}" if label != p.name else f"  {p.name}  {o}")
    if any(o.state in RERUN for o in outs):
        lines.append(f"rerun only those that did not finish: python -m dfm_hpc rerun {top} --failed")
    return lines


def status(ref: Optional[str], runs_root: str = "runs") -> int:
    from rich.table import Table

    if ref is None:
        return list_runs(runs_root)
    try:
        top = rundir.resolve(ref, runs_root)
        points = rundir.point_dirs(top)
    except LookupError as e:
        return fail(str(e))
    except errors() as e:
        return fail(f"{ref}: unreadable: {why(e)} (a damaged sweep.yaml?)")
    if len(points) == 1 and not rundir.is_incomplete(points[0]):
        try:
            stage_rows(points[0], {})
        except errors() as e:
            return fail(f"{points[0]}: unreadable: {why(e)}; its config.yaml is damaged (launch it anew)")
    rows = slurm_states(_job_ids(points))
    sweep = rundir.is_sweep_dir(top)
    cols = (["point"] if sweep else []) + ["stage", "job", "state", "nodes", "elapsed", "predicted", "GCD-h",
                                           "billing", "last log line"]
    table_rows, outs = [], []
    for point, label in zip(points, point_labels(points)):
        per = _point_rows(point, rows)
        outs.append(outcome(point, per))
        for r in per:
            table_rows.append(([label] if sweep else []) + [
                r["stage"], r["job"], r["state"], str(r["nodes"]), r["elapsed"], r["predicted"], f"{r['gpu_h']:.2f}",
                "-" if r["billing"] is None else f"{r['billing']:.2f}" + (" core-h" if r.get("pool") == "CPU" else ""),
                r["last"]])
    # One line per stage on any terminal: every column keeps its full width, the log line gets
    # what is left (cut with …).
    console = _console()
    widths = [max([len(c)] + [len(row[i]) for row in table_rows]) for i, c in enumerate(cols)]
    left = max(12, console.width - sum(widths[:-1]) - 3 * len(cols) - 1)
    t = Table(title=escape(str(top)), title_justify="left")
    for i, col in enumerate(cols):
        last = col == "last log line"
        right = col in ("nodes", "predicted", "GCD-h", "billing")
        t.add_column(col, justify="right" if right else "left", no_wrap=True,
                     overflow="ellipsis", min_width=None if last else widths[i], max_width=left if last else None)
    for row in table_rows:
        i = cols.index("state")
        color = _COLORS.get(row[i].split()[0], "white")
        row = [escape(c) for c in row]  # log lines and paths are untrusted text, never markup
        row[i] = f"[{color}]{row[i]}[/]"
        t.add_row(*row)
    console.print(t)
    for line in (outcome_lines(top, points, outs) + bad_node_lines(points) + gate_verdict.status_lines(points)
                 + checkpoint_scores.status_lines(points)):
        console.print(escape(line))
    return 0


def bad_node_lines(points: List[Path]) -> List[str]:
    """The nodes the hang watchdog marked bad, with why: the run's jobs and reruns exclude them."""
    lines = []
    for point in points:
        try:
            records = (point / rundir.BAD_NODES).read_text().splitlines()
        except OSError:
            continue
        nodes = ", ".join(rundir.bad_nodes(point))
        lines.append(f"bad nodes of {point.name}: {nodes} (its waiting jobs, requeues and reruns exclude them)")
        lines += [f"  {r}" for r in records if r.strip()]
    return lines


def list_runs(runs_root: str = "runs") -> int:
    from rich.table import Table

    runs = rundir.recent_runs(runs_root)
    if not runs:
        print(f"no runs under {runs_root}/")
        return 0
    listed: Dict[Path, object] = {}
    for r in runs:
        try:
            listed[r] = rundir.point_dirs(r)
        except errors() as e:
            listed[r] = f"unreadable: {why(e)}"
    rows = slurm_states(_job_ids([p for pts in listed.values() if isinstance(pts, list) for p in pts]))
    t = Table(title=escape(f"recent runs in {runs_root}/"), title_justify="left")
    for col in ("run", "stages"):
        t.add_column(col)
    for run, points in listed.items():
        if isinstance(points, str):
            t.add_row(escape(str(run)), escape(points))
            continue
        counts: Dict[str, Dict[str, int]] = {}
        notes = []
        for p in points:
            for r in _point_rows(p, rows):
                if r["state"] in ("UNREADABLE", "INCOMPLETE"):
                    notes.append(r["last"] if r["state"] == "UNREADABLE" else "incomplete: " + r["last"])
                    continue
                per = counts.setdefault(r["stage"], {})
                per[r["state"].split()[0]] = per.get(r["state"].split()[0], 0) + 1
        states = [f"{stage}: " + ", ".join(f"{st}" + (f" x{n}" if n > 1 else "") for st, n in per.items())
                  for stage, per in counts.items()] + sorted(set(notes))
        label = str(run) + (f"  (sweep, {len(points)} points)" if len(points) > 1 else "")
        t.add_row(escape(label), escape("; ".join(states)))
    _console().print(t)
    return 0


def list_all(runs_root: str = "runs") -> int:

    con = _console()
    con.print("[bold]experiments[/] (python -m dfm_hpc +experiment=NAME):")
    for name, desc in usage.experiments().items():  # the same list as --help's
        con.print(f"  {name:<24} {escape(desc)}")
    return list_runs(runs_root)


def _overrides(point: Path) -> List[str]:
    try:
        ovs = rundir.read_yaml(point / rundir.OVERRIDES) if (point / rundir.OVERRIDES).is_file() else []
    except errors():
        return []
    return [str(o) for o in ovs] if isinstance(ovs, list) else []
