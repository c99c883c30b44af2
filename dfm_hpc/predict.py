"""What each stage runs, and how long it should take: its work (tokens, segments, seconds) divided by
the throughput table (config group `throughput`, conf/throughput/default.yaml). Pure: login node.

A prediction is a dict (it goes into plan.json as it is):
  summary   one line: model, translator/backend, method, ZeRO, precision, seq len, batch, steps, data
  basis     "work" (counted from the config) | "fixed" (the device's stage_minutes) | None (no estimate)
  work      e.g. "41.9 B tokens"; rate: e.g. "1,151 tok/s x 64 devices, 30 % MFU of 191.5 TF"
  device    the throughput entry used; hours: predicted wall hours, every start included
  starts, requeues   job starts needed within the walltime (requeues = starts - 1)
  gpu_hours, billing   predicted cost (billing: LUMI units of the pool's allocation, None elsewhere)
  pool                 that allocation: GPU (GPU-hours, LUMI-G) or CPU (core-hours, LUMI-C); None off LUMI
  resumable   whether a restart continues from the stage's files
"""

from __future__ import annotations

import math
import re
from typing import Dict, List, Optional

from dfm_hpc import estimates, model_shape
from dfm_hpc.plan import StageJob, billing, billing_pool, gpu_hours, job_record, max_minutes
from dfm_hpc.registry import STAGES, TRAINED_STAGES
from dfm_hpc.tokens import data_parallel, sequence_parallel, train_tokens

HANG_FLOOR_MIN = 30.0  # the hang watchdog: a 7B model's load, a ZeRO-3 save, an evaluation pass: no beat for minutes
HANG_STEPS = 10  # its auto limit is at least this many predicted steps: a slow step is not a hang
LUMI_C = "lumi_c"  # the throughput entry of a stage without GPUs on LUMI (a LUMI-C core allocation)
LORA_FLOPS = 2 / 3  # LoRA skips the weight gradients: ~2/3 of full training (TRL "LoRA without regret")


def _num(x: float) -> str:
    """41_943_040_000 -> '41.9 B'."""
    for div, unit in ((1e9, " B"), (1e6, " M"), (1e3, " k")):
        if abs(x) >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:.0f}"


def pretty_translator(tr) -> str:
    """madlad400_3b / google/madlad400-3b-mt -> 'MADLAD-400 3B'; else the config's name."""
    m = re.search(r"madlad[-_]?400[-_](\d+b)", f"{tr.name} {tr.name_or_path}", re.I)
    return f"MADLAD-400 {m.group(1).upper()}" if m else str(tr.name)


def device_for(cfg, job: StageJob) -> str:
    want = str(cfg.throughput.device)
    if want != "auto":
        return want
    if job.gpus_per_node == 0:  # LUMI-C's cores, not the dev machine's (the cpu entry predicts tiny runs there)
        return LUMI_C if cfg.cluster.system == "lumi" else "cpu"
    if cfg.cluster.device:
        return str(cfg.cluster.device)
    return "mi250x_gcd" if cfg.cluster.system == "lumi" else "h100"


def _devices(job: StageJob) -> int:
    """Devices a stage's work is split over: GPUs (GCDs), or ranks without GPUs."""
    per_node = job.gpus_per_node if job.gpus_per_node else job.tasks_per_node
    return job.array * job.nodes * per_node


def _method(cfg, stage: str) -> str:
    if stage == "cpt" or cfg.peft.method == "none":
        return "full"
    return f"{'QLoRA' if cfg.peft.method == 'qlora' else 'LoRA'} r={cfg.peft.r}"


def _workers(n: int) -> str:
    return f"{n} worker{'s' * (n != 1)}"


def _pct(x: float) -> str:
    return f"{x * 100:.3g} %"


