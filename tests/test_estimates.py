"""MFU and memory arithmetic (dfm_hpc/estimates.py): published anchors, ZeRO accounting, the login check."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml
from omegaconf import OmegaConf

from dfm_hpc import estimates, lumi, schema

from helpers import REPO, dfm, run_dirs

MISTRAL = yaml.safe_load((REPO / "conf" / "model" / "mistral_7b.yaml").read_text())
LLAMA2_7B = dict(hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=32, intermediate_size=11008,
                 vocab_size=32000)
LUMI = ["cluster.account=project_465000670", "dry_run=true"]


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
    cfg.model = OmegaConf.merge(cfg.model, MISTRAL)
    cfg.peft.method, cfg.deepspeed.stage = "none", 0
    job = SimpleNamespace(stage="sft", world_size=1, nodes=1, tasks_per_node=1, gpus_per_node=0)
    assert estimates.check_fits(job, cfg) == []
    job.gpus_per_node = 1
    (problem,) = estimates.check_fits(job, cfg)
    assert "per GPU" in problem and "peft=lora" in problem


def test_estimates_does_not_import_torch():
    code = "import sys, dfm_hpc.estimates; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


# ---------------------------------------------------------------- the CLI (login-node validation)

def test_cli_refuses_full_fine_tuning_on_one_gcd_and_names_what_fits(tmp_path):
    p = dfm("+experiment=munin_sft", "cluster=lumi_small", *LUMI, "peft=none", "deepspeed=zero0", cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "GB per GCD for full fine-tuning of a 7.2B model with ZeRO-0 on 1 rank" in p.stderr
    assert "optimizer 86.9" in p.stderr and "fits: peft=lora (~" in p.stderr
    assert "deepspeed=zero3_offload" not in p.stderr  # 130 GB of host state: over small-g's 60G per GCD
    assert run_dirs(tmp_path) == []


def test_cli_on_standard_g_lists_zero3(tmp_path):
    p = dfm("+experiment=munin_sft", "cluster=lumi", *LUMI, "peft=none", "deepspeed=zero0", cwd=tmp_path)
    assert p.returncode == 2
    assert "on 8 ranks" in p.stderr and "deepspeed=zero3 (~" in p.stderr and "peft=lora (~" in p.stderr


def test_cli_accepts_lora_on_one_gcd(tmp_path):
    p = dfm("+experiment=munin_sft", "cluster=lumi_small", *LUMI, "peft=lora", "deepspeed=zero0", cwd=tmp_path)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("experiment", ["munin_sft", "munin_dpo", "munin_cpt", "munin_pipeline"])
def test_shipped_experiments_fit_on_lumi(experiment, tmp_path):
    p = dfm(f"+experiment={experiment}", "cluster=lumi", *LUMI, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
