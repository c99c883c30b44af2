"""The typed config tree: one dataclass per concern, registered in Hydra's ConfigStore.

Longer than ~400 lines on purpose: every key a user can set is here, so any key and its allowed values
are one hop away (docs/config.md is generated from it).

Every key a user can set lives here, with its type and default. YAML files under conf/ only
pick values; Hydra merges them into these dataclasses in struct mode, so a misspelled key or a
value of the wrong type fails on the login node, before anything is queued.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional


class Choice(str, Enum):
    """A closed set of values. OmegaConf rejects anything else at merge time, naming the allowed values.
    Members compare, hash, format and serialise as their plain string."""

    __str__ = str.__str__
    __format__ = str.__format__

    @classmethod
    def values(cls) -> List[str]:
        return [m.value for m in cls]


def _choice(name: str, values: str):
    return Choice(name, [(v, v) for v in values.split()])


def ranged(default, *, gt=None, ge=None, lt=None, le=None, hint: str = "{rule}"):
    """A number field and its allowed range (login/ranges.py checks it, docs/config.md shows it); `hint`
    is what a user reads when a value is out of range, {rule} the range in words. A subclass that only
    changes the default keeps its base's range."""
    bounds = {k: v for k, v in dict(gt=gt, ge=ge, lt=lt, le=le).items() if v is not None}
    return field(default=default, metadata={**bounds, "hint": hint})


System = _choice("System", "generic lumi")  # lumi: LUMI's rules (account form, partitions, 56 cores, 8 GCDs)
Scheduler = _choice("Scheduler", "local slurm")
Launcher = _choice("Launcher", "srun torchrun")
Backend = _choice("Backend", "hf ctranslate2")
PeftMethod = _choice("PeftMethod", "none lora qlora")
Precision = _choice("Precision", "bf16 fp32")
Attention = _choice("Attention", "sdpa flash_attention_2 eager flex_attention")  # transformers' values
ReportTo = _choice("ReportTo", "tensorboard wandb")
WandbMode = _choice("WandbMode", "offline online disabled")
Replacement = _choice("Replacement", "tags fake")
IpPolicy = _choice("IpPolicy", "all public off")  # which IP addresses the PII filter replaces
ServerBackend = _choice("ServerBackend", "none vllm transformers")  # evaluate.server
OasstLayout = _choice("OasstLayout", "auto trees nested messages parquet arrow")  # data.oasst2_layout
Review = _choice("Review", "any not_failed passed")  # translate.review
SftPath = _choice("SftPath", "best all")  # merge.sft_path
PiiType = _choice("PiiType", "cpr email phone ip iban")  # pii.types: what the filter finds (dfm_hpc/text/pii.py)
QualityFlag = _choice("QualityFlag", "empty untranslated repetition length_ratio")  # merge.quality_flags
Runtime = _choice("Runtime", "singularity bwrap")  # bwrap: the test cluster's sandbox (slurm/sandbox.sh)
ContainerVerb = _choice("ContainerVerb", "exec run")
TranslatorDtype = _choice("TranslatorDtype", "bfloat16 float16 float32")  # a torch dtype and a ctranslate2 compute_type
# TRL's DPOConfig.loss_type values (trl 1.16)
DpoLoss = _choice("DpoLoss", "sigmoid hinge ipo exo_pair nca_pair robust bco_pair sppo_hard aot aot_unpaired apo_zero "
                  "apo_down discopop sft sigmoid_norm")


@dataclass
class ContainerConfig:
    image: Optional[str] = None  # .sif to run ranks in; None: the host's python
    runtime: Runtime = Runtime.singularity  # bwrap: the test cluster's sandbox without Slurm tools (slurm/sandbox.sh)
    verb: ContainerVerb = ContainerVerb.exec  # singularity exec, or run (LAIF images: the runscript sets up the GPUs)
    # LAIF images: `module purge` and this module (found in module_path) bind slurmd, Lustre and /appl;
    # null: host_binds instead (the host libraries older LUST/AMD images need)
    bindings_module: Optional[str] = None  # LAIF: lumi-aif-singularity-bindings (module purge first); null: host_binds
    module_path: Optional[str] = None  # `module use` this first
    host_binds: List[str] = field(default_factory=list)  # bound only without bindings_module (older images)
    binds: List[str] = field(default_factory=list)  # always bound (e.g. the project's own paths)
    # squashfs image of a venv with dfm_hpc and extras, mounted at /user-software (LUMI AI guide)
    overlay: Optional[str] = None
    python: str = "python"  # interpreter inside the container


