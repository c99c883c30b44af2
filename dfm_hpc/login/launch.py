"""Login node: the launch of composed points: checks -> plan -> predictions -> snapshot -> submit -> return.

`main` composes the command line (compose.py) into LaunchPoints, rerun makes them from a run dir; `launch`
fills each point in (frozen config, jobs, predictions, run dir) and only when every point has passed every
check is anything written or queued. What is printed is console.py's. Nothing here imports torch & co.: the
heavy work happens in dfm_hpc.job.rank on the compute nodes.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import List, Optional

from dfm_hpc import redact, rundir
from dfm_hpc.login import checks, compose, console, submit, sweep_files
from dfm_hpc.login import sweep as share
from dfm_hpc.login.point import LaunchPoint


def main(argv: List[str]) -> int:
    """`python -m dfm_hpc [-m] key=value ...`: compose, then launch."""
    try:
        composed = compose.command_line(argv)
    except compose.Problems as e:
        return console.report_problems(e.problems)
    if not composed.points:  # --cfg, --info, --hydra-help: Hydra printed what was asked
        return 0
    return launch(composed.points, composed.command, sweep=composed.sweep)


def _make_dirs(points: List[LaunchPoint], sweep: bool, argv: List[str]) -> None:
    """Each point's run dir, complete, or none: whatever stops the writing (a full disk, SIGINT) removes
    them again; only a hard kill leaves one, marked INCOMPLETE (status and list show it)."""

    root = Path(points[0].cfg.runs_root).resolve()
    parent = root / points[0].cfg.name
    if not rundir.inside(parent, root) or parent == root:  # checks/safety.check_names refuses such names too
        raise OSError(f"the run dir {parent} would be outside runs_root {root}")
    top = rundir.new_run_dir(parent)
    try:
        _fill_dirs(top, points, sweep, argv)
    except BaseException:
        shutil.rmtree(top, ignore_errors=True)
        for p in points:
            p.run_dir = None
        raise


def _remove_dirs(points: List[LaunchPoint], sweep: bool) -> None:

    if points[0].run_dir is not None:
        shutil.rmtree(points[0].run_dir.parent if sweep else points[0].run_dir, ignore_errors=True)


def _fill_dirs(top: Path, points: List[LaunchPoint], sweep: bool, argv: List[str]) -> None:
    git, packages = rundir.git_state(), rundir.installed_packages()
    files = sweep_files.Files() if sweep else None  # the points' shared mappings redacted and written once
    for i, p in enumerate(points):
        d = p.run_dir = top / str(i) if sweep else top
        d.mkdir(exist_ok=True)
        (d / rundir.INCOMPLETE).write_text("the launch did not finish\n")
        extra = {"rerun_of": str(p.rerun_of) if p.rerun_of else None, "sweep_dir": str(top) if sweep else None}
        rundir.snapshot(d, p.config, p.overrides, argv, extra=extra, git=git, packages=packages, plan=p.records,
                        files=files)
        # an earlier run's stage dirs: finished ones are linked and skipped, unfinished ones are
        # linked and run again in place, so they resume from their files (shards, checkpoints)
        for stage, old in {**p.reuse, **p.resume}.items():
            rundir.stage_dir(d, stage).parent.mkdir(parents=True, exist_ok=True)
            rundir.stage_dir(d, stage).symlink_to(old.resolve(), target_is_directory=True)
        for old in p.resume.values():
            rundir.clear_attempt(old)
        if p.rerun_of and (p.rerun_of / rundir.BAD_NODES).exists():  # its jobs keep avoiding them (submit.py)
            shutil.copyfile(p.rerun_of / rundir.BAD_NODES, d / rundir.BAD_NODES)
    if sweep:
        values = redact.secret_values(points[0].config)
        rundir.write_yaml(top / rundir.SWEEP, {
            "name": points[0].cfg.name,
            "command": redact.redact_text(" ".join(redact.redact_override(a) for a in argv), values),
            "points": [{"run_dir": p.run_dir.name,
                        "overrides": [redact.redact_text(redact.redact_override(o), values) for o in p.overrides]}
                       for p in points]})
    for d in [p.run_dir for p in points] + ([top] if sweep else []):
        rundir.complete(d)


def _oasst_plan(cfgs, done: Optional[dict] = None) -> tuple:
    """(problems, summary lines) for the OASST source of each translate stage: its filter options, and
    for a local file the whole file read now, so one the loader cannot read completely is refused here
    (exit 2, naming the file and line) and the plan shows trees, messages, languages and filter drops.
    Hub ids are not loaded here. The login side's one use of dfm_hpc.text: oasst is standard library.
    `done`: a launch's summaries by file and filters, so that a sweep reads each file once."""
    todo = [c for c in cfgs if "translate" in c.stages]
    if not todo:
        return [], []
    from dfm_hpc.text import oasst_filter

    problems, lines, seen = [], [], set()
    for cfg in todo:  # layout, review and sft_path values are Choice fields: checked when composed
        filters = oasst_filter.Filters.from_config(cfg)
        key = (cfg.data.oasst2, cfg.data.oasst2_layout, repr(filters))
        if key in seen or not checks.should_check_paths(cfg):
            continue
        seen.add(key)
        try:
            done = {} if done is None else done
            if key not in done:
                done[key] = oasst_filter.summarize(cfg.data.oasst2, cfg.data.oasst2_layout, filters)
            summary = done[key]
        except FileNotFoundError:
            continue  # check_config says so
        except ValueError as e:  # oasst.OasstFormatError
            problems.append(f"data.oasst2={cfg.data.oasst2!r} cannot be read completely: {e}")
            continue
        if summary:
            lines.append(oasst_filter.format_summary(summary))
    return problems, lines


