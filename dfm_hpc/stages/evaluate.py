"""Evaluate stage: score models of this run (and of others) side by side.

For each model of `evaluate.models` ("base" = model.name_or_path; "cpt"/"sft"/"dpo" = that stage's
model in this run, a full model or a PEFT adapter; a run dir = its last trained model; a model dir;
empty = base plus every trained stage before evaluate):

(a) loss and perplexity on held-out Danish text (`data.eval_text`): token-weighted mean NLL over up
    to `max_eval_texts` texts, each truncated to the model's max positions. Always; offline.
(b) EuroEval's Danish tasks (`evaluate.euroeval`), through its Python API (`Benchmarker`). EuroEval
    runs decoder models only through vLLM and reads its datasets from the HF cache, so the stage
    checks both first; when EuroEval cannot run it records why (`euroeval_note`) and carries on.
(c) greedy generations for `generation_prompts` built-in Danish prompts (chat template if any).

Outputs in stages/evaluate/: results.json, results.md (metric x model table), samples.jsonl,
samples.md, and euroeval/ (EuroEval's own records per model, which it reuses on a rerun).
One process (rank 0); GPU when there is one, else CPU. See docs/evaluation.md.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Optional, Tuple

from dfm_hpc import results, tiny
from dfm_hpc.job.rank import StageContext
from dfm_hpc.rundir import stage_dir
from dfm_hpc.schema import TRAINED_STAGES, Config

PROMPTS = [
    "Hvad er hovedstaden i Danmark?",
    "Skriv en kort hilsen til en kollega, der har fødselsdag.",
    "Forklar kort, hvad fotosyntese er.",
    "Hvad kommer efter tre?",
    "Nævn tre typiske danske retter.",
    "Hvordan bliver vejret typisk i Danmark om efteråret?",
    "Oversæt til engelsk: Jeg vil gerne have en kop kaffe.",
    "Giv mig et godt råd til en jobsamtale.",
    "Hvem skrev eventyret Den grimme ælling?",
    "Skriv en sætning med ordene hav, vind og måge.",
]

# EuroEval's Danish datasets live on the hub as EuroEval/<name>; the stage itself never downloads
EUROEVAL_PREFETCH = ("on the login node, with euroeval installed: python -m dfm_hpc.stages.evaluate "
                     "prefetch-euroeval --cache-dir DIR, then set evaluate.euroeval_cache=DIR; "
                     "see docs/evaluation.md")


# ---------------------------------------------------------------------------- which models

def _last_trained(run: Path) -> Optional[Tuple[str, Path]]:
    """A run dir's last trained stage (by its config's stage order) that left a model."""
    stages = list(TRAINED_STAGES)
    cfg_file = run / "config.yaml"
    if cfg_file.is_file():
        from omegaconf import OmegaConf

        listed = [s for s in OmegaConf.load(cfg_file).get("stages", []) if s in TRAINED_STAGES]
        stages = listed or stages
    for stage in reversed(stages):
        if (stage_dir(run, stage) / "model").is_dir():
            return stage, stage_dir(run, stage) / "model"
    return None


def model_specs(cfg, ctx) -> List[Tuple[str, str]]:
    """(name, path) of each model to evaluate."""
    cache = ctx.run_dir / "cache"
    wanted = list(cfg.evaluate.models)
    if not wanted:
        order = list(cfg.stages)
        before = order[: order.index("evaluate")] if "evaluate" in order else order
        wanted = ["base"] + [s for s in before if s in TRAINED_STAGES]
    specs = []
    for ref in wanted:
        ref = str(ref)
        if ref == "base":
            specs.append(("base", tiny.resolve(cfg.model.name_or_path, cache)))
        elif ref in TRAINED_STAGES:
            path = stage_dir(ctx.run_dir, ref) / "model"
            if not path.is_dir():
                raise FileNotFoundError(f"evaluate.models: this run has no {ref} model ({path} is missing)")
            specs.append((ref, str(path)))
        else:
            p = Path(ref)
            if (p / "config.json").is_file() or (p / "adapter_config.json").is_file():
                specs.append((p.name, str(p)))  # a model (or adapter) dir
                continue
            found = _last_trained(p) if p.is_dir() else None
            if found is None:
                raise FileNotFoundError(f"evaluate.models: {ref!r} is neither 'base', a stage of this run "
                                        f"({', '.join(TRAINED_STAGES)}), a model dir, nor a run dir with a trained model")
            specs.append((f"{p.name}/{found[0]}", str(found[1])))
    return specs


def load(path: str):
    """Model (adapters merged in) and tokenizer, on the GPU when there is one; eval mode."""
    import torch
    from transformers import AutoTokenizer

    from dfm_hpc.job import train

    st = SimpleNamespace(precision="bf16", attn_implementation="sdpa")
    model = train.load_model_or_adapter(path, st)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if torch.cuda.is_available():
        from dfm_hpc.job.device import torch_device

        model = model.to(torch_device())  # this rank's GPU, not always GPU 0
    return model.eval(), tokenizer


# ---------------------------------------------------------------------------- (a) perplexity

def eval_texts(cfg, ctx) -> Tuple[str, List[str]]:
    """(source, texts) of data.eval_text: tiny:eval, a local JSONL/Parquet (`text`), or a hub id."""
    from dfm_hpc.job import data

    source = cfg.data.eval_text
    if not source:
        return held_out(cfg, ctx)
    cache = ctx.run_dir / "cache"
    texts = data.load_texts(source, cache)
    return source, texts[: cfg.evaluate.max_eval_texts]


def held_out(cfg, ctx) -> Tuple[str, List[str]]:
    """No data.eval_text: text this run's training held out (never trained on). CPT's held-out
    documents (the corpus's last `cpt.eval_fraction`), else the SFT (or DPO) stage's held-out chats
    (the same split it evaluated on), one text per conversation. Validation makes sure one exists."""
    if "cpt" in cfg.stages:
        from dfm_hpc.job import data

        texts = data.load_texts(data.corpus_source(cfg, ctx), ctx.run_dir / "cache")
        n_eval = max(1, int(len(texts) * cfg.cpt.eval_fraction))
        return f"held-out CPT documents ({n_eval})", texts[-n_eval:][: cfg.evaluate.max_eval_texts]
    for stage in ("sft", "dpo"):  # DPO: the prompt and its chosen reply
        if stage in cfg.stages:
            from dfm_hpc.job import data

            _, rows = data.split(data.load_chats(cfg[stage].dataset, ctx, stage))
            chats = [row["messages"] if stage == "sft" else row["prompt"] + row["chosen"] for row in rows]
            texts = ["\n\n".join(m["content"] for m in chat) for chat in chats]
            return (f"held-out {stage.upper()} chats ({len(texts)} conversations)",
                    texts[: cfg.evaluate.max_eval_texts])
    raise ValueError("evaluate needs held-out text: set data.eval_text (a JSONL/Parquet file with a `text` "
                     "column, a hub dataset id, or tiny:eval)")


def max_positions(model, tokenizer) -> int:
    n = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    tok_max = getattr(tokenizer, "model_max_length", None)
    if tok_max and tok_max < 10**7:  # transformers' "no limit" is a huge int
        n = min(n, tok_max) if n else tok_max
    return int(n or 2048)


def perplexity(model, tokenizer, texts: List[str], batch_tokens: int = 8192) -> Dict[str, float]:
    """Token-weighted mean NLL of next-token prediction over the texts (each truncated to the model's
    max positions); texts of under 2 tokens are skipped. Batches of similar length, padded right."""
    import torch
    import torch.nn.functional as F

    limit = max_positions(model, tokenizer)
    seqs = [ids[:limit] for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
    seqs = sorted((s for s in seqs if len(s) >= 2), key=len)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    nll, tokens, i = 0.0, 0, 0
    with torch.no_grad():
        while i < len(seqs):
            j = i + 1
            while j < len(seqs) and len(seqs[j]) * (j - i + 1) <= batch_tokens:
                j += 1
            batch = seqs[i:j]
            longest = max(len(s) for s in batch)
            ids = torch.full((len(batch), longest), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), longest), dtype=torch.long)
            for k, s in enumerate(batch):
                ids[k, : len(s)] = torch.tensor(s)
                mask[k, : len(s)] = 1
            ids, mask = ids.to(device), mask.to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            target = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            nll += F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1),
                                   ignore_index=-100, reduction="sum").item()
            tokens += int((target != -100).sum())
            i = j
    loss = nll / tokens if tokens else float("nan")
    return {"eval_loss": loss, "perplexity": math.exp(min(loss, 700)) if tokens else float("nan"),
            "eval_texts": len(seqs), "eval_tokens": tokens}


# ---------------------------------------------------------------------------- (c) generations

def generate(model, tokenizer, prompts: List[str], max_new_tokens: int) -> List[str]:
    """Greedy continuations, one prompt at a time (no padding effects); chat template when there is one."""
    import torch

    device = next(model.parameters()).device
    outs = []
    for prompt in prompts:
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                 add_generation_prompt=True)
            enc = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        else:
            enc = tokenizer(prompt, return_tensors="pt")
        enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        outs.append(tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return outs


# ---------------------------------------------------------------------------- (b) EuroEval

def euroeval_kwargs(model_path: str, tasks: List[str], cache_dir: Path) -> Tuple[dict, dict]:
    """Keyword arguments for `euroeval.Benchmarker(...)` and its `.benchmark(...)`: Danish, the given
    tasks (none: every official Danish dataset), results kept (a rerun reuses them), errors logged."""
    init = dict(progress_bar=False, save_results=True, language="da", cache_dir=str(cache_dir),
                raise_errors=False, verbose=False)
    bench = dict(model=model_path, task=list(tasks) or None, language="da")
    return init, bench


def parse_euroeval(records) -> Dict[str, Dict[str, float]]:
    """EuroEval result records (BenchmarkResult objects, or the dicts of its results JSONL) ->
    {"<task>/<dataset>": {metric: value}}: the `total` scores without their `test_` prefix
    (`mcc`, `mcc_se`, ...; NaN -> None)."""
    out: Dict[str, Dict[str, float]] = {}
    for rec in records:
        if hasattr(rec, "model_dump"):
            rec = rec.model_dump()
        total = (rec.get("results") or {}).get("total") or {}
        scores = {}
        for k, v in total.items():
            v = float(v) if v is not None else None
            scores[k.removeprefix("test_")] = None if v is None or math.isnan(v) else v
        out[f"{rec['task']}/{rec['dataset']}"] = scores
    return out


def euroeval_blocker() -> Optional[str]:
    """Why EuroEval cannot score a local decoder model in this environment, or None."""
    if importlib.util.find_spec("euroeval") is None:
        return ("EuroEval is not installed here (pip install euroeval[generative]: it evaluates decoder models "
                "through vLLM; its pins conflict with this project's torch, see docs/evaluation.md)")
    if importlib.util.find_spec("vllm") is None:
        return ("EuroEval evaluates generative (decoder) models only through vLLM, which is not installed here "
                "(pip install euroeval[generative] pins vllm 0.11.0 / torch 2.8; on LUMI use a ROCm vLLM container)")
    return None


def run_euroeval(model_path: str, tasks: List[str], cache_dir: Path, results_path: Path,
                 log=print) -> Tuple[Optional[Dict[str, Dict[str, float]]], Optional[str]]:
    """(scores, None), or (None, why not). Runs offline: datasets come from `cache_dir` (prefetched)."""
    why = euroeval_blocker()
    if why:
        return None, why
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "LITELLM_LOCAL_MODEL_COST_MAP")}
    # compute nodes have no internet: read the hub cache only (no 5 x timeout retries per dataset)
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", LITELLM_LOCAL_MODEL_COST_MAP="True")
    try:
        from euroeval import Benchmarker

        init, bench = euroeval_kwargs(model_path, tasks, cache_dir)
        bm = Benchmarker(**init)
        bm.results_path = results_path  # not ./euroeval_benchmark_results.jsonl of the cwd
        records = bm.benchmark(**bench)
    except Exception as e:  # EuroEval failing must not lose the perplexity and samples
        return None, f"EuroEval failed: {type(e).__name__}: {e}"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    scores = parse_euroeval(records)
    if not scores:
        return None, (f"EuroEval produced no results (its datasets are read from the hub cache {cache_dir}, "
                      f"offline; prefetch them: {EUROEVAL_PREFETCH})")
    return scores, None


def euroeval_cache(cfg, ctx) -> Path:
    """Where EuroEval's datasets are read from: evaluate.euroeval_cache (a shared prefetched dir), else
    $DFM_HPC_EUROEVAL_CACHE, else the run's cache/euroeval."""
    return Path(cfg.evaluate.euroeval_cache or os.environ.get("DFM_HPC_EUROEVAL_CACHE")
                or ctx.run_dir / "cache" / "euroeval")


def prefetch_euroeval(cache_dir: str, tasks: List[str]) -> int:
    """Login node (internet): download EuroEval's Danish datasets and metrics into cache_dir, with
    EuroEval's own loader, so the compute node finds them offline."""
    from euroeval.benchmark_config_factory import prepare_dataset_configs
    from euroeval.data_loading import load_raw_data
    from euroeval.languages import get_all_languages

    configs = prepare_dataset_configs(task=list(tasks) or None, languages=[get_all_languages()["da"]],
                                      dataset=None, custom_datasets_file=Path("custom_datasets.py"))
    for ds in configs:
        print(f"{ds.task.name}/{ds.name}: {ds.source}", flush=True)
        load_raw_data(dataset_config=ds, cache_dir=cache_dir)
        for metric in ds.task.metrics:
            metric.download(cache_dir=cache_dir)
    return 0


# ---------------------------------------------------------------------------- the stage

def write_outputs(sdir: Path, source: str, rows: List[dict], samples: List[dict]) -> None:
    (sdir / "results.json").write_text(json.dumps({"eval_data": source, "models": rows}, indent=2,
                                                  ensure_ascii=False) + "\n")
    md = ["# Evaluation\n", f"Held-out text: `{source}`\n",
          results.markdown_table([(r["name"], results.flatten(r)) for r in rows])]
    notes = results.notes([(r["name"], r) for r in rows])
    if notes:
        md.append("\nEuroEval:\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    (sdir / "results.md").write_text("\n".join(md))
    with open(sdir / "samples.jsonl", "w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    lines = ["# Generations (greedy)\n"]
    for s in samples:
        out = s["output"].strip() or f"(empty: {json.dumps(s['output'])})"  # a random model may emit only "\n"
        lines.append(f"## {s['model']}: {s['prompt']}\n\n" + "\n".join(f"> {ln}" for ln in out.splitlines()) + "\n")
    (sdir / "samples.md").write_text("\n".join(lines))


def run(cfg: Config, ctx: StageContext) -> None:
    import torch

    ev = cfg.evaluate
    if not ctx.is_main:  # one process does the work; any extra rank has nothing to do
        return
    sdir = ctx.stage_dir
    sdir.mkdir(parents=True, exist_ok=True)
    specs = model_specs(cfg, ctx)
    source, texts = eval_texts(cfg, ctx)
    prompts = PROMPTS[: ev.generation_prompts]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    ctx.log(f"evaluating {len(specs)} model(s) on {device}: " + ", ".join(f"{n} ({p})" for n, p in specs))
    ctx.log(f"held-out text {source}: {len(texts)} texts; {len(prompts)} prompts; "
            f"EuroEval {'on' if ev.euroeval else 'off'}")
    rows, samples = [], []
    for name, path in specs:
        t0 = time.time()
        ctx.log(f"[{name}] loading {path}")
        model, tokenizer = load(path)
        ctx.log(f"[{name}] perplexity on {len(texts)} texts")
        row = {"name": name, "path": path, **perplexity(model, tokenizer, texts)}
        ctx.log(f"[{name}] eval_loss {row['eval_loss']:.4f} perplexity {row['perplexity']:.3f} "
                f"({row['eval_tokens']} tokens, {time.time() - t0:.1f} s)")
        if prompts:
            ctx.log(f"[{name}] generating {len(prompts)} samples ({ev.max_new_tokens} new tokens each)")
            for prompt, out in zip(prompts, generate(model, tokenizer, prompts, ev.max_new_tokens)):
                samples.append({"model": name, "prompt": prompt, "output": out})
        scores, note = None, None
        if ev.euroeval:
            ctx.log(f"[{name}] EuroEval ({', '.join(ev.euroeval_tasks) or 'all Danish tasks'})")
            target = path
            if euroeval_blocker() is None and (Path(path) / "adapter_config.json").exists():
                # EuroEval does not take adapters offline: give it the merged model
                target = str(sdir / "merged" / name.replace("/", "_"))
                model.save_pretrained(target)
                tokenizer.save_pretrained(target)
            del model
            scores, note = run_euroeval(target, list(ev.euroeval_tasks), euroeval_cache(cfg, ctx),
                                        sdir / "euroeval" / f"{name.replace('/', '_')}.jsonl", ctx.log)
            ctx.log(f"[{name}] EuroEval: " + (json.dumps(scores) if scores else f"skipped: {note}"))
        else:
            del model
        row.update(euroeval=scores, euroeval_note=note, seconds=round(time.time() - t0, 2))
        rows.append(row)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        write_outputs(sdir, source, rows, samples)  # after each model: partial results survive a crash
    ctx.log(f"wrote {sdir / 'results.json'} and results.md, samples.jsonl, samples.md")


if __name__ == "__main__":
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m dfm_hpc.stages.evaluate")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("prefetch-euroeval", help="download EuroEval's Danish datasets into a cache dir (login node)")
    s.add_argument("--cache-dir", required=True)
    s.add_argument("--task", action="append", default=[], help="an EuroEval task (repeatable); none: all Danish")
    a = p.parse_args()
    sys.exit(prefetch_euroeval(a.cache_dir, a.task))
