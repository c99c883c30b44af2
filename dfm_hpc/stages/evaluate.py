"""Evaluate stage: score models of this run (and of others) side by side.

For each model of `evaluate.models` ("base" = model.name_or_path; "cpt"/"sft"/"dpo" = that stage's
model in this run, a full model or a PEFT adapter; a run dir = its last trained model; a model dir;
empty = base plus every trained stage before evaluate):

(a) loss and perplexity on held-out Danish text (`data.eval_text`): token-weighted mean NLL over up
    to `max_eval_texts` texts, each truncated to the model's max positions. Always; offline.
(b) benchmarks: lm-evaluation-harness tasks (`lm_eval_tasks`), EuroEval's Danish tasks (`euroeval`) and
    inspect_ai tasks (`inspect_tasks`), clients in job/harness.py and job/harness_inspect.py. With
    `server=none` lm-eval runs in this process on the loaded model (hf backend); with
    `server=vllm|transformers` the stage starts an OpenAI-compatible server (job/serve.py) holding every
    model under its own name, runs lm-eval, EuroEval and inspect (those two from the harness
    environment) against it, and always stops it. Each result carries its comparability fields.
(c) greedy generations for `generation_prompts` built-in Danish prompts (chat template if any).

Outputs in stages/evaluate/: results.json, results.md (metric x model table, comparability),
samples.jsonl, samples.md, server/ (server logs), euroeval/ and inspect/ (the harnesses' own records per model).
One process (rank 0); GPU when there is one, else CPU. See docs/evaluation.md.

Resumable: after each model's (a)+(c) and each of its served benchmarks the stage may stop (the pre-timeout
signal: rank.Preempted); what is done is kept in progress.json (job/eval_progress.py: keyed by the model's
name, path and weight files) and skipped by the next start.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from dfm_hpc import results, tiny
from dfm_hpc.job import eval_progress, gate, harness, harness_inspect, scored, serve
from dfm_hpc.job.rank import Preempted, StageContext
from dfm_hpc.job.scoring import eval_texts, generate, load, perplexity
from dfm_hpc.registry import TRAINED_STAGES
from dfm_hpc.rundir import CONFIG, stage_dir
from dfm_hpc.schema import Config

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


# ---------------------------------------------------------------------------- which models

def _last_trained(run: Path) -> Optional[Tuple[str, Path]]:
    """A run dir's last trained stage (by its config's stage order) that left a model."""
    stages = list(TRAINED_STAGES)
    cfg_file = run / CONFIG
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
                                        f"({', '.join(TRAINED_STAGES)}), a model dir, nor a run dir with a "
                                        "trained model")
            specs.append((f"{p.name}/{found[0]}", str(found[1])))
    return specs


# ---------------------------------------------------------------------------- (a) perplexity

# eval_texts and held_out: job/scoring.py (the checkpoint evaluations read the same text)


# ---------------------------------------------------------------------------- (b) benchmarks

def euroeval_cache(cfg, ctx) -> Path:
    """Where EuroEval's datasets are read from: evaluate.euroeval_cache (a shared prefetched dir), else
    $DFM_HPC_EUROEVAL_CACHE, else the run's cache/euroeval."""
    return Path(cfg.evaluate.euroeval_cache or os.environ.get("DFM_HPC_EUROEVAL_CACHE")
                or ctx.run_dir / "cache" / "euroeval")


def euroeval_python(cfg) -> Optional[str]:
    return cfg.evaluate.euroeval_python or os.environ.get("DFM_HPC_EUROEVAL_PYTHON")