def _checkpoint_evals(st, job) -> str:
    """`<stage>.eval_checkpoints`: how many of the stage's saves get their own evaluate job (login/checkpoint_evals.py;
    time-triggered saves, save_every_minutes, come on top)."""
    n = job.eval_checkpoints
    if not n:
        return ""
    saves = st.max_steps // st.save_every_steps + (1 if st.max_steps % st.save_every_steps else 0)
    if saves < 2:
        return "; checkpoint evaluations: none before the last save (save_every_steps >= max_steps): no curve"
    return (f"; checkpoint evaluations: {saves // n} of its {saves} saves, each by its own one-device job "
            f"(at most {duration(job.eval_minutes * 60)})")


def _zero(cfg) -> str:
    ds = cfg.deepspeed
    off = [w for w, on in (("optimizer", ds.offload_optimizer), ("params", ds.offload_params)) if on]
    return f"ZeRO-{ds.stage}" + (f" (offload {'+'.join(off)})" if off else "")


def _train_data(cfg, stage: str) -> str:
    st = cfg[stage]
    if stage == "cpt":
        mix = cfg.data.mixture if "mixture" in cfg.data else []
        return f"{len(mix)}-source mixture" if mix else str(cfg.data.corpus or "no corpus")
    return str(st.dataset or ("this run's pii/merge output" if "merge" in cfg.stages else f"{stage}.dataset unset"))


def summary(cfg, stage: str, job: StageJob) -> str:
    st = cfg[stage]
    if stage in TRAINED_STAGES:
        method = _method(cfg, stage)
        shape = model_shape.of(cfg)
        params = f"{_num(estimates.param_count(shape))} params" if shape else f"? params; shape unknown: {shape.reason}"
        prec = st.precision if job.gpus_per_node else "fp32 (CPU)"
        dp = data_parallel(st, job.world_size)  # ranks sharing a sequence read one batch
        per_rank = st.micro_batch_size * dp
        accum = st.global_batch_size // per_rank if per_rank and st.global_batch_size % per_rank == 0 else "?"
        extra = f", beta {st.beta}" if stage == "dpo" else (", packed" if stage == "sft" and st.packing else "")
        if sequence_parallel(st) > 1:
            extra += f", sequence parallel {sequence_parallel(st)}"
        return (f"{stage.upper()}, {'full training' if method == 'full' else method}, of {cfg.model.name} "
                f"({params}), {_zero(cfg)}, {prec}, "
                f"{st.attn_implementation}{', checkpointing' if st.gradient_checkpointing else ''}, seq {st.seq_len}, "
                f"global batch {st.global_batch_size} (micro {st.micro_batch_size} x {dp} "
                f"{'data-parallel ' if dp != job.world_size else ''}ranks x "
                f"accum {accum}), {st.max_steps:,} steps = {_num(train_tokens(st, stage))} tokens{extra}"
                f"{_checkpoint_evals(st, job)}; data: {_train_data(cfg, stage)}")
    if stage == "translate":
        tr = cfg.translator
        size = cfg.throughput.datasets.get(cfg.data.oasst2)
        data = f"{cfg.data.oasst2}" + (f" (~{_num(size.messages)} messages, ~{_num(size.source_tokens)} source tokens)"
                                        if size else " (size unknown)")
        cap = f", first {st.max_messages} messages" if st.max_messages else ""
        return (f"translate {'+'.join(st.source_langs)}->{tr.target_lang} with {pretty_translator(tr)} "
                f"({tr.name_or_path}, backend {tr.backend}, {tr.dtype}, "
                f"{'greedy' if tr.num_beams == 1 else f'{tr.num_beams} beams'}), {st.shards} shards over "
                f"{_workers(_devices(job))}, {tr.max_batch_tokens:,}-token sorted batches{cap}; data: {data}")
    if stage == "merge":
        return f"merge translations into SFT chats ({st.sft_path} path) and DPO pairs; drop: {', '.join(st.drop)}"
    if stage == "pii":
        return (f"PII filter ({', '.join(st.types)} -> {st.replacement}) of "
                f"{st.input or 'the merge outputs'}, {st.shards} shards over {_workers(_devices(job))}")
    if stage == "evaluate":
        models = ", ".join(st.models) or "base + " + ", ".join(s for s in cfg.stages if s in TRAINED_STAGES)
        g, after = st.gate, list(cfg.stages)[list(cfg.stages).index("evaluate") + 1:]  # the gate (job/gate.py)
        stop = " (warn only)" if g.warn_only else f": stops {', '.join(after)}" if after else ": the run ends FAILED"
        gate = (f"; gate: {', '.join(g.models) or 'each'} vs {g.reference}, regressed if delta + {g.k:g} SE < "
                f"-{g.max_drop:g}{stop}" if g.enabled else "")
        return (f"evaluate {models}: perplexity on {st.max_eval_texts} texts"
                f"{', EuroEval' if st.euroeval else ''}, {st.generation_prompts} generations{gate}")
    if stage == "card":
        return f"model card ({st.license}{', ' + st.repo_id if st.repo_id else ''}) and datasheets"
    if stage == "tokenize":
        shards = f", {st.shards} shards" if "shards" in st else ""
        return (f"tokenize {_train_data(cfg, 'cpt')} with {cfg.model.name}'s tokenizer into token stores{shards} "
                f"over {_workers(_devices(job))}")
    if stage == "demo":
        return f"demo: all_reduce over {job.world_size} ranks, sleep {st.sleep_s:g} s"
    return stage


