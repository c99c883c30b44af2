"""Login node: compose (Hydra) -> validate -> plan -> snapshot -> submit -> return.

Hydra composes each point (one, or one per sweep point with -m) and hands it to `_collect`; only
when every point has been composed and validated is anything written or queued. Nothing here
imports torch & co.: the heavy work happens in dfm_hpc.job.rank on the compute nodes.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from omegaconf import OmegaConf
from rich.markup import escape

from dfm_hpc import CONF_DIR, config_io, predict, redact, rundir
from dfm_hpc.login import resources, submit, validate
from dfm_hpc.plan import StageJob, billing, gpu_hours, plan
from dfm_hpc.tokens import allocate, train_tokens

EXIT_INVALID = 2
SWEEP_LIMIT = 256  # points; more needs --large-sweep (each point is a run dir: 4,096 took 193 MB)
LARGE_SWEEP = "--large-sweep"


@dataclass
class Point:
    config: dict  # resolved
    overrides: List[str]  # what the command line set for this point
    reuse: Dict[str, Path] = field(default_factory=dict)  # stage -> finished stage dir of an earlier run
    resume: Dict[str, Path] = field(default_factory=dict)  # stage -> unfinished stage dir to continue in
    rerun_of: Optional[Path] = None


_points: List[Point] = []
_compose_problems: List[str] = []
_multirun = False


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def report_problems(problems: List[str]) -> int:
    con = _console(stderr=True)
    n = len(problems)
    con.print(f"[bold red]dfm_hpc: {n} problem{'s' * (n != 1)} in the config[/]; nothing was created or submitted:")
    values = redact.secret_values()
    for i, p in enumerate(problems, 1):  # untrusted text: never markup, never a secret
        con.print(f"  {i}. {redact.redact_text(p, values)}", markup=False)
    return EXIT_INVALID


def _hint(message: str, argv: List[str]) -> str:
    """What to type instead, for Hydra's least helpful messages."""
    if "Ambiguous value" in message and "-m" not in argv and "--multirun" not in argv:
        return message + " (a comma-separated value is a sweep: add -m, or quote the list: key='[a,b]')"
    if "not in struct" in message or "Could not override" in message or "Key '" in message and "not in" in message:
        return message + " (to add a key the config does not have, prefix it with +, e.g. +cluster.env.NAME=value)"
    return message


def compose_config(overrides: List[str]):
    """One config from `+experiment=... key=value` (no sweep), typed; for subcommands such as
    prefetch. Raises ValueError with every problem."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    config_io.register()
    problems = validate.check_overrides(overrides)
    if problems:
        raise ValueError("\n".join(problems))
    try:
        return config_io.typed(_compose(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise ValueError(validate.explain_hydra_error(e)) from None


def _compose(overrides: List[str]) -> dict:
    """The resolved config of `overrides`, composed once with Hydra's compose API (no sweep)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="dfm_hpc"):
        composed = compose("config", overrides=list(overrides))
    return OmegaConf.to_container(composed, resolve=True, enum_to_str=True)


def prefetch(overrides: List[str], fetch: bool) -> int:
    from dfm_hpc.login import prefetch as pf

    try:
        cfg = compose_config(overrides)
    except ValueError as e:
        return report_problems(str(e).splitlines())
    return pf.run(cfg, fetch)


# ---------------------------------------------------------------- Hydra entry

def _collect(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    global _multirun
    hc = HydraConfig.get()
    _multirun = hc.mode == RunMode.MULTIRUN
    overrides = list(hc.overrides.task)
    try:
        _points.append(Point(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), overrides))
    except Exception as e:  # e.g. an interpolation that cannot resolve
        prefix = f"[{' '.join(overrides)}] " if _multirun else ""
        _compose_problems.append(prefix + validate.explain_hydra_error(e))


