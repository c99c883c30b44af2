"""The benchmark clients of the evaluate stage: lm-evaluation-harness and EuroEval.

lm-eval runs in this process: its `hf` backend on a loaded model, or `local-completions` /
`local-chat-completions` against the OpenAI-compatible server of job/serve.py. Task data comes from
files (`dataset_path: json` + `data_files`, extra task YAMLs via `include_path`), never the Hub at
run time: `tiny:danish_mc` is a small Danish multiple-choice task this project writes in the
harness's own formats; the harness's Danish tasks read the prefetched HF cache. EuroEval's pins
conflict with the training stack, so it runs as a separate process from its own environment
(`evaluate.euroeval_python`) against the server; its JSONL records are parsed here, in the format of
EuroEval >= 17 (Every Eval Ever) and the older one (`results.total`).

Every result is `{"scores": {metric: value}, "meta": {...}}` with the fields that make two numbers
comparable (COMPARABLE in dfm_hpc/results.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from dfm_hpc.files import write_atomic

TINY_MC = Path(__file__).resolve().parent.parent / "tiny" / "danish_mc.json"
# tiny: name -> (lm-eval task name, output type): loglikelihood needs prompt logprobs, which an
# OpenAI-compatible server may not give (transformers serve does not); the _gen variant generates
TINY_TASKS = {"tiny:danish_mc": ("dfm_danish_mc", "multiple_choice"),
              "tiny:danish_mc_gen": ("dfm_danish_mc_gen", "generate_until")}
# lm-eval's Danish tasks (docs/evaluation.md); `evaluate.lm_eval_tasks` picks from these or any task name
DANISH_TASKS = ("belebele_dan_Latn", "arc_da", "hellaswag_da", "m_mmlu_da", "truthfulqa_da_mc1", "truthfulqa_da_mc2")
EUROEVAL_DANISH = ("sentiment-classification", "linguistic-acceptability", "named-entity-recognition",
                   "reading-comprehension", "summarization", "knowledge", "common-sense-reasoning")


def version(package: str) -> Optional[str]:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------- lm-eval

def _prompt() -> str:
    return ("Spørgsmål: {{question}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\n"
            "D. {{choices[3]}}\nSvar:")


def write_tiny_tasks(out: Path) -> Path:
    """The Danish MC items as JSONL and both task YAMLs (loglikelihood, generative) in `out`; returns
    the dir to give lm-eval as include_path."""
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    data = json.loads(TINY_MC.read_text())
    items = out / "danish_mc.jsonl"
    write_atomic(items, "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in data["items"]))
    common = {"dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(items)}},
              "test_split": "test", "doc_to_text": _prompt(), "metadata": {"version": float(data["version"])}}
    mc = {"task": "dfm_danish_mc", **common, "output_type": "multiple_choice",
          "doc_to_choice": ["A", "B", "C", "D"], "doc_to_target": "answer",
          "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                          {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]}
    gen = {"task": "dfm_danish_mc_gen", **common, "output_type": "generate_until",
           "doc_to_target": "{{['A', 'B', 'C', 'D'][answer]}}",
           "generation_kwargs": {"until": ["\n"], "max_gen_toks": 4, "do_sample": False, "temperature": 0.0},
           "filter_list": [{"name": "letter", "filter": [{"function": "regex", "regex_pattern": "([ABCD])"},
                                                         {"function": "take_first"}]}],
           "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}]}
    for task in (mc, gen):
        write_atomic(out / f"{task['task']}.yaml", yaml.safe_dump(task, allow_unicode=True, sort_keys=False))
    return out


def resolve_tasks(tasks: List[str], cache: Path, include: Optional[str]) -> Tuple[List[str], List[str]]:
    """(lm-eval task names, include paths): tiny:* tasks are written into `cache`."""
    names, paths = [], [include] if include else []
    for t in tasks:
        if t in TINY_TASKS:
            paths.append(str(write_tiny_tasks(cache / "lm_eval_tasks")))
            names.append(TINY_TASKS[t][0])
        else:
            names.append(t)
    return names, sorted(set(paths))


def parse_lm_eval(res: dict, meta: dict) -> Dict[str, dict]:
    """simple_evaluate's result -> {"lm-eval/<task>": {"scores": {metric: value}, "meta": {...}}}.
    Metric keys "acc,none" -> "acc", "exact_match,letter" -> "exact_match (letter)"; "N/A" -> None."""
    out = {}
    for task, values in (res.get("results") or {}).items():
        scores = {}
        for key, v in values.items():
            if "," not in key:
                continue  # alias, name
            metric, filt = key.split(",", 1)
            label = metric if filt == "none" else f"{metric} ({filt})"
            scores[label] = None if not isinstance(v, (int, float)) or math.isnan(v) else float(v)
        conf = (res.get("configs") or {}).get(task, {})
        n = (res.get("n-samples") or {}).get(task, {})
        items = _lm_eval_items(res, task)  # with log_samples only: the gate's paired bootstrap (job/gate.py)
        out[f"lm-eval/{task}"] = {**({"items": items} if items else {}), "scores": scores, "meta": {
            **meta, "harness": "lm-eval", "harness_version": version("lm_eval"),
            "task_version": None if (res.get("versions") or {}).get(task) is None else str(res["versions"][task]),
            "split": conf.get("test_split") or conf.get("validation_split"),
            "n_samples": n.get("effective"), "n_samples_total": n.get("original"),
            "num_fewshot": (res.get("n-shot") or {}).get(task), **_dataset(conf)}}
    return out


def _lm_eval_items(res: dict, task: str) -> Optional[dict]:
    """A task's per-item scores from its logged samples: {"unit": "item", "ids": [doc_id], "hashes": [the
    document's hash, 12 hex], "metrics": {label: [value]}, "higher_is_better", "groups": [lm-eval groups]}."""
    samples = (res.get("samples") or {}).get(task)
    if not samples:
        return None
    values: Dict[str, dict] = {}
    hashes = {}
    for s in samples:
        filt = s.get("filter", "none")
        for m in s.get("metrics") or []:
            v = s.get(m)
            if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
                values.setdefault(m if filt == "none" else f"{m} ({filt})", {})[s["doc_id"]] = float(v)
        hashes[s["doc_id"]] = str(s.get("doc_hash") or "")[:12]
    ids = sorted(hashes)
    better = (res.get("higher_is_better") or {}).get(task) or {}
    return {"unit": "item", "ids": ids, "hashes": [hashes[i] for i in ids],
            "metrics": {lab: [v.get(i) for i in ids] for lab, v in values.items()},
            "higher_is_better": {lab: better.get(lab.split(" (")[0], True) for lab in values},
            "groups": sorted(g for g, subs in (res.get("group_subtasks") or {}).items() if task in subs)}


