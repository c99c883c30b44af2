"""Everything a launch prints on the login node: the problems, the plan table, the mixture and OASST summaries,
the run dir, and what each way of ending says (a dry run's scripts, local stages, queued jobs), and rerun's
notes. The text only: what happens is decided in launch.py, submit.py and rerun.py. Tests compare this text.

Config values and messages are untrusted text: printed with markup=False, or escaped into markup.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from rich.markup import escape

from dfm_hpc import predict, redact
from dfm_hpc.login import node
from dfm_hpc.login.checks import lumi_rules, memory
from dfm_hpc.login.point import LaunchPoint
from dfm_hpc.plan import StageJob, billing, gpu_hours
from dfm_hpc.registry import TRAINED_STAGES
from dfm_hpc.tokens import allocate, train_tokens

EXIT_INVALID = 2
CPU_ENTRIES = ("cpu", "lumi_c")  # throughput entries of CPUs: their peak is no GPU's, so the title names them bare


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


# ---------------------------------------------------------------- the plan

def _short(x: Optional[float]) -> str:
    return "?" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def _hardware(cfg, records) -> str:
    """'; predicted for h100 (989 TF bf16 per GPU)': the throughput entries the predictions used."""
    unit = "GCD" if cfg.cluster.system == "lumi" else "GPU"
    names = dict.fromkeys(r["prediction"]["device"] for r in records if r["prediction"].get("device"))
    devs = [f"{n} ({d.peak_tflops:g} TF bf16 per {unit})" if n not in CPU_ENTRIES
            and (d := cfg.throughput.devices.get(n)) and d.peak_tflops else n for n in names]
    return f"; predicted for {', '.join(devs)}" if devs else ""


def _walltimes(cfg, jobs, records) -> str:
    """How each requested walltime was chosen: time=auto's sizing, the fallback without a prediction, or as given.
    Nothing on a scheduler without walltimes (cluster=local/node: login/local.py enforces none)."""
    if cfg.cluster.scheduler == "local":
        return ""
    pred = {r["stage"]: r["prediction"] for r in records}
    auto = [j.stage for j in jobs if j.time_auto and pred[j.stage]["hours"] is not None]
    fallback = [j.stage for j in jobs if j.time_auto and pred[j.stage]["hours"] is None]
    given = [j.stage for j in jobs if not j.time_auto]
    parts = [f"predicted work x {cfg.cluster.time_factor:g} (cluster.time_factor) + start-up, rounded up, within "
             f"the partition's limit (time=auto) for {', '.join(auto)}"] if auto else []
    parts += [f"fallback_time (no prediction) for {', '.join(fallback)}"] if fallback else []
    parts += [f"as given ({', '.join(s + '.time' for s in given)})"] if given else []
    return "requested walltime: " + "; ".join(parts) if parts else ""


def plan_table(point: LaunchPoint, n_points: int) -> None:
    """The point's stages (a sweep's first point stands for all), what each runs, and the cost."""
    from rich.table import Table

    cfg, jobs, reuse = point.cfg, point.jobs, point.reuse
    con = _console()
    title = escape(f"{cfg.name}: {len(jobs)} stage{'s' * (len(jobs) != 1)} on cluster={cfg.cluster.name}, in order")
    if n_points > 1:
        title += f", x {n_points} sweep points"
    title += escape(_hardware(cfg, point.records))
    # GCD-h: GPU devices x hours as Slurm counts them; LUMI bills an MI250X (2 GCDs) hour as 1 unit (BU).
    # predicted: the stage's work / conf/throughput (docs/performance.md#predictions), every start included
    dev = "GCD" if cfg.cluster.system == "lumi" else "GPU"
    lumi = cfg.cluster.system == "lumi"
    # LUMI bills two allocations: GPU-hours (LUMI-G, BU) and CPU core-hours (LUMI-C, the stages that need no GPU)
    cols = ("stage", "nodes×ranks", "partition", "requested", "pred.", f"{dev}-h pred/max", "BU pred/max") + \
        (("CPU core-h pred/max",) if lumi else ())
    tot = {"gpu": 0.0, "pgpu": 0.0, "GPU": 0.0, "pGPU": 0.0, "CPU": 0.0, "pCPU": 0.0}
    lines, rows = [], []
    for j, rec in zip(jobs, point.records):
        if j.stage in reuse:
            rows.append((j.stage, "reused", str(reuse[j.stage].parent.parent.name), "", "", "", "")
                        + (("",) if lumi else ()))
            continue
        p = rec["prediction"]
        n = p.get("starts") or 1  # a stage that needs requeues can use every start's full walltime
        g, b, pool = gpu_hours(j) * n, billing(j, j.cluster), p.get("pool")
        b = None if b is None else b * n
        tot["gpu"], tot["pgpu"] = tot["gpu"] + g, tot["pgpu"] + (p["gpu_hours"] or 0)
        if pool:
            tot[pool], tot["p" + pool] = tot[pool] + (b or 0), tot["p" + pool] + (p["billing"] or 0)
        shape = f"{j.nodes} x {j.tasks_per_node}" + (f" (x{j.array} array)" if j.array > 1 else "")
        pred = "?" if p["hours"] is None else predict.fmt_hours(p["hours"]) + ("~" if p["basis"] == "fixed" else "")
        cost = "-" if b is None else f"{_short(p['billing'])}/{_short(b)}"
        rows.append((j.stage, shape, j.partition or "-", f"{j.minutes // 60}:{j.minutes % 60:02d}", pred,
                     f"{_short(p['gpu_hours'])}/{_short(g)}" if pool != "CPU" else "-",
                     cost if pool != "CPU" else "-") + ((cost if pool == "CPU" else "-",) if lumi else ()))
        how = (f" [dim]-> {escape(p['work'])} at {escape(p['rate'])} ({escape(p['device'])})[/]"
               if p["basis"] == "work" else "")
        lines.append(f"  [bold]{escape(j.stage)}[/]: {escape(p['summary'])}{how}")
        if j.stage in TRAINED_STAGES and (mem := memory.plan_line(j, cfg)):
            lines.append(f"    memory: {escape(mem)}")
    # stages run in order, each after the one before (afterok); pred. ending in ~: a fixed guess
    t = Table(title=title, title_justify="left", box=None, pad_edge=False, header_style="bold")
    for i, col in enumerate(cols):  # every column as wide as its values (a stage name is never cut)
        t.add_column(col, justify="right" if col in ("requested", "pred.") or "/" in col else "left",
                     no_wrap=True, min_width=max([len(col)] + [len(r[i]) for r in rows]))
    for r in rows:  # cells are markup: a run dir's or partition's name is not
        t.add_row(*(escape(c) for c in r))
    con.print(t)
    for line in node.plan_lines(cfg):  # cluster=node: the GPUs found here
        con.print(line, markup=False)
    # what each stage runs; a local run's rank 0 says it again when the stage starts (its log is the console)
    for line in lines if cfg.cluster.scheduler == "slurm" or cfg.dry_run else []:
        con.print(line)
    if line := _walltimes(cfg, [j for j in jobs if j.stage not in reuse], point.records):
        con.print(line, markup=False)
    for w in predict.warnings(point.records) + lumi_rules.storage_warnings(cfg):
        con.print(f"[yellow]warning[/]: {escape(w)}")
    if cfg.cluster.scheduler == "slurm":
        k = n_points
        unit = "GPU(GCD)-hours" if lumi else "GPU-hours"
        cpu = any(r["prediction"].get("pool") == "CPU" for r in point.records)  # LUMI-C's own allocation

        def bills(pre: str) -> str:
            if not lumi:
                return ""
            return f", {tot[pre + 'GPU'] * k:,.1f} LUMI billing units" + (
                f" and {tot[pre + 'CPU'] * k:,.1f} LUMI-C core-hours (the CPU allocation)" if cpu else "")
        con.print(f"cost predicted: {tot['pgpu'] * k:,.1f} {unit}{bills('p')}; at most (every start's full "
                  f"walltime): {tot['gpu'] * k:,.1f} {unit}{bills('')}")


def mixture(cfg) -> None:
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


def plain_lines(lines: List[str]) -> None:
    """Lines of untrusted text (the OASST summary)."""
    for line in lines:
        _console().print(line, markup=False)


# ---------------------------------------------------------------- the run dir

def write_failed(runs_root: str, e: OSError) -> int:
    return report_problems([f"cannot write the run dir under runs_root={runs_root!r}: "
                            f"{e.strerror or e}{f' ({e.filename})' if e.filename else ''}; give a writable "
                            "directory, e.g. runs_root=/scratch/<project>/runs"])


def write_interrupted() -> int:
    _console(stderr=True).print("interrupted: no run dir was left behind", markup=False)
    return 130


def run_dir(top: Path) -> None:
    _console().print(f"run dir: [bold]{escape(str(top))}[/]")


# ---------------------------------------------------------------- a dry run

def script(stage: str, path: Path, text: str, srun: Optional[str]) -> None:
    """A stage's rendered script (the first point's), with its srun line on Slurm."""
    con = _console()
    con.rule(escape(f"{stage}: {path}"))
    con.print(text, markup=False)
    if srun is not None:
        con.print(f"# srun line:\n{srun}", markup=False)


def dry_run_done(n_points: Optional[int]) -> None:
    """n_points: a sweep's, whose other scripts were not printed."""
    con = _console()
    if n_points is not None:
        con.print(f"(scripts of all {n_points} points are in their run dirs)")
    con.print("[bold]dry run[/]: nothing was submitted")