def mfu_key(cfg, stage: str) -> str:
    """The throughput entry a training stage's speed comes from."""
    return "train_mfu" if _method(cfg, stage) == "full" else "lora_mfu"


def train_flops_per_token(cfg, stage: str) -> Optional[float]:
    """Model FLOPs per trained token: 6N + 12LHS (estimates.flops_per_token), x 2/3 for LoRA, + 2N for
    DPO's reference forward (tokens of chosen and rejected both count). None when the model's shape is
    unknown (model_shape.of says why)."""
    shape = model_shape.of(cfg)
    if not shape:
        return None
    n = estimates.param_count(shape)
    fpt = estimates.model_flops_per_token(shape, cfg[stage].seq_len)
    if _method(cfg, stage) != "full":
        fpt *= LORA_FLOPS
    return fpt + (2 * n if stage == "dpo" else 0)


def _work(cfg, stage: str, job: StageJob, dev) -> Optional[tuple]:
    """(seconds on the stage's devices, work text, rate text) from counted work, or None."""
    st, n = cfg[stage], _devices(job)
    if stage in TRAINED_STAGES:
        mfu, fpt = dev[mfu_key(cfg, stage)], train_flops_per_token(cfg, stage)
        if not (mfu and dev.peak_tflops and fpt):
            return None  # no figure, or no shape to count FLOPs from (the summary says why)
        tps = mfu * dev.peak_tflops * 1e12 / fpt
        tokens = train_tokens(st, stage)
        return (tokens / (tps * n), f"{_num(tokens)} tokens",
                f"{tps:,.0f} tok/s x {n} devices, {_pct(mfu)} MFU of {dev.peak_tflops:g} TF")
    if stage == "translate":
        tr = cfg.translator
        rates = dev.translate_tokens_per_s
        rate = rates.get(f"{tr.name}/{tr.backend}") or rates.get(str(tr.name))
        size = cfg.throughput.datasets.get(cfg.data.oasst2)
        if not (rate and size and size.source_tokens):
            return None
        share = min(1.0, st.max_messages / size.messages) if st.max_messages and size.messages else 1.0
        tokens = size.source_tokens * share
        return (tokens / (rate * n), f"{_num(tokens)} source tokens", f"{rate:,.0f} tok/s x {_workers(n)}")
    if stage == "demo":
        return (st.sleep_s, f"{st.sleep_s:g} s of sleep", "as configured")
    return None


