"""`python -m dfm_hpc chat RUN [--stage dpo|sft|cpt|base]`: talk to what a run made.

Here (cluster=local, or a run made locally) the chat runs in a child process (job/chat.py: torch is
never imported on the login side) with this terminal's stdin and stdout; Ctrl-C ends it and the
child with it. For a Slurm cluster the chat needs a GPU: `--dry-run` renders the one-GCD serving job
and shows its cost, which is as far as this version goes on a cluster (docs/evaluation.md, "Chat").
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

from dfm_hpc import config_io, plan, rundir
from dfm_hpc.login import console, shell
from dfm_hpc.registry import TRAINED_STAGES

STAGES = ("base", *TRAINED_STAGES)
CHAT_MINUTES = 60  # the serving job's walltime: a chat, not a benchmark


def pick_model(run: Path, cfg, stage: Optional[str]) -> Tuple[str, str]:
    """(stage, model path) to chat with: the given stage, else the last trained one with a model. A merged
    adapter (merged/) is preferred to model/; `base` is the run's model.name_or_path (tiny: built job side)."""
    if stage == "base":
        return "base", str(cfg.model.name_or_path)
    order = [s for s in cfg.stages if s in TRAINED_STAGES]
    for s in ([stage] if stage else list(reversed(order))):
        sdir = rundir.stage_dir(run, s)
        for d in (sdir / "merged", sdir / "model"):
            if (d / "config.json").is_file() or (d / "adapter_config.json").is_file():
                return s, str(d.resolve())
    if stage:
        raise LookupError(f"{run} has no {stage} model yet (no {rundir.stage_dir(run, stage)}/model); "
                          f"its stages: {', '.join(cfg.stages)}; try --stage base")
    raise LookupError(f"{run} has no trained model yet ({', '.join(order) or 'no trained stage'}); "
                      "chat with its base model: --stage base")


def _child_argv(run: Path, stage: str, model: str, args) -> List[str]:
    argv = [sys.executable, "-m", "dfm_hpc.job.chat", model, "--name", f"{run.name}/{stage}",
            "--run-dir", str(run), "--temperature", str(args.temperature), "--max-new-tokens", str(args.max_new_tokens)]
    if args.system:
        argv += ["--system", args.system]
    if args.seed is not None:
        argv += ["--seed", str(args.seed)]
    if args.show_prompt:
        argv.append("--show-prompt")
    if args.save:
        out = run / "chat" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{stage}.jsonl"
        out.parent.mkdir(exist_ok=True)
        argv += ["--save", str(out)]
    return argv


def chat_local(run: Path, stage: str, model: str, args) -> int:
    """The chat in a child process on this machine; Ctrl-C ends both, leaving no process behind."""
    child = subprocess.Popen(_child_argv(run, stage, model, args))
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        return 130


def _job(cfg) -> plan.StageJob:
    """One process with one GPU (on LUMI a small-g GCD), the profile's single-device place when it has one."""
    from omegaconf import OmegaConf

    cl = cfg.cluster
    if cl.get("single_device"):
        cl = OmegaConf.merge(cl, {**cl.single_device, "single_device": None})
    return plan.StageJob(stage="chat", nodes=1, tasks_per_node=1, gpus_per_node=1 if cl.gpus_per_node else 0,
                         cpus_per_task=cl.cpus_per_task, minutes=CHAT_MINUTES, partition=cl.partition, after=None,
                         cluster=cl)


def serving_script(run: Path, stage: str, model: str, cfg) -> Tuple[str, plan.StageJob]:
    """The sbatch script of the serving job: vLLM's OpenAI server for the model, on the job's own port."""
    from submitit.slurm.slurm import _make_sbatch_string

    from dfm_hpc.login import slurm

    job = _job(cfg)
    params = slurm.executor_params(job, job.cluster, f"dfm-{cfg.name}-chat")
    name = f"{run.name}-{stage}"
    serve = (f"{slurm.python_command(job.cluster)} -m vllm.entrypoints.openai.api_server --model "
             f"{shell.quote_value(model)} --served-model-name {shell.quote_value(name)} --host 0.0.0.0 "
             '--port "$DFM_HPC_CHAT_PORT"')
    setup = list(params["setup"]) + [
        "# the job's own port (as evaluate's server), written where `chat` finds it",
        "export DFM_HPC_CHAT_PORT=$(( 20000 + SLURM_JOB_ID % 12000 ))",
        f'echo "$(hostname):$DFM_HPC_CHAT_PORT {name}" > '
        f'{shell.quote_value(str(run / "chat" / "server"))}."$SLURM_JOB_ID"',
        "export TORCH_COMPILE_DISABLE=1 TORCHDYNAMO_DISABLE=1  # a chat does not repay the compile (docs/lumi.md §10)",
        "export MAP_HIP_TO_ROCR_VISIBLE_DEVICES=1  # the LAIF entrypoint gives vLLM HIP_VISIBLE_DEVICES (§10)",
        f'export VLLM_CACHE_ROOT={shell.quote_value(str(run / "chat" / "vllm-cache"))}',
    ]
    folder = run / "chat" / "submitit"
    shell.check_params([params, str(folder), serve])  # as slurm.render: no control characters reach the script
    params = {k: v for k, v in params.items() if k not in ("setup", "srun_args")}
    params["additional_parameters"] = {}  # a chat is not requeued, nor part of a chain
    script = _make_sbatch_string(command=serve, folder=folder, setup=setup, use_srun=False, **params)
    return script, job


def chat_slurm_dry_run(run: Path, stage: str, model: str, cfg) -> int:
    script, job = serving_script(run, stage, model, cfg)
    out = run / "chat" / rundir.SBATCH
    out.parent.mkdir(exist_ok=True)
    out.write_text(script)
    cost = plan.billing(job, job.cluster)
    gpus = f"{job.gpus_per_node} GPU" if job.gpus_per_node else "CPU"
    console.plain_lines([
        f"chat with {run.name}/{stage} ({model}) on cluster={cfg.cluster.name}: one job, 1 node, {gpus}, "
        f"partition {job.partition or '(default)'}, walltime {CHAT_MINUTES} min"
        + (f", at most {cost:.2f} billing units" if cost is not None else ""),
        f"serving job: {out}",
        "dry run: nothing was submitted. Without --dry-run this version does not queue it yet: submit the script "
        "with sbatch, then point any OpenAI client at the address it writes to chat/server.<job id>.",
    ])
    print(script)
    return 0


def chat(ref: str, stage: Optional[str], overrides: List[str], dry_run: bool, args, runs_root: str = "runs") -> int:
    run = rundir.resolve(ref, runs_root).resolve()
    if rundir.is_sweep_dir(run):
        raise LookupError(f"{run} is a sweep; chat with one of its points: {run}/0, {run}/1, ...")
    cfg = config_io.load_config(run)
    cluster = next((o.split("=", 1)[1] for o in overrides if o.split("=")[0] == "cluster"), None)
    if cluster not in (None, "local"):
        from dfm_hpc.login import compose

        new = {o.split("=")[0].lstrip("+~") for o in overrides}
        old = [o for o in rundir.read_yaml(run / rundir.OVERRIDES) or [] if o.split("=")[0].lstrip("+~") not in new]
        cfg = compose.compose_config([*old, *overrides])
    stage, model = pick_model(run, cfg, stage)
    if cfg.cluster.scheduler == "local":
        return chat_local(run, stage, model, args)
    if not dry_run:
        raise LookupError("chat on a Slurm cluster is a dry run in this version (--dry-run renders the serving "
                          "job); chat here with cluster=local")
    return chat_slurm_dry_run(run, stage, model, cfg)