@dataclass
class ClusterConfig:
    name: str = "local"  # the profile's name (conf/cluster/<name>.yaml)
    system: System = System.generic  # lumi turns on LUMI's rules: account form, partitions, 56 cores, 8 GCDs
    scheduler: Scheduler = Scheduler.local  # local: ranks are subprocesses here; slurm: sbatch
    account: Optional[str] = None  # sbatch --account; on LUMI project_<9 digits>
    partition: Optional[str] = None  # None: the cluster's default partition
    qos: Optional[str] = None
    gpus_per_node: int = ranged(0, ge=0)  # GPUs (GCDs on LUMI) per node
    tasks_per_node: int = ranged(1, ge=1)  # ranks per node (one per GCD/GPU on LUMI)
    cpus_per_task: int = ranged(1, ge=1)
    mem: Optional[str] = None  # sbatch --mem, e.g. "480G"; "0" = all of the node
    mem_per_gpu: Optional[str] = None
    cpu_bind: Optional[str] = None  # srun --cpu-bind value
    launcher: Launcher = Launcher.srun  # srun: a task per rank; torchrun: a task per node, torchrun spawns the ranks
    exclusive: bool = False  # sbatch --exclusive (whole nodes)
    # Slurm sends USR2 (submitit's signal) this long before the time limit
    signal_delay_s: int = ranged(120, ge=0, hint="{rule} seconds before the time limit")
    env: Dict[str, str] = field(default_factory=dict)
    setup: List[str] = field(default_factory=list)  # shell lines run in the sbatch script before srun
    # more such lines for the evaluate job only (LUMI: where EuroEval's environment is, for the model
    # server the stage starts in the job)
    evaluate_setup: List[str] = field(default_factory=list)  # shell lines for the evaluate job only
    srun_args: List[str] = field(default_factory=list)
    torchrun_args: List[str] = field(default_factory=list)  # launcher=torchrun: extra flags (LUMI: NUMA binding)
    sbatch_extra: Dict[str, str] = field(default_factory=dict)
    # settings merged over this profile for single-process stages (1 node, 1 task, <= 1 GPU: merge,
    # pii by default, evaluate, card), e.g. LUMI: partition small-g, one GCD, mem_per_gpu; null: none
    single_device: Optional[Dict[str, Any]] = None
    container: ContainerConfig = field(default_factory=ContainerConfig)
    check_paths: Optional[bool] = None  # None: check input paths only when running on `system`


@dataclass
class ModelConfig:
    name: str = "tiny_llama"
    name_or_path: str = "tiny:llama"  # hub id, local path, or tiny:<family> (random weights, built locally)
    # sft/dpo: auto = the tokenizer's template if it marks assistant turns ({% generation %}), else
    # dfm_hpc's managed one (docs/training.md); managed; keep (the tokenizer's, as is); or a .jinja path
    chat_template: str = "auto"  # sft/dpo: auto | managed | keep | a .jinja file (docs/training.md#chat-template)
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 4
    intermediate_size: int = 128
    vocab_size: int = 512
    max_position_embeddings: int = 512


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
    name: str = "tiny"
    # hub id (org/name) or local path; local paths must exist when validated on their machine
    oasst2: str = "OpenAssistant/oasst2"
    oasst2_revision: Optional[str] = None  # hub revision (commit) to pin
    oasst2_layout: OasstLayout = OasstLayout.auto  # auto: from the content; or force trees, nested, messages...
    corpus: Optional[str] = None  # CPT corpus: hub id or local JSONL/Parquet
    # CPT mixture: sources with weights or token budgets (docs/training.md#mixtures); empty: data.corpus alone
    mixture: List[MixtureSource] = field(default_factory=list)  # see docs/training.md#mixtures
    eval_text: Optional[str] = None  # held-out Danish text for perplexity; unset: what cpt, sft or dpo held out