def _split_overrides(argv: List[str]) -> List[str]:
    """The key=value arguments among Hydra's own flags."""
    takes_value = {"--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--config-path", "-cp",
                   "--config-dir", "-cd", "--experimental-rerun"}
    info_topics = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
    out, skip, prev = [], False, ""
    for a in argv:
        if skip:
            skip = False
        elif prev in ("--info", "-i") and a in info_topics:
            pass
        elif a in takes_value:
            skip = True
        elif not a.startswith("-"):
            out.append(a)
        prev = a
    return out


def hydra_main(argv: List[str]) -> int:
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    config_io.register()
    large = LARGE_SWEEP in argv
    argv = [a for a in argv if a != LARGE_SWEEP]
    problems = validate.check_overrides(_split_overrides(argv))
    if problems:
        return report_problems(problems)
    if any(a in ("-m", "--multirun") for a in argv) and not any(
            a.startswith(("--cfg", "-c", "--info", "-i", "--help", "-h", "--hydra-help", "--run", "-r",
                          "--shell-completion", "-sc", "--config-", "-cp", "-cn", "-cd")) for a in argv):
        return _sweep(argv, large)
    if not any(a.startswith(("-", "hydra.", "+hydra.", "~hydra.")) for a in argv):
        return _run_once(argv)
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let composition errors reach us (exit 2, not Hydra's 1)
    app = hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(_collect)
    saved, sys.argv = sys.argv, ["dfm_hpc", *argv]
    _points.clear()
    _compose_problems.clear()
    try:
        app()
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        return report_problems([_hint(validate.explain_hydra_error(e), argv)])
    finally:
        sys.argv = saved
    if _compose_problems:
        return report_problems(list(_compose_problems))
    if not _points:  # --cfg, --help, --info: Hydra printed what was asked
        return 0
    return launch(list(_points), ["python", "-m", "dfm_hpc", *argv], sweep=_multirun)


def _run_once(argv: List[str]) -> int:
    """A plain run (key=value only): composed once. `@hydra.main` composes twice (once only to learn the
    run mode, half a dry run's time) for what is not asked here (--help, --cfg, hydra.*); same config (tested)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        point = Point(_compose(argv), list(argv))
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        return report_problems([_hint(validate.explain_hydra_error(e), argv)])
    return launch([point], ["python", "-m", "dfm_hpc", *argv], sweep=False)


def _sweep(argv: List[str], large: bool = False) -> int:
    """-m: Hydra's BasicSweeper semantics (cartesian product of the sweeps, in order), but each
    distinct choice of config groups is composed once and the points' key=value overrides are
    applied to a copy: Hydra's own multirun composes every point twice (~0.1 s each)."""
    import copy

    from hydra import compose, initialize_config_dir
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    parser = OverridesParser.create()
    group_names = set(validate.groups())
    try:
        combos = BasicSweeper.split_arguments(parser.parse_overrides(_split_overrides(argv)), None)[0]
    except HydraException as e:
        return report_problems([validate.explain_hydra_error(e)])
    if len(combos) > SWEEP_LIMIT and not large:
        return report_problems([f"the sweep has {len(combos):,} points, over the limit of {SWEEP_LIMIT} (each point is "
                                f"a run dir and an array task); narrow it, or add {LARGE_SWEEP} if you mean it"])
    bases: Dict[tuple, object] = {}
    points: List[Point] = []
    problems: List[str] = []
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="dfm_hpc"):
        for combo in combos:
            is_group = [o.split("=", 1)[0].lstrip("+~") in group_names for o in combo]
            groups_part = tuple(o for o, g in zip(combo, is_group) if g)
            values_part = [o for o, g in zip(combo, is_group) if not g]
            try:
                if groups_part not in bases:
                    bases[groups_part] = compose("config", overrides=list(groups_part))
                cfg = copy.deepcopy(bases[groups_part])
                ConfigLoaderImpl._apply_overrides_to_config(parser.parse_overrides(values_part), cfg)
                points.append(Point(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), list(combo)))
            except (HydraException, OmegaConfBaseException, ValueError) as e:
                problems.append(f"[{' '.join(combo)}] {_hint(validate.explain_hydra_error(e), argv)}")
    if problems:
        return report_problems(problems)
    return launch(points, ["python", "-m", "dfm_hpc", *argv], sweep=True)


