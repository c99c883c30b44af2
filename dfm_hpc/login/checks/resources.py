"""What each job asks the scheduler for: the cluster profile's memory and account forms, walltimes in Slurm's
form, nodes, tasks, cores, GPUs, memory and walltime against the partition (LUMI's limits in lumi.py), per-user
job limits, the stop signal within the walltime, and the training batch layout."""

from __future__ import annotations

import re
from typing import List

from dfm_hpc import lumi
from dfm_hpc.plan import StageJob
from dfm_hpc.registry import TRAINED_STAGES
from dfm_hpc.tokens import data_parallel

MAX_ARRAY = 1000  # Slurm's default MaxArraySize is 1001 (indices 0-1000)


def check_cluster(cfg, jobs) -> List[str]:
    cl, out = cfg.cluster, []
    for key in ("mem", "mem_per_gpu"):
        try:
            lumi.parse_mem_gb(cl[key])
        except ValueError as e:
            out.append(f"cluster.{key}: {e}")
    if cl.system == "lumi" and (not cl.account or not lumi.ACCOUNT_RE.match(str(cl.account))):
        out.append(f"cluster.account={cl.account!r}: LUMI accounts are project_ + 9 digits, e.g. "
                   "cluster.account=project_465000670 (or export SBATCH_ACCOUNT)")
    out += _placeholders(cl, "cluster")
    if cl.device and cl.device not in cfg.throughput.devices:
        out.append(f"cluster.device={cl.device!r}: no such throughput entry; known: "
                   f"{', '.join(cfg.throughput.devices)} (add one in conf/throughput/, docs/clusters.md)")
    return out


def _placeholders(node, where: str) -> List[str]:
    """A profile's values still written <like this> (conf/cluster/cuda_slurm.yaml): the keys the user must fill in."""
    out = []
    for key, value in (node.items() if hasattr(node, "items") else []):
        if hasattr(value, "items"):
            out += _placeholders(value, f"{where}.{key}")
        elif isinstance(value, str) and value.startswith("<") and value.endswith(">"):
            out.append(f"{where}.{key} is not set ({value}): give {where}.{key}=... on the command line or in your "
                       "copy of the profile (docs/clusters.md)")
    return out


def _walltime(text: str) -> str:
    """Why a walltime is not Slurm's form, or ''. parse_time reads 99:99 as 1:40; Slurm would not."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(text).strip())
    if not m:
        return "not [D-]HH:MM:SS"
    days, a, b, c = m.groups()
    rest = [x for x in (b, c) if x is not None]
    if any(len(x) != 2 or int(x) > 59 for x in rest):
        return "minutes and seconds are two digits, 00-59"
    if days is not None and int(a) > 23:
        return "with a day count the hours are 0-23"
    return ""


def check_times(cfg, jobs) -> List[str]:
    out = []
    for s in cfg.stages:
        for key in ("time", "fallback_time"):  # time=auto: sized to the prediction (plan.py)
            why = "" if key == "time" and str(cfg[s].time).strip() == "auto" else _walltime(cfg[s][key])
            if why:
                out.append(f"{s}.{key}={cfg[s][key]!r}: {why}; e.g. {s}.{key}=12:00:00 or 2-00:00:00")
    return out


def check_relations(cfg, jobs) -> List[str]:
    """Rules between a job's keys: the stop signal within the walltime, GPUs on a GPU partition."""
    out: List[str] = []
    cl = cfg.cluster
    for j in jobs:
        if cl.scheduler == "slurm" and cl.signal_delay_s > j.minutes * 60 > 0:
            out.append(f"cluster.signal_delay_s={cl.signal_delay_s}: longer than {j.stage}'s walltime "
                       f"({j.minutes} min); the stop signal would come at the start")
            break
    if cl.system != "lumi" and cl.scheduler == "slurm" and cl.gpus_per_node:
        for j in jobs:  # the profile's gpus_per_node is what its nodes have (LUMI's own rule: _check_resources)
            if j.gpus_per_node > cl.gpus_per_node:
                out.append(f"{j.stage}.gpus_per_node={j.gpus_per_node}: cluster={cl.name}'s nodes have "
                           f"{cl.gpus_per_node} GPUs (cluster.gpus_per_node); ask for at most {cl.gpus_per_node} "
                           f"per node and more {j.stage}.nodes")
    if cl.system == "lumi":
        for j in jobs:
            if j.gpus_per_node == 0 and (j.partition or "").endswith("-g"):
                out.append(f"{j.stage}: gpus_per_node=0 on {j.partition}, a GPU partition (billed per GCD or node); "
                           f"give {j.stage}.gpus_per_node=1 or more")
    return out


