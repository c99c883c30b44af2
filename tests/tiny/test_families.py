"""tiny:<family>: each of today's architectures builds deterministically from its tiny/configs file, loads as a user
loads it (AutoModelForCausalLM + AutoTokenizer), keeps what makes the family, and trains (forward + backward)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from dfm_hpc import tiny
from dfm_hpc.model_shape import tiny_config
from dfm_hpc.tiny.tokenizers import template

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

FAMILIES = tiny.FAMILIES


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every family, built once through the `tiny:` door (resolve) into one cache."""
    cache = tmp_path_factory.mktemp("tiny-cache")
    return {f: tiny.resolve(f"tiny:{f}", cache) for f in FAMILIES}


def _digests(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def test_every_family_is_a_tiny_builder_with_a_config_and_a_model_conf():
    from helpers import REPO

    assert set(FAMILIES) <= set(tiny.BUILDERS)
    for f in FAMILIES:
        assert (REPO / "dfm_hpc" / "tiny" / "configs" / f"{f}.json").is_file()
        conf = (REPO / "conf" / "model" / f"tiny_{f}.yaml").read_text()
        assert f"name_or_path: tiny:{f}\n" in conf


@pytest.mark.parametrize("family", ["qwen3_5", "gemma4"])
def test_same_seed_same_bytes_other_seed_other_weights(tmp_path, family):
    a = tiny.build_tiny_family(family, tmp_path / "a")
    b = tiny.build_tiny_family(family, tmp_path / "b")
    c = tiny.build_tiny_family(family, tmp_path / "c", seed=1)
    assert _digests(a) == _digests(b)
    da, dc = _digests(a), _digests(c)
    assert da["model.safetensors"] != dc["model.safetensors"] and da["tokenizer.json"] == dc["tokenizer.json"]


@pytest.mark.parametrize("family", FAMILIES)
def test_config_json_says_what_the_tiny_config_file_says(built, family):
    spec = tiny_config(family)
    saved = json.loads((Path(built[family]) / "config.json").read_text())
    assert {k: saved.get(k) for k in spec} == spec
    assert saved["hidden_size"] == 64 and 2 <= saved["num_hidden_layers"] <= 4


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_as_a_user_loads_it_and_trains(built, family):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(built[family])
    tok = AutoTokenizer.from_pretrained(built[family])
    cfg = model.config
    assert cfg.vocab_size == len(tok) == model.get_input_embeddings().weight.shape[0]
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (tok.bos_token_id, tok.eos_token_id,
                                                                      tok.pad_token_id)
    assert cfg.eos_token_id is not None and cfg.pad_token_id is not None
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert tok.chat_template == template(family)  # the family's real one (tiny/chat_templates)
    ids = tok(["Hej, hvordan har du det i dag? Vejret er godt, og børnene leger udenfor."] * 2,
              return_tensors="pt").input_ids[:, :40]
    assert ids.shape[1] > 16  # longer than the sliding window (16), so the windowed path runs
    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and 4 < loss.item() < 9  # random weights: about ln(512) = 6.2
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() > 0 for g in grads) >= 0.9 * len(grads)


def test_the_families_keep_what_makes_them(built):
    from transformers import AutoModelForCausalLM

    def load(f):
        return AutoModelForCausalLM.from_pretrained(built[f])

    tied = {f: (lambda m: m.lm_head.weight.data_ptr() == m.get_input_embeddings().weight.data_ptr())(load(f))
            for f in FAMILIES}
    assert tied == {f: f.startswith("gemma") for f in FAMILIES}  # as the real models (8-9B; Gemma always tied)
    for f in FAMILIES:  # grouped-query attention everywhere
        c = load(f).config
        assert c.num_key_value_heads < c.num_attention_heads
    qwen35 = load("qwen3_5")
    kinds = [type(layer.linear_attn if hasattr(layer, "linear_attn") else layer.self_attn).__name__
             for layer in qwen35.model.layers]
    assert kinds == ["Qwen3_5GatedDeltaNet"] * 3 + ["Qwen3_5Attention"], kinds
    for f in ("gemma3", "gemma4"):
        c = load(f).config
        assert c.layer_types == ["sliding_attention", "full_attention"] and c.sliding_window == 16
    g4 = load("gemma4")
    assert g4.model.layers[1].self_attn.head_dim == 2 * g4.model.layers[0].self_attn.head_dim  # wider global head
    for f in ("qwen3", "qwen3_5", "gemma3", "gemma4", "apertus"):  # q/k norm
        attn = [m for n, m in load(f).named_modules() if n.endswith("self_attn")][0]
        assert hasattr(attn, "q_norm") and hasattr(attn, "k_norm"), f
    assert load("apertus").config.hidden_act == "xielu"


def test_unknown_tiny_name_lists_the_families(tmp_path):
    with pytest.raises(ValueError, match="tiny:qwen3_5"):
        tiny.resolve("tiny:qwen4", tmp_path)


def test_the_plans_parameter_count_from_the_config_file_is_the_built_models(built):
    """The plan reads tiny/configs/<family>.json (model_shape) without building anything: it must count what the
    builder builds (GQA, tied heads, Qwen3.5's linear-attention layers, Gemma-4's wider global head and per-layer
    embeddings)."""
    from transformers import AutoModelForCausalLM

    from dfm_hpc import estimates, model_shape

    for f in FAMILIES:
        shape = model_shape.find(f"tiny:{f}", Path("/nonexistent"))
        model = AutoModelForCausalLM.from_pretrained(built[f])
        assert estimates.param_count(shape) == sum(p.numel() for p in model.parameters()), f
