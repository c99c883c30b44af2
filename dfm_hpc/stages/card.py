"""Card stage: a Hugging Face model card for the run's last trained model, datasheets for its data.

Everything comes from the run dir: the config snapshot (hyperparameters, how to reproduce), each
stage's summary.json and loss.png, the evaluate stage's results, the merge and PII reports (data
provenance and PII counts), and the accounting each job's batch script recorded (compute used;
local runs: their wall time). Outputs in
stages/card/: README.md (the model card, also copied into the model dir so it can be uploaded as
is), loss_<stage>.png, datasheets/<dataset>/README.md, card.json (the numbers the card shows).
The YAML metadata is built with huggingface_hub's ModelCardData/DatasetCardData, so it loads back
with ModelCard.load (tested).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, List, Optional

from dfm_hpc import checkpoint_scores, gate_verdict, results, templates
from dfm_hpc.job.rank import StageContext
from dfm_hpc.plan import billing, plan, run_jobs
from dfm_hpc.registry import TRAINED_STAGES
from dfm_hpc.rundir import COMMAND, ELAPSED, JOB_ID, PROVENANCE, SUBMITIT, SWEEP_SUBMITIT, stage_dir
from dfm_hpc.schema import Config
from dfm_hpc.sources import is_hub_id

HYPER = {  # config key -> label, per training stage
    "max_steps": "steps", "global_batch_size": "global batch (sequences)", "micro_batch_size": "micro batch per device",
    "seq_len": "sequence length", "lr": "peak learning rate", "warmup_steps": "warm-up steps",
    "precision": "precision", "gradient_checkpointing": "gradient checkpointing", "packing": "packing",
    "beta": "DPO beta", "loss_type": "DPO loss", "eval_fraction": "held-out fraction",
}


def _json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.exists() else None


def trained_stages(cfg, run_dir: Path) -> List[str]:
    return [s for s in cfg.stages if s in TRAINED_STAGES and (stage_dir(run_dir, s) / "model").is_dir()]


# ---------------------------------------------------------------- compute used

def _sacct_hours(run_dir: Path, stage: str, job_id: str) -> Optional[float]:
    """Node-hours of a job and its array tasks (ElapsedRaw x nodes, every run of a requeued job), from
    the accounting its batch script recorded host side (no Slurm tools in LUMI's containers)."""
    from dfm_hpc import accounting

    folders = [stage_dir(run_dir, stage) / SUBMITIT, run_dir.parent / SWEEP_SUBMITIT / stage]  # a sweep's array
    return accounting.node_hours(accounting.recorded(folders, job_id))


def compute_used(cfg, run_dir: Path) -> Dict:
    """Per stage: where it ran, node-hours or wall hours, GPU-hours, LUMI billing units."""
    rows, total_gpu, total_bill = [], 0.0, 0.0
    for job, pred in run_jobs(cfg, run_dir):  # as launched (plan.json), not as today's code would plan it
        # the hardware: what a training stage's ranks saw, else the throughput entry the plan predicted from
        seen = (_json(stage_dir(run_dir, job.stage) / "summary.json") or {}).get("device")
        device = seen or (f"{pred['device']} (planned)" if pred and pred.get("device") else "n/a")
        sdir = stage_dir(run_dir, job.stage)
        job_file, local = sdir / JOB_ID, _json(sdir / ELAPSED)
        if job_file.exists():
            node_h = _sacct_hours(run_dir, job.stage, job_file.read_text().strip())
            if node_h is None:
                rows.append({"stage": job.stage, "where": f"Slurm job {job_file.read_text().strip()}", "hours": None,
                             "device": device})
                continue
            gpu_h = node_h * job.gpus_per_node
            bill = billing(job, job.cluster, hours=node_h / max(job.nodes, 1))
            rows.append({"stage": job.stage, "where": f"Slurm job {job_file.read_text().strip()}", "device": device,
                         "nodes": job.nodes, "hours": round(node_h, 4), "gpu_hours": round(gpu_h, 4),
                         "billing_units": None if bill is None else round(bill, 4)})
            total_gpu += gpu_h
            total_bill += bill or 0.0
        elif local:
            hours = local["elapsed_s"] / 3600
            rows.append({"stage": job.stage, "where": f"this machine, {local['processes']} process(es)",
                         "device": device, "nodes": 1, "hours": round(hours, 4),
                         "gpu_hours": round(hours * local["gpus"], 4), "billing_units": None})
            total_gpu += hours * local["gpus"]
    return {"stages": rows, "gpu_hours": round(total_gpu, 4),
            "billing_units": round(total_bill, 4) if cfg.cluster.system == "lumi" else None}


# ---------------------------------------------------------------- pieces of the card

def hyperparameters(cfg, stages: List[str]) -> str:
    jobs = {j.stage: j for j in plan(cfg)}
    # what ran, not what was asked: training falls back to fp32 without GPUs (train.training_args)
    shown = {s: {**cfg[s], "precision": cfg[s].precision if jobs[s].gpus_per_node else "fp32 (CPU)"} for s in stages}
    head = "| | " + " | ".join(stages) + " |\n|---|" + "---|" * len(stages) + "\n"
    lines = []
    for key, label in HYPER.items():
        vals = [str(shown[s][key]) if key in shown[s] else "" for s in stages]
        if any(vals):
            lines.append(f"| {label} | " + " | ".join(vals) + " |")
    lines.append("| devices (world size) | " + " | ".join(str(jobs[s].world_size) for s in stages) + " |")
    lines.append("| nodes | " + " | ".join(str(jobs[s].nodes) for s in stages) + " |")
    lines.append("| DeepSpeed ZeRO stage | " + " | ".join(str(cfg.deepspeed.stage) for _ in stages) + " |")
    peft = cfg.peft
    method = "full fine-tuning" if peft.method == "none" else (
        f"{peft.method} (r={peft.r}, alpha={peft.alpha}, dropout={peft.dropout}, "
        f"modules {', '.join(peft.target_modules)})")
    lines.append("| parameters trained | " + " | ".join(
        "all (continual pretraining)" if s == "cpt" else method for s in stages) + " |")
    return head + "\n".join(lines)


def training_results(run_dir: Path, stages: List[str]) -> str:
    lines = ["| stage | steps | first loss | final loss | eval loss | eval perplexity "
             "| held-out loss during training |",
             "|---|---|---|---|---|---|---|"]
    for s in stages:
        m = _json(stage_dir(run_dir, s) / "summary.json") or {}
        f = lambda k: f"{m[k]:.4f}" if isinstance(m.get(k), (int, float)) else "n/a"  # noqa: E731
        during = ", ".join(f"step {e['step']}: {e['eval_loss']:.4f}" for e in m.get("eval_during_training") or []
                           if e.get("eval_loss") is not None)
        loss, ppl = f("eval_loss"), f("eval_perplexity")
        if m.get("eval_note"):  # a loss over no token is not a number to print (held_out.py)
            loss, ppl = m["eval_note"].replace("|", "/"), "n/a"
        lines.append(f"| {s} | {m.get('steps', 'n/a')} | {f('first_loss')} | {f('final_loss')} | "
                     f"{loss} | {ppl} | {during or '–'} |")
    return "\n".join(lines)


def eval_section(run_dir: Path) -> str:
    res = _json(stage_dir(run_dir, "evaluate") / "results.json")
    if not res:
        return "This run has no evaluate stage; no benchmark results.\n"
    rows = res["models"]
    # timings are for results.md, not the card
    cols = [(m["name"], {k: v for k, v in results.flatten(m).items() if k != "seconds"}) for m in rows]
    text = (f"Held-out Danish text `{res.get('eval_data')}` (loss and perplexity, token-weighted), and the "
            f"benchmarks (lm-eval: 0-1; EuroEval: its percentages):\n\n{results.markdown_table(cols)}")
    meta = results.meta_table(rows)
    if meta:
        text += f"\nHow the benchmarks were run (a number is comparable with another only if these agree):\n\n{meta}"
    notes = sorted({n for m in rows for n in (m.get("notes") or [m.get("euroeval_note")]) if n})
    if notes:
        text += "\nNot scored: " + " ".join(notes) + "\n"
    samples = stage_dir(run_dir, "evaluate") / "samples.jsonl"
    if samples.exists():
        rows = [json.loads(x) for x in samples.read_text().splitlines() if x.strip()]
        last = rows[-1]["model"] if rows else None
        picked = [r for r in rows if r["model"] == last][:3]
        if picked:
            text += f"\nGeneration samples ({last}, greedy; all in `stages/evaluate/samples.md`):\n\n"
            for r in picked:
                out = r["output"].strip().replace("\n", " ")
                out = out[:400] or f"(nothing but whitespace: {json.dumps(r['output'])})"
                text += f"> **{r['prompt']}**\n>\n> {out}\n\n"
    return text


def eval_results(run_dir: Path, final: str):
    """model-index entries for the card's YAML: the final model's held-out perplexity and benchmark scores
    (lm-eval, EuroEval; their error bars stay in the tables)."""
    from huggingface_hub import EvalResult

    res = _json(stage_dir(run_dir, "evaluate") / "results.json")
    if not res:
        return []
    rows = [m for m in res["models"] if m["name"] == final] or res["models"][-1:]
    out = []
    for m in rows:
        if m.get("perplexity") is not None:
            out.append(EvalResult(task_type="text-generation", dataset_type=str(res.get("eval_data")),
                                  dataset_name="Held-out Danish text", metric_type="perplexity",
                                  metric_value=round(float(m["perplexity"]), 4), metric_name="Perplexity"))
        for key, bench in sorted(results.benchmarks(m).items()):
            meta = bench.get("meta") or {}
            for name, value in bench["scores"].items():
                if isinstance(value, (int, float)) and not name.split(" ")[0].endswith(("_stderr", "_se")):
                    out.append(EvalResult(task_type="text-generation", dataset_type=key,
                                          dataset_name=results.label(key), dataset_split=meta.get("split"),
                                          metric_type=name,
                                          metric_value=round(float(value), 4), metric_name=name,
                                          task_name=" ".join(str(meta[k]) for k in ("harness", "harness_version")
                                                             if meta.get(k)) or None))
    return out


def data_section(cfg, run_dir: Path) -> str:
    lines = []
    merge = _json(stage_dir(run_dir, "merge") / "report.json")
    if merge:
        lines.append(f"- **SFT/DPO data**: OASST2 (`{merge['source']}`) machine-translated to Danish with "
                     f"`{merge['translator']}` ({merge['backend']}): {merge['sft_conversations']} conversations, "
                     f"{merge['dpo_pairs']} preference pairs; datasheet: `datasheets/oasst2-da/README.md`.")
        drops = ", ".join(f"{k} {v}" for k, v in (merge.get("filter_counts") or {}).items()
                          if k not in ("input", "kept") and v)
        if drops:  # what the source filters left out (docs/translation.md#input)
            lines.append(f"  Left out before translation: {drops} (of {merge['filter_counts'].get('input')} messages).")
    else:
        for s in ("sft", "dpo"):
            if s in cfg.stages:
                lines.append(f"- **{s.upper()} data**: `{cfg[s].dataset}`.")
    mix = _json(stage_dir(run_dir, "cpt") / "data" / "mixture.json")
    if "cpt" in cfg.stages and mix:
        parts = ", ".join(f"`{r['name']}` {r['share']:.1%}" for r in mix["sources"])
        lines.append(f"- **CPT mixture** ({mix['blocks'] * mix['seq_len']:,} tokens, seed {mix['seed']}): {parts}; "
                     "datasheet: `datasheets/cpt-mixture/README.md`.")
    elif "cpt" in cfg.stages:
        lines.append(f"- **CPT corpus**: `{cfg.data.corpus}`.")
    pii = _json(stage_dir(run_dir, "pii") / "report.json")
    if pii:
        counts = ", ".join(f"{k} {v}" for k, v in pii["counts"].items())
        lines.append(f"- **Personal information** was filtered before training (dfm_hpc PII stage, replacement "
                     f"`{pii['replacement']}`): {counts} found and replaced.")
    elif any(s in cfg.stages for s in TRAINED_STAGES):
        lines.append("- **Personal information**: this run had no PII stage; the data was not filtered by it.")
    return "\n".join(lines) + "\n"


def compute_section(used: Dict, system: str) -> str:
    lines = ["| stage | where | device | hours | GPU-hours | LUMI billing units |", "|---|---|---|---|---|---|"]
    for r in used["stages"]:
        h = "n/a" if r.get("hours") is None else f"{r['hours']:.4f}"
        on_cpu = r.get("gpu_hours") == 0 and r["where"].startswith("this machine")
        gpu = "- (CPU)" if on_cpu else r.get("gpu_hours", "n/a")
        lines.append(f"| {r['stage']} | {r['where']} | {r.get('device', 'n/a')} | {h} | {gpu} | "
                     f"{'n/a' if r.get('billing_units') is None else r['billing_units']} |")
    total = f"\n\nTotal: {used['gpu_hours']:.3f} GPU-hours"
    total += f", {used['billing_units']:.3f} LUMI billing units.\n" if used["billing_units"] is not None else \
        " (billing units apply on LUMI only).\n"
    slurm = system != "local" or any(r["where"].startswith("Slurm") for r in used["stages"])
    note = "Hours are node-hours from sacct (ElapsedRaw x nodes), recorded by each job at its end." if slurm else ""
    return "\n".join(lines) + total + (f"\n{note}\n" if note else "")


def model_card(cfg, run_dir: Path, out_dir: Path) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    stages = trained_stages(cfg, run_dir)
    final = stages[-1]
    prov = _json(run_dir / PROVENANCE) or {}
    command = (run_dir / COMMAND).read_text().strip() if (run_dir / COMMAND).exists() else ""
    base = cfg.model.name_or_path
    merge = _json(stage_dir(run_dir, "merge") / "report.json")
    mixture = [str(m.source) for m in cfg.data.mixture] if "cpt" in stages else []
    datasets = [d for d in [merge and merge["source"], cfg.data.corpus if "cpt" in stages else None, *mixture,
                            *[cfg[s].dataset for s in stages if s in ("sft", "dpo")]] if is_hub_id(d)]
    name = cfg.card.repo_id or f"{cfg.name}-{run_dir.name}"
    adapter = (stage_dir(run_dir, final) / "model" / "adapter_config.json").exists()
    data = ModelCardData(
        model_name=name, language="da", license=cfg.card.license,
        base_model=base if is_hub_id(base) else None, datasets=sorted(set(datasets)) or None,
        library_name="peft" if adapter else "transformers", pipeline_tag="text-generation",
        tags=["danish", "danish-foundation-models", "dfm_hpc", *stages, *(["lora"] if adapter else [])],
        eval_results=eval_results(run_dir, final) or None)
    for s in stages:
        png = stage_dir(run_dir, s) / "loss.png"
        if png.exists():
            shutil.copy(png, out_dir / f"loss_{s}.png")
    curves = "\n".join(f"![{s} training loss](loss_{s}.png)" for s in stages if (out_dir / f"loss_{s}.png").exists())
    what = {"cpt": "continual pretraining on Danish text", "sft": "supervised fine-tuning on Danish chats",
            "dpo": "preference optimisation (DPO) on Danish preference pairs"}
    used = compute_used(cfg, run_dir)
    (out_dir / "card.json").write_text(json.dumps({"final_stage": final, "compute": used}, indent=2) + "\n")
    tiny = base.startswith("tiny:")
    summary = cfg.description or cfg.name
    body = "\n" + templates.render("model_card.md", {
        "name": name, "summary": summary[:1].upper() + summary[1:], "recipe": cfg.name, "base": base,
        "procedure": ", then ".join(what[s] for s in stages),
        "tiny_note": ("**This is a tiny model with random initial weights, trained for a few steps on toy data to "
                      "test the pipeline. It is not useful for anything else.**") if tiny else "",
        "base_note": " (a local test model)" if tiny else "",
        "adapter_note": (f", {'QLoRA' if cfg.peft.method == 'qlora' else 'LoRA'} adapter (PEFT; `merged/` has it "
                         "merged into the base when `merge_adapter` was set)") if adapter else "",
        "license": cfg.card.license, "data_section": data_section(cfg, run_dir),
        "hyperparameters": hyperparameters(cfg, stages), "training_results": training_results(run_dir, stages),
        "curves": curves, "eval_section": eval_section(run_dir) + gate_verdict.card_section(run_dir, out_dir)
        + checkpoint_scores.card_section(run_dir, out_dir),
        "compute_section": compute_section(used, cfg.cluster.scheduler),
        "git_commit": prov.get("git_commit"),
        "dirty_note": ", with local changes in git.diff" if prov.get("git_dirty") else "",
        "command": command or "python -m dfm_hpc ...", "run_dir": run_dir})
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
    return str(card)


def pii_section(pii: dict) -> str:
    """The datasheet's "Personal information" section from the PII stage's report.json: counts per
    type, view, file and source, and the masked samples (digits and e-mail local parts masked)."""
    types = pii["types"]

    def table(title: str, rows: dict) -> str:
        head = f"| {title} | " + " | ".join(types) + " |\n|---|" + "---|" * len(types) + "\n"
        return head + "".join(f"| {k} | " + " | ".join(str(c.get(t, 0)) for t in types) + " |\n"
                              for k, c in rows.items())

    counts = "\n".join(f"| {t} | {pii['counts'].get(t, 0)} |" for t in types)
    per_view = "\n".join(f"| {v} | {d['rows']} | {d['changed_rows']} |" for v, d in pii["views"].items())
    how = f"replacement: `{pii['replacement']}`, IP addresses: `{pii.get('ip_policy', 'all')}`"
    if pii.get("ner"):
        how += f", names and addresses: `{pii['ner']}`"
    md = (f"\n## Personal information\n\nFiltered by dfm_hpc's PII stage before training "
          f"({how}; see docs/pii.md for the patterns).\n\n"
          f"| type | found and replaced |\n|---|---|\n{counts}\n\n| view | rows | rows changed |\n|---|---|---|\n"
          f"{per_view}\n")
    if pii.get("files"):
        md += "\nPer source file:\n\n" + table("file", pii["files"])
    if pii.get("by_source"):
        md += "\nPer `source` of the rows:\n\n" + table("source", pii["by_source"])
    if pii.get("samples"):
        lines = "".join(f"| {smp['type']} | {smp['view']} | {smp['row']} | {smp['context'].replace('|', '&#124;')} |\n"
                        for smp in pii["samples"])
        md += (f"\n<details><summary>{len(pii['samples'])} replaced spans with their context (digits and e-mail "
               f"local parts masked, for checking the filter)</summary>\n\n| type | view | row | context |\n"
               f"|---|---|---|---|\n{lines}\n</details>\n")
    return md


def datasheets(cfg, run_dir: Path, out_dir: Path) -> List[str]:
    """The translated OASST2 datasheet (merge's dataset card) with the PII counts added; one for a
    PII-filtered corpus."""
    made = []
    pii = _json(stage_dir(run_dir, "pii") / "report.json")
    pii_md = pii_section(pii) if pii else ""
    merge_card = stage_dir(run_dir, "merge") / "README.md"
    if merge_card.exists():
        text = merge_card.read_text()
        text = text.replace("\n## License", pii_md + "\n## License") if pii_md else text
        d = out_dir / "datasheets" / "oasst2-da"
        d.mkdir(parents=True, exist_ok=True)
        (d / "README.md").write_text(text)
        made.append("oasst2-da")
    if pii and "corpus" in pii["views"]:
        from huggingface_hub import DatasetCard, DatasetCardData

        meta = DatasetCardData(language="da", license="other", task_categories=["text-generation"],
                               tags=["danish-foundation-models", "pii-filtered"],
                               source_datasets=[cfg.pii.input] if is_hub_id(cfg.pii.input) else None)
        d = out_dir / "datasheets" / "corpus-pii-filtered"
        d.mkdir(parents=True, exist_ok=True)
        limits = ("Names and street addresses were looked for by the NER model named above; it misses some."
                  if pii.get("ner") else "Pattern-based: names and street addresses are not detected.")
        body = (f"\n# PII-filtered corpus\n\nSource: `{cfg.pii.input}` ({pii['views']['corpus']['rows']} documents).\n"
                f"{pii_md}\n## Limitations\n\n{limits}\n")
        (d / "README.md").write_text(str(DatasetCard(f"---\n{meta.to_yaml()}\n---\n{body}")))
        made.append("corpus-pii-filtered")
    if _mixture_sheet(cfg, run_dir, out_dir):
        made.append("cpt-mixture")
    return made


def _mixture_sheet(cfg, run_dir: Path, out_dir: Path) -> bool:
    """The CPT mixture as trained: each source's realised share (cpt's data/mixture.json) against its target."""
    mix = _json(stage_dir(run_dir, "cpt") / "data" / "mixture.json")
    if not mix:
        return False
    from huggingface_hub import DatasetCard, DatasetCardData

    hub = [r["source"] for r in mix["sources"] if is_hub_id(r["source"])]
    meta = DatasetCardData(license="other", task_categories=["text-generation"], source_datasets=hub or None,
                           tags=["danish-foundation-models", "cpt-mixture"])
    rows = "\n".join(f"| {r['name']} | `{r['source']}` | {r['weight'] if r['weight'] is not None else '-'} | "
                     f"{r['budget_tokens'] or '-'} | {r['target_share']:.4f} | {r['share']:.4f} | {r['tokens']:,} | "
                     f"{r['epochs']:.2f} |" for r in mix["sources"])
    body = (f"\n# CPT mixture\n\nSampled by dfm_hpc's cpt stage (docs/training.md#mixtures) with seed {mix['seed']}: "
            f"{mix['blocks']:,} blocks of {mix['seq_len']} tokens.\n\n| source | path | weight | token budget | "
            f"target share | realised share | tokens | epochs |\n|---|---|---|---|---|---|---|---|\n{rows}\n")
    d = out_dir / "datasheets" / "cpt-mixture"
    d.mkdir(parents=True, exist_ok=True)
    (d / "README.md").write_text(str(DatasetCard(f"---\n{meta.to_yaml()}\n---\n{body}")))
    return True


def run(cfg: Config, ctx: StageContext) -> None:
    if not ctx.is_main:
        return
    out = ctx.stage_dir
    sheets = datasheets(cfg, ctx.run_dir, out)
    if sheets:
        ctx.log(f"datasheets: {', '.join(sheets)}")
    if not trained_stages(cfg, ctx.run_dir):
        ctx.log("no trained model in this run: datasheets only")
        return
    text = model_card(cfg, ctx.run_dir, out)
    (out / "README.md").write_text(text)
    final = trained_stages(cfg, ctx.run_dir)[-1]
    for d in ("model", "merged"):  # the card travels with the weights (upload the folder as is)
        target = stage_dir(ctx.run_dir, final) / d
        if target.is_dir():
            (target / "README.md").write_text(text)
            for png in out.glob("*.png"):  # loss curves, the gate's plot
                shutil.copy(png, target / png.name)
    ctx.log(f"model card: {out / 'README.md'} (also in stages/{final}/model/)")
