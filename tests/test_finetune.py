"""SFT and DPO with LoRA under DeepSpeed ZeRO-3 on 2 CPU ranks; saved adapters are complete."""

from __future__ import annotations

import json

import pytest

from conftest import dfm, run_dirs

pytest.importorskip("deepspeed")
pytest.importorskip("trl")


def check_adapter(stage_dir, r=4, targets=("q_proj", "v_proj")):
    """Non-empty, r x hidden LoRA matrices that were trained, and base + adapter reproduce the
    logits the trained (ZeRO-3 sharded) model gave on the probe text."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    model_dir = stage_dir / "model"
    tensors = load_file(str(model_dir / "adapter_model.safetensors"))
    assert tensors and all(t.numel() > 0 for t in tensors.values()), "empty adapter (the ZeRO-3 pitfall)"
    assert {k.split(".")[-3] for k in tensors if "lora_A" in k} == set(targets)
    assert all(t.shape[0] == r for k, t in tensors.items() if "lora_A" in k)
    assert any(t.abs().sum() > 0 for k, t in tensors.items() if "lora_B" in k), "adapter never trained"
    base_path = json.loads((model_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), str(model_dir)).eval()
    probe = torch.load(stage_dir / "probe.pt")
    with torch.no_grad():
        logits = model(input_ids=probe["input_ids"]).logits
    assert torch.allclose(logits, probe["logits"], atol=1e-4), (logits - probe["logits"]).abs().max()


def check_chain(stage_dir, model_dir=None):
    """The stage's model as a user loads it (dfm_hpc follows adapter -> base chains; a DPO adapter
    sits on the SFT model) reproduces the trained model's probe logits."""
    from types import SimpleNamespace

    import torch

    from dfm_hpc.job.train import load_model_or_adapter

    st = SimpleNamespace(precision="fp32", attn_implementation="sdpa")
    model = load_model_or_adapter(str(model_dir or stage_dir / "model"), st).eval()
    probe = torch.load(stage_dir / "probe.pt")
    with torch.no_grad():
        logits = model(input_ids=probe["input_ids"]).logits
    assert torch.allclose(logits, probe["logits"], atol=1e-4), (logits - probe["logits"]).abs().max()


def check_finetune(run, merged=False):
    for stage in ("sft", "dpo"):
        s = run / "stages" / stage
        assert (s / "DONE").exists() and (s / "loss.png").exists()
        assert json.loads((s / "summary.json").read_text())["steps"] > 0
    sft = run / "stages" / "sft"
    seen = json.loads((sft / "summary.json").read_text())
    assert seen["final_loss"] < seen["first_loss"]
    check_adapter(sft)
    # DPO trained its own adapter on top of the SFT model (merged into the base first)
    check_adapter_dpo = run / "stages" / "dpo" / "model" / "adapter_model.safetensors"
    assert check_adapter_dpo.stat().st_size > 1000
    dpo_base = json.loads((run / "stages" / "dpo" / "model" / "adapter_config.json").read_text())
    assert dpo_base["base_model_name_or_path"] == str(sft / "model")
    check_chain(run / "stages" / "dpo")
    if merged:  # merge_adapter: plain HF models (no adapter) with the same outputs
        for stage in ("sft", "dpo"):
            out = run / "stages" / stage / "merged"
            assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
            assert (out / "tokenizer.json").exists()
            check_chain(run / "stages" / stage, out)


def test_sft_and_dpo_with_lora_under_zero3_locally(tmp_path):
    p = dfm("+experiment=sft_tiny", "sft.merge_adapter=true", "dpo.merge_adapter=true", cwd=tmp_path, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    check_finetune(run, merged=True)