# ---------------------------------------------------------------- cluster=local

def local_stage(job: StageJob, logs: Path) -> None:
    _console().rule(escape(f"{job.stage}: {job.world_size} local rank{'s' * (job.world_size != 1)} (logs: {logs})"))


def local_interrupted(why: str, stage: str, run: Path) -> None:
    _console().print(f"interrupted ({why}): stopped the ranks of stage {stage}, marked it CANCELLED; "
                     f"continue with: python -m dfm_hpc rerun {run}", markup=False)


def local_failed(stage: str, code: int, run: Path) -> None:
    _console().print(f"[bold red]stage {escape(stage)} failed[/] " + escape(
        f"(exit {code}); later stages not run. See: python -m dfm_hpc logs {run} --stage {stage}"))


def local_done(top: Path, opened: List[tuple]) -> None:
    """opened: (what, path) a person wants to open next (the model card, the evaluation)."""
    con = _console()
    con.print(f"status: python -m dfm_hpc status {top}", markup=False)
    for name, path in opened:
        con.print(f"{name}: {path}", markup=False)


# ---------------------------------------------------------------- Slurm

def queued_stage(job: StageJob, ids: str, dependency: Optional[str]) -> None:
    _console().print(f"  {job.stage:<10} job {ids}  {job.nodes} node(s) x {job.tasks_per_node} rank(s)"
                     + (f", after {dependency}" if dependency else ""), markup=False)