def check_jobs(cfg, jobs) -> List[str]:
    """Resources against the partition; for training stages the batch and the memory per GPU."""
    from dfm_hpc.login.checks.memory import check_fits  # memory per GCD/GPU (docs/performance.md)

    out: List[str] = []
    for job in jobs:
        out += _check_resources(job, job.cluster)
    out += _check_job_limits(cfg, jobs)
    for job in jobs:
        if job.stage in TRAINED_STAGES:
            out += _check_batch(job, cfg[job.stage])
    for job in jobs:
        if job.stage in TRAINED_STAGES:
            out += check_fits(job, cfg)
    return out


def _node_gpus_here(s: str, job: StageJob, cl) -> List[str]:
    from dfm_hpc import gpus

    var, _, ids = cl.visible_devices.partition("=")
    want = [i for i in ids.split(",") if i][:job.gpus_per_node]
    here = gpus.here()
    if set(want) <= {g.id for g in here.gpus}:
        return []
    return [f"{s}: the run's GPUs ({var}={','.join(want)}) are not all on this machine (found: "
            f"{', '.join(g.id for g in here.gpus) or 'none'}); run it where it was planned, or give this machine's: "
            f"cluster.gpus_per_node, cluster.tasks_per_node and cluster.visible_devices='CUDA_VISIBLE_DEVICES=<ids>'"]


