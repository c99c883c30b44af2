"""`python -m dfm_hpc calibrate RUN`: the throughput entries a finished run measured, as YAML for a
conf/throughput/<name>.yaml (docs/performance.md#predictions), with each stage's prediction beside
what it took. Reads the run dir only (metrics.jsonl, the translate plan, elapsed times): no torch."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional

import yaml

from dfm_hpc import config_io, model_shape, predict, rundir
from dfm_hpc.plan import run_jobs
from dfm_hpc.registry import TRAINED_STAGES


def _elapsed_s(sdir: Path) -> Optional[float]:
    """Wall seconds of a finished stage: local.py's elapsed.json, else sacct (longest array task)."""
    local = sdir / rundir.ELAPSED
    if local.exists():
        return float(json.loads(local.read_text())["elapsed_s"])
    if (sdir / rundir.JOB_ID).exists():
        from dfm_hpc.login.status import _lookup, slurm_states

        jid = (sdir / rundir.JOB_ID).read_text().strip()
        row = _lookup(slurm_states([jid]), jid)
        return float(row[2]) if row else None
    return None


def _train_tps(sdir: Path) -> Optional[float]:
    """Median tokens/s per device over the logged steps (the first log, with warm-up, left out)."""
    f = sdir / "metrics.jsonl"
    if not f.exists():
        return None
    rows = [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()]
    tps = [r["tokens_per_s_per_device"] for r in rows if r.get("tokens_per_s_per_device")]
    tps = tps[1:] if len(tps) > 2 else tps
    return statistics.median(tps) if tps else None


def measure(run: Path) -> tuple:
    """({device: {entry: value}}, [comment lines]) for the stages of `run` that finished."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = config_io.load_config(run)
    except OmegaConfBaseException:  # another version's run: lenient drops its throughput entries too
        cfg = config_io.load_config(run, lenient=True)
    found: Dict[str, dict] = {}
    notes: List[str] = []
    starts: Dict[str, List[float]] = {}
    fixed: Dict[str, Dict[str, float]] = {}
    for job, pred in run_jobs(cfg, run):
        sdir = rundir.stage_dir(run, job.stage)
        if not (sdir / rundir.DONE).exists():
            notes.append(f"{job.stage}: not finished, nothing measured")
            continue
        device = (pred or {}).get("device") or predict.device_for(cfg, job)
        dev = cfg.throughput.devices.get(device)
        entry = found.setdefault(device, {})
        secs = _elapsed_s(sdir)
        startup = dev.startup_s if dev else 0.0
        n = predict._devices(job)
        said = ""
        fpt = predict.train_flops_per_token(cfg, job.stage) if job.stage in TRAINED_STAGES else None
        if job.stage in TRAINED_STAGES and not fpt:
            said = f"no MFU: shape unknown: {model_shape.of(cfg).reason}"
        elif fpt and _train_tps(sdir) and dev and dev.peak_tflops:
            tps = _train_tps(sdir)
            mfu = tps * fpt / (dev.peak_tflops * 1e12)
            key = predict.mfu_key(cfg, job.stage)  # several stages of a kind: the slowest (DPO < SFT)
            entry[key] = min(entry.get(key, 1.0), float(f"{mfu:.3g}"))
            said = f"{tps:,.0f} tok/s/device median -> {key} {mfu:.3g}"
            if secs:  # what the steps did not take was start-up: imports, model load, data, saving
                tokens = predict._train_tokens(cfg[job.stage], job.stage)
                starts.setdefault(device, []).append(max(0.0, secs - tokens / (tps * n)))
                said += f", start-up ~{starts[device][-1]:.0f} s"
        elif job.stage == "translate" and secs and (sdir / "plan.json").exists():
            tokens = json.loads((sdir / "plan.json").read_text()).get("source_tokens")
            busy = _translate_busy_s(sdir) or max(secs - startup, secs * 0.1)
            if busy < secs:
                starts.setdefault(device, []).append(secs - busy)
            if tokens:
                tr = cfg.translator
                key = str(tr.name) if str(tr.backend) == "hf" else f"{tr.name}/{tr.backend}"
                rate = tokens / busy / n
                entry.setdefault("translate_tokens_per_s", {})[key] = float(f"{rate:.3g}")
                said = (f"{tokens:,} source tokens in {busy:.0f} s of translating ({secs:.0f} s in all) over {n} "
                        f"-> {rate:,.0f} tok/s")
        elif secs is not None and job.stage not in TRAINED_STAGES and job.stage not in ("translate", "demo"):
            fixed.setdefault(device, {})[job.stage] = secs  # less the start-up, which the plan adds: below
            said = f"{secs:.0f} s"
        took = "?" if secs is None else f"{secs / 3600:.4f} h"
        was = "-" if not pred or pred.get("hours") is None else f"{pred['hours']:.4f} h"
        notes.append(f"{job.stage} on {device}: took {took}, predicted {was}" + (f"; {said}" if said else ""))
    for device, secs_ in starts.items():
        found[device]["startup_s"] = round(statistics.mean(secs_))
    for device, stages in fixed.items():  # the plan predicts stage_minutes + startup_s: count it once
        dev = cfg.throughput.devices.get(device)
        startup = found[device].get("startup_s", dev.startup_s if dev else 0.0)
        found[device]["stage_minutes"] = {s: round(max(secs - startup, secs * 0.1, 1.0) / 60, 2)
                                          for s, secs in stages.items()}
    return {d: e for d, e in found.items() if e}, notes


def _translate_busy_s(sdir: Path) -> float:
    """Seconds spent translating: from plan.json (written once model and data are loaded) to the last
    shard's completion marker; 0 when unknown. A resumed stage counts its pause (the rate comes out low)."""
    ends = [m.stat().st_mtime for m in (sdir / "shards").glob("*.done")]
    return max(0.0, max(ends) - (sdir / "plan.json").stat().st_mtime) if ends else 0.0


def calibrate(ref: str, runs_root: str = "runs") -> int:
    try:
        run = rundir.point_dirs(rundir.resolve(ref, runs_root))[0]
    except LookupError as e:
        print(f"dfm_hpc: {e}", file=sys.stderr)
        return 2
    devices, notes = measure(run)
    print(f"# measured by python -m dfm_hpc calibrate {run}")
    for line in notes:
        print(f"#   {line}")
    if not devices:
        print("# nothing to calibrate: no stage of this run finished with a measurement")
        return 1
    print("# merge into conf/throughput/<name>.yaml (keys as in conf/throughput/default.yaml):")
    print(yaml.safe_dump({"devices": devices}, sort_keys=True).rstrip())
    return 0