def queued(top: Path, first: Path) -> None:
    _console().print("queued; follow with:\n"
                     f"  python -m dfm_hpc status {top}\n"
                     f"  python -m dfm_hpc logs {first} --follow\n"
                     f"  python -m dfm_hpc cancel {top}", markup=False)


def submit_failed(why: str, cancelled: List[str], top: Path) -> None:
    con = _console()
    con.print(f"[bold red]submission failed[/]: {escape(why)}")
    if cancelled:
        con.print(f"cancelled the jobs this launch had queued: {', '.join(cancelled)}", markup=False)
    con.print(f"the snapshot stays in {top}; fix the cause, then "
              "python -m dfm_hpc rerun <that dir>", markup=False)


# ---------------------------------------------------------------- rerun

def code_changed(old_top: Path, then, now) -> None:
    _console(stderr=True).print(
        f"[yellow]warning[/]: the code has changed since {escape(str(old_top))} ran "
        f"(git {str(then)[:10]} then, {str(now)[:10]} now); the config is the same, the results may not be")


def packages_differ(requirements: Path, drift: List[str]) -> None:
    _console(stderr=True).print(f"[yellow]warning[/]: the installed packages differ from "
                                f"{escape(str(requirements))}: " + escape("; ".join(drift)))


def rerun_stages(reuse: dict, resume: dict) -> None:
    con = _console(stderr=True)
    if reuse:
        con.print(f"reusing finished stages: {', '.join(reuse)} (--fresh runs them again)", markup=False)
    if resume:
        con.print(f"continuing unfinished stages where they stopped: {', '.join(resume)}", markup=False)


def rerun_nothing_to_do() -> None:
    _console(stderr=True).print("every stage of this run is done; nothing to rerun (use --fresh to run it again)")
