"""Every tiny current-architecture family (tiny:<family>) through the training stages as a user runs them: one
`+experiment=families_tiny model=tiny_<family>` run each, CPT -> SFT -> DPO on 1 CPU rank under ZeRO-3, LoRA and
full fine-tuning alternating over the families (peft is one setting for sft and dpo). Each saved model, adapter
and merged model reloads (AutoModelForCausalLM + AutoTokenizer, adapter chains followed) with the trained model's
logits, keeps the family's architecture and chat template, and generates.

The runs go two at a time (each rank has OMP_NUM_THREADS=1, most of a run is its three stages' imports), in one
module fixture; each family's test then checks its own run (max_workers=1: one by one). Duration (2 cores): 3 min
51 s one by one on a quiet machine; two at a time not yet timed on a quiet one (docs/benchmarks.md)."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor

import pytest

from dfm_hpc.model_shape import tiny_config

from helpers import dfm, run_dirs
from helpers.outputs import check_chain

pytest.importorskip("deepspeed")
pytest.importorskip("trl")

# (family, peft): LoRA and full alternate. Full fine-tuning on the bases DFM fine-tunes fully (Munin 1.0: Apertus,
# Ministral-3, Qwen3.5); LoRA on the others.
PLAN = [("llama3", "lora"), ("qwen3", "lora"), ("qwen3_5", "none"), ("gemma3", "lora"), ("gemma4", "lora"),
        ("apertus", "none"), ("ministral3", "none")]
STEPS = {"cpt": 3, "sft": 3, "dpo": 2}  # conf/experiment/families_tiny.yaml


def _summary(stage_dir):
    summary = json.loads((stage_dir / "summary.json").read_text())
    rows = [json.loads(x) for x in (stage_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS[stage_dir.name] + 1))
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in rows), rows  # it trained on some tokens
    return summary


def _user_loads_and_generates(model_dir, family):
    """The model a user takes away: plain transformers, the family's own template kept, a few greedy tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dfm_hpc.tiny.tokenizers import template

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    assert model.config.model_type == tiny_config(family)["model_type"]
    if template(family) is not None:
        assert tok.chat_template == template(family)
    chat = [{"role": "user", "content": "Hvad er Danmarks hovedstad?"}]
    ids = tok.apply_chat_template(chat, add_generation_prompt=True, return_dict=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids.shape[1] and (out[0, : ids.shape[1]] == ids[0]).all()


def _run(family, peft, cwd):
    extra = [] if peft == "lora" else ["sft.merge_adapter=false", "dpo.merge_adapter=false"]
    if family == "qwen3_5":
        # packing is refused at plan time: the Gated DeltaNet layers' torch path ignores packed chats' boundaries
        extra.append("sft.packing=false")
    return dfm("+experiment=families_tiny", f"model=tiny_{family}", f"peft={peft}", *extra, cwd=cwd, timeout=900)


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """{family: (finished CLI process, its cwd)} for the families of the selected tests, run two at a time."""
    wanted = [item.callspec.params["family"] for item in request.session.items
              if item.module is request.module and hasattr(item, "callspec")]
    plan = [(f, p, tmp_path_factory.mktemp(f)) for f, p in PLAN if f in wanted]
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = pool.map(lambda fp: _run(*fp), plan)
        return {f: (proc, cwd) for (f, _, cwd), proc in zip(plan, done)}


@pytest.mark.parametrize(("family", "peft"), PLAN, ids=[f"{f}-{'lora' if p == 'lora' else 'full'}" for f, p in PLAN])
def test_family_through_cpt_sft_dpo_save_merge_reload(runs, family, peft):
    p, cwd = runs[family]
    (run,) = run_dirs(cwd)
    s = run / "stages"
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    for stage in STEPS:
        assert (s / stage / "DONE").exists() and _summary(s / stage)["steps"] == STEPS[stage]

    # CPT trains the full model: saved (gathered from ZeRO-3) as the family's architecture, as its tiny config says
    spec = tiny_config(family)
    saved = json.loads((s / "cpt" / "model" / "config.json").read_text())
    assert {k: saved.get(k) for k in spec} == spec
    check_chain(s / "cpt")

    for stage in ("sft", "dpo"):
        model_dir = s / stage / "model"
        if peft == "lora":
            assert (model_dir / "adapter_model.safetensors").stat().st_size > 1000
            merged = s / stage / "merged"
            assert (merged / "model.safetensors").exists() and not (merged / "adapter_config.json").exists()
            check_chain(s / stage, merged)  # the merged plain model gives the trained model's logits
        else:
            assert (model_dir / "model.safetensors").exists() and not (model_dir / "adapter_config.json").exists()
        check_chain(s / stage)  # model/ as saved (an adapter: on its base chain, dpo -> sft -> cpt)
    base = json.loads((s / "sft" / "model" / "adapter_config.json").read_text())["base_model_name_or_path"] \
        if peft == "lora" else None
    assert base in (None, str(s / "cpt" / "model"))  # sft started from cpt's model
    _user_loads_and_generates(s / "dpo" / ("merged" if peft == "lora" else "model"), family)