def launch(points: List[LaunchPoint], argv: List[str], sweep: bool) -> int:
    # Each point's config frozen (what runs is what was checked), planned, checked and predicted: once per
    # representative in a sweep, whose points share it where the work read no swept value that differs (sweep.py)
    read: dict = {}  # OASST files summarized, by file and filters
    works = share.assign(points, lambda cfgs: _oasst_plan(cfgs, read))
    problems: List[str] = []
    for p, w in zip(points, works):
        problems += [p.label(sweep) + x for x in share.point_problems(p, w)]
    cfgs = [p.cfg for p in points]
    problems += checks.check_sweep_job_limits(cfgs, [p.jobs for p in points]) if not problems else []
    kinds = {(c.cluster.scheduler, c.dry_run) for c in {id(c): c for c in cfgs}.values()}
    if len(kinds) > 1:
        problems.append("a sweep cannot mix schedulers or dry_run values; sweep over one cluster at a time")
    distinct = list({id(w): w for w in works}.values())
    oasst_lines = list(dict.fromkeys(x for w in distinct for x in w.oasst[1]))
    problems += list(dict.fromkeys(x for w in distinct for x in w.oasst[0]))
    if problems:
        return console.report_problems(problems)
    # a stage that would outlast its walltime and cannot resume; LUMI's dev-g: one start
    for p, w in zip(points, works):
        p.records = w.records
        problems += [p.label(sweep) + x for x in w.prediction_problems]
    if problems:
        return console.report_problems(problems)
    console.plan_table(next((p for p in points if p.todo), points[0]), len(points))  # rerun --failed: one that runs
    console.mixture(points[0].cfg)
    console.plain_lines(oasst_lines)
    try:
        _make_dirs(points, sweep, argv)
    except OSError as e:  # runs_root a file, unwritable, a full disk: nothing is left behind
        return console.write_failed(points[0].cfg.runs_root, e)
    except KeyboardInterrupt:
        return console.write_interrupted()
    console.run_dir(points[0].run_dir.parent if sweep else points[0].run_dir)
    cfg = points[0].cfg
    if cfg.dry_run:
        try:
            return submit.dry_run(points, sweep)
        except BaseException:  # a dry run's dirs are its output: none half-written (their scripts missing)
            _remove_dirs(points, sweep)
            raise
    if cfg.cluster.scheduler == "local":
        return submit.run_local(points)
    return submit.submit_slurm(points, sweep)