def _dtype(model) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def served_phase(cfg, ctx, specs, merged, rows: Dict[str, dict], prompts: List[str], save, prog, keys) -> None:
    """Start each server, score each of its models with lm-eval and EuroEval, stop it. The pieces an earlier
    start finished (prog) are taken from it; a server whose models are all scored is not started."""
    ev = cfg.evaluate
    gpu = _on_gpu()
    dtype = "bfloat16" if gpu else "float32"
    wanted = {n for n, _ in specs}
    names, include = harness.resolve_tasks(list(ev.lm_eval_tasks), ctx.run_dir / "cache", ev.lm_eval_include)
    pieces = eval_progress.served_pieces(bool(names), ev.euroeval, bool(ev.inspect_tasks))
    # every served name carries this job's nonce: a server that lists exactly those is ours (job/serve.py)
    for i, group in enumerate(serve.servers(ev.server, specs, merged, tag=serve.nonce())):
        todo = []
        for name in [n for n in group.names if n in wanted]:
            kept = [p for p in pieces if prog.done(keys[name], p) is not None]
            for p in kept:
                eval_progress.apply(rows[name], prog.done(keys[name], p))
            if kept:
                ctx.log(f"[{name}] skipped {', '.join(kept)}: scored by an earlier start ({eval_progress.FILE})")
            if len(kept) < len(pieces):
                todo.append(name)
        if not todo:
            continue
        argv = lambda port, g=group: serve.command(ev.server, g, port, dtype, list(ev.server_args))  # noqa: E731
        cwd = serve.link_names(group, ctx.stage_dir / "served") if ev.server == "transformers" else None
        with serve.Server(argv, ev.server_port, ctx.stage_dir / "server" / f"server-{i}.log", expect=group.ids(),
                          timeout_s=ev.server_timeout_s, cwd=cwd, say=ctx.log, compile=ev.server_compile) as srv:
            for name in todo:
                row, mid = rows[name], group.id(name)
                # the server's own interpreter's versions (vLLM may live in another environment than this job)
                meta = {"dtype": dtype, "backend": ev.server, "backend_version": (srv.versions or {}).get(ev.server)}
                tok = merged.get(name, row["path"])  # adapter dirs hold their tokenizer too
                for piece in pieces:
                    if prog.done(keys[name], piece) is not None:
                        continue
                    before = json.loads(json.dumps(row))  # what is kept if the address stops being ours
                    if piece == "serving":
                        tp = serve.throughput(srv.base_url, mid, prompts or PROMPTS[:1], ev.max_new_tokens)
                        tp.pop("outputs")
                        row["serving"] = {"backend": ev.server, "version": meta["backend_version"],
                                          "startup_s": srv.startup_s, "runtime": srv.versions, **tp}
                        ctx.log(f"[{name}] served as {mid!r}: {tp['tokens_per_s']} tokens/s "
                                f"({tp['requests']} requests), server up in {srv.startup_s} s")
                    elif piece == "lm-eval":
                        kind, args = harness.server_model_args(srv.base_url, mid, tok, ev.server_chat)
                        _bench(row, ctx, name, "lm-eval", harness.run_lm_eval, kind, names, include,
                               limit=ev.lm_eval_limit, num_fewshot=ev.num_fewshot, seed=cfg.seed, meta=meta,
                               model_args=args, chat=ev.server_chat, log=lambda m: ctx.log(f"[{name}] {m}"),
                               per_item=True)
                    elif piece == "euroeval":
                        _euroeval(cfg, ctx, row, name, mid, srv.base_url, meta)
                    else:
                        _inspect(cfg, ctx, row, name, mid, srv.base_url, meta)
                    try:
                        srv.check()
                    except serve.AddressTaken:
                        row.clear()
                        row.update(before)  # scored while another server shared the port: not kept
                        save()
                        raise
                    prog.record(keys[name], piece, eval_progress.delta(before, row))
                    save()
                    prog.safe_point(ctx, f"{name}'s {piece}")


def _euroeval(cfg, ctx, row, name, model_id, base_url, meta) -> None:
    ev = cfg.evaluate
    python = euroeval_python(cfg)
    if not python:
        row["notes"].append("EuroEval: no environment for it (set evaluate.euroeval_python or "
                            "DFM_HPC_EUROEVAL_PYTHON: .venv-euroeval here, the euroeval overlay on LUMI)")
        return
    argv = harness.euroeval_command(python, model_id, base_url, list(ev.euroeval_tasks),
                                    test_split=ev.euroeval_test_split, cache_dir=str(euroeval_cache(cfg, ctx)),
                                    datasets=list(ev.euroeval_datasets), extra=list(ev.euroeval_args))
    out, note = harness.run_euroeval(argv, ctx.stage_dir / "euroeval" / name.replace("/", "_"),
                                     {**meta, "seed": cfg.seed}, log=ctx.log)
    if out:
        row["benchmarks"].update(out)
        ctx.log(f"[{name}] " + "; ".join(f"{k} {harness.scores_line(v['scores'])}" for k, v in out.items()))
    else:
        row["notes"].append(note)
        ctx.log(f"[{name}] EuroEval: {note}")