def _check_resources(job: StageJob, cl) -> List[str]:
    p: List[str] = []
    s = job.stage
    if job.array > MAX_ARRAY:  # Slurm's limit, not the key's own range (that is schema.StageConfig's)
        p.append(f"{s}.array={job.array}: at most {MAX_ARRAY} copies (Slurm's array limit)")
    if job.minutes <= 0:
        p.append(f"{s}.time: the walltime must be positive")
    if cl.scheduler == "local" and job.nodes > 1:
        p.append(f"{s}.nodes={job.nodes}: cluster=local runs on this machine only; use nodes=1 or a Slurm cluster")
    if cl.get("gpus") is not None and job.gpus_per_node > len(cl.gpus):  # cluster=node: what was found here
        p.append(f"{s}: {job.gpus_per_node} GPUs asked for, {len(cl.gpus)} found on this machine (cluster.gpus)")
    elif cl.get("gpus") is not None and job.gpus_per_node:  # a rerun elsewhere: the GPUs the run recorded are here
        p += _node_gpus_here(s, job, cl)
    if cl.system != "lumi":
        return p

    part = lumi.PARTITIONS.get(job.partition or "")
    if part is None:
        p.append(f"{s}: partition {job.partition!r} is not a LUMI partition "
                 f"({', '.join(lumi.PARTITIONS)})")
        return p
    if job.nodes > part.max_nodes:
        p.append(f"{s}.nodes={job.nodes}: {part.name} allows at most {part.max_nodes} nodes per job")
    if job.hours > part.max_hours:
        p.append(f"{s}.time={job.minutes // 60}h{job.minutes % 60:02d}: over {part.name}'s maximum of "
                 f"{part.max_hours:g} h; lower it (training resumes from checkpoints across jobs)")
    cores = job.tasks_per_node * job.cpus_per_task
    if part.cpu:  # LUMI-C
        if job.gpus_per_node:
            p.append(f"{s}: gpus_per_node={job.gpus_per_node} on {part.name}, a LUMI-C partition without GPUs; "
                     f"use {s}.partition=small-g (or standard-g) for a GPU")
        if cores > lumi.CPU_CORES_PER_NODE:
            p.append(f"{s}: {job.tasks_per_node} tasks x {job.cpus_per_task} cpus = {cores} cores per node; "
                     f"a LUMI-C node has {lumi.CPU_CORES_PER_NODE}")
        return p
    if cores > lumi.USABLE_CORES_PER_NODE:
        p.append(f"{s}: {job.tasks_per_node} tasks x {job.cpus_per_task} cpus = {cores} cores per node; "
                 f"LUMI-G nodes have {lumi.USABLE_CORES_PER_NODE} usable (use cpus_per_task=7 with 8 tasks)")
    if job.gpus_per_node > lumi.GCDS_PER_NODE:
        p.append(f"{s}: gpus_per_node={job.gpus_per_node}; a LUMI-G node has {lumi.GCDS_PER_NODE} GCDs")
    if (cl.launcher == "srun" and job.gpus_per_node and job.tasks_per_node > job.gpus_per_node):
        p.append(f"{s}: {job.tasks_per_node} tasks per node for {job.gpus_per_node} GCDs; "
                 "the srun launcher runs one rank per GCD")
    if part.whole_nodes and job.gpus_per_node not in (0, lumi.GCDS_PER_NODE):
        p.append(f"{s}: {part.name} allocates whole nodes; use gpus_per_node=8 (or cluster=lumi_small)")
    mem = _mem_or_none(cl.mem)
    if mem is not None and mem > lumi.NODE_MEMORY_GB:
        p.append(f"cluster.mem={cl.mem}: at most {lumi.NODE_MEMORY_GB}G per LUMI-G node (or 0 for all of it)")
    mpg = _mem_or_none(cl.mem_per_gpu)
    bound = lumi.GCD_MEMORY_GB if part.whole_nodes else lumi.MEM_PER_GCD_GB
    if mpg is not None and job.gpus_per_node and mpg > bound:
        p.append(f"{s}: cluster.mem_per_gpu={cl.mem_per_gpu}: at most {bound}G per GCD on {part.name} "
                 f"({lumi.GCDS_PER_NODE} x {bound}G = the {lumi.NODE_MEMORY_GB}G a node has for jobs)")
    if mem is not None and cl.mem_per_gpu and job.gpus_per_node:
        p.append(f"{s}: cluster.mem={cl.mem} and cluster.mem_per_gpu={cl.mem_per_gpu}: sbatch takes one of them; "
                 "set the other to null")
    return p


def _check_job_limits(cfg, jobs) -> List[str]:
    """A chain must fit the partition's per-user job limit whole: sbatch would refuse the rest of it
    halfway (dev-g: 2 submitted, 1 running)."""
    if cfg.cluster.system != "lumi":
        return []
    out = []
    for name, part in lumi.PARTITIONS.items():
        mine = [j for j in jobs if j.partition == name]
        count = sum(j.array for j in mine)
        if count > part.max_jobs:
            route = ("use cluster=lumi (standard-g, with small-g for the single-process stages)"
                     if cfg.cluster.name != "lumi" else
                     _other_partition(mine, name, count) or "give the arrays fewer copies (<stage>.array)")
            out.append(f"{name} accepts at most {part.max_jobs} submitted jobs per user ({part.max_running} running); "
                       f"this run is {count} stage jobs there ({', '.join(j.stage for j in mine)}), so sbatch would "
                       f"refuse the chain halfway. Run at most {part.max_jobs} stages per launch (e.g. stages=["
                       f"{','.join(j.stage for j in mine[:part.max_jobs])}]), or {route}")
    return out


def _other_partition(mine: List[StageJob], name: str, count: int, used=None) -> str:
    """A partition of the same pool (GPU or CPU, not a dev one) that would take these jobs, as a route: ''."""
    here = lumi.PARTITIONS[name]
    for other in lumi.PARTITIONS.values():
        if other.name == name or other.dev or other.cpu != here.cpu or (other.whole_nodes and not here.whole_nodes):
            continue  # a job sized for a slice is not one for whole nodes
        fits = all(j.nodes <= other.max_nodes and j.hours <= other.max_hours for j in mine)
        if fits and count + (used or {}).get(other.name, 0) <= other.max_jobs:
            stages = sorted({j.stage for j in mine})
            keys = " ".join(f"{s}.partition={other.name}" for s in stages)
            return f"put {', '.join(stages)} on {other.name} ({keys}; its own limit of {other.max_jobs})"
    return ""