def _dataset(conf: dict) -> dict:
    """The dataset an lm-eval task read (its path and config name, as the task names them) and its revision:
    the pinned one (dataset_kwargs.revision), else for local data files the sha256 of their bytes, else None
    (the Hub's cache at run time: lm-eval does not report which commit it read)."""
    kwargs = conf.get("dataset_kwargs") or {}
    files = kwargs.get("data_files")
    files = list(files.values()) if isinstance(files, dict) else [files] if isinstance(files, str) else files or []
    files = sorted(str(f) for x in files for f in ([x] if isinstance(x, str) else x))  # {split: [paths]} too
    rev = kwargs.get("revision") or conf.get("revision")
    if not rev and files and all(Path(str(f)).is_file() for f in files):
        import hashlib

        h = hashlib.sha256()
        for f in files:
            h.update(Path(str(f)).read_bytes())
        rev = "sha256:" + h.hexdigest()
    return {"dataset": conf.get("dataset_path"), "dataset_config": conf.get("dataset_name"), "dataset_revision": rev}


def run_lm_eval(model, tasks: List[str], include: List[str], *, limit: Optional[int], num_fewshot: int,
                seed: int, meta: dict, model_args: Optional[dict] = None, chat: bool = False,
                log=print, per_item: bool = False) -> Dict[str, dict]:
    """Score `model` (an lm-eval LM object, or a backend name with `model_args`) on `tasks`, offline.
    per_item: each result also carries its per-item scores ("items"; lm-eval's log_samples)."""
    import os

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # task data from files or the prefetched cache
    import lm_eval
    from lm_eval.tasks import TaskManager

    t0 = time.time()
    # indexing lm-eval's own thousands of task YAMLs takes a minute on a small machine: skip it when
    # every task is one of ours
    own = {t for t, _ in TINY_TASKS.values()}
    manager = TaskManager(include_path=include or None, include_defaults=not set(tasks) <= own)
    with _quiet_lm_eval():
        res = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=list(tasks),
                                      num_fewshot=num_fewshot, limit=limit, task_manager=manager,
                                      random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                      fewshot_random_seed=seed, log_samples=per_item, bootstrap_iters=100,
                                      apply_chat_template=chat)
    out = parse_lm_eval(res, {**meta, "seed": seed, "chat_template": chat})
    log("; ".join(f"{k} {scores_line(v['scores'])}" for k, v in out.items()) + f" ({time.time() - t0:.1f} s)")
    return out