def _estimate(cfg, job: StageJob, dev) -> Optional[tuple]:
    """(seconds of work on the stage's devices, basis, work text, rate text), start-ups left out; None: no estimate."""
    work = _work(cfg, job.stage, job, dev)
    if work is not None:
        return work[0], "work", work[1], work[2]
    if job.stage in dev.stage_minutes:
        return (dev.stage_minutes[job.stage] * 60, "fixed", "fixed estimate",
                f"throughput.devices.{device_for(cfg, job)}.stage_minutes.{job.stage}")
    return None


AUTO_MIN_MINUTES = 10  # the shortest auto walltime: a start on a busy node varies by minutes; shorter gains nothing


def _round_up(minutes: float) -> int:
    """Up to 5 minutes below an hour, 15 below 6 hours, 30 above: a walltime a person reads at a glance."""
    step = 5 if minutes <= 60 else 15 if minutes <= 360 else 30
    return max(AUTO_MIN_MINUTES, math.ceil(minutes / step - 1e-9) * step)


def auto_minutes(cfg, job: StageJob) -> Optional[int]:
    """time=auto: the predicted work x cluster.time_factor + one start-up, plus the stop signal's lead
    (cluster.signal_delay_s) for a stage that stops at it (a resumable one on Slurm), rounded up (_round_up),
    within the partition's longest walltime (plan.max_minutes; past it a resumable stage requeues, and one that
    cannot resume is refused: problems). None where there is no prediction (the stage's fallback_time)."""
    dev = cfg.throughput.devices.get(device_for(cfg, job))
    est = _estimate(cfg, job, dev) if dev is not None else None
    if est is None:
        return None
    cl, spec = job.cluster if job.cluster is not None else cfg.cluster, STAGES.get(job.stage)
    signal_s = cl.signal_delay_s if cl.scheduler == "slurm" else 0
    stops = bool(spec and spec.resumable)  # the others do not stop at the signal: they run to the walltime
    want = _round_up((est[0] * cl.time_factor + dev.startup_s + (signal_s if stops else 0)) / 60)
    if want * 60 <= signal_s:  # the signal must come after the start (checks: resources.check_relations)
        want = _round_up(signal_s / 60 + 1)
    cap = max_minutes(job)
    return min(want, cap) if cap else want


def predict(cfg, job: StageJob) -> Dict:
    stage = job.stage
    spec = STAGES.get(stage)
    out = {"summary": summary(cfg, stage, job), "basis": None, "device": device_for(cfg, job), "work": None,
           "rate": None, "hours": None, "starts": None, "requeues": None, "gpu_hours": None, "billing": None,
           "pool": billing_pool(job, job.cluster),
           "resumable": bool(spec and spec.resumable), "max_minutes": max_minutes(job)}
    dev = cfg.throughput.devices.get(out["device"])
    est = _estimate(cfg, job, dev) if dev is not None else None
    if est is None:
        return out
    seconds, out["basis"], out["work"], out["rate"] = est
    wall = job.minutes * 60
    starts = 1
    if wall > dev.startup_s:  # each start pays the start-up again
        starts = max(1, math.ceil(seconds / (wall - dev.startup_s)))
    # a stage that cannot resume runs once (and is refused if that cannot fit: problems())
    hours = (seconds + (starts if out["resumable"] else 1) * dev.startup_s) / 3600
    b = billing(job, job.cluster, hours=hours)
    out.update(hours=round(hours, 4), starts=starts, requeues=starts - 1,
               gpu_hours=round(gpu_hours(job, hours) * job.array, 4),
               billing=None if b is None else round(b * job.array, 4))
    return out


