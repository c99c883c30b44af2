"""rerun: a run dir's snapshot again, in a new run dir, through the same checks as a launch.

Finished stages are linked, unfinished ones continue in place; a dry run's stage dirs are not
reused; secrets come back from this shell's environment, never as the snapshot's placeholder.
"""

from __future__ import annotations

import os
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


def rerun(ref: str, overrides: List[str], fresh: bool, runs_root: str = "runs") -> int:
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
    points: List[LaunchPoint] = []
    for old in olds:
        try:
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
        old_overrides = [str(o) for o in (rundir.read_yaml(old / rundir.OVERRIDES) or []) if isinstance(o, str)] \
            if (old / rundir.OVERRIDES).is_file() else []
        config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        points.append(LaunchPoint(config, old_overrides + list(overrides),
                                  reuse=reuse, resume=resume, rerun_of=old.resolve()))
    then, now = rundir.provenance(olds[0]).get("git_commit"), rundir.git_state()["commit"]
    if then != now:
        console.code_changed(old_top, then, now)
    drift = rundir.package_drift(olds[0])
    if drift:  # the snapshot's requirements.txt against this environment (make setup installs the lock)
        console.packages_differ(olds[0] / rundir.REQUIREMENTS, drift)
    console.rerun_stages(points[0].reuse, points[0].resume)
    if all(set(p.reuse) == set(config_io.typed(p.config).stages) for p in points):
        console.rerun_nothing_to_do()
        return 0
    argv = ["python", "-m", "dfm_hpc", "rerun", ref, *overrides] + (["--fresh"] if fresh else [])
    return launch(points, argv, sweep=rundir.is_sweep_dir(old_top))