# ---------------------------------------------------------------- launch

def _short(x: Optional[float]) -> str:
    return "?" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def _print_plan(cfg, jobs: List[StageJob], n_points: int, reuse: Dict[str, Path], records: List[dict]) -> None:
    from rich.table import Table

    con = _console()
    title = f"{cfg.name}: {len(jobs)} stage{'s' * (len(jobs) != 1)} on cluster={cfg.cluster.name}, in order"
    if n_points > 1:
        title += f", x {n_points} sweep points"
    # GCD-h: GPU devices x hours as Slurm counts them; LUMI bills an MI250X (2 GCDs) hour as 1 unit (BU).
    # predicted: the stage's work / conf/throughput (docs/performance.md#predictions), every start included
    cols = ("stage", "nodes×ranks", "partition", "wall", "pred.", "GCD-h pred/max", "BU pred/max")
    tot = {"gpu": 0.0, "bill": 0.0, "pgpu": 0.0, "pbill": 0.0}
    lines, rows = [], []
    for j, rec in zip(jobs, records):
        if j.stage in reuse:
            rows.append((j.stage, "reused", str(reuse[j.stage].parent.parent.name), "", "", "", ""))
            continue
        p = rec["prediction"]
        n = p.get("starts") or 1  # a stage that needs requeues can use every start's full walltime
        g, b = gpu_hours(j) * n, billing(j, j.cluster)
        b = None if b is None else b * n
        tot["gpu"], tot["bill"] = tot["gpu"] + g, tot["bill"] + (b or 0)
        tot["pgpu"], tot["pbill"] = tot["pgpu"] + (p["gpu_hours"] or 0), tot["pbill"] + (p["billing"] or 0)
        shape = f"{j.nodes} x {j.tasks_per_node}" + (f" (x{j.array} array)" if j.array > 1 else "")
        pred = "?" if p["hours"] is None else predict.fmt_hours(p["hours"]) + ("~" if p["basis"] == "fixed" else "")
        rows.append((j.stage, shape, j.partition or "-", f"{j.minutes // 60}:{j.minutes % 60:02d}", pred,
                     f"{_short(p['gpu_hours'])}/{_short(g)}",
                     "-" if b is None else f"{_short(p['billing'])}/{_short(b)}"))
        how = f" [dim]-> {escape(p['work'])} at {escape(p['rate'])} ({p['device']})[/]" if p["basis"] == "work" else ""
        lines.append(f"  [bold]{j.stage}[/]: {escape(p['summary'])}{how}")
    # stages run in order, each after the one before (afterok); pred. ending in ~: a fixed guess
    t = Table(title=title, title_justify="left", box=None, pad_edge=False, header_style="bold")
    for i, col in enumerate(cols):  # every column as wide as its values (a stage name is never cut)
        t.add_column(col, justify="right" if col in ("wall", "pred.") or "/" in col else "left",
                     no_wrap=True, min_width=max([len(col)] + [len(r[i]) for r in rows]))
    for r in rows:
        t.add_row(*r)
    con.print(t)
    # what each stage runs; a local run's rank 0 says it again when the stage starts (its log is the console)
    for line in lines if cfg.cluster.scheduler == "slurm" or cfg.dry_run else []:
        con.print(line)
    for w in predict.warnings(records):
        con.print(f"[yellow]warning[/]: {escape(w)}")
    if cfg.cluster.scheduler == "slurm":
        lumi = cfg.cluster.system == "lumi"
        con.print(f"cost predicted: {tot['pgpu'] * n_points:,.1f} GPU(GCD)-hours"
                  + (f", {tot['pbill'] * n_points:,.1f} LUMI billing units" if lumi else "")
                  + f"; at most (every start's full walltime): {tot['gpu'] * n_points:,.1f} GPU(GCD)-hours"
                  + (f", {tot['bill'] * n_points:,.1f} LUMI billing units" if lumi else ""))