def _inspect(cfg, ctx, row, name, model_id, base_url, meta) -> None:
    ev = cfg.evaluate
    python = ev.inspect_python or os.environ.get("DFM_HPC_INSPECT_PYTHON") or euroeval_python(cfg)
    if not python:
        row["notes"].append("inspect: no environment for it (set evaluate.inspect_python or DFM_HPC_INSPECT_PYTHON: "
                            ".venv-euroeval here, the harness overlay on LUMI)")
        return
    work = ctx.stage_dir / "inspect" / name.replace("/", "_")
    argv = harness_inspect.inspect_command(python, model_id, list(ev.inspect_tasks), log_dir=str(work / "logs"),
                                           seed=cfg.seed, limit=ev.inspect_limit, extra=list(ev.inspect_args))
    out, note = harness_inspect.run_inspect(argv, work, {**meta, "seed": cfg.seed, "chat_template": True},
                                            env=harness_inspect.client_env(base_url), log=ctx.log)
    if out:
        row["benchmarks"].update(out)
        ctx.log(f"[{name}] " + "; ".join(f"{k} {harness.scores_line(v['scores'])}" for k, v in out.items()))
    if note:
        row["notes"].append(note)
        ctx.log(f"[{name}] {note}")


def _bench(row, ctx, name, what, call, *args, **kwargs) -> None:
    """A benchmark failing must not lose the perplexity and samples: its error becomes a note."""
    try:
        row["benchmarks"].update(call(*args, **kwargs))
    except Preempted:  # the signal while the server is up (serve.Server): a stop, not a failed benchmark
        raise
    except Exception as e:
        note = f"{what} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        row["notes"].append(note)
        ctx.log(f"[{name}] {note}")


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


# ---------------------------------------------------------------------------- the stage

