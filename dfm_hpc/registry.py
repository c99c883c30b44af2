"""The one stage registry: which stages exist, in the recipe's order, and what the login node needs to know
about each: its config class, what it reads (config keys naming sources, and earlier stages' outputs), what
it writes under stages/<name>/, whether it can resume. The checks, prefetch and docs/pipeline.md's table
(docs/gen_stages.py) read it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from dfm_hpc import schema

MODEL, DATASET = "model", "dataset"
TEXT = ("text",)


@dataclass(frozen=True)
class Reads:
    """A config key naming what a stage reads: a hub id, a local path or tiny:NAME (sources.py)."""

    key: str  # dotted
    kind: str = DATASET  # what prefetch fetches for a hub id: MODEL or DATASET
    columns: Tuple[str, ...] = ()  # a local data file must have them in its first record (checks/paths.py)
    revision: Optional[str] = None  # the key of the hub revision it loads
    run_dir: bool = False  # may name a run dir instead (its pii, else merge, outputs)
    unless: Optional[str] = None  # a key that, when set, is read instead (data.corpus: unless data.mixture)
    entries: bool = False  # a list of entries (data.mixture[]): each one's source, revision and subset
    when: Optional[str] = None  # read only when this key is true (tokenize reads sft.dataset when tokenize.chats)


@dataclass(frozen=True)
class StageSpec:
    """One stage of the recipe: what the login node plans and checks, and what a rank imports."""

    name: str
    config: type  # its config class (a field of Config of the same name)
    reads: Tuple[Reads, ...] = ()  # local ones must exist at plan time, hub ones be in an offline job's cache
    uses: Tuple[str, ...] = ()  # earlier stages whose outputs it reads when the run has them
    writes: Tuple[str, ...] = ()  # under stages/<name>/, besides logs/ and the markers (rundir.py)
    resumable: bool = False  # a restart continues from its files (checkpoints, chunks): may be requeued
    # its ranks pass a safe point (StageContext.should_stop) every few minutes at most, so the hang watchdog
    # may watch it by default (evaluate's safe points are whole benchmarks, hours apart on a 7B model)
    beats: bool = False
    gpu: bool = True  # its work needs a GPU; False: a CPU partition takes it where the profile has one (cpu_only)

    @property
    def trained(self) -> bool:  # evaluate and card pick up its model/
        return "model/" in self.writes

    @property
    def module(self) -> str:  # imported only in a rank (it imports torch & co.)
        return f"dfm_hpc.stages.{self.name}"


_MODEL = Reads("model.name_or_path", MODEL)  # the model trained or scored (tokenize: its tokenizer)
_CORPUS = (Reads("data.corpus", columns=TEXT, unless="data.mixture"),
           Reads("data.mixture", columns=TEXT, run_dir=True, entries=True))
_TRAINED = ("model/", "checkpoints/", "metrics.jsonl", "loss.png", "summary.json")
_MERGED = ("merged/",)  # merge_adapter: the adapter merged into its base

STAGES: Dict[str, StageSpec] = {s.name: s for s in (
    StageSpec("demo", schema.DemoStage, writes=("result.json",)),
    StageSpec("demo_check", schema.DemoCheckStage, uses=("demo",), writes=("check.json",)),
    StageSpec("lumi_check", schema.LumiCheckStage, writes=("verdict.md", "result.json")),
    StageSpec("translate", schema.TranslateStage, resumable=True, beats=True, writes=("plan.json", "shards/"),
              reads=(Reads("translator.name_or_path", MODEL, revision="translator.revision"),
                     Reads("data.oasst2", revision="data.oasst2_revision"))),
    StageSpec("merge", schema.MergeStage, gpu=False, uses=("translate",),
              writes=("messages.jsonl", "sft.jsonl", "dpo.jsonl", "*.parquet", "report.json", "README.md")),
    StageSpec("pii", schema.PiiStage, resumable=True, beats=True, gpu=False, uses=("merge",),  # but see needs_gpu
              reads=(Reads("pii.input", columns=TEXT), Reads("pii.ner", MODEL, revision="pii.ner_revision")),
              writes=("plan.json", "shards/", "sft.jsonl", "dpo.jsonl", "corpus.jsonl", "*.parquet", "report.json")),
    # the token stores go under tokenize.store_root (default: runs_root), shared by the runs there
    # tokenize.chats: also the sft/dpo chats the run trains on, as those stages read them (chat_store.py)
    # resumable: a shard's files are written whole, finished shards are skipped on a restart
    StageSpec("tokenize", schema.TokenizeStage, resumable=True, beats=True, gpu=False, uses=("pii", "merge"),
              writes=("stores.json", "chat_stores.json"),
              reads=(_MODEL, *_CORPUS, Reads("sft.dataset", columns=("messages",), run_dir=True, when="tokenize.chats"),
                     Reads("dpo.dataset", columns=("prompt", "chosen", "rejected"), run_dir=True,
                           when="tokenize.chats"))),
    StageSpec("cpt", schema.CptStage, resumable=True, beats=True, reads=(_MODEL, *_CORPUS),
              uses=("tokenize", "pii"),
              writes=(*_TRAINED, "data/")),
    StageSpec("sft", schema.SftStage, resumable=True, beats=True, uses=("pii", "merge", "cpt"),
              writes=_TRAINED + _MERGED,
              reads=(_MODEL, Reads("sft.dataset", columns=("messages",), run_dir=True))),
    StageSpec("dpo", schema.DpoStage, resumable=True, beats=True, uses=("pii", "merge", "sft", "cpt"),
              writes=_TRAINED + _MERGED,
              reads=(_MODEL, Reads("dpo.dataset", columns=("prompt", "chosen", "rejected"), run_dir=True))),
    # resumable: each model's in-process part and each served benchmark is kept (progress.json) and skipped
    StageSpec("evaluate", schema.EvaluateStage, reads=(_MODEL, Reads("data.eval_text", columns=TEXT)), resumable=True,
              uses=("cpt", "sft", "dpo", "pii"), writes=("results.json", "results.md", "samples.jsonl", "samples.md")),
    StageSpec("card", schema.CardStage, gpu=False, uses=("merge", "pii", "cpt", "sft", "dpo", "evaluate"),
              writes=("README.md", "card.json", "loss_*.png", "datasheets/")),
)}
TRAINED_STAGES = tuple(n for n, s in STAGES.items() if s.trained)


def needs_gpu(cfg, stage: str) -> bool:
    """Whether a stage's work needs a GPU: its spec's, and pii's only for its NER pass (a model)."""
    spec = STAGES.get(stage)
    return spec is None or spec.gpu or (stage == "pii" and bool(cfg.pii.ner))


@dataclass(frozen=True)
class Input:
    """One source a run's stage reads, as the run's config names it."""

    stage: str  # the first stage of the run that reads it
    reads: Reads
    key: str  # where the value is: sft.dataset, data.mixture[2].source
    value: str
    revision: Optional[str] = None
    subset: Optional[str] = None  # a hub dataset's config name (data.mixture[i].subset)
    entry: Optional[str] = None  # the list entry it is in: data.mixture[2]


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def inputs(cfg) -> List[Input]:
    """Every source the run's stages read, in the run's order: each key once, unset ones left out."""
    out: List[Input] = []
    seen = set()
    for stage in cfg.stages:
        for r in STAGES[stage].reads if stage in STAGES else ():
            if r.key in seen or (r.unless and _get(cfg, r.unless)) or (r.when and not _get(cfg, r.when)):
                continue
            seen.add(r.key)
            value = _get(cfg, r.key)
            if r.entries:
                out += [Input(stage, r, f"{r.key}[{i}].source", str(m.source), m.revision, m.subset, f"{r.key}[{i}]")
                        for i, m in enumerate(value or []) if m.source]
            elif value:
                out.append(Input(stage, r, r.key, str(value), _get(cfg, r.revision) if r.revision else None))
    return out