def check_sweep_counts(classes) -> List[str]:
    """What a sweep's point count decides (issue #24): per-user job limits, array tasks included, and the size
    of the one array a sweep's points go out as. `classes`: (cfg, jobs, points) for points that have these jobs
    (compose: before any point's config is made, from one point per family whose plan reads no swept key; the
    launch: each point's plan). Counts of points the caller could not plan are left out: a refusal stays right.
    An array's tasks count one by one against MaxSubmitJobs (sbatch: "Invalid job array specification",
    SESYNC-ci/rslurm#73); `%` throttling lowers only the running count, so it is no route for either limit."""
    if not classes:
        return []
    cfg, out = classes[0][0], []
    points = sum(n for _, _, n in classes)
    if cfg.cluster.system == "lumi":
        totals = {name: sum(n * sum(j.array for j in jobs if j.partition == name) for _, jobs, n in classes)
                  for name in lumi.PARTITIONS}
        for name, part in lumi.PARTITIONS.items():
            per_point = max(sum(j.array for j in jobs if j.partition == name) for _, jobs, _ in classes)
            if totals[name] <= part.max_jobs or per_point > part.max_jobs:  # one point alone: _check_job_limits
                continue
            mine = [j for _, jobs, _ in classes for j in jobs if j.partition == name]
            other = _other_partition(mine, name, totals[name], totals)
            out.append(f"{name} accepts at most {part.max_jobs} submitted jobs per user, array tasks included "
                       f"({part.max_running} running); this sweep queues {totals[name]} jobs there ({points} points"
                       f" x {per_point} job(s)), so sbatch would refuse it halfway. Sweep at most "
                       f"{part.max_jobs // max(per_point, 1)} point(s) per launch (narrow the sweep's lists; launch "
                       f"the rest once these have left the queue)" + (f", or {other}" if other else ""))
    if cfg.cluster.scheduler == "slurm" and points > MAX_ARRAY and \
            all(j.array == 1 for _, jobs, _ in classes for j in jobs):
        out.append(f"the sweep has {points:,} points: its points go out as one Slurm array per stage, and Slurm "
                   f"takes at most {MAX_ARRAY} tasks per array (MaxArraySize); sweep at most {MAX_ARRAY} points "
                   "per launch (narrow the sweep's lists)")
    return out


def check_sweep_job_limits(cfgs, plans) -> List[str]:
    """A sweep's points are queued together, so their jobs count against a partition's per-user
    limit together (each point alone is checked by _check_job_limits). `plans`: each point's jobs
    (a sweep's points share one list where their plans are the same: login/sweep.py)."""
    if len(cfgs) < 2:
        return []
    classes = {}
    for cfg, jobs in zip(cfgs, plans):
        c = classes.setdefault(id(jobs), [cfg, jobs, 0])
        c[2] += 1
    return check_sweep_counts([tuple(c) for c in classes.values() if c[1] is not None])


def _mem_or_none(text):
    try:
        return lumi.parse_mem_gb(text)
    except ValueError:
        return None  # reported once, by check_cluster


def _check_batch(job: StageJob, st) -> List[str]:
    dp = data_parallel(st, job.world_size)  # ranks reading different sequences (world / sequence_parallel)
    per_step = dp * st.micro_batch_size
    if per_step < 1 or st.global_batch_size < 1:  # said by check_ranges
        return []
    if st.global_batch_size % per_step:
        fits = [g for g in range(per_step, 4 * st.global_batch_size + per_step, per_step)]
        near = min(fits, key=lambda g: abs(g - st.global_batch_size))
        ranks = (f"world size {job.world_size}" if dp == job.world_size else
                 f"{dp} data-parallel ranks (world size {job.world_size} / sequence_parallel {job.world_size // dp})")
        return [f"{job.stage}.global_batch_size={st.global_batch_size} is not divisible by {ranks} x "
                f"micro_batch_size {st.micro_batch_size} = {per_step}; e.g. {job.stage}.global_batch_size={near}"]
    return []
