"""Experiment config -> ordered stage jobs with their resources and cost (login node, no torch)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, List, Optional

from dfm_hpc import lumi


@dataclass
class StageJob:
    stage: str
    nodes: int
    tasks_per_node: int  # ranks per node
    gpus_per_node: int
    cpus_per_task: int
    minutes: int
    partition: Optional[str]
    after: Optional[str]  # the stage this one waits for (afterok)
    array: int = 1  # copies of the job (Slurm array tasks)
    time_auto: bool = False  # its walltime is time=auto's (sized to the prediction: predict.auto_minutes)
    hang_minutes: Optional[float] = None  # the hang watchdog's limit, set with the prediction (predict.records)
    eval_checkpoints: int = 0  # every N-th saved checkpoint is scored by its own job (login/checkpoint_evals.py)
    eval_minutes: int = 0  # the walltime of each of those jobs
    # the cluster settings the job gets (stage_cluster), set where the job is made (plan, run_jobs); config.yaml
    # holds them, so plan.json does not (job_record)
    cluster: Any = field(default=None, repr=False, compare=False)

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node

    @property
    def hours(self) -> float:
        return self.minutes / 60


def parse_time(text: str) -> int:
    """Slurm walltime ([D-]HH:MM:SS, HH:MM:SS, MM:SS or minutes) -> minutes, rounded up."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d{1,2}))?(?::(\d{1,2}))?", str(text).strip())
    if not m:
        raise ValueError(f"cannot read walltime {text!r}; use [D-]HH:MM:SS, e.g. 12:00:00 or 2-00:00:00")
    days, a, b, c = m.groups()
    if b is None:  # minutes, or D-HH
        return int(days) * 1440 + int(a) * 60 if days else int(a)
    if c is None:  # MM:SS, or HH:MM after a day count
        h, mi, s = (int(a), int(b), 0) if days else (0, int(a), int(b))
    else:
        h, mi, s = int(a), int(b), int(c)
    return int(days or 0) * 1440 + h * 60 + mi + (1 if s else 0)


AUTO = "auto"


def max_minutes(job: StageJob) -> Optional[int]:
    """The longest walltime the job's partition takes: LUMI's (lumi.PARTITIONS), elsewhere cluster.max_time;
    None where none is known."""
    cl = job.cluster
    if cl is None:
        return None
    if cl.system == "lumi":
        part = lumi.PARTITIONS.get(job.partition or "")
        return int(part.max_hours * 60) if part else None
    return parse_time(cl.max_time) if cl.get("max_time") else None


def _sized(cfg, job: StageJob) -> StageJob:
    """time=auto: the walltime the prediction asks for (predict.auto_minutes), else the stage's fallback_time."""
    from dfm_hpc import predict  # it imports this module

    try:
        minutes = predict.auto_minutes(cfg, job)
    except (ArithmeticError, ValueError):  # a bad value (a zero batch...): check_config says so; plan on
        minutes = None
    job.minutes = minutes if minutes is not None else parse_time(cfg[job.stage].fallback_time)
    return job


def _single_device(cfg, stage: str) -> bool:
    """One process on one node (merge, evaluate, card...), where the profile has a smaller place
    for such jobs (`cluster.single_device`) and the stage names no partition of its own."""
    cl, st = cfg.cluster, cfg[stage]
    tasks = st.tasks_per_node if st.tasks_per_node is not None else cl.tasks_per_node
    return bool(cl.get("single_device")) and not st.partition and st.nodes == 1 and tasks == 1 \
        and (st.gpus_per_node or 0) <= 1


def _cpu_only(cfg, stage: str) -> bool:
    """A stage that needs no GPU, where the profile has a CPU place (`cluster.cpu_only`, LUMI: LUMI-C small)
    and the stage names no partition or GPUs of its own."""
    from dfm_hpc.registry import needs_gpu

    st = cfg[stage]
    return bool(cfg.cluster.get("cpu_only")) and not st.partition and not st.gpus_per_node \
        and not needs_gpu(cfg, stage)