def scores_line(scores: dict) -> str:
    """{'acc': 0.2, 'acc_stderr': 0.0917} -> 'acc 0.200 ± 0.092' (a log line, not the results file)."""
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    return ", ".join(f"{k} {fmt(v)}" + (f" ± {fmt(scores[k + '_stderr'])}" if k + "_stderr" in scores else "")
                     for k, v in scores.items() if not k.endswith("_stderr"))


@contextlib.contextmanager
def _quiet_lm_eval():
    """lm-eval's known noise off for one call, unless verbose=true (DFM_HPC_VERBOSE=1): its progress bars
    (it passes tqdm's `disable` itself, so TQDM_DISABLE cannot), its notices about the in-process model and
    few-shot defaults, and `git describe` in the run's cwd (fatal outside a checkout; provenance.json has the
    code's commit). Its warnings at ERROR and every other line of stderr still show."""
    import logging

    from lm_eval import evaluator

    if os.environ.get("DFM_HPC_VERBOSE") == "1":
        yield
        return
    lm_logger, level = logging.getLogger("lm_eval"), logging.getLogger("lm_eval").level
    lm_logger.setLevel(logging.ERROR)
    git_hash, evaluator.get_git_commit_hash = evaluator.get_git_commit_hash, lambda: None
    real, buf = sys.stderr, io.StringIO()
    try:
        with contextlib.redirect_stderr(buf):
            yield
    finally:
        evaluator.get_git_commit_hash = git_hash
        lm_logger.setLevel(level)
        kept = [ln for ln in buf.getvalue().replace("\r", "\n").splitlines()
                if ln.strip() and not _PROGRESS.search(ln)]
        if kept:
            real.write("\n".join(kept) + "\n")


_PROGRESS = re.compile(r"\d+%\|.*\| *\d+/\d+ \[")  # a tqdm bar


def hf_lm(model, tokenizer, batch_size: int = 8):
    """lm-eval's hf backend on a model already loaded (adapters merged)."""
    from lm_eval.models.huggingface import HFLM

    with _quiet_lm_eval():  # its notice that an in-process model is what we meant
        return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


def server_model_args(base_url: str, model: str, tokenizer: str, chat: bool) -> Tuple[str, dict]:
    """lm-eval's backend and model_args for a model behind an OpenAI-compatible server."""
    if chat:
        return "local-chat-completions", {"model": model, "base_url": f"{base_url}/chat/completions",
                                          "num_concurrent": 1, "max_retries": 2, "tokenized_requests": False}
    return "local-completions", {"model": model, "base_url": f"{base_url}/completions", "tokenizer": tokenizer,
                                 "tokenizer_backend": "huggingface", "num_concurrent": 1, "max_retries": 2,
                                 "tokenized_requests": False}


# ---------------------------------------------------------------------------- EuroEval

def euroeval_command(python: str, model: str, api_base: str, tasks: List[str], *, test_split: bool,
                     cache_dir: str, datasets: List[str] = (), extra: List[str] = ()) -> List[str]:
    """EuroEval's CLI, from its own environment, against the server ("openai/" routes LiteLLM to an
    OpenAI-compatible endpoint at --api-base)."""
    argv = [python, "-m", "euroeval.cli", "--model", f"openai/{model}", "--api-base", api_base,
            "--api-key", "none", "--language", "da", "--cache-dir", cache_dir, "--save-results",
            "--no-progress-bar", "--raise-errors"]
    for t in tasks:
        argv += ["--task", t]
    for d in datasets:
        argv += ["--dataset", d]
    if test_split:
        argv.append("--evaluate-test-split")
    return argv + list(extra)