@dataclass
class TranslatorConfig:
    name: str = "madlad400_3b"
    name_or_path: str = "google/madlad400-3b-mt"
    revision: Optional[str] = None  # hub revision (commit) to pin
    backend: Backend = Backend.hf  # hf: transformers; ctranslate2: a converted model (faster on CPU)
    target_lang: str = "da"
    num_beams: int = ranged(1, ge=1, hint="{rule} (1 = greedy)")  # 1: greedy (deterministic)
    dtype: TranslatorDtype = TranslatorDtype.bfloat16
    max_batch_tokens: int = ranged(16384, ge=1)  # token budget of one length-sorted batch


@dataclass
class DeepSpeedConfig:
    stage: int = ranged(2, ge=0, le=3, hint="ZeRO stages are {rule}")  # ZeRO stage
    offload_optimizer: bool = False  # optimizer state in CPU memory
    offload_params: bool = False  # parameters in CPU memory (ZeRO-3)
    overlap_comm: bool = True
    contiguous_gradients: bool = True
    reduce_bucket_size: int = ranged(500_000_000, ge=1)


@dataclass
class PeftConfig:
    method: PeftMethod = PeftMethod.none  # none: full fine-tuning; qlora: a 4-bit base (GPUs only)
    r: int = ranged(16, ge=1, hint="the LoRA rank is {rule}, e.g. 16")  # LoRA rank
    alpha: int = ranged(32, gt=0, hint="{rule}, e.g. 32")  # LoRA scaling numerator (scale = alpha / r)
    dropout: float = ranged(0.05, ge=0, lt=1, hint="a probability {rule}")
    target_modules: List[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class StageConfig:
    """Resources every stage declares; None means "as the cluster profile says"."""

    nodes: int = ranged(1, ge=1)
    # independent copies of the job (a Slurm array); work is split over array x ranks workers, which
    # share no collectives: for map-style stages (translate, pii) on per-GCD small-g slots
    array: int = ranged(1, ge=1, hint="{rule} (1 = a single job)")
    time: str = "01:00:00"  # walltime, [D-]HH:MM:SS
    partition: Optional[str] = None
    tasks_per_node: Optional[int] = ranged(None, ge=1)
    gpus_per_node: Optional[int] = ranged(None, ge=0)
    cpus_per_task: Optional[int] = ranged(None, ge=1)


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
    source_langs: List[str] = field(default_factory=lambda: ["en"])  # OASST2 `lang` values to translate
    shards: int = 8  # work units balanced by source tokens; each worker takes shards by rank
    chunk_size: int = ranged(256, ge=1)  # segments per flushed chunk
    max_messages: Optional[int] = ranged(None, ge=1)  # translate only the first N messages (trials)
    # filters before translation (counts in report.json and the dataset card); defaults as OASST2's
    # "ready" files. A message below a dropped one is dropped too (counted as orphaned).
    tree_states: List[str] = field(default_factory=lambda: ["ready_for_export"])  # trees in these states; []: any
    drop_deleted: bool = True  # drop messages marked deleted
    review: Review = Review.not_failed  # any | not_failed (unreviewed kept) | passed (review_result true only)
    drop_synthetic: bool = True  # drop messages OASST marks synthetic (written by a model)


@dataclass
class MergeStage(StageConfig):
    tasks_per_node: Optional[int] = 1  # one process; no GPU
    gpus_per_node: Optional[int] = 0
    # best: one path per tree (best rank first; unranked by created_date, message_id) | all: every
    # root-to-assistant-leaf path, in that order (docs/translation.md#merge)
    sft_path: SftPath = SftPath.best  # best | all: the SFT conversations of each tree
    sft_top_k: Optional[int] = ranged(None, ge=1)  # with sft_path=all: at most this many paths per tree
    min_length_ratio: float = 0.3
    max_length_ratio: float = 3.0
    # quality flags that keep a message out of the SFT/DPO views (all flags are counted either way)
    drop: List[QualityFlag] = field(default_factory=lambda: list(QualityFlag))
    time: str = "00:30:00"


@dataclass
class PiiStage(StageConfig):
    """Finds and replaces personal information in training data before anything trains on it."""

    # what to filter: unset = this run's merge outputs (sft + dpo views); or a JSONL/Parquet file
    # with a `text` column (a CPT corpus), or tiny:corpus
    input: Optional[str] = None
    replacement: Replacement = Replacement.tags  # tags: <CPR>, <EMAIL>...; fake: realistic fakes (same shape)
    types: List[PiiType] = field(default_factory=lambda: list(PiiType))
    shards: int = 8  # work units; each worker takes shards by rank, like translate
    chunk_size: int = ranged(1000, ge=1)  # rows per flushed chunk (resume point)
    # netmasks and section numbers are never addresses, under any policy
    ip_policy: IpPolicy = IpPolicy.all  # all | public (global only, no public DNS resolvers: DFM's filter) | off
    # loaded offline from the jobs' cache like every model; prefetch lists it; docs/pii.md says why it is off
    ner: Optional[str] = None  # Danish NER model (hub id or path) for names and street addresses; unset: off
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
    # where the stores live (tokens-<key>/, content-addressed by tokenizer + source); shared by runs
    store_root: Optional[str] = None  # unset: runs_root
    batch_docs: int = ranged(1000, ge=1)  # documents per tokenizer call
    tasks_per_node: Optional[int] = 1
    gpus_per_node: Optional[int] = 0
    time: str = "04:00:00"


@dataclass
class TrainStage(StageConfig):
    lr: float = ranged(2e-5, gt=0, hint="the learning rate must be {rule}, e.g. 1e-4")  # peak learning rate
    warmup_steps: int = 0
    max_steps: int = ranged(1000, ge=1, hint="{rule} optimizer step")
    # sequences per optimizer step; divisible by world size x micro_batch_size
    global_batch_size: int = ranged(64, ge=1)
    micro_batch_size: int = ranged(1, ge=1)  # sequences per rank per forward pass
    seq_len: int = ranged(4096, ge=1, hint="{rule} token, e.g. 4096")
    precision: Precision = Precision.bf16  # fp32 on CPU
    gradient_checkpointing: bool = True
    attn_implementation: Attention = Attention.sdpa  # flash_attention_2 needs flash-attn in the container
    # checkpoint interval (also saved on Slurm's pre-timeout signal)
    save_every_steps: int = ranged(500, ge=1, hint="{rule} (a checkpoint every N steps)")
    # also checkpoint when this many minutes passed since the last one (steps of very different
    # length, or a preemptible queue); None: by steps only
    save_every_minutes: Optional[float] = ranged(None, gt=0)
    keep_checkpoints: int = ranged(2, ge=1, hint="keep {rule}")
    log_every_steps: int = ranged(10, ge=1)
    # held-out loss every N optimizer steps during training (logged with the step metrics as
    # eval_loss, plotted in loss.png, listed in the card); None: only once, after training
    # held-out loss every N steps during training; None: after only
    eval_every_steps: Optional[int] = ranged(None, ge=1)
    init_from: Optional[str] = None  # a run dir whose previous stage's model to start from
    # experiment trackers: tensorboard (files in the run dir) and/or wandb (WANDB_MODE=offline on
    # compute nodes unless wandb_mode says otherwise; `wandb sync` the run dir from the login node)
    report_to: List[ReportTo] = field(default_factory=lambda: [ReportTo.tensorboard])
    wandb_project: str = "dfm"
    wandb_mode: WandbMode = WandbMode.offline  # offline on compute nodes; `wandb sync` later


@dataclass
class CptStage(TrainStage):
    # held-out share of each source's documents for eval loss / perplexity
    eval_fraction: float = ranged(0.02, ge=0, lt=1, hint="a share {rule}")
    # continue from this checkpoint dir (checkpoint-N of any run's cpt stage), on any number of ranks
    # (converted to a DeepSpeed universal checkpoint when the world size differs)
    resume_from: Optional[str] = None  # a checkpoint-N dir of any run, written by any number of ranks


@dataclass
class SftStage(TrainStage):
    # chats with `messages`: unset = this run's merge stage; or a run dir, a .parquet/.jsonl file,
    # a hub id, or tiny:chats
    dataset: Optional[str] = None
    packing: bool = True  # pack several chats per sequence (attention kept per chat)
    lr: float = 1e-4
    # also write the base with the LoRA adapter merged in (stages/<stage>/merged/: a plain HF model
    # for inference, conversion, upload)
    merge_adapter: bool = False


@dataclass
class DpoStage(TrainStage):
    dataset: Optional[str] = None  # prompt/chosen/rejected pairs; same sources as sft.dataset
    beta: float = ranged(0.1, gt=0, hint="DPO's temperature must be {rule}, e.g. 0.1")  # DPO temperature
    loss_type: DpoLoss = DpoLoss.sigmoid  # TRL DPO loss type
    precompute_ref_log_probs: bool = False  # compute reference log-probs once before training
    lr: float = 5e-6
    merge_adapter: bool = False  # as sft.merge_adapter


@dataclass
class EvaluateStage(StageConfig):
    """Scores models of this run (and others, side by side): perplexity, benchmarks (lm-eval,
    EuroEval), generations. docs/evaluation.md"""

    # which models: "base" (model.name_or_path), a stage of this run (cpt, sft, dpo), or a run dir
    # (its last trained model); empty = base plus every trained stage of this run
    models: List[str] = field(default_factory=list)
    # lm-evaluation-harness tasks: lm-eval task names (its Danish ones: belebele_dan_Latn, arc_da,
    # hellaswag_da, m_mmlu_da, truthfulqa_da_mc1/mc2; data from the prefetched HF cache), or
    # tiny:danish_mc / tiny:danish_mc_gen (written by dfm_hpc, no Hub); empty: no lm-eval
    lm_eval_tasks: List[str] = field(default_factory=list)  # lm-eval tasks or tiny:danish_mc[_gen]; []: none
    lm_eval_include: Optional[str] = None  # a dir of extra task YAMLs (lm-eval's include_path)
    lm_eval_limit: Optional[int] = ranged(None, ge=1)  # at most this many items per task (None: all; a partial score)
    num_fewshot: int = ranged(0, ge=0)
    # where the benchmarks run: none = lm-eval in-process on the loaded model (hf backend); vllm |
    # transformers = an OpenAI-compatible server started in the job (base + adapters under their
    # names), lm-eval and EuroEval as its clients
    server: ServerBackend = ServerBackend.none  # none: in-process; vllm | transformers: served in the job
    server_port: int = ranged(8000, ge=1, le=65535)  # the server listens on 127.0.0.1:PORT
    server_timeout_s: float = ranged(900.0, gt=0)  # from start to a healthy /health
    server_args: List[str] = field(default_factory=list)  # extra server arguments (vllm serve ...)
    server_chat: bool = False  # lm-eval through chat completions (the chat template) instead of completions
    euroeval: bool = True  # EuroEval's Danish tasks against the server (needs evaluate.server)
    euroeval_tasks: List[str] = field(default_factory=list)  # empty: EuroEval's Danish defaults
    euroeval_datasets: List[str] = field(default_factory=list)  # only these EuroEval datasets
    euroeval_test_split: bool = False  # the test split (leaderboard numbers); default: validation
    euroeval_args: List[str] = field(default_factory=list)  # more EuroEval CLI arguments (--num-iterations 1)
    # the python of EuroEval's own environment (its pins conflict with training's): .venv-euroeval
    # here, the euroeval overlay on LUMI (containers/); unset: $DFM_HPC_EUROEVAL_PYTHON
    euroeval_python: Optional[str] = None  # EuroEval's own env's python; unset: $DFM_HPC_EUROEVAL_PYTHON
    # EuroEval's datasets, prefetched on the login node (python -m dfm_hpc prefetch ... --download);
    # unset: $DFM_HPC_EUROEVAL_CACHE, else the run's cache/euroeval
    euroeval_cache: Optional[str] = None  # EuroEval's dataset cache; unset: $DFM_HPC_EUROEVAL_CACHE
    max_eval_texts: int = ranged(1000, ge=1)  # held-out texts for perplexity (data.eval_text)
    generation_prompts: int = ranged(5, ge=0)  # Danish prompts to generate samples for
    max_new_tokens: int = ranged(64, ge=1)
    tasks_per_node: Optional[int] = 1
    time: str = "02:00:00"


@dataclass
class CardStage(StageConfig):
    """Model card (HF README.md with YAML metadata) for the run's last model, datasheets for its data."""

    license: str = "apache-2.0"
    repo_id: Optional[str] = None  # where the model would be published, e.g. danish-foundation-models/munin-7b-chat
    tasks_per_node: Optional[int] = 1
    gpus_per_node: Optional[int] = 0
    time: str = "00:15:00"


@dataclass
class DeviceThroughput:
    """What one device (a GCD, a GPU, a CPU rank) does per second: the plan's predictions divide a
    stage's work by these (dfm_hpc/predict.py; sources in conf/throughput/default.yaml)."""

    peak_tflops: float = ranged(0.0, ge=0)  # dense bf16 peak (CPU: the figure train_mfu is relative to)
    # full-parameter training (cpt; sft/dpo without peft), model FLOPs / peak
    train_mfu: float = ranged(0.0, ge=0, le=1)
    lora_mfu: float = ranged(0.0, ge=0, le=1)  # LoRA/QLoRA training, its FLOPs counted as 2/3 of full training
    # source tokens/s per worker by translator name; "NAME/ctranslate2" for that backend if it differs
    translate_tokens_per_s: Dict[str, float] = field(default_factory=dict)
    startup_s: float = ranged(0.0, ge=0)  # per job start: container, imports, loading the model
    # fixed guesses for stages whose work the plan does not count (merge, evaluate, card ...)
    stage_minutes: Dict[str, float] = field(default_factory=dict)
    source: str = ""  # where the figures come from


@dataclass
class DatasetSize:
    """Size of a dataset the login node cannot count (a hub dataset, the tiny fixture)."""

    messages: int = ranged(0, ge=0)
    source_tokens: float = ranged(0.0, ge=0)
    note: str = ""


@dataclass
class ThroughputConfig:
    name: str = "default"
    # a key of devices; auto: mi250x_gcd on LUMI, h100 on other GPU clusters, cpu without GPUs
    device: str = "auto"
    devices: Dict[str, DeviceThroughput] = field(default_factory=dict)
    datasets: Dict[str, DatasetSize] = field(default_factory=dict)


@dataclass
class Config:
    name: str = "demo"  # the experiment's name: runs go to <runs_root>/<name>/
    description: str = ""  # one line, shown by `python -m dfm_hpc list`
    stages: List[str] = field(default_factory=lambda: ["demo", "demo_check"])  # in order; each a job after the previous
    dry_run: bool = False  # validate, render and write the sbatch scripts; submit nothing
    runs_root: str = "runs"  # e.g. /scratch/project_465000670/runs on LUMI
    seed: int = 0
    # rank logs: false keeps them to dfm_hpc's lines and real warnings (known library noise filtered,
    # libraries at error verbosity, no progress bars: docs/logging.md); true: the libraries' full output
    verbose: bool = False
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    translator: TranslatorConfig = field(default_factory=TranslatorConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    demo: DemoStage = field(default_factory=DemoStage)
    demo_check: DemoCheckStage = field(default_factory=DemoCheckStage)
    lumi_check: LumiCheckStage = field(default_factory=LumiCheckStage)
    translate: TranslateStage = field(default_factory=TranslateStage)
    merge: MergeStage = field(default_factory=MergeStage)
    pii: PiiStage = field(default_factory=PiiStage)
    tokenize: TokenizeStage = field(default_factory=TokenizeStage)
    cpt: CptStage = field(default_factory=CptStage)
    sft: SftStage = field(default_factory=SftStage)
    dpo: DpoStage = field(default_factory=DpoStage)
    evaluate: EvaluateStage = field(default_factory=EvaluateStage)
    card: CardStage = field(default_factory=CardStage)
    throughput: ThroughputConfig = field(default_factory=ThroughputConfig)  # the plan's predictions

