"""The stages' keys: one dataclass per stage (`sft.*`, `evaluate.*`, ...), on the resources of StageConfig.

Part of the typed config tree (dfm_hpc/schema.py re-exports every class here; read it first). The same rules:
one comment per field, choices as Enums, number ranges as `ranged(...)` metadata; docs/config.md is generated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from dfm_hpc.choices import (
    Attention,
    DpoLoss,
    IpPolicy,
    PiiType,
    Precision,
    QualityFlag,
    Replacement,
    ReportTo,
    Review,
    ServerBackend,
    SftPath,
    WandbMode,
    ranged,
)


@dataclass
class StageConfig:
    """Resources every stage declares; None means "as the cluster profile says"."""

    nodes: int = ranged(1, ge=1)  # nodes per job
    # copies of the job (a Slurm array) sharing no collectives; work splits over array x ranks (translate, pii)
    array: int = ranged(1, ge=1, hint="{rule} (1 = a single job)")
    # walltime, [D-]HH:MM:SS; auto: the predicted time x cluster.time_factor + start-up, within the partition's limit
    time: str = "auto"
    fallback_time: str = "01:00:00"  # the walltime time=auto gives when the plan has no prediction for the stage
    partition: Optional[str] = None  # the job's partition; null: the cluster profile's
    tasks_per_node: Optional[int] = ranged(None, ge=1)  # ranks per node; null: the cluster profile's
    gpus_per_node: Optional[int] = ranged(None, ge=0)  # GPUs (GCDs) per node; null: the cluster profile's
    cpus_per_task: Optional[int] = ranged(None, ge=1)  # cores per rank; null: the cluster profile's


@dataclass
class DemoStage(StageConfig):
    value: float = 1.0  # rank r contributes (r + 1) * value to the all_reduce
    sleep_s: float = ranged(0.0, ge=0, hint="{rule} seconds")  # keep the ranks busy (for trying cancel / status)
    fail: bool = False  # fail on purpose (to try failure handling and rerun)
    fallback_time: str = "00:10:00"


@dataclass
class LumiCheckStage(StageConfig):
    """A first run on a cluster: all_reduce bandwidth, RCCL's network provider, GPU and core binding."""

    nodes: int = 2
    sizes_mb: List[float] = field(default_factory=lambda: [1.0, 16.0, 256.0])  # all_reduce message sizes
    iterations: int = ranged(5, ge=1)  # timed all_reduces per size (after one warm-up)
    time: str = "00:15:00"  # no prediction: a fixed walltime


@dataclass
class DemoCheckStage(StageConfig):
    """Runs after `demo` (its own job, afterok): checks the demo's result from the run dir."""

    tasks_per_node: Optional[int] = 1
    fail: bool = False  # fail on purpose (to try failure handling and rerun)
    fallback_time: str = "00:05:00"


@dataclass
class TranslateStage(StageConfig):
    """OASST2 -> Danish. Its filters run before translation (counts in report.json and the dataset card),
    by default as OASST2's "ready" files; a message below a dropped one is dropped too (orphaned)."""

    source_langs: List[str] = field(default_factory=lambda: ["en"])  # OASST2 `lang` values to translate
    shards: int = 8  # work units balanced by source tokens; each worker takes shards by rank
    chunk_size: int = ranged(256, ge=1)  # segments per flushed chunk
    max_messages: Optional[int] = ranged(None, ge=1)  # translate only the first N messages (trials)
    tree_states: List[str] = field(default_factory=lambda: ["ready_for_export"])  # trees in these states; []: any
    drop_deleted: bool = True  # drop messages marked deleted
    review: Review = Review.not_failed  # any | not_failed (unreviewed kept) | passed (review_result true only)
    drop_synthetic: bool = True  # drop messages OASST marks synthetic (written by a model)


@dataclass
class MergeStage(StageConfig):
    tasks_per_node: Optional[int] = 1  # one process; no GPU
    gpus_per_node: Optional[int] = 0
    # best: one path per tree (best rank first) | all: every root-to-assistant-leaf path (docs/translation.md#merge)
    sft_path: SftPath = SftPath.best
    sft_top_k: Optional[int] = ranged(None, ge=1)  # with sft_path=all: at most this many paths per tree
    min_length_ratio: float = 0.3  # flag length_ratio below this Danish/source length ratio
    max_length_ratio: float = 3.0  # and above this one
    # quality flags that keep a message out of the SFT/DPO views (all flags are counted either way)
    drop: List[QualityFlag] = field(default_factory=lambda: list(QualityFlag))
    fallback_time: str = "00:30:00"


