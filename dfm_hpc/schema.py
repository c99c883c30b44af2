"""The typed config tree: one dataclass per concern, choices as Enums, number ranges as field metadata.

Every key a user can set lives here, with its type, default, allowed values and meaning (one comment per
field, trailing or a block right above it; docs/config.md is generated from them).
YAML files under conf/ only pick values; Hydra merges them into these dataclasses in struct mode, so a misspelled
key or a value of the wrong type or outside its set fails on the login node, before anything is queued.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from dfm_hpc.choices import (  # noqa: F401  (the keys' types: schema.X is where a reader looks)
    Attention,
    Backend,
    Choice,
    ContainerVerb,
    DpoLoss,
    IpPolicy,
    Launcher,
    MailType,
    OasstLayout,
    PeftMethod,
    PiiType,
    Precision,
    QualityFlag,
    Replacement,
    ReportTo,
    Review,
    Runtime,
    Scheduler,
    ServerBackend,
    SftPath,
    System,
    TranslatorDtype,
    WandbMode,
    ranged,
)


@dataclass
class ContainerConfig:
    image: Optional[str] = None  # .sif image the ranks run in; null: the host's python
    runtime: Runtime = Runtime.singularity  # bwrap: the test cluster's sandbox without Slurm tools (slurm/sandbox.sh)
    verb: ContainerVerb = ContainerVerb.exec  # singularity exec, or run (LAIF images: the runscript sets up the GPUs)
    # LAIF images: `module purge`, then this module binds slurmd, Lustre and /appl; null: host_binds (older images)
    bindings_module: Optional[str] = None
    module_path: Optional[str] = None  # `module use` this before loading bindings_module
    host_binds: List[str] = field(default_factory=list)  # host paths bound only without bindings_module
    binds: List[str] = field(default_factory=list)  # paths always bound (e.g. the project's own)
    # squashfs image of a venv with dfm_hpc and extras, mounted at /user-software (LUMI AI guide)
    overlay: Optional[str] = None
    python: str = "python"  # the interpreter inside the container
    gpu_flag: Optional[str] = None  # GPU option after the verb: --nv (NVIDIA), --rocm; null: none (LAIF's runscript)
    # the image's CTranslate2 is a GPU build for its accelerator (LUMI: a gfx90a source build); without it LUMI
    # refuses translator.backend=ctranslate2 on GPU nodes (PyPI's wheel has no HIP; docs/lumi.md)
    ctranslate2_gpu: bool = False


@dataclass
class ClusterConfig:
    name: str = "local"  # the profile's name (conf/cluster/<name>.yaml), in the scripts and the plan
    system: System = System.generic  # lumi turns on LUMI's rules: account form, partitions, 56 cores, 8 GCDs
    scheduler: Scheduler = Scheduler.local  # local: ranks are subprocesses here; slurm: sbatch
    account: Optional[str] = None  # sbatch --account; on LUMI project_<9 digits>
    partition: Optional[str] = None  # sbatch --partition; null: the cluster's default partition
    qos: Optional[str] = None  # sbatch --qos; null: the account's default
    gpus_per_node: int = ranged(0, ge=0)  # GPUs (GCDs on LUMI) per node
    device: Optional[str] = None  # the nodes' GPU, a throughput.devices key (h100...); null: LUMI mi250x_gcd, else h100
    tasks_per_node: int = ranged(1, ge=1)  # ranks per node (one per GCD/GPU on LUMI)
    cpus_per_task: int = ranged(1, ge=1)  # cores per rank (LUMI: 7 of a node's 56 with 8 ranks)
    mem: Optional[str] = None  # sbatch --mem, e.g. "480G"; "0" = all of the node
    mem_per_gpu: Optional[str] = None  # sbatch --mem-per-gpu, e.g. "60G" (instead of mem)
    cpu_bind: Optional[str] = None  # srun --cpu-bind value
    launcher: Launcher = Launcher.srun  # srun: a task per rank; torchrun: a task per node, torchrun spawns the ranks
    exclusive: bool = False  # sbatch --exclusive (whole nodes)
    # seconds before the time limit at which Slurm sends USR2 (submitit's signal): the ranks checkpoint and stop
    signal_delay_s: int = ranged(120, ge=0, hint="{rule} seconds before the time limit")
    # restarts a job may have (SLURM_RESTART_COUNT: requeues, node failures) before its stage fails with the reason
    # instead of being requeued again; at least the plan's predicted requeues (checked), with room for node failures
    max_restarts: int = ranged(10, ge=0, hint="{rule} restarts")
    # minutes without progress before the host-side watchdog ends the step, requeuing without the node that hung
    # (docs/lumi.md#hangs-and-bad-nodes); null: auto (>= 30, or start-up + 10 predicted steps); 0: off
    hang_minutes: Optional[float] = ranged(None, ge=0, hint="{rule} minutes (0: off)")
    mail_type: List[MailType] = field(default_factory=list)  # Slurm's own e-mail (--mail-type), e.g. [FAIL,REQUEUE]
    mail_user: Optional[str] = None  # sbatch --mail-user; null: Slurm's default (the submitting user)
    wckey: Optional[str] = None  # sbatch --wckey; null: none (some sites reject unknown wckeys)
    # the ranks' environment; values are literal unless written expand:..., secrets go by name (docs/security.md)
    env: Dict[str, str] = field(default_factory=dict)
    setup: List[str] = field(default_factory=list)  # shell lines run in the sbatch script before srun
    # more such lines for the evaluate job only (LUMI: where EuroEval's environment is, for its model server)
    evaluate_setup: List[str] = field(default_factory=list)
    srun_args: List[str] = field(default_factory=list)  # more srun arguments
    torchrun_args: List[str] = field(default_factory=list)  # launcher=torchrun: extra flags (LUMI: NUMA binding)
    sbatch_extra: Dict[str, str] = field(default_factory=dict)  # more sbatch options, name -> value
    # settings merged over this profile for one-process stages (1 node, 1 task, <= 1 GPU), e.g. LUMI: a small-g GCD
    single_device: Optional[Dict[str, Any]] = None
    # as single_device, for stages that need no GPU (merge, card, tokenize; pii without NER); LUMI: LUMI-C small
    cpu_only: Optional[Dict[str, Any]] = None
    container: ContainerConfig = field(default_factory=ContainerConfig)  # what the ranks run in
    check_paths: Optional[bool] = None  # whether input paths must exist; null: only when running on `system`


@dataclass
class ModelConfig:
    name: str = "tiny_llama"  # the model's label in plans, logs and cards
    # hub id, local path, or tiny:<family> (random weights, built locally); its config.json is the model's shape
    # for the FLOPs, memory and MFU estimates (dfm_hpc/model_shape.py)
    name_or_path: str = "tiny:llama"
    # sft/dpo: auto (the tokenizer's own; dfm_hpc's managed one only when it has none) | managed | keep | a .jinja file
    chat_template: str = "auto"


@dataclass
class MixtureSource:
    """One source of a CPT mixture (data.mixture); give `weight` or `tokens`."""

    source: str = ""  # tiny:corpus, a JSONL/Parquet file (`text`), a run dir (its PII-filtered corpus) or a hub id
    # share of the training blocks, relative to the other weights
    weight: Optional[float] = ranged(None, gt=0, hint="weights must be {rule}")
    tokens: Optional[int] = None  # or a fixed token budget (taken before the weights split the rest)
    # the most passes over this source (upsampling); needing more is an error
    epochs: float = ranged(1.0, gt=0, hint="the most passes over the source must be {rule}")
    subset: Optional[str] = None  # hub dataset config name
    revision: Optional[str] = None  # hub revision (commit) to pin
    name: Optional[str] = None  # label in logs and the datasheet; default: the source


@dataclass
class DataConfig:
    oasst2: str = "OpenAssistant/oasst2"  # OASST2: hub id (org/name) or a local export
    oasst2_revision: Optional[str] = None  # hub revision (commit) to pin
    oasst2_layout: OasstLayout = OasstLayout.auto  # auto: from the content; or force trees, nested, messages...
    corpus: Optional[str] = None  # CPT corpus: hub id or local JSONL/Parquet with `text`
    # CPT mixture: sources with weights or token budgets (docs/training.md#mixtures); empty: data.corpus alone
    mixture: List[MixtureSource] = field(default_factory=list)
    eval_text: Optional[str] = None  # held-out Danish text for perplexity; unset: what cpt, sft or dpo held out


@dataclass
class TranslatorConfig:
    name: str = "madlad400_3b"  # the translator's label; keys its throughput (throughput.devices.*)
    name_or_path: str = "google/madlad400-3b-mt"  # hub id, local path (or CTranslate2 dir), or tiny:t5
    revision: Optional[str] = None  # hub revision (commit) to pin
    backend: Backend = Backend.hf  # hf: transformers; ctranslate2: a converted model (faster on CPU)
    target_lang: str = "da"  # language code of the <2xx> prefix token
    num_beams: int = ranged(1, ge=1, hint="{rule} (1 = greedy)")  # beam search width; 1: greedy (deterministic)
    dtype: TranslatorDtype = TranslatorDtype.bfloat16  # weights and compute on GPU; CPU runs float32
    max_batch_tokens: int = ranged(16384, ge=1)  # token budget of one length-sorted batch


@dataclass
class DeepSpeedConfig:
    stage: int = ranged(2, ge=0, le=3, hint="ZeRO stages are {rule}")  # ZeRO stage
    offload_optimizer: bool = False  # optimizer state in CPU memory
    offload_params: bool = False  # parameters in CPU memory (ZeRO-3)
    overlap_comm: bool = True  # overlap gradient reduction with the backward pass
    contiguous_gradients: bool = True  # copy gradients into one buffer as they are made (less fragmentation)
    reduce_bucket_size: int = ranged(500_000_000, ge=1)  # elements reduced at once


@dataclass
class PeftConfig:
    method: PeftMethod = PeftMethod.none  # none: full fine-tuning; qlora: a 4-bit base (GPUs only)
    r: int = ranged(16, ge=1, hint="the LoRA rank is {rule}, e.g. 16")  # LoRA rank
    alpha: int = ranged(32, gt=0, hint="{rule}, e.g. 32")  # LoRA scaling numerator (scale = alpha / r)
    dropout: float = ranged(0.05, ge=0, lt=1, hint="a probability {rule}")  # dropout on the LoRA input
    # the modules that get adapters (their names in the model)
    target_modules: List[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class StageConfig:
    """Resources every stage declares; None means "as the cluster profile says"."""

    nodes: int = ranged(1, ge=1)  # nodes per job
    # copies of the job (a Slurm array) sharing no collectives; work splits over array x ranks (translate, pii)
    array: int = ranged(1, ge=1, hint="{rule} (1 = a single job)")
    time: str = "01:00:00"  # walltime, [D-]HH:MM:SS
    partition: Optional[str] = None  # the job's partition; null: the cluster profile's
    tasks_per_node: Optional[int] = ranged(None, ge=1)  # ranks per node; null: the cluster profile's
    gpus_per_node: Optional[int] = ranged(None, ge=0)  # GPUs (GCDs) per node; null: the cluster profile's
    cpus_per_task: Optional[int] = ranged(None, ge=1)  # cores per rank; null: the cluster profile's


@dataclass
class DemoStage(StageConfig):
    value: float = 1.0  # rank r contributes (r + 1) * value to the all_reduce
    sleep_s: float = ranged(0.0, ge=0, hint="{rule} seconds")  # keep the ranks busy (for trying cancel / status)
    fail: bool = False  # fail on purpose (to try failure handling and rerun)
    time: str = "00:10:00"


@dataclass
class LumiCheckStage(StageConfig):
    """A first run on a cluster: all_reduce bandwidth, RCCL's network provider, GPU and core binding."""

    nodes: int = 2
    sizes_mb: List[float] = field(default_factory=lambda: [1.0, 16.0, 256.0])  # all_reduce message sizes
    iterations: int = ranged(5, ge=1)  # timed all_reduces per size (after one warm-up)
    time: str = "00:15:00"