def _num(v) -> Optional[float]:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def parse_euroeval(records, meta: Optional[dict] = None) -> Dict[str, dict]:
    """EuroEval JSONL records -> {"euroeval/<task>/<dataset>": {"scores", "meta"}}. Both formats:
    EuroEval >= 17 (Every Eval Ever: `evaluation_results`, the 95 % half-width as a confidence
    interval) and older (`results.total`, `test_`/`val_` prefixes, `_se` keys)."""
    out = {}
    for rec in records:
        if hasattr(rec, "model_dump"):
            rec = rec.model_dump()
        if "schema_version" in rec:
            lib = rec.get("eval_library") or {}
            det = lib.get("additional_details") or {}
            task, dataset, ver = det.get("task"), det.get("dataset"), lib.get("version")
            src = next(iter(r.get("source_data") or {} for r in rec.get("evaluation_results") or []), {})
            val = str(det.get("validation_split")).lower() == "true"
            scores, n = {}, None
            for r in rec.get("evaluation_results") or []:
                name = str(r["evaluation_name"]).removeprefix("test_").removeprefix("val_")
                sd = r.get("score_details") or {}
                scores[name] = _num(sd.get("score"))
                unc = sd.get("uncertainty") or {}
                ci = unc.get("confidence_interval")
                if ci and scores[name] is not None:
                    scores[f"{name}_se"] = _num(ci["upper"]) - scores[name]
                n = unc.get("num_samples", n)
            engine = (rec.get("model_info") or {}).get("inference_engine") or {}
        else:
            task, dataset, ver = rec["task"], rec["dataset"], rec.get("euroeval_version")
            val = bool(rec.get("validation_split"))
            scores = {k.removeprefix("test_").removeprefix("val_"): _num(v)
                      for k, v in ((rec.get("results") or {}).get("total") or {}).items()}
            n = len((rec.get("results") or {}).get("raw") or []) or None
            engine, src = {}, {}
        items = _euroeval_iterations(rec)
        out[f"euroeval/{task}/{dataset}"] = {**({"items": items} if items else {}), "scores": scores, "meta": {
            **(meta or {}), "harness": "euroeval", "harness_version": ver, "task_version": ver,
            "split": "validation" if val else "test", "n_samples": n,
            # a revision only where the record reports one: EuroEval names the dataset, not its commit
            "dataset": src.get("hf_repo") or dataset,
            "dataset_revision": (src.get("additional_details") or {}).get("revision"),
            **({"client_engine": f"{engine.get('name')} {engine.get('version')}"} if engine else {})}}
    return out


def _euroeval_iterations(rec: dict) -> Optional[dict]:
    """The per-iteration scores of an older-format record (results.raw, on a 0-1 scale: EuroEval scales its
    totals to percentages after averaging). Iteration i is the same bootstrap resample of the test set for
    every model (EuroEval's fixed seed), so they pair (job/gate.py). The newer format keeps none."""
    raw = (rec.get("results") or {}).get("raw")
    raw = raw.get("test") if isinstance(raw, dict) else raw
    if not isinstance(raw, list) or not raw or not all(isinstance(r, dict) for r in raw):
        return None
    labels = [k for k in raw[0] if isinstance(raw[0][k], (int, float))]
    return {"unit": "iteration", "ids": list(range(len(raw))),
            "metrics": {k.removeprefix("test_").removeprefix("val_"): [_num(r.get(k)) for r in raw] for k in labels}}


def read_jsonl(path: Path) -> List[dict]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def run_euroeval(argv: List[str], workdir: Path, meta: dict, env: Optional[dict] = None, timeout: float = 3600,
                 log=print) -> Tuple[Optional[Dict[str, dict]], Optional[str]]:
    """(results, None) or (None, why not): EuroEval's CLI in `workdir`, its results JSONL parsed."""
    import os

    workdir.mkdir(parents=True, exist_ok=True)
    results = workdir / "euroeval_benchmark_results.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           **(env or {})}
    log("EuroEval: " + " ".join(argv))
    with open(workdir / "euroeval.log", "ab") as f:
        try:
            code = subprocess.run(argv, cwd=workdir, env=env, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, f"EuroEval did not run: {type(e).__name__}: {e}"
    out = parse_euroeval(read_jsonl(results), meta)
    if not out:
        tail = "\n".join((workdir / "euroeval.log").read_text(errors="replace").splitlines()[-8:])
        return None, f"EuroEval (exit {code}) wrote no results; last lines of {workdir / 'euroeval.log'}:\n{tail}"
    return out, None
