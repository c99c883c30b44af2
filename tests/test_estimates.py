"""MFU and memory arithmetic (dfm_hpc/estimates.py): published anchors, ZeRO accounting, the login check."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from dfm_hpc import estimates, lumi, model_shape, schema
from dfm_hpc.login.checks import memory

from helpers import LUMI_ACCOUNT, REPO, dfm, lumi_args, make_cfg, run_dirs

MISTRAL_JSON = REPO / "dfm_hpc" / "model_configs" / "mistralai--Mistral-7B-v0.1" / "config.json"
MISTRAL = json.loads(MISTRAL_JSON.read_text())  # a model's shape is its config.json's (model_shape.py)
LLAMA2_7B = dict(model_type="llama", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, intermediate_size=11008, vocab_size=32000, tie_word_embeddings=False)
LUMI_DRY = [f"cluster.account={LUMI_ACCOUNT}", "dry_run=true"]


# ---------------------------------------------------------------- peaks and MFU anchors (performance.md §1)

def test_peak_table_uses_the_gcd_not_the_package(monkeypatch):
    monkeypatch.delenv("DFM_PEAK_TFLOPS", raising=False)
    assert estimates.PEAK_TFLOPS["mi250x_gcd"] == 191.5  # never 383 (that is 2 GCDs)
    assert estimates.PEAK_TFLOPS["h100_sxm"] == 989.0 and estimates.PEAK_TFLOPS["a100"] == 312.0
    assert estimates.pick_peak_tflops() == 191.5
    assert estimates.pick_peak_tflops("AMD Instinct MI250X") == 191.5
    assert estimates.pick_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert estimates.pick_peak_tflops("h100_sxm", override=800) == 800
    assert estimates.pick_peak_tflops(500.0) == 500.0
    monkeypatch.setenv("DFM_PEAK_TFLOPS", "123")
    assert estimates.pick_peak_tflops("a100") == 123.0
    monkeypatch.delenv("DFM_PEAK_TFLOPS")
    with pytest.raises(ValueError, match="DFM_PEAK_TFLOPS"):
        estimates.pick_peak_tflops("tpu v9")


HARDWARE = ("mi250x_gcd", "mi300x", "h100", "h200", "b200", "cpu")  # issue #25: what DFM runs on in 2026


def test_every_device_has_a_peak_and_figures_with_their_source():
    """The peak table and conf/throughput's entries cover the hardware, each figure with where it comes from
    (a datasheet URL, dense bf16; or [assumed]/[derived]/[measured] with how), and agree on the peak."""
    throughput = OmegaConf.load(REPO / "conf" / "throughput" / "default.yaml").devices
    assert set(HARDWARE) <= set(throughput)
    assert set(estimates.PEAK_TFLOPS) == set(estimates.PEAK_SOURCES)
    for key, source in estimates.PEAK_SOURCES.items():
        assert "https://" in source or "[assumed]" in source, (key, source)
        assert re.match(r"\[(pub|derived|assumed|measured)\] ", source), (key, source)
    for name, entry in throughput.items():
        assert len(entry.source) > 20, (name, "no source")
        key = estimates.device_key(name)
        assert key is not None, f"throughput.devices.{name}: no peak in estimates.PEAK_TFLOPS"
        assert entry.peak_tflops == estimates.PEAK_TFLOPS[key], name  # one peak, in both tables
        if name != "cpu":  # a GPU's peak is the vendor's: its datasheet is named where the figure is
            assert "https://" in entry.source, (name, entry.source)
    text = (REPO / "conf" / "throughput" / "default.yaml").read_text()
    lines = text.splitlines()
    for i, line in enumerate(lines):  # every figure of a device says how it was had, on its line or just above
        if re.match(r"\s+(peak_tflops|train_mfu|lora_mfu|startup_s|madlad400_3b):", line):
            above = "".join(x for x in lines[max(i - 3, 0):i] if x.strip().startswith("#"))
            assert re.search(r"\[(pub|derived|assumed|measured)", line + above), line
    assert estimates.pick_peak_tflops("NVIDIA B200") == 2250.0 and estimates.pick_peak_tflops("h100") == 989.0
    assert estimates.pick_peak_tflops("AMD Instinct MI300X") == 1307.4


def test_megatron_7b_on_lumi_is_28_percent_mfu():
    """spyysalo/lumi-llm-scaling: GPT 7B (32 L, d 4096, seq 2048), 19.4 samples/s on 32 GCDs."""
    tps = 19.4 * 2048 / 32
    assert tps == pytest.approx(1241.6)
    assert estimates.mfu(tps, 6.65e9, 32, 4096, 2048, 191.5) == pytest.approx(0.28, abs=0.01)
    # Megatron's 70.9 TF/GCD counts the recompute: HFU ≈ 37 %
    assert estimates.hfu(tps, 6.65e9, 32, 4096, 2048, "mi250x_gcd") == pytest.approx(70.9 / 191.5, abs=0.01)


def test_llm_foundry_7b_on_h100_is_46_percent_mfu():
    """mosaicml/llm-foundry benchmarks: MPT-7B on 8 x H100, bf16 (NumParams from the same table)."""
    assert estimates.mfu(10643, 6_658_859_008, 32, 4096, 2048, "h100_sxm") == pytest.approx(0.4644, abs=0.005)
    # the seq 4096 row with activation checkpointing: 40.42 % MFU, 53.9 % HFU
    assert estimates.mfu(8611, 6_667_247_616, 32, 4096, 4096, 989) == pytest.approx(0.4042, abs=0.005)
    assert estimates.hfu(8611, 6_667_247_616, 32, 4096, 4096, 989) == pytest.approx(0.539, abs=0.005)


def test_mistral_flops_per_token_at_4k():
    n = estimates.param_count(MISTRAL)
    assert estimates.flops_per_token(n, 32, 4096, 4096) == pytest.approx(49.9e9, rel=0.005)  # performance.md


# ---------------------------------------------------------------- parameters

def test_param_counts_match_the_hub():
    assert estimates.param_count(MISTRAL) == 7_241_732_096  # Mistral-7B-v0.1
    assert estimates.param_count(LLAMA2_7B) == 6_738_415_616  # Llama-2-7b-hf
    # LoRA r=16 on q,k,v,o of Mistral (GQA: k/v project to 1024)
    assert estimates.lora_params(MISTRAL, 16, ["q_proj", "k_proj", "v_proj", "o_proj"]) == 32 * 16 * (
        (4096 + 4096) * 2 + (4096 + 1024) * 2)
    assert estimates.lora_params(MISTRAL, 8, ["all-linear"]) > estimates.lora_params(MISTRAL, 8, ["q_proj"])


# ---------------------------------------------------------------- memory

def _est(**kw):
    args = dict(world_size=1, zero_stage=0, micro_batch=1, seq_len=4096, gradient_checkpointing=True)
    args.update(kw)
    return estimates.estimate_memory(MISTRAL, **args)


def test_full_fine_tuning_of_7b_on_one_gcd_is_refused_and_lora_accepted():
    full = _est()
    n = estimates.param_count(MISTRAL) / 1e9
    # ZeRO paper: 2 + 2 + 12 bytes per parameter, nothing sharded on one rank
    assert full.weights == pytest.approx(2 * n) and full.gradients == pytest.approx(2 * n)
    assert full.optimizer == pytest.approx(12 * n)
    assert full.total > lumi.GCD_MEMORY_GB
    lora = _est(peft_method="lora")
    assert lora.total < lumi.GCD_MEMORY_GB
    assert lora.gradients < 0.1 and lora.optimizer < 0.5  # adapters only
    qlora = _est(peft_method="qlora")
    assert qlora.weights < lora.weights / 2
    assert "LoRA of a 7.2B model" in lora.explain() and "optimizer" in lora.explain()


def test_zero3_over_8_gcds_fits_full_fine_tuning_of_7b():
    e = _est(world_size=8, zero_stage=3)
    assert e.total < lumi.GCD_MEMORY_GB, e.explain()
    n = estimates.param_count(MISTRAL) / 1e9
    assert e.optimizer == pytest.approx(12 * n / 8) and e.gradients == pytest.approx(2 * n / 8)


def test_zero_stages_shard_in_order():
    totals = [_est(world_size=8, zero_stage=z).total for z in range(4)]
    assert totals == sorted(totals, reverse=True)
    z1, z2 = _est(world_size=8, zero_stage=1), _est(world_size=8, zero_stage=2)
    assert z1.gradients == pytest.approx(8 * z2.gradients)


def test_offload_moves_state_to_host_memory():
    e = _est(world_size=8, zero_stage=3, offload_optimizer=True, offload_params=True)
    assert e.optimizer == 0 and e.gradients == 0 and e.cpu > 10
    assert e.total < _est(world_size=8, zero_stage=3).total


def test_activations_scale_with_tokens_and_checkpointing():
    one, four = _est(peft_method="lora"), _est(peft_method="lora", micro_batch=4)
    assert four.activations == pytest.approx(4 * one.activations)
    assert _est(peft_method="lora", gradient_checkpointing=False).activations > 5 * one.activations
    assert _est(peft_method="lora", sequences_per_sample=2).activations == pytest.approx(2 * one.activations)


def test_no_gpu_cluster_is_not_checked():
    cfg = OmegaConf.structured(schema.Config)
    cfg.model.name_or_path = "mistralai/Mistral-7B-v0.1"  # its bundled config.json, or the cache's copy
    cfg.peft.method, cfg.deepspeed.stage = "none", 0
    job = SimpleNamespace(stage="sft", world_size=1, nodes=1, tasks_per_node=1, gpus_per_node=0)
    assert memory.check_fits(job, cfg) == []
    job.gpus_per_node = 1
    (problem,) = memory.check_fits(job, cfg)
    assert "per GPU" in problem and "peft=lora" in problem


def test_estimates_does_not_import_torch():
    code = "import sys, dfm_hpc.estimates; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


# ---------------------------------------------------------------- the CLI (login-node validation)

def test_cli_refuses_full_fine_tuning_on_one_gcd_and_names_what_fits(tmp_path):
    p = dfm("+experiment=munin_sft", "cluster=lumi_small", *LUMI_DRY, "peft=none", "deepspeed=zero0", cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "GB per GCD for full fine-tuning of a 7.2B model with ZeRO-0 on 1 rank" in p.stderr
    assert "optimizer 86.9" in p.stderr and "fits: peft=lora (~" in p.stderr
    assert "deepspeed=zero3_offload" not in p.stderr  # 130 GB of host state: over small-g's 60G per GCD
    assert run_dirs(tmp_path) == []


def test_cli_on_standard_g_lists_zero3(tmp_path):
    p = dfm("+experiment=munin_sft", "cluster=lumi", *LUMI_DRY, "peft=none", "deepspeed=zero0", cwd=tmp_path)
    assert p.returncode == 2
    assert "on 8 ranks" in p.stderr and "deepspeed=zero3 (~" in p.stderr and "peft=lora (~" in p.stderr


def test_cli_accepts_lora_on_one_gcd(tmp_path):
    p = dfm("+experiment=munin_sft", "cluster=lumi_small", *LUMI_DRY, "peft=lora", "deepspeed=zero0", cwd=tmp_path)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("experiment", ["munin_sft", "munin_dpo", "munin_cpt", "munin_pipeline"])
def test_shipped_experiments_fit_on_lumi(experiment, tmp_path):
    p = dfm(f"+experiment={experiment}", "cluster=lumi", *LUMI_DRY, cwd=tmp_path)
    assert p.returncode == 0, p.stderr


# ---------------------------------------------------------------- the shape: the model's own config.json

def test_the_tiny_builder_builds_what_the_shape_reader_reads(tmp_path):
    """tiny:llama's shape is one file (dfm_hpc/tiny/configs/llama.json): the built model has it, the plan reads it."""
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM

    from dfm_hpc import tiny

    planned = model_shape.find("tiny:llama", tmp_path / "hub")
    built = model_shape.read(tiny.build_tiny_llama(tmp_path / "tiny") / "config.json")
    assert {**vars(planned), "source": ""} == {**vars(built), "source": ""}
    assert (built.kv_heads, built.max_positions, built.tied, built.vocab, built.layers) == (2, 2048, True, 512, 2)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny")
    assert (model.config.num_key_value_heads, model.config.max_position_embeddings) == (2, 2048)
    assert estimates.param_count(planned) == sum(p.numel() for p in model.parameters())  # the tied head once