@dataclass
class PiiStage(StageConfig):
    """Finds and replaces personal information in training data before anything trains on it."""

    # what to filter: unset = this run's merge outputs (sft, dpo); or a JSONL/Parquet file with `text`, or tiny:corpus
    input: Optional[str] = None
    replacement: Replacement = Replacement.tags  # tags: <CPR>, <EMAIL>...; fake: realistic fakes (same shape)
    types: List[PiiType] = field(default_factory=lambda: list(PiiType))  # what to find and replace
    shards: int = 8  # work units; each worker takes shards by rank, like translate
    chunk_size: int = ranged(1000, ge=1)  # rows per flushed chunk (resume point)
    # which IP addresses: all | public (global, except public DNS resolvers: DFM's filter) | off; never netmasks
    ip_policy: IpPolicy = IpPolicy.all
    # Danish NER model (hub id or path) for names and street addresses, prefetched; unset: off (docs/pii.md: why)
    ner: Optional[str] = None
    ner_revision: Optional[str] = None  # the NER model's revision; a commit hash pins it
    ner_batch_size: int = ranged(32, ge=1)  # texts per NER forward pass
    audit_samples: int = ranged(10, ge=0)  # masked replaced spans per type kept in report.json and the datasheet
    tasks_per_node: Optional[int] = 1
    gpus_per_node: Optional[int] = 0


@dataclass
class TokenizeStage(StageConfig):
    """Corpora -> token stores (memory-mapped, reusable); cpt reads them. Shards over array x ranks workers."""

    shards: int = ranged(0, ge=0)  # per source: work and resume units (contiguous rows); 0: one per worker
    # where token stores live (tokens-<key>/, by tokenizer and source, shared by runs); unset: runs_root
    store_root: Optional[str] = None
    batch_docs: int = ranged(1000, ge=1)  # documents per tokenizer call
    # also tokenize the run's sft/dpo chats (token ids + assistant mask) into the store, for sft and dpo to read
    chats: bool = False
    tasks_per_node: Optional[int] = 1
    gpus_per_node: Optional[int] = 0
    fallback_time: str = "04:00:00"


@dataclass
class TrainStage(StageConfig):
    lr: float = ranged(2e-5, gt=0, hint="the learning rate must be {rule}, e.g. 1e-4")  # peak learning rate
    warmup_steps: int = 0  # linear warmup to lr, then cosine decay; 0 to max_steps
    max_steps: int = ranged(1000, ge=1, hint="{rule} optimizer step")  # optimizer steps to train
    # sequences per optimizer step; divisible by world size x micro_batch_size
    global_batch_size: int = ranged(64, ge=1)
    micro_batch_size: int = ranged(1, ge=1)  # sequences per rank per forward pass
    seq_len: int = ranged(4096, ge=1, hint="{rule} token, e.g. 4096")  # tokens per training sequence
    precision: Precision = Precision.bf16  # fp32 on CPU
    gradient_checkpointing: bool = True  # recompute activations in the backward pass (less memory, ~30% slower)
    attn_implementation: Attention = Attention.sdpa  # flash_attention_2 needs flash-attn in the container
    liger_kernel: bool = False  # Liger's fused linear cross-entropy (less memory at long context); GPUs only
    # checkpoint interval in steps (a checkpoint is also saved on Slurm's pre-timeout signal)
    save_every_steps: int = ranged(500, ge=1, hint="{rule} (a checkpoint every N steps)")
    # also checkpoint this many minutes after the last one (uneven steps, preemptible queues); null: by steps only
    save_every_minutes: Optional[float] = ranged(None, gt=0)
    keep_checkpoints: int = ranged(2, ge=1, hint="keep {rule}")  # the newest checkpoints kept
    log_every_steps: int = ranged(10, ge=1)  # step metrics (loss, lr, tokens/s, MFU) every N steps
    # held-out loss every N steps (eval_loss in the step metrics, loss.png, the card); null: once, after training
    eval_every_steps: Optional[int] = ranged(None, ge=1)
    init_from: Optional[str] = None  # a run dir whose previous stage's model to start from
    # trackers: tensorboard (files in the run dir) and/or wandb (offline on compute nodes unless wandb_mode says)
    report_to: List[ReportTo] = field(default_factory=lambda: [ReportTo.tensorboard])
    wandb_project: str = "dfm"  # W&B project (WANDB_PROJECT)
    wandb_mode: WandbMode = WandbMode.offline  # offline on compute nodes; `wandb sync` later