def write_outputs(sdir: Path, source: str, rows: List[dict], samples: List[dict]) -> None:
    rows = gate.split_items(sdir, rows)  # per-item scores go to items/<model>.json (a later run's reference)
    rows = [scored.finish(r) for r in rows]  # each row's harness and server versions into its bound_to
    (sdir / "results.json").write_text(json.dumps({"format": results.FORMAT, "eval_data": source, "models": rows},
                                                  indent=2, ensure_ascii=False) + "\n")
    (sdir / "results.md").write_text(results.markdown(source, rows))
    with open(sdir / "samples.jsonl", "w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    lines = ["# Generations (greedy)\n"]
    for s in samples:
        out = s["output"].strip() or f"(empty: {json.dumps(s['output'])})"  # a random model may emit only "\n"
        lines.append(f"## {s['model']}: {s['prompt']}\n\n" + "\n".join(f"> {ln}" for ln in out.splitlines()) + "\n")
    (sdir / "samples.md").write_text("\n".join(lines))


def _in_process(cfg, ctx, name, path, texts, prompts, in_process_tasks, merged) -> Tuple[dict, List[dict]]:
    """A model's in-process part: perplexity, samples, lm-eval in-process (server=none); with a server that
    cannot stack or load the adapter, the merged model it serves. Its row and its samples."""
    import torch

    ev, served, sdir = cfg.evaluate, cfg.evaluate.server != "none", ctx.stage_dir
    t0 = time.time()
    ctx.log(f"[{name}] loading {path}")
    model, tokenizer = load(path)
    ref = cfg.model.name_or_path if name == "base" else path  # what compare groups rows by (job/scored.py)
    row = {"name": name, "path": path, **perplexity(model, tokenizer, texts), "benchmarks": {}, "notes": [],
           "serving": None, "bound_to": scored.bound_to(cfg, ref, path, scored.parameters(model))}
    ctx.log(f"[{name}] eval_loss {row['eval_loss']:.4f} perplexity {row['perplexity']:.3f} "
            f"({row['eval_tokens']} tokens, {time.time() - t0:.1f} s)"
            + (f"; generating {len(prompts)} samples ({ev.max_new_tokens} new tokens each)" if prompts else ""))
    samples = []
    if prompts:
        for prompt, out in zip(prompts, generate(model, tokenizer, prompts, ev.max_new_tokens)):
            samples.append({"model": name, "prompt": prompt, "output": out})
    if in_process_tasks[0] and not served:
        meta = {"dtype": _dtype(model), "backend": "hf (in-process)",
                "backend_version": harness.version("transformers")}
        _bench(row, ctx, name, "lm-eval", harness.run_lm_eval, harness.hf_lm(model, tokenizer), *in_process_tasks,
               limit=ev.lm_eval_limit, num_fewshot=ev.num_fewshot, seed=cfg.seed, meta=meta,
               log=lambda m: ctx.log(f"[{name}] {m}"), per_item=True)
    if ev.inspect_tasks and not served:
        row["notes"].append("inspect runs against a served model: set evaluate.server")
    if ev.euroeval and not served:
        row["notes"].append("EuroEval runs against a served model: set evaluate.server (vllm on LUMI, "
                            "transformers on a CPU)")
    stacked = served and serve.is_adapter(path) and serve.is_adapter(serve.adapter_base(path))
    if served and serve.is_adapter(path) and (ev.server == "transformers" or stacked):
        merged[name] = str(sdir / "merged" / name.replace("/", "_"))  # the server cannot stack it
        model.save_pretrained(merged[name])
        tokenizer.save_pretrained(merged[name])
    del model
    row["seconds"] = round(time.time() - t0, 2)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the server gets the GPU next
    return row, samples


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
    served = ev.server != "none"
    ctx.log(f"evaluating {len(specs)} model(s) on {device}: " + ", ".join(f"{n} ({p})" for n, p in specs))
    ctx.log(f"held-out text {source}: {len(texts)} texts; {len(prompts)} prompts; lm-eval "
            f"{list(ev.lm_eval_tasks) or 'off'}; EuroEval {'on' if ev.euroeval else 'off'}; "
            f"inspect {list(ev.inspect_tasks) or 'off'}; "
            f"benchmarks {'through a ' + ev.server + ' server' if served else 'in-process'}")
    in_process_tasks = harness.resolve_tasks(list(ev.lm_eval_tasks), ctx.run_dir / "cache", ev.lm_eval_include)
    # what earlier starts of this stage finished: kept, keyed by each model's name, path and weights
    keys = {name: eval_progress.model_key(name, path) for name, path in specs}
    prog = eval_progress.Progress.load(sdir, eval_progress.settings_id(cfg, source, texts), keys.values(), ctx.log)
    pieces = (eval_progress.served_pieces(bool(in_process_tasks[0]), ev.euroeval, bool(ev.inspect_tasks))
              if served else [])
    prog.left = sum(prog.done(k, p) is None for k in keys.values() for p in [eval_progress.INPROC, *pieces])
    rows, samples, merged = [], [], {}
    save = lambda: write_outputs(sdir, source, rows, samples)  # noqa: E731  partial results survive a crash
    for name, path in specs:
        kept = prog.done(keys[name], eval_progress.INPROC)
        if kept:
            ctx.log(f"[{name}] skipped: perplexity and samples scored by an earlier start ({eval_progress.FILE}; "
                    f"eval_loss {kept['row']['eval_loss']:.4f})")
            rows.append({**json.loads(json.dumps(kept["row"])), "path": path})  # a rerun's path to the same dir
            samples.extend(kept["samples"])
            if kept["merged"]:
                merged[name] = kept["merged"]
        else:
            row, own = _in_process(cfg, ctx, name, path, texts, prompts, in_process_tasks, merged)
            rows.append(row)
            samples.extend(own)
            prog.record(keys[name], eval_progress.INPROC, {"row": row, "samples": own, "merged": merged.get(name)})
        save()
        prog.safe_point(ctx, f"{name}'s perplexity and samples")
    if served:
        served_phase(cfg, ctx, specs, merged, {r["name"]: r for r in rows}, prompts, save, prog, keys)
    save()
    prog.remove()  # done: results.json holds it all
    verdict = gate.run(cfg, ctx)  # evaluate.gate: the verdict (results first); a regression fails the stage here
    ctx.log(f"wrote {sdir / 'results.json'} and results.md, samples.jsonl, samples.md{verdict}")