@pytest.mark.parametrize("config", [
    MISTRAL,  # GQA, untied
    LLAMA2_7B,
    # head_dim wider than hidden / heads, a tied 256k vocabulary
    dict(model_type="llama", hidden_size=1024, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
         head_dim=256, intermediate_size=4096, vocab_size=256000, tie_word_embeddings=True),
], ids=["mistral", "llama2", "head_dim_tied_256k"])
def test_param_count_is_what_transformers_builds(config):
    pytest.importorskip("transformers")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):  # shapes only, no memory
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    assert estimates.param_count(config) == sum(p.numel() for p in model.parameters())


def test_a_local_model_dir_and_the_jobs_hf_cache_are_read(tmp_path):
    local = tmp_path / "my-model"
    local.mkdir()
    (local / "config.json").write_text(json.dumps(LLAMA2_7B))
    shape = model_shape.find(str(local), tmp_path / "hub")
    assert shape and shape.source == str(local / "config.json") and shape.kv_heads == 32 and not shape.tied
    assert not model_shape.find(str(tmp_path / "empty-dir"), tmp_path / "hub")
    # a hub id: the snapshot refs/main names in the hub cache, laid out as snapshot_download leaves it
    home = tmp_path / "hf"
    repo = home / "hub" / "models--testorg--llama2"
    (repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567").mkdir(parents=True)
    (repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567" / "config.json").write_text(json.dumps(LLAMA2_7B))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef0123456789abcdef01234567")

    lumi = ["+experiment=munin_sft", "cluster=lumi", f"cluster.env.HF_HOME={home}"]  # what the jobs will read
    cfg = make_cfg(*lumi, "model.name_or_path=testorg/llama2")
    shape = model_shape.of(cfg)
    assert shape and "models--testorg--llama2/snapshots/" in shape.source
    assert estimates.param_count(shape) == 6_738_415_616
    # a model in the cache wins over the bundled copy
    (home / "hub" / "models--danish-foundation-models--munin-7b-alpha").symlink_to(repo)
    cfg = make_cfg(*lumi)
    assert estimates.param_count(model_shape.of(cfg)) == 6_738_415_616


def test_munin_without_a_cache_gets_its_bases_bundled_config(tmp_path):
    """The shipped experiments plan as before with nothing prefetched: munin-7b-alpha has Mistral-7B-v0.1's shape,
    from the verbatim config.json in dfm_hpc/model_configs/ (README.md there: its source)."""
    text = MISTRAL_JSON.read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"  # as save_pretrained writes it
    shape = model_shape.find("danish-foundation-models/munin-7b-alpha", tmp_path / "hub")
    assert {**vars(shape), "source": ""} == {**vars(model_shape.read(MISTRAL_JSON)), "source": ""}
    assert "munin-7b-alpha's base" in shape.source
    assert (shape.kv_heads, shape.head_dim, shape.sliding_window, shape.tied) == (8, 128, 4096, False)
    assert estimates.param_count(shape) == 7_241_732_096
    assert estimates.estimate_memory(shape, world_size=8, zero_stage=3).total == pytest.approx(
        estimates.estimate_memory(MISTRAL, world_size=8, zero_stage=3).total)


def test_an_unknown_shape_is_said_never_guessed(tmp_path):
    why = model_shape.find("testorg/not-there", tmp_path / "hub")
    assert not why and "prefetch testorg/not-there first" in why.reason and str(tmp_path / "hub") in why.reason
    assert not model_shape.from_config({"model_type": "t5", "d_model": 512}, "t5's config.json")
    assert "mixture of experts" in model_shape.from_config({**MISTRAL, "num_local_experts": 8}, "moe").reason
    with pytest.raises(ValueError, match="prefetch testorg/not-there"):
        estimates.param_count(why)
    p = dfm("+experiment=munin_sft", *lumi_args("dry_run=true", "model.name_or_path=testorg/not-there",
                                                 f"cluster.env.HF_HOME={tmp_path / 'hf'}"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (line,) = [ln for ln in p.stdout.splitlines() if ln.strip().startswith("sft: SFT")]
    assert "(? params; shape unknown: prefetch testorg/not-there first: python -m dfm_hpc prefetch" in line
    assert " B params" not in line and "tok/s" not in line  # no number made up
    (row,) = [ln for ln in p.stdout.splitlines() if ln.startswith("sft ")]
    assert row.split()[6] == "?"  # sft 1 x 8 standard-g 12:00 ? (pred.)


def test_mfu_on_the_rank_counts_the_loaded_models_config(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    import torch
    from transformers import AutoModelForCausalLM

    from dfm_hpc import tiny
    from dfm_hpc.job import train

    # as on an H100 (the MFU branch), without one
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 0)
    monkeypatch.delenv("DFM_PEAK_TFLOPS", raising=False)
    logged = []
    ctx = SimpleNamespace(is_main=True, log=logged.append, should_stop=lambda: False, world_size=1,
                          stage_dir=tmp_path)
    cfg = OmegaConf.structured(schema.Config)
    cfg.model.name_or_path = "testorg/not-there"  # the plan could not read it; the rank has the model itself
    cb = train.metrics_callback(cfg, ctx, cfg.cpt, tokens_per_step=4 * 10 ** 7)  # ~30 % of an H100 in 1 s
    model = AutoModelForCausalLM.from_pretrained(tiny.build_tiny_llama(tmp_path / "tiny"))
    cb.on_train_begin(None, None, None, model=model)
    assert cb.shape and cb.shape.kv_heads == 2 and cb.shape.max_positions == 2048 and logged == []
    args, state = SimpleNamespace(logging_steps=1, max_steps=10), SimpleNamespace(global_step=1)
    cb.t = time.time() - 1.0  # the step took a second
    cb.on_log(args, state, None, logs={"loss": 1.0, "learning_rate": 1e-4, "grad_norm": 1.0})
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    tps = row["tokens_per_s_per_device"]
    want = tps * estimates.model_flops_per_token(model.config.to_dict(), cfg.cpt.seq_len) / 989e12
    assert row["mfu"] == pytest.approx(want, rel=1e-3) and 0.05 < row["mfu"] < 1
    cb.on_train_begin(None, None, None)
    assert not cb.shape and "MFU not logged" in logged[-1]


# ---------------------------------------------------------------- current architectures, as transformers builds them

def _families():
    import transformers as T

    return {
        "llama": T.LlamaConfig(num_hidden_layers=2),
        "qwen3": T.Qwen3Config(num_hidden_layers=2),
        "qwen3_5 (nested, hybrid)": T.Qwen3_5Config(text_config=dict(num_hidden_layers=8)),
        "gemma3 (sliding/full)": T.Gemma3TextConfig(num_hidden_layers=6),
        "gemma4 (per-layer inputs)": T.Gemma4TextConfig(num_hidden_layers=6),
        "gemma4 (shared KV, k=v)": T.Gemma4TextConfig(num_hidden_layers=12, num_kv_shared_layers=6,
                                                      use_double_wide_mlp=True, attention_k_eq_v=True,
                                                      num_global_key_value_heads=1),
        "apertus": T.ApertusConfig(num_hidden_layers=2),
        "ministral3": T.Ministral3Config(num_hidden_layers=2),
    }


@pytest.mark.parametrize("family", list(_families()))
def test_param_count_is_transformers_own(family):
    """Every family's parameters as transformers instantiates the model (meta device: no memory), to the
    parameter: GQA, q/k norms, Qwen3.5's gated q and Gated DeltaNet layers, Gemma's four norms, per-layer
    inputs and shared-KV layers, Apertus' plain MLP and xIELU, tied and untied heads."""
    import torch
    import transformers as T

    config = _families()[family]
    with torch.device("meta"):
        model = T.AutoModelForCausalLM.from_config(config)
    shape = model_shape.from_config(config.to_dict(), family)
    assert shape, shape
    assert estimates.param_count(shape) == sum(p.numel() for p in model.parameters())


def test_tiny_configs_are_counted():
    """Each tiny:<family> config.json the tiny builder ships parses, and counts as transformers builds it."""
    import torch
    import transformers as T

    for path in sorted(model_shape.TINY_CONFIGS.glob("*.json")):
        raw = json.loads(path.read_text())
        config = T.AutoConfig.for_model(**raw)
        with torch.device("meta"):
            model = T.AutoModelForCausalLM.from_config(config)
        shape = model_shape.read(path)
        assert shape, shape
        assert estimates.param_count(shape) == sum(p.numel() for p in model.parameters()), path.name


def test_hybrid_and_sliding_attention_flops():
    """Attention FLOPs per layer: a sliding layer attends to its window, a linear-attention layer to no sequence
    (said in the shape's notes); a Llama keeps 12·L·H·S."""
    import transformers as T

    qwen = model_shape.from_config(T.Qwen3_5TextConfig(num_hidden_layers=8).to_dict(), "qwen3.5")
    assert qwen.linear_attention_layers == 6 and "linear-attention" in qwen.notes[0]
    assert estimates.attention_span(qwen, 4096) == 2 * 16 * 256 * 4096
    gemma = model_shape.from_config(T.Gemma3TextConfig(num_hidden_layers=6, sliding_window=512).to_dict(), "g3")
    full = sum(1 for la in gemma.per_layer if la.kind == "full_attention")
    assert estimates.attention_span(gemma, 8192) == gemma.q_dim * (full * 8192 + (6 - full) * 512)
    llama = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128,
             "vocab_size": 100}
    assert estimates.model_flops_per_token(llama, 16) == estimates.flops_per_token(
        estimates.param_count(llama), 2, 64, 16)


def test_moe_and_unknown_families():
    """A mixture of experts is not estimated (its reason says so); an unknown dense model_type is counted as a
    Llama and the plan says so."""
    moe = model_shape.from_config({"model_type": "qwen3_5_moe", "text_config": {
        "model_type": "qwen3_5_moe_text", "num_hidden_layers": 2, "hidden_size": 8, "num_attention_heads": 2,
        "intermediate_size": 8, "vocab_size": 8, "num_experts": 4}}, "moe")
    assert not moe and "mixture of experts" in moe.reason
    other = model_shape.from_config({"model_type": "olmo2", "num_hidden_layers": 2, "hidden_size": 8,
                                     "num_attention_heads": 2, "intermediate_size": 8, "vocab_size": 8}, "x")
    assert other and "counted as a Llama-style decoder" in other.notes[0]


def test_sequence_parallel_packing_and_liger_in_the_memory_estimate():
    """SP=N divides the activations by N; packing without flash attention adds the S x S mask; liger drops the
    logits (a 248k vocabulary at 16k tokens is ~40 GB of them)."""
    import transformers as T

    shape = model_shape.from_config(T.Qwen3_5TextConfig(num_hidden_layers=32, vocab_size=248320).to_dict(), "q")
    kw = dict(world_size=32, zero_stage=3, seq_len=16384)
    one, four = (estimates.estimate_memory(shape, sequence_parallel=n, **kw) for n in (1, 4))
    assert four.activations == pytest.approx(one.activations / 4)
    assert "sequence parallel 4" in four.setup
    packed = estimates.estimate_memory(shape, packing=True, **kw)
    assert packed.activations - one.activations == pytest.approx(16384 ** 2 / 1e9)
    flash = estimates.estimate_memory(shape, packing=True, attention="flash_attention_2", **kw)
    assert flash.activations == pytest.approx(one.activations)
    liger = estimates.estimate_memory(shape, liger_kernel=True, **kw)
    assert one.activations - liger.activations == pytest.approx(10 * 248320 * 16384 / 1e9)