def _print_mixture(cfg) -> None:
    """data.mixture as cpt will sample it (docs/training.md#mixtures): shares, budgets, epoch limits."""
    mix = cfg.data.mixture
    if not mix or not {"cpt", "tokenize"} & set(cfg.stages):
        return
    need = train_tokens(cfg.cpt, "cpt")
    shares = allocate([m.tokens for m in mix], [m.weight for m in mix], need)  # checked: the budgets fit
    lines = [f"mixture (seed {cfg.seed}, {need:,} training tokens):"]
    for m, tokens in zip(mix, shares):
        how = f"budget {m.tokens:,}" if m.tokens is not None else f"weight {m.weight:g}"
        lines.append(f"  {m.name or m.source:<28} {tokens / need:6.1%}  ~{tokens:,.0f} tokens  ({how}, "
                     f"at most {m.epochs:g} epochs)  {m.source}")
    _console().print("\n".join(lines), markup=False)


def _make_dirs(cfgs, points: List[Point], sweep: bool, argv: List[str], records: List[List[dict]]) -> List[Path]:
    """The run dir(s), complete, or none: whatever stops the writing (a full disk, SIGINT) removes
    them again; only a hard kill leaves one, marked INCOMPLETE (status and list show it)."""
    import shutil

    root = Path(cfgs[0].runs_root).resolve()
    parent = root / cfgs[0].name
    if not rundir.inside(parent, root) or parent == root:  # validate.check_names refuses such names too
        raise OSError(f"the run dir {parent} would be outside runs_root {root}")
    top = rundir.new_run_dir(parent)
    try:
        return _fill_dirs(top, cfgs, points, sweep, argv, records)
    except BaseException:
        shutil.rmtree(top, ignore_errors=True)
        raise


def _fill_dirs(top: Path, cfgs, points: List[Point], sweep: bool, argv: List[str], records) -> List[Path]:
    dirs = [top / str(i) for i in range(len(points))] if sweep else [top]
    git, packages = rundir.git_state(), rundir.installed_packages()
    for d, p, recs in zip(dirs, points, records):
        d.mkdir(exist_ok=True)
        (d / rundir.INCOMPLETE).write_text("the launch did not finish\n")
        extra = {"rerun_of": str(p.rerun_of) if p.rerun_of else None, "sweep_dir": str(top) if sweep else None}
        rundir.snapshot(d, p.config, p.overrides, argv, extra=extra, git=git, packages=packages, plan=recs)
        # an earlier run's stage dirs: finished ones are linked and skipped, unfinished ones are
        # linked and run again in place, so they resume from their files (shards, checkpoints)
        for stage, old in {**p.reuse, **p.resume}.items():
            rundir.stage_dir(d, stage).parent.mkdir(parents=True, exist_ok=True)
            rundir.stage_dir(d, stage).symlink_to(old.resolve(), target_is_directory=True)
        for old in p.resume.values():
            rundir.clear_attempt(old)
    if sweep:
        values = redact.secret_values(points[0].config)
        rundir.write_yaml(top / rundir.SWEEP, {
            "name": cfgs[0].name,
            "command": redact.redact_text(" ".join(redact.redact_override(a) for a in argv), values),
            "points": [{"run_dir": d.name,
                        "overrides": [redact.redact_text(redact.redact_override(o), values) for o in p.overrides]}
                       for d, p in zip(dirs, points)]})
    for d in dirs + [top]:
        rundir.complete(d)
    return dirs