@dataclass
class DemoCheckStage(StageConfig):
    """Runs after `demo` (its own job, afterok): checks the demo's result from the run dir."""

    tasks_per_node: Optional[int] = 1
    fail: bool = False  # fail on purpose (to try failure handling and rerun)
    time: str = "00:05:00"


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
    time: str = "00:30:00"


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
    time: str = "01:00:00"


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
    time: str = "04:00:00"


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


@dataclass
class DpoStage(TrainStage):
    dataset: Optional[str] = None  # prompt/chosen/rejected pairs; same sources as sft.dataset
    beta: float = ranged(0.1, gt=0, hint="DPO's temperature must be {rule}, e.g. 0.1")  # DPO temperature
    loss_type: DpoLoss = DpoLoss.sigmoid  # TRL's DPO loss
    precompute_ref_log_probs: bool = False  # compute reference log-probs once before training
    lr: float = 5e-6
    merge_adapter: bool = False  # as sft.merge_adapter


@dataclass
class EvaluateStage(StageConfig):
    """Scores models of this run (and others, side by side): perplexity, benchmarks (lm-eval,
    EuroEval), generations. docs/evaluation.md"""

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
    max_eval_texts: int = ranged(1000, ge=1)  # held-out texts for perplexity (data.eval_text)
    generation_prompts: int = ranged(5, ge=0)  # Danish prompts to generate samples for
    max_new_tokens: int = ranged(64, ge=1)  # the longest generated sample
    tasks_per_node: Optional[int] = 1
    time: str = "02:00:00"