@dataclass
class CptStage(TrainStage):
    # held-out share of each source's documents for eval loss / perplexity
    eval_fraction: float = ranged(0.02, ge=0, lt=1, hint="a share {rule}")
    # continue from this checkpoint-N dir of any run's cpt stage, on any number of ranks (a universal checkpoint)
    resume_from: Optional[str] = None
    # every N-th saved checkpoint scored by its own evaluate job (docs/evaluation.md#checkpoint-evaluation); 0: off
    eval_checkpoints: Optional[int] = ranged(None, ge=0, hint="{rule} (every N-th saved checkpoint; 0: off)")
    eval_checkpoints_time: str = "00:30:00"  # walltime of each checkpoint's evaluate job, [D-]HH:MM:SS


@dataclass
class SftStage(TrainStage):
    # chats with `messages`: unset = this run's merge stage; or a run dir, a .parquet/.jsonl file, a hub id, tiny:chats
    dataset: Optional[str] = None
    packing: bool = True  # pack several chats per sequence (attention kept per chat)
    # Ulysses sequence parallelism: ranks sharing one sequence (divides heads, seq_len and world size; ZeRO-3)
    sequence_parallel: int = ranged(1, ge=1, hint="{rule} (1: off; 2, 4 or 8 ranks per sequence)")
    train_reasoning: bool = False  # train the assistant's reasoning (reasoning_content) too; false: drop it
    # one sample per assistant turn, its history as inference renders it (templates that rewrite earlier turns: Qwen3)
    split_turns: bool = False
    lr: float = 1e-4
    # also write the base with the adapter merged in (stages/<stage>/merged/: a plain HF model to serve or upload)
    merge_adapter: bool = False
    # every N-th saved checkpoint scored by its own evaluate job (docs/evaluation.md#checkpoint-evaluation); 0: off
    eval_checkpoints: Optional[int] = ranged(None, ge=0, hint="{rule} (every N-th saved checkpoint; 0: off)")
    eval_checkpoints_time: str = "00:30:00"  # walltime of each checkpoint's evaluate job, [D-]HH:MM:SS


@dataclass
class DpoStage(TrainStage):
    dataset: Optional[str] = None  # prompt/chosen/rejected pairs; same sources as sft.dataset
    beta: float = ranged(0.1, gt=0, hint="DPO's temperature must be {rule}, e.g. 0.1")  # DPO temperature
    loss_type: DpoLoss = DpoLoss.sigmoid  # TRL's DPO loss
    precompute_ref_log_probs: bool = False  # compute reference log-probs once before training
    lr: float = 5e-6
    merge_adapter: bool = False  # as sft.merge_adapter


@dataclass
class GateConfig:
    """A promotion gate on the evaluate stage's benchmarks: each gated model against a reference, per task and
    task group, with paired bootstrap intervals over the items (docs/evaluation.md#gates). Off unless enabled."""

    enabled: bool = False  # gate this stage's results; a regression fails the stage (the chain stops)
    # base | a model this stage scores (sft) | a run dir (its evaluate results) | a results.json file
    reference: str = "base"
    reference_model: Optional[str] = None  # the row of a reference run/results.json to compare with; unset: its last
    models: List[str] = field(default_factory=list)  # models gated (base, sft, dpo, ...); empty: all but the reference
    # half-width of the interval in standard errors: regressed when delta + k * SE < -max_drop
    k: float = ranged(2.0, ge=0)
    max_drop: float = ranged(0.0, ge=0)  # the drop tolerated beyond the interval, on the 0-1 score scale
    floors: Dict[str, float] = field(default_factory=dict)  # task or group -> the lowest score (0-1) that passes
    # group name -> tasks (benchmark keys or task names, * patterns); lm-eval's own groups are added
    groups: Dict[str, List[str]] = field(default_factory=dict)
    metrics: Dict[str, str] = field(default_factory=dict)  # task -> the metric gated; unset: its first per-item one
    warn_only: bool = False  # a regression warns (log, status, card) and the chain goes on
    resamples: int = ranged(1000, ge=10)  # paired bootstrap resamples per task
    seed: int = 0  # the bootstrap's random seed


