"""Checks of a finished run's outputs, shared by the local and the Slurm tests of the same stage: the cpt
summary, metrics and data split; a checkpoint continued on another world size; LoRA adapters and the sft -> dpo
chain reproducing the trained model's logits."""

from __future__ import annotations

import json

import pytest


def samples(stage_dir, rank):
    return [int(x) for x in (stage_dir / f"samples-rank-{rank}.txt").read_text().split()]


def check_cpt(run, world_size=2):
    s = run / "stages" / "cpt"
    assert (s / "DONE").exists()
    summary = json.loads((s / "summary.json").read_text())
    assert summary["steps"] == 30
    assert summary["final_loss"] < 0.7 * summary["first_loss"], summary  # a learnable corpus is learned
    assert summary["eval_perplexity"] < 60
    rows = [json.loads(x) for x in (s / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 31))
    assert all(r["tokens_per_s_per_device"] > 0 and r["grad_norm"] is not None for r in rows)
    seen = [set(samples(s, r)) for r in range(world_size)]
    assert all(seen) and all(not (a & b) for i, a in enumerate(seen) for b in seen[i + 1:]), "ranks shared data"
    assert (s / "model" / "model.safetensors").exists() and (s / "model" / "tokenizer.json").exists()
    assert (s / "loss.png").stat().st_size > 1000
    return rows


def _losses(run):
    return {r["step"]: r["loss"] for r in (json.loads(x) for x in
                                           (run / "stages" / "cpt" / "metrics.jsonl").read_text().splitlines())}


def check_resharded(first, second, n_from, n_to, rel=1e-4):
    """`second` continued `first`'s checkpoint-10 on another number of ranks: steps 11-20 only, with
    the losses of `first`'s own steps 11-20 (same global batches, summed in another order)."""
    log = (second / "stages" / "cpt" / "logs" / "rank-0.log").read_text()
    assert f"checkpoint-10 was written by {n_from} ranks; this job has {n_to}" in log, log[-3000:]
    assert "resuming from" in log and (second / "stages" / "cpt" / "checkpoints" / "checkpoint-10" /
                                       "latest_universal").exists()
    a, b = _losses(first), _losses(second)
    assert sorted(b) == list(range(11, 21)), sorted(b)  # no restart from step 0
    for step in range(11, 21):
        assert b[step] == pytest.approx(a[step], rel=rel), (step, a[step], b[step])
    assert a[20] < a[11]  # and it is still learning


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