def stage_cluster(cfg, stage: str):
    """The cluster settings a stage's job gets: the run's profile, with its `cpu_only` settings merged
    over it for stages that need no GPU (LUMI: a LUMI-C core allocation, from the CPU budget), else its
    `single_device` settings for single-process stages (LUMI: a one-GCD slice of small-g instead of a
    whole standard-g node: cheaper, and it starts sooner)."""
    place = "cpu_only" if _cpu_only(cfg, stage) else "single_device" if _single_device(cfg, stage) else None
    if place is None:
        return cfg.cluster
    from omegaconf import OmegaConf

    cl = cfg.cluster
    merged = OmegaConf.merge(cl, {**cl[place], "single_device": None, "cpu_only": None})
    if OmegaConf.is_readonly(cl):  # a launch's frozen config gives frozen jobs: what runs is what was checked
        OmegaConf.set_readonly(merged, True)
    return merged  # ~2.5 ms: plan() and run_jobs() merge once per stage, and the job carries it (StageJob.cluster)


def plan(cfg) -> List[StageJob]:
    """One job per stage in cfg.stages, each waiting for the previous one."""
    jobs: List[StageJob] = []
    for name in cfg.stages:
        st, cl = cfg[name], stage_cluster(cfg, name)
        gpus = st.gpus_per_node if st.gpus_per_node is not None else cl.gpus_per_node
        if cl is not cfg.cluster:  # a single-device place: at least its GPUs (a GCD); a CPU place has none
            gpus = max(gpus, cl.gpus_per_node)
        auto = str(st.time).strip() == AUTO
        job = StageJob(
            stage=name,
            nodes=st.nodes,
            tasks_per_node=st.tasks_per_node if st.tasks_per_node is not None else cl.tasks_per_node,
            gpus_per_node=gpus,
            cpus_per_task=st.cpus_per_task if st.cpus_per_task is not None else cl.cpus_per_task,
            minutes=0 if auto else parse_time(st.time),
            partition=st.partition or cl.partition,
            after=jobs[-1].stage if jobs else None,
            array=st.array,
            eval_checkpoints=getattr(st, "eval_checkpoints", None) or 0,
            eval_minutes=parse_time(st.eval_checkpoints_time) if getattr(st, "eval_checkpoints", None) else 0,
            time_auto=auto,
            cluster=cl,
        )
        jobs.append(_sized(cfg, job) if auto else job)
    return jobs


def gpu_hours(job: StageJob, hours: Optional[float] = None) -> float:
    """GPU-hours of the whole stage at full walltime, or of `hours` of node time (status: sacct's)."""
    if hours is not None:
        return job.nodes * job.gpus_per_node * hours
    return job.array * job.nodes * job.gpus_per_node * job.hours


def billing_pool(job: StageJob, cluster) -> Optional[str]:
    """The LUMI allocation a job's billing draws on: "GPU" (GPU-hours, LUMI-G) or "CPU" (core-hours, LUMI-C)."""
    if cluster.system != "lumi":
        return None
    return lumi.PARTITIONS.get(job.partition or "standard-g", lumi.PARTITIONS["standard-g"]).pool


def billing(job: StageJob, cluster, hours: Optional[float] = None) -> Optional[float]:
    """LUMI billing units for `hours` (default: the full walltime), in the job's pool (billing_pool); None off
    LUMI."""
    if cluster.system != "lumi":
        return None
    mem_gb = lumi.parse_mem_gb(cluster.mem)
    if cluster.mem_per_gpu and mem_gb is None:  # --mem=0 (all of the node) wins over a per-GCD amount
        mem_gb = (lumi.parse_mem_gb(cluster.mem_per_gpu) or 0) * job.gpus_per_node
    copies = job.array if hours is None else 1
    return copies * lumi.billing_units(job.partition or "standard-g", job.nodes, job.hours if hours is None else hours,
                                       job.gpus_per_node, job.tasks_per_node * job.cpus_per_task, mem_gb)


def job_record(job: StageJob) -> dict:
    """The job as plan.json holds it: what was planned, without its cluster (config.yaml has that)."""
    return {f.name: getattr(job, f.name) for f in fields(StageJob) if f.name != "cluster"}


def job_from_record(record: dict, cluster=None) -> StageJob:
    """A StageJob from plan.json (fields a later version added are ignored)."""
    planned = {f.name: record[f.name] for f in fields(StageJob) if f.name in record and f.name != "cluster"}
    return StageJob(**planned, cluster=cluster)


def run_jobs(cfg, run_dir) -> List[tuple]:
    """(job, prediction or None) per stage of a run, as planned when it was launched (plan.json);
    run dirs made before plan.json existed are planned again with today's code."""
    from dfm_hpc import rundir

    records = rundir.read_plan(run_dir)
    if records is None:
        return [(j, None) for j in plan(cfg)]
    return [(job_from_record(r, stage_cluster(cfg, r["stage"])), r.get("prediction")) for r in records]