@dataclass
class EvaluateStage(StageConfig):
    """Scores models of this run (and others, side by side): perplexity, benchmarks (lm-eval,
    EuroEval, inspect), generations. docs/evaluation.md"""

    # which models: base, a stage of this run (cpt, sft, dpo) or a run dir (its last model); empty: base + trained
    models: List[str] = field(default_factory=list)
    # lm-eval task names (Danish: belebele_dan_Latn, arc_da, hellaswag_da, m_mmlu_da, truthfulqa_da_mc1/mc2; from
    # the prefetched HF cache), or tiny:danish_mc / tiny:danish_mc_gen (written by dfm_hpc); empty: no lm-eval
    lm_eval_tasks: List[str] = field(default_factory=list)
    lm_eval_include: Optional[str] = None  # a dir of extra task YAMLs (lm-eval's include_path)
    lm_eval_limit: Optional[int] = ranged(None, ge=1)  # at most this many items per task (null: all; a partial score)
    num_fewshot: int = ranged(0, ge=0)  # few-shot examples per lm-eval item
    # where benchmarks run: none = lm-eval in-process on the loaded model; vllm | transformers = an OpenAI-compatible
    # server started in the job (base + adapters under their names), lm-eval and EuroEval its clients
    server: ServerBackend = ServerBackend.none
    server_port: int = ranged(0, ge=0, le=65535)  # 127.0.0.1:PORT; 0: a free port chosen per job (shared nodes)
    server_timeout_s: float = ranged(900.0, gt=0)  # from start to a healthy /health
    server_args: List[str] = field(default_factory=list)  # extra server arguments (vllm serve ...)
    server_chat: bool = False  # lm-eval through chat completions (the chat template) instead of completions
    # torch.compile in the server; off: TORCH_COMPILE_DISABLE/TORCHDYNAMO_DISABLE (LUMI's vLLM tests; docs/lumi.md)
    server_compile: bool = False
    euroeval: bool = True  # EuroEval's Danish tasks against the server (needs evaluate.server)
    euroeval_tasks: List[str] = field(default_factory=list)  # EuroEval tasks; empty: its Danish defaults
    euroeval_datasets: List[str] = field(default_factory=list)  # only these EuroEval datasets
    euroeval_test_split: bool = False  # the test split (leaderboard numbers); default: validation
    euroeval_args: List[str] = field(default_factory=list)  # more EuroEval CLI arguments (--num-iterations 1)
    # EuroEval's own environment's python (its pins conflict with training's); unset: $DFM_HPC_EUROEVAL_PYTHON
    euroeval_python: Optional[str] = None
    # EuroEval's datasets (prefetch ... --download fills it); unset: $DFM_HPC_EUROEVAL_CACHE, else the run's cache
    euroeval_cache: Optional[str] = None
    # inspect_ai tasks against the server (needs evaluate.server): dfm:danish_qa (written by dfm_hpc), a registered
    # task (inspect_evals/...) or file.py@task; empty: no inspect
    inspect_tasks: List[str] = field(default_factory=list)
    inspect_limit: Optional[int] = ranged(None, ge=1)  # at most this many samples per inspect task (null: all)
    inspect_args: List[str] = field(default_factory=list)  # more `inspect eval` arguments (--epochs 2)
    # inspect's environment's python (the harness overlay on LUMI); unset: $DFM_HPC_INSPECT_PYTHON, else EuroEval's
    inspect_python: Optional[str] = None
    max_eval_texts: int = ranged(1000, ge=1)  # held-out texts for perplexity (data.eval_text)
    generation_prompts: int = ranged(5, ge=0)  # Danish prompts to generate samples for
    max_new_tokens: int = ranged(64, ge=1)  # the longest generated sample
    gate: GateConfig = field(default_factory=GateConfig)  # promotion gate: a regression stops the chain
    tasks_per_node: Optional[int] = 1
    fallback_time: str = "02:00:00"


@dataclass
class CardStage(StageConfig):
    """Model card (HF README.md with YAML metadata) for the run's last model, datasheets for its data."""

    license: str = "apache-2.0"  # the model's license in the card's metadata (an HF license id)
    repo_id: Optional[str] = None  # where the model would be published, e.g. danish-foundation-models/munin-7b-chat
    tasks_per_node: Optional[int] = 1
    gpus_per_node: Optional[int] = 0
    fallback_time: str = "00:15:00"
