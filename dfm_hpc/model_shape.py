"""A model's shape (layers, widths, heads, vocabulary) read from the model's own config.json: the one home of what
the FLOPs, parameter, memory and MFU estimates (estimates.py) need. No copy of it lives in conf/.

Standard library only: the login node reads config.json at plan time (`of(cfg)`), a rank passes its loaded
model's config to `from_config`. `find` looks, in order:

  tiny:<family>   dfm_hpc/tiny/configs/<family>.json, the file the tiny builder builds the model from
  a local path    its config.json
  a hub id        the jobs' HF cache (jobenv.snapshot: models--ORG--NAME/snapshots/<refs/main>/config.json),
                  else a verbatim copy shipped in dfm_hpc/model_configs/ (the shipped experiments' bases)

and otherwise says why the shape is unknown: an estimate is then unknown too, never a guess.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Tuple, Union

from dfm_hpc import jobenv, sources

PACKAGE = Path(__file__).resolve().parent
TINY_CONFIGS = PACKAGE / "tiny" / "configs"  # tiny/models.py builds from these files too
BUNDLED = PACKAGE / "model_configs"  # <org>--<name>/config.json, sources in its README.md
# Hub models without a bundled config.json whose shape is a bundled one's: continual pretraining keeps the shape
# (munin-7b-alpha's model card: base_model mistralai/Mistral-7B-v0.1, 7.24B parameters)
SAME_SHAPE = {"danish-foundation-models/munin-7b-alpha": "mistralai/Mistral-7B-v0.1"}


@dataclass(frozen=True)
class Unknown:
    """No shape, and why (said where the estimate would be)."""

    reason: str

    def __bool__(self) -> bool:
        return False


@dataclass(frozen=True)
class Layer:
    """One decoder layer's weights as the estimates count them (config.json's terms, per layer)."""

    kind: str  # full_attention | sliding_attention | linear_attention (layer_types; full without the key)
    q: int = 0  # q_proj's output (heads x head_dim; x 2 with Qwen3.5's output gate)
    k: int = 0  # k_proj's output (0: the layer reuses another's keys and values, Gemma-4)
    v: int = 0  # v_proj's output (0: keys double as values, or shared)
    o: int = 0  # o_proj's input (heads x head_dim)
    head_dim: int = 0  # of the attention (q/k norms have this width)
    window: Optional[int] = None  # sliding window of the attention, tokens
    mlp: int = 0  # intermediate width
    mlp_matrices: int = 3  # gate, up, down (SwiGLU/GeGLU); 2 for a plain up/down MLP (Apertus)
    linear: int = 0  # Gated DeltaNet layers: the qkv+z+b+a projections' output width
    linear_out: int = 0  # its out_proj's input (value heads x value head_dim)
    extra: int = 0  # small weights (norms, conv, per-layer input gates) counted as they are


@dataclass(frozen=True)
class Shape:
    """What the estimates count of a dense decoder, in config.json's terms (the text model of a multimodal
    config); per-layer detail (hybrid, sliding and shared-KV layers) in `layer_list`."""

    model_type: str
    layers: int  # num_hidden_layers
    hidden: int  # hidden_size
    heads: int  # num_attention_heads
    kv_heads: int  # num_key_value_heads (grouped-query attention; = heads without it)
    head_dim: int  # head_dim, else hidden / heads
    intermediate: int  # intermediate_size (the MLP's width)
    vocab: int  # vocab_size
    tied: bool  # tie_word_embeddings: the output head is the input embedding
    max_positions: Optional[int]  # max_position_embeddings
    sliding_window: Optional[int]  # attention window of the sliding layers, if any
    source: str  # the config.json it was read from
    layer_list: Tuple[Layer, ...] = ()  # per layer (empty: every layer the Llama layer of the fields above)
    embed_extra: int = 0  # parameters outside the layers besides embedding, head and final norm (Gemma-4's PLE)
    notes: Tuple[str, ...] = ()  # what the estimates count approximately, said in the plan

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def per_layer(self) -> Tuple[Layer, ...]:
        return self.layer_list or (_llama_layer(self),) * self.layers

    @property
    def linear_attention_layers(self) -> int:
        return sum(1 for la in self.per_layer if la.kind == "linear_attention")


def _llama_layer(s: Shape) -> Layer:
    return Layer("full_attention", q=s.q_dim, k=s.kv_dim, v=s.kv_dim, o=s.q_dim, head_dim=s.head_dim,
                 mlp=s.intermediate, extra=2 * s.hidden)


_NEEDED = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")
# q_norm/k_norm per head (RMSNorm of head_dim): Qwen3, Qwen3.5, Gemma-3/4, Apertus
_QK_NORM = ("qwen3", "qwen3_text", "qwen3_5", "qwen3_5_text", "gemma3", "gemma3_text", "gemma4", "gemma4_text",
            "apertus")
_GATED_Q = ("qwen3_5", "qwen3_5_text", "qwen3_next")  # q_proj also yields a sigmoid output gate per head
_FOUR_NORMS = ("gemma2", "gemma3", "gemma3_text", "gemma4", "gemma4_text")  # pre/post attention and MLP
_PLAIN_MLP = ("apertus",)  # up/down projections only (xIELU), no gate
# decoders the estimates count as they are built (transformers 5.24); others are counted as Llama-style, said so
COUNTED = ("llama", "mistral", "ministral", "ministral3", "qwen2", "qwen3", "qwen3_text", "qwen3_5", "qwen3_5_text",
           "gemma", "gemma2", "gemma3", "gemma3_text", "gemma4", "gemma4_text", "apertus")
_EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size", "enable_moe_block")


def text_config(config: dict) -> dict:
    """The language model's config: a multimodal config's `text_config` (Qwen3.5, Gemma-3/4, Mistral-3), keeping
    the outer tie_word_embeddings when the inner one does not say."""
    inner = config.get("text_config")
    if not isinstance(inner, dict):
        return config
    merged = dict(inner)
    if "tie_word_embeddings" not in merged and "tie_word_embeddings" in config:
        merged["tie_word_embeddings"] = config["tie_word_embeddings"]
    return merged


def _layers(c: dict, kind: str, hidden: int, heads: int, kv: int, hd: int, inter: int,
            notes: list) -> Tuple[Layer, ...]:
    n = int(c["num_hidden_layers"])
    types = list(c.get("layer_types") or [])
    if len(types) != n:
        types = ["full_attention"] * n
    qk = 2 * hd if (kind in _QK_NORM or c.get("qk_norm")) else 0
    norms = (4 if kind in _FOUR_NORMS else 2) * hidden
    matrices = 2 if kind in _PLAIN_MLP else 3
    act = 2 if kind in _PLAIN_MLP and c.get("hidden_act") == "xielu" else 0  # xIELU's alpha_p, alpha_n
    gate = 2 if kind in _GATED_Q or c.get("attn_output_gate") else 1
    window = c.get("sliding_window") if c.get("use_sliding_window", True) else None
    gemma4 = kind.startswith("gemma4")
    shared_from = n - int(c.get("num_kv_shared_layers") or 0) if gemma4 else n
    ple = int(c.get("hidden_size_per_layer_input") or 0) if gemma4 else 0
    out = []
    for i, t in enumerate(types):
        if t == "linear_attention":  # Gated DeltaNet (Qwen3.5/Qwen3-Next)
            kd = int(c["linear_num_key_heads"]) * int(c["linear_key_head_dim"])
            vh, vd = int(c["linear_num_value_heads"]), int(c["linear_value_head_dim"])
            conv = 2 * kd + vh * vd
            out.append(Layer(t, linear=conv + vh * vd + 2 * vh, linear_out=vh * vd, mlp=inter, mlp_matrices=matrices,
                             extra=norms + conv * int(c.get("linear_conv_kernel_dim") or 4) + 2 * vh + vd))
            continue
        head_dim, kv_heads = hd, kv
        if gemma4 and isinstance(c.get("per_layer_config"), dict):  # as transformers saves it: per layer index
            over = {int(k): v for k, v in c["per_layer_config"].items()}.get(i) or {}
            head_dim, kv_heads = int(over.get("head_dim", hd)), int(over.get("num_key_value_heads", kv))
        elif gemma4 and t == "full_attention":  # global layers: their own head_dim and KV heads (the hub's form)
            head_dim = int(c.get("global_head_dim") or 512)
            if c.get("attention_k_eq_v", True) and c.get("num_global_key_value_heads"):
                kv_heads = int(c["num_global_key_value_heads"])
        shared = i >= shared_from
        k = 0 if shared else kv_heads * head_dim
        v = 0 if shared or (gemma4 and c.get("attention_k_eq_v") and t == "full_attention") else k
        mlp = inter * (2 if shared and c.get("use_double_wide_mlp") else 1)
        qkn = (head_dim if qk else 0) + (head_dim if qk and not shared else 0)
        extra = norms + qkn + act + (2 * hidden * ple + hidden if ple else 0)
        out.append(Layer(t, q=gate * heads * head_dim, k=k, v=v, o=heads * head_dim, head_dim=head_dim,
                         window=window if t == "sliding_attention" else None, mlp=mlp, mlp_matrices=matrices,
                         extra=extra))
    if any(la.kind == "linear_attention" for la in out):
        notes.append(f"{sum(la.kind == 'linear_attention' for la in out)} linear-attention (Gated DeltaNet) layers: "
                     "FLOPs count their projections, not the recurrent state update; no attention over the sequence")
    if gemma4 and shared_from < n:
        notes.append(f"{n - shared_from} layers reuse earlier layers' keys and values (no k/v weights)")
    return tuple(out)


def from_config(config: dict, source: str) -> Union[Shape, Unknown]:
    """The shape in a config.json dict (or a loaded model's config.to_dict()); Unknown when the estimates cannot
    count it (not a decoder with these fields, or a mixture of experts)."""
    outer = str(config.get("model_type") or "?")
    config = text_config(config)
    kind = str(config.get("model_type") or outer)
    missing = [k for k in _NEEDED if config.get(k) is None]
    if missing:
        return Unknown(f"{source} has no {', '.join(missing)} (model_type {kind}); the estimates count "
                       "decoder-only language models")
    if any(config.get(k) for k in _EXPERT_KEYS):
        return Unknown(f"{source} is a mixture of experts (model_type {kind}); the estimates count dense decoders")
    heads, hidden = int(config["num_attention_heads"]), int(config["hidden_size"])
    kv = int(config.get("num_key_value_heads") or heads)
    hd = int(config.get("head_dim") or hidden // heads)
    inter, vocab = int(config["intermediate_size"]), int(config["vocab_size"])
    notes: list = []
    if kind not in COUNTED:
        notes.append(f"model_type {kind} counted as a Llama-style decoder (GQA attention, gated MLP, 2 norms)")
    layer_list = _layers(config, kind, hidden, heads, kv, hd, inter, notes)
    ple = int(config.get("hidden_size_per_layer_input") or 0) if kind.startswith("gemma4") else 0
    n = int(config["num_hidden_layers"])
    embed_extra = (int(config.get("vocab_size_per_layer_input") or vocab) * n * ple + hidden * n * ple + ple
                   if ple else 0)
    types = {la.kind for la in layer_list}
    window = config.get("sliding_window") if config.get("use_sliding_window", True) else None
    if "layer_types" in config and "sliding_attention" not in types:
        window = None  # a window in config.json that no layer uses (Qwen3's use_sliding_window=false)
    return Shape(model_type=kind, layers=n, hidden=hidden, heads=heads, kv_heads=kv, head_dim=hd,
                 intermediate=inter, vocab=vocab,
                 # transformers' default: save_pretrained leaves the key out only when it is true
                 tied=bool(config.get("tie_word_embeddings", True)),
                 max_positions=config.get("max_position_embeddings"), sliding_window=window, source=source,
                 layer_list=layer_list, embed_extra=embed_extra, notes=tuple(notes))


def read(path: Path) -> Union[Shape, Unknown]:
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        return Unknown(f"{path} is unreadable ({type(e).__name__}: {e})")
    return from_config(config, str(path)) if isinstance(config, dict) else Unknown(f"{path} is not a JSON object")


def tiny_config(family: str) -> dict:
    """The config.json of tiny:<family>, as the tiny builder builds the model (tiny/models.py)."""
    return json.loads((TINY_CONFIGS / f"{family}.json").read_text())


def find(name_or_path: str, hub: Path, revision: Optional[str] = None) -> Union[Shape, Unknown]:
    """The shape of a model named as model.name_or_path is (tiny:NAME, a local path or a hub id); `hub`: the hub
    cache the jobs read (jobenv.cache_dirs)."""
    name = str(name_or_path)
    kind = sources.kind(name)
    if kind == sources.TINY:
        path = TINY_CONFIGS / f"{name.removeprefix('tiny:')}.json"
        known = ", ".join(f"tiny:{p.stem}" for p in sorted(TINY_CONFIGS.glob("*.json")))
        return read(path) if path.is_file() else Unknown(f"{name} has no config (tiny models with one: {known})")
    if kind == sources.LOCAL:
        path = Path(name).expanduser() / "config.json"
        return read(path) if path.is_file() else Unknown(f"no config.json in {name}")
    if kind != sources.HUB:
        return Unknown(f"{name!r} is neither tiny:NAME, a local path nor a hub id")
    snap = jobenv.snapshot(hub, name, revision)
    if snap is not None:
        return read(snap / "config.json")
    base = SAME_SHAPE.get(name, name)
    path = BUNDLED / base.replace("/", "--") / "config.json"
    if path.is_file():
        shape = read(path)
        return shape if base == name or not shape else replace(shape, source=f"{path} ({name}'s base)")
    return Unknown(f"prefetch {name} first: python -m dfm_hpc prefetch <the same arguments> --download "
                   f"(its config.json is not in the jobs' HF cache, {hub})")


def of(cfg) -> Union[Shape, Unknown]:
    """The shape of the model cpt, sft and dpo train (model.name_or_path), as the login node can read it."""
    return find(cfg.model.name_or_path, jobenv.cache_dirs(cfg)[0])
