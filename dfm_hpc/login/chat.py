"""`python -m dfm_hpc chat RUN [--stage dpo|sft|cpt|base]`: talk to what a run made.

Here (cluster=local, or a run made locally) the chat runs in a child process (job/chat.py: torch is
never imported on the login side) with this terminal's stdin and stdout; Ctrl-C ends it and the
child with it. On a Slurm cluster the model is served by a one-GCD job (job/chat_server.py; its plan line
and cost first, `--dry-run` stops there) and this terminal is its client (login/chat_remote.py);
docs/evaluation.md, "Chat".
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
        argv += ["--save", str(_transcript(run, stage))]
    return argv


def _transcript(run: Path, stage: str) -> Path:
    out = run / "chat" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{stage}.jsonl"
    out.parent.mkdir(exist_ok=True)
    return out


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


def backend(cfg) -> str:
    """The serving job's server: vLLM on LUMI (its image ships it for MI250X); elsewhere evaluate.server's
    (transformers serves the tiny model on the CPU test cluster), vLLM when that is none."""
    server = str(getattr(cfg.evaluate.server, "value", cfg.evaluate.server))
    if cfg.cluster.get("system") == "lumi" or server not in ("vllm", "transformers"):
        return "vllm"
    return server


def log_path(run: Path, job: str) -> Path:
    return run / "chat" / "submitit" / f"{job}_0_log.out"  # submitit's %j_%t_log.out


def serving_script(run: Path, stage: str, model: str, cfg) -> Tuple[str, plan.StageJob]:
    """The sbatch script of the serving job: job/chat_server.py serves the model (vLLM's or transformers'
    OpenAI server) on the job's own port, checked free, and writes its address to chat/server.<job id>."""
    from submitit.slurm.slurm import _make_sbatch_string

    from dfm_hpc.login import slurm

    job = _job(cfg)
    params = slurm.executor_params(job, job.cluster, f"dfm-{cfg.name}-chat")
    ev = cfg.evaluate
    serve = " ".join([slurm.python_command(job.cluster), "-u -m dfm_hpc.job.chat_server", shell.quote_value(model),
                      "--name", shell.quote_value(f"{run.name}-{stage}"), "--run-dir", shell.quote_value(str(run)),
                      "--backend", backend(cfg), "--timeout-s", str(int(ev.server_timeout_s)),
                      *(["--compile"] if ev.server_compile else []),
                      *(shell.quote_value(f"--server-arg={a}") for a in ev.server_args)])
    setup = list(params["setup"]) + [
        "export TORCH_COMPILE_DISABLE=1 TORCHDYNAMO_DISABLE=1  # a chat does not repay the compile (docs/lumi.md §10)",
        "export MAP_HIP_TO_ROCR_VISIBLE_DEVICES=1  # the LAIF entrypoint gives vLLM HIP_VISIBLE_DEVICES (§10)",
        "export VLLM_NO_USAGE_STATS=1  # compute nodes are offline (as evaluate_setup for the evaluate job)",
    ]
    folder = run / "chat" / "submitit"
    shell.check_params([params, str(folder), serve])  # as slurm.render: no control characters reach the script
    params = {k: v for k, v in params.items() if k not in ("setup", "srun_args")}
    params["additional_parameters"] = {}  # a chat is not requeued, nor part of a chain
    script = _make_sbatch_string(command=serve, folder=folder, setup=setup, use_srun=False, stderr_to_stdout=True,
                                 **params)
    return script, job


def chat_slurm(run: Path, stage: str, model: str, cfg, args, dry_run: bool) -> int:
    """The plan line with its cost, the serving job's script; then (not a dry run) queue it and chat from here
    (login/chat_remote.py), the job cancelled when the chat ends."""
    script, job = serving_script(run, stage, model, cfg)
    out = run / "chat" / rundir.SBATCH
    (run / "chat" / "submitit").mkdir(parents=True, exist_ok=True)  # Slurm writes no log into a missing folder
    out.write_text(script)
    cost = plan.billing(job, job.cluster)
    gpus = f"{job.gpus_per_node} GPU" if job.gpus_per_node else "CPU"
    console.plain_lines([
        f"chat with {run.name}/{stage} ({model}) on cluster={cfg.cluster.name}: one job, 1 node, {gpus}, "
        f"partition {job.partition or '(default)'}, walltime {CHAT_MINUTES} min"
        + (f", at most {cost:.2f} billing units" if cost is not None else "") + f", served by {backend(cfg)}",
        f"serving job: {out}",
        *(["dry run: nothing was submitted (without --dry-run, chat queues it, waits for its server, chats from "
           "this terminal and cancels the job when the chat ends)"] if dry_run else []),
    ])
    if dry_run:
        print(script)
        return 0
    from dfm_hpc.login import chat_remote

    if args.show_prompt:
        print("dfm_hpc: --show-prompt: the server renders the chat template; the prompt is not shown here",
              file=sys.stderr)
    return chat_remote.run_chat(out, lambda j: log_path(run, j), lambda j: run / "chat" / f"server.{j}",
                                f"{run.name}/{stage}", args, _transcript(run, stage) if args.save else None,
                                wait_s=CHAT_MINUTES * 60)


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
    return chat_slurm(run, stage, model, cfg, args, dry_run)
