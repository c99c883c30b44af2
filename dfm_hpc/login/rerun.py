"""rerun: a run dir's snapshot again, in a new run dir, through the same checks as a launch.

Finished stages are linked, unfinished ones continue in place; a dry run's stage dirs are not
reused; secrets come back from this shell's environment, never as the snapshot's placeholder.
`--failed` runs again only the points (of a sweep) that failed, were cancelled or stopped unfinished; the
others are kept as they are, linked into the new sweep dir, so that it holds the whole sweep healed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List

from omegaconf import OmegaConf

from dfm_hpc import config_io, redact, rundir
from dfm_hpc.login import checks, console
from dfm_hpc.login.compose import hint
from dfm_hpc.login.console import report_problems
from dfm_hpc.login.launch import launch
from dfm_hpc.login.point import LaunchPoint

# a stage that has started
_MARKS = (rundir.LOGS, rundir.JOB_ID, rundir.RANKS, rundir.PIDS, *rundir.ENDINGS)


def _secrets_back(cfg, where: Path) -> List[str]:
    """A snapshot holds ***REDACTED*** for its secrets: put the values back from this shell's
    environment, never the placeholder. Returns the problems (a secret that is not set)."""
    out = []
    for k, v in list(cfg.cluster.env.items()):
        if v == redact.REDACTED:
            if os.environ.get(str(k)):
                cfg.cluster.env[k] = os.environ[str(k)]
            else:
                out.append(f"cluster.env.{k} was redacted from {where}; export {k} in this shell (or pass "
                           f"cluster.env.{k}=...) so that the job gets the real value, not the placeholder")
    return out


def _read_snapshot(old: Path):
    """The typed config of a run dir, or a ValueError saying why it cannot be read."""
    import yaml
    from omegaconf.errors import OmegaConfBaseException

    f = old / rundir.CONFIG
    if rundir.is_incomplete(old):
        raise ValueError(f"{old} is incomplete (its launch was interrupted: {rundir.INCOMPLETE}); launch anew")
    try:
        raw = rundir.read_yaml(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{f} cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    if not isinstance(raw, dict):
        raise ValueError(f"{f} is empty or not a mapping; the snapshot is damaged, launch anew")
    try:
        return config_io.typed(raw)
    except OmegaConfBaseException as e:
        raise ValueError(f"{f} does not fit this dfm_hpc version's schema ({checks.explain_hydra_error(e)}); "
                         "rerun it with the code it ran with (provenance.json: git commit), or launch it anew")


def _kept(old: Path) -> LaunchPoint:
    """A point `--failed` leaves alone: every stage linked as it is (done, or still running or queued, whose
    job goes on writing there), its config as it ran (no override of this rerun applies to it)."""
    cfg = _read_snapshot(old)
    _secrets_back(cfg, old / rundir.CONFIG)  # it never runs here: a secret not exported stays redacted
    return LaunchPoint(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), _old_overrides(old),
                       reuse={s: rundir.stage_dir(old, s) for s in cfg.stages}, rerun_of=old.resolve())


def _old_overrides(old: Path) -> List[str]:
    f = old / rundir.OVERRIDES
    return [str(o) for o in (rundir.read_yaml(f) or []) if isinstance(o, str)] if f.is_file() else []


def _select(old_top: Path, olds: List[Path], overrides: List[str]):
    """--failed: (the indices of the points to run again, a line per point saying how it stands), or the
    problem (exit 2) when there is none."""
    from dfm_hpc.login import status

    outs = status.outcomes(olds)
    labels = [f"{p.name} [{lb}]" if lb != p.name else p.name for p, lb in zip(olds, status.point_labels(olds))]
    todo = [i for i, o in enumerate(outs) if o.state in status.RERUN]
    lines = [f"{lb}: {o}" for lb, o in zip(labels, outs)]
    if any(o.split("=")[0].lstrip("+") == "dry_run" for o in overrides):
        return None, lines, "rerun --failed takes no dry_run=...: --dry-run shows what it would run"
    if not todo:
        return None, lines, (f"nothing to rerun in {old_top}: no point failed, was cancelled or stopped "
                             "unfinished; " + "; ".join(lines))
    return todo, lines, None


def rerun(ref: str, overrides: List[str], fresh: bool, runs_root: str = "runs", failed: bool = False,
          dry_run: bool = False) -> int:
    from omegaconf.errors import OmegaConfBaseException

    try:
        old_top = rundir.resolve(ref, runs_root)
        olds = rundir.point_dirs(old_top)
    except (LookupError, OSError, ValueError, KeyError, TypeError) as e:
        return report_problems([f"{ref}: {e}"])
    groups = checks.groups()
    problems = [f"{o!r}: rerun takes key=value overrides; to change the config group {o.split('=')[0]!r}, "
                "launch anew" for o in overrides if o.split("=")[0].lstrip("+") in groups]
    problems += checks.check_overrides([o for o in overrides if o.split("=")[0].lstrip("+") not in groups])
    if problems:
        return report_problems(problems)
    todo, lines = range(len(olds)), []
    if failed:
        todo, lines, problem = _select(old_top, olds, overrides)
        if problem:
            return report_problems([problem])
    points: List[LaunchPoint] = []
    for i, old in enumerate(olds):
        try:
            if i not in todo:
                points.append(_kept(old))
                continue
            cfg = _read_snapshot(old)
        except ValueError as e:
            return report_problems([str(e)])
        was_dry = bool(cfg.dry_run)
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
        except OmegaConfBaseException as e:
            return report_problems([hint(checks.explain_hydra_error(e), [])])
        problems = _secrets_back(cfg, old / rundir.CONFIG)
        if problems:
            return report_problems(problems)
        # a dry run's stage dirs hold scripts only: nothing of them is reused or resumed
        started = {} if fresh or was_dry else {
            s: rundir.stage_dir(old, s) for s in cfg.stages
            if any((rundir.stage_dir(old, s) / m).exists() for m in _MARKS)}
        reuse = {s: d for s, d in started.items() if (d / rundir.DONE).exists()}
        resume = {s: d for s, d in started.items() if s not in reuse}
        old_overrides = _old_overrides(old)
        config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        points.append(LaunchPoint(config, old_overrides + list(overrides),
                                  reuse=reuse, resume=resume, rerun_of=old.resolve()))
    then, now = rundir.provenance(olds[0]).get("git_commit"), rundir.git_state()["commit"]
    if then != now:
        console.code_changed(old_top, then, now)
    drift = rundir.package_drift(olds[0])
    if drift:  # the snapshot's requirements.txt against this environment (make setup installs the lock)
        console.packages_differ(olds[0] / rundir.REQUIREMENTS, drift)
    if failed:
        _say_failed(old_top, olds, points, todo, lines, dry_run)
        if dry_run:
            return 0
    else:
        console.rerun_stages(points[0].reuse, points[0].resume)
        if dry_run:
            return 0
    if all(set(p.reuse) == set(config_io.typed(p.config).stages) for p in points):
        console.rerun_nothing_to_do()
        return 0
    argv = ["python", "-m", "dfm_hpc", "rerun", ref, *overrides] + (["--fresh"] if fresh else []) \
        + (["--failed"] if failed else [])
    return launch(points, argv, sweep=rundir.is_sweep_dir(old_top))


def _say_failed(old_top: Path, olds: List[Path], points: List[LaunchPoint], todo, lines: List[str],
                dry_run: bool) -> None:
    """Each point: how it stands, and what the rerun does with it (stdout for --dry-run, else stderr)."""
    out = sys.stdout if dry_run else sys.stderr
    n = len(todo)
    print(f"{'would rerun' if dry_run else 'rerunning'} {n} of {len(olds)} point{'s' * (len(olds) != 1)} of "
          f"{old_top}" + (" as one array where their jobs are the same" if n > 1 else ""), file=out)
    for i, (line, p) in enumerate(zip(lines, points)):
        if i not in todo:
            what = "kept as it is"
        else:
            parts = [f"reusing {', '.join(p.reuse)}"] if p.reuse else []
            parts += [f"continuing {', '.join(p.resume)} where it stopped"] if p.resume else []
            rest = [s for s in config_io.typed(p.config).stages if s not in p.reuse and s not in p.resume]
            parts += [f"running {', '.join(rest)}"] if rest else []
            what = "rerun: " + "; ".join(parts)
        print(f"  {line} -> {what}", file=out)