@dataclass
class CardStage(StageConfig):
    """Model card (HF README.md with YAML metadata) for the run's last model, datasheets for its data."""

    license: str = "apache-2.0"  # the model's license in the card's metadata (an HF license id)
    repo_id: Optional[str] = None  # where the model would be published, e.g. danish-foundation-models/munin-7b-chat
    tasks_per_node: Optional[int] = 1
    gpus_per_node: Optional[int] = 0
    time: str = "00:15:00"


@dataclass
class DeviceThroughput:
    """What one device (a GCD, a GPU, a CPU rank) does per second: the plan's predictions divide a
    stage's work by these (dfm_hpc/predict.py; sources in conf/throughput/default.yaml)."""

    peak_tflops: float = ranged(0.0, ge=0)  # dense bf16 peak (CPU: the figure train_mfu is relative to)
    train_mfu: float = ranged(0.0, ge=0, le=1)  # full training (cpt; sft/dpo without peft): model FLOPs / peak
    lora_mfu: float = ranged(0.0, ge=0, le=1)  # LoRA/QLoRA training, its FLOPs counted as 2/3 of full training
    # source tokens/s per worker by translator name; "NAME/ctranslate2" for that backend if it differs
    translate_tokens_per_s: Dict[str, float] = field(default_factory=dict)
    startup_s: float = ranged(0.0, ge=0)  # per job start: container, imports, loading the model
    # fixed guesses (minutes) for stages whose work the plan does not count (merge, evaluate, card ...)
    stage_minutes: Dict[str, float] = field(default_factory=dict)
    source: str = ""  # where the figures come from