def _oasst_plan(cfgs) -> tuple:
    """(problems, summary lines) for the OASST source of each translate stage: its filter options, and
    for a local file the whole file read now, so one the loader cannot read completely is refused here
    (exit 2, naming the file and line) and the plan shows trees, messages, languages and filter drops.
    Hub ids are not loaded here. The login side's one use of dfm_hpc.text: oasst is standard library."""
    todo = [c for c in cfgs if "translate" in c.stages]
    if not todo:
        return [], []
    from dfm_hpc.text import oasst

    problems, lines, seen = [], [], set()
    for cfg in todo:  # layout, review and sft_path values are Choice fields: checked when composed
        filters = oasst.Filters.from_config(cfg)
        key = (cfg.data.oasst2, cfg.data.oasst2_layout, repr(filters))
        if key in seen or not validate._should_check_paths(cfg):
            continue
        seen.add(key)
        try:
            summary = oasst.summarize(cfg.data.oasst2, cfg.data.oasst2_layout, filters)
        except FileNotFoundError:
            continue  # check_config says so
        except ValueError as e:  # oasst.OasstFormatError
            problems.append(f"data.oasst2={cfg.data.oasst2!r} cannot be read completely: {e}")
            continue
        if summary:
            lines.append(oasst.format_summary(summary))
    return problems, lines


def launch(points: List[Point], argv: List[str], sweep: bool) -> int:
    # Points come typed from Hydra's composition or from config_io.typed() (rerun); re-typing costs 40 ms each
    cfgs = [OmegaConf.create(p.config, flags={"readonly": True}) for p in points]  # what runs is what was checked
    problems: List[str] = []
    plans = [None if validate.check_stages(cfg) else plan(cfg) for cfg in cfgs]  # made once, used by all
    for p, cfg, jobs in zip(points, cfgs, plans):
        prefix = f"[{' '.join(p.overrides)}] " if sweep else ""
        problems += [prefix + x for x in validate.check_config(cfg, jobs)]
    problems += resources.check_sweep_job_limits(cfgs, plans) if not problems else []
    kinds = {(c.cluster.scheduler, c.dry_run) for c in cfgs}
    if len(kinds) > 1:
        problems.append("a sweep cannot mix schedulers or dry_run values; sweep over one cluster at a time")
    oasst_problems, oasst_lines = _oasst_plan(cfgs)
    problems += oasst_problems
    if problems:
        return report_problems(problems)
    records = [predict.records(cfg, jobs) for cfg, jobs in zip(cfgs, plans)]
    for p, recs in zip(points, records):  # a stage that would outlast its walltime and cannot resume
        prefix = f"[{' '.join(p.overrides)}] " if sweep else ""
        problems += [prefix + x for x in predict.problems([r for r in recs if r["stage"] not in p.reuse])]
    if problems:
        return report_problems(problems)
    _print_plan(cfgs[0], plans[0], len(points), points[0].reuse, records[0])
    _print_mixture(cfgs[0])
    for line in oasst_lines:
        _console().print(line, markup=False)
    try:
        dirs = _make_dirs(cfgs, points, sweep, argv, records)
    except OSError as e:  # runs_root a file, unwritable, a full disk: nothing is left behind
        return report_problems([f"cannot write the run dir under runs_root={cfgs[0].runs_root!r}: "
                                f"{e.strerror or e}{f' ({e.filename})' if e.filename else ''}; give a writable "
                                "directory, e.g. runs_root=/scratch/<project>/runs"])
    except KeyboardInterrupt:
        _console(stderr=True).print("interrupted: no run dir was left behind", markup=False)
        return 130
    con = _console()
    top = dirs[0].parent if sweep else dirs[0]
    con.print(f"run dir: [bold]{escape(str(top))}[/]")
    cfg = cfgs[0]
    if cfg.dry_run:
        return submit.dry_run(cfgs, plans, points, dirs, sweep)
    if cfg.cluster.scheduler == "local":
        return submit.run_local(cfgs, plans, points, dirs)
    return submit.submit_slurm(cfgs, plans, points, dirs, sweep)