def hang_minutes(cfg, job: StageJob, p: Optional[Dict] = None) -> Optional[float]:
    """Minutes without progress before the watchdog ends the step: cluster.hang_minutes, else (auto) the
    larger of HANG_FLOOR_MIN and the start-up plus HANG_STEPS predicted steps; None when it is off (0, or a
    stage without frequent safe points: registry.StageSpec.beats)."""
    spec = STAGES.get(job.stage)
    if job.cluster.scheduler != "slurm" or not (spec and spec.beats):
        return None  # the watchdog lives in the batch script, and watches stages with frequent safe points
    set_ = job.cluster.hang_minutes
    if set_ is not None:
        return float(set_) or None
    p = predict(cfg, job) if p is None else p
    steps = getattr(cfg[job.stage], "max_steps", None)
    if not (p.get("hours") and steps):
        return HANG_FLOOR_MIN
    dev = cfg.throughput.devices.get(p["device"])
    step_min = p["hours"] * 60 / steps  # start-ups included: an upper bound
    return max(HANG_FLOOR_MIN, math.ceil((dev.startup_s if dev else 0) / 60 + HANG_STEPS * step_min))


def records(cfg, jobs: List[StageJob]) -> List[Dict]:
    """plan.json's stages: each job's fields with its prediction (and the watchdog's limit that follows from it)."""
    out = []
    for j in jobs:
        p = predict(cfg, j)
        j.hang_minutes = hang_minutes(cfg, j, p)
        out.append({**job_record(j), "prediction": p})
    return out


def duration(seconds: float) -> str:
    """A duration as Slurm shows one, [D-]HH:MM:SS: 90061 -> '1-01:01:01' (strftime would wrap at a day)."""
    s = max(0, round(seconds))
    return (f"{s // 86400}-" if s >= 86400 else "") + f"{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def fmt_hours(hours: Optional[float]) -> str:
    """0.25 -> '0:15', 158.1 -> '158:06'; None -> '?'."""
    if hours is None:
        return "?"
    minutes = round(hours * 60)
    return f"{minutes // 60}:{minutes % 60:02d}"


def warnings(records_: List[Dict]) -> List[str]:
    """A line per stage predicted to outlast its walltime (it will need requeues)."""
    out = []
    for r in records_:
        p = r["prediction"]
        if p["requeues"] and p["resumable"]:
            wall = f"{r['minutes'] // 60}:{r['minutes'] % 60:02d}"
            kept = {"evaluate": "scored models and benchmarks"}.get(
                r["stage"], "checkpoints" if r["stage"] in TRAINED_STAGES else "finished chunks")
            out.append(f"{r['stage']}: predicted {p['hours']:,.1f} h > its {wall} "
                       f"walltime: {p['requeues']} requeue{'s' * (p['requeues'] != 1)} ({p['starts']} starts); it "
                       f"resumes from its {kept}")
    return out


def problems(records_: List[Dict]) -> List[str]:
    """Stages that cannot finish: predicted past the walltime, and a restart would start over."""
    out = []
    for r in records_:
        p = r["prediction"]
        if p["requeues"] and not p["resumable"]:
            need = math.ceil(p["hours"] * 60 * 1.2)
            cap = p.get("max_minutes")
            auto = "" if r.get("time_auto") else f" (or {r['stage']}.time=auto)"
            fix = (f"set {r['stage']}.time={need // 60:02d}:{need % 60:02d}:00{auto} or give it less work"
                   if not cap or need <= cap else
                   f"that is past {r.get('partition') or 'the partition'}'s longest walltime "
                   f"({cap // 60}:{cap % 60:02d}): give it more workers ({r['stage']}.nodes or .array) or less work")
            out.append(f"{r['stage']}: predicted {p['hours']:,.2f} h ({p['work']} at {p['rate']}) > its walltime "
                       f"{r['minutes'] // 60}:{r['minutes'] % 60:02d}, and {r['stage']} cannot resume after a requeue "
                       f"(it starts over); {fix} (predicted with throughput.devices.{p['device']}; calibrate "
                       "corrects it)")
    return out