@dataclass
class DatasetSize:
    """Size of a dataset the login node cannot count (a hub dataset, the tiny fixture)."""

    messages: int = ranged(0, ge=0)  # messages translate would translate (after its filters)
    source_tokens: float = ranged(0.0, ge=0)  # their source tokens
    note: str = ""  # where the figures come from


@dataclass
class ThroughputConfig:
    device: str = "auto"  # a key of devices; auto: cluster.device, else mi250x_gcd on LUMI, h100 elsewhere; cpu: no GPU
    devices: Dict[str, DeviceThroughput] = field(default_factory=dict)  # each device's figures, by name
    datasets: Dict[str, DatasetSize] = field(default_factory=dict)  # sizes by data.oasst2 value (hub id or tiny:)


@dataclass
class Config:
    name: str = "demo"  # the experiment's name: runs go to <runs_root>/<name>/
    description: str = ""  # one line, shown by `python -m dfm_hpc list`
    stages: List[str] = field(default_factory=lambda: ["demo", "demo_check"])  # in order; each a job after the previous
    dry_run: bool = False  # validate, render and write the sbatch scripts; submit nothing
    runs_root: str = "runs"  # e.g. /scratch/project_465000670/runs on LUMI
    seed: int = 0  # seeds data order, sampling and tiny: models' weights
    # rank logs: false = dfm_hpc's lines and real warnings (known library noise filtered: docs/logging.md); true: all
    verbose: bool = False
    cluster: ClusterConfig = field(default_factory=ClusterConfig)  # where and how jobs run
    model: ModelConfig = field(default_factory=ModelConfig)  # the model cpt, sft and dpo train
    data: DataConfig = field(default_factory=DataConfig)  # the datasets
    translator: TranslatorConfig = field(default_factory=TranslatorConfig)  # translate's model
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)  # ZeRO settings of the training stages
    peft: PeftConfig = field(default_factory=PeftConfig)  # adapters of sft and dpo
    demo: DemoStage = field(default_factory=DemoStage)  # a launch check: ranks all_reduce over gloo
    demo_check: DemoCheckStage = field(default_factory=DemoCheckStage)  # checks demo's result
    lumi_check: LumiCheckStage = field(default_factory=LumiCheckStage)  # a first run on a cluster
    translate: TranslateStage = field(default_factory=TranslateStage)  # OASST2 -> Danish
    merge: MergeStage = field(default_factory=MergeStage)  # translations -> SFT chats and DPO pairs
    pii: PiiStage = field(default_factory=PiiStage)  # personal information filtered from training data
    tokenize: TokenizeStage = field(default_factory=TokenizeStage)  # corpora -> token stores
    cpt: CptStage = field(default_factory=CptStage)  # continual pretraining
    sft: SftStage = field(default_factory=SftStage)  # supervised fine-tuning on chats
    dpo: DpoStage = field(default_factory=DpoStage)  # preference tuning on chosen/rejected pairs
    evaluate: EvaluateStage = field(default_factory=EvaluateStage)  # scores the run's models
    card: CardStage = field(default_factory=CardStage)  # model card and datasheets
    throughput: ThroughputConfig = field(default_factory=ThroughputConfig)  # the plan's predictions
