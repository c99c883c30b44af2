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
from dfm_hpc.schema_stages import (  # noqa: F401  (the stages' keys live in their own module)
    CardStage,
    CptStage,
    DemoCheckStage,
    DemoStage,
    DpoStage,
    EvaluateStage,
    GateConfig,
    LumiCheckStage,
    MergeStage,
    PiiStage,
    SftStage,
    StageConfig,
    TokenizeStage,
    TrainStage,
    TranslateStage,
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
    # squashfs image of the harness venv (EuroEval, inspect_ai; containers/build_harness.sh), mounted at
    # /harness-software in the evaluate job only; its python: cluster.env.DFM_HPC_EUROEVAL_PYTHON
    harness_overlay: Optional[str] = None
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
    # memory per GPU (GB) the plan's memory check holds a training rank to; null: the device's datasheet figure
    device_memory_gb: Optional[float] = ranged(None, gt=0, hint="{rule} GB")
    # cluster=node: each GPU found here ("0: NVIDIA H100 80GB HBM3, 80 GiB"), shown in the plan; null: not looked for
    gpus: Optional[List[str]] = None
    # cluster=node: VAR=ids handing the found GPUs to the ranks (the first gpus_per_node of them, all to each rank)
    visible_devices: Optional[str] = None
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
    # time=auto requests the predicted work x this + the start-up (+ signal_delay_s for stages that stop at it)
    time_factor: float = ranged(1.5, ge=1, hint="{rule} (the prediction's safety factor)")
    # the partition's longest walltime where dfm_hpc does not know it (LUMI's: lumi.py), e.g. "24:00:00"; null: none
    max_time: Optional[str] = None
    # nodes the partition has where dfm_hpc does not know it (LUMI's: lumi.py): more pends forever; null: unknown
    max_nodes: Optional[int] = ranged(None, ge=1)
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
