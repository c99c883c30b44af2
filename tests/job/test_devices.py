"""Each process places its model on the GPU of its local rank (issue #10).

On LUMI, Slurm gives every task of a standard-g node all 8 GCDs; a process that asks for "cuda"
gets GCD 0, so 8 ranks would share one GCD. Torch here is the CPU build: the tests make torch
report GPUs and record where each model is put. The fake-GPU cluster test is in test_slurm.py.
"""

from __future__ import annotations

import pytest

from dfm_hpc import dist

pytest.importorskip("torch")
EIGHT = "0,1,2,3,4,5,6,7"


@pytest.mark.parametrize("env,index", [
    ({"LOCAL_RANK": "3", "ROCR_VISIBLE_DEVICES": EIGHT}, 3),  # standard-g: every task sees 8 GCDs
    ({"LOCAL_RANK": "7", "ROCR_VISIBLE_DEVICES": EIGHT, "HIP_VISIBLE_DEVICES": EIGHT}, 7),
    ({"LOCAL_RANK": "5", "ROCR_VISIBLE_DEVICES": "5"}, 0),  # a task given one GCD takes it
    ({"LOCAL_RANK": "0", "CUDA_VISIBLE_DEVICES": "0,1"}, 0),
    ({"SLURM_LOCALID": "1", "CUDA_VISIBLE_DEVICES": "0,1"}, 1),
    ({"LOCAL_RANK": "2"}, None),  # no GPU
])
def test_gpu_index_is_the_local_rank_among_the_visible_gpus(env, index):
    assert dist.gpu_index(env) == index
    assert dist.describe_gpu(env) == ("no GPU" if index is None else f"GPU {index} of {dist.visible_gpus(env)} "
                                      f"({next(v for v in dist.GPU_VARS if v in env)}="
                                      f"{env[next(v for v in dist.GPU_VARS if v in env)]})")


@pytest.fixture
def eight_gpus(monkeypatch):
    """torch believes there are 8 GPUs; Module.to records the device instead of moving anything."""
    import torch

    placed, current = [], []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: current.append(i))

    def to(self, *args, **kwargs):
        placed.append(str(args[0] if args else kwargs.get("device")))
        return self

    monkeypatch.setattr(torch.nn.Module, "to", to)
    return placed, current


@pytest.mark.parametrize("local_rank", [0, 5])
def test_torch_device_is_cuda_of_the_local_rank(eight_gpus, monkeypatch, local_rank):
    from dfm_hpc.job.device import torch_device

    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    assert torch_device() == f"cuda:{local_rank}"
    assert eight_gpus[1] == [local_rank]  # also the current device (bitsandbytes, empty_cache...)


def test_hf_translator_uses_the_gpu_of_its_rank(eight_gpus, monkeypatch, tmp_path):
    from dfm_hpc import tiny
    from dfm_hpc.text.translators import HFTranslator

    path = tiny.resolve("tiny:t5", tmp_path)
    monkeypatch.setenv("LOCAL_RANK", "6")
    t = HFTranslator(path, target_lang="da", dtype="float32")
    assert str(t.device) == "cuda:6" and eight_gpus[0] == ["cuda:6"]


def test_ct2_translator_uses_the_gpu_of_its_rank(monkeypatch, tmp_path):
    ctranslate2 = pytest.importorskip("ctranslate2")
    from dfm_hpc import tiny
    from dfm_hpc.text import translators

    ct2_dir = translators.convert_to_ct2(tiny.resolve("tiny:t5", tmp_path), tmp_path / "ct2")
    seen = {}

    class Recorder:
        def __init__(self, path, **kwargs):
            seen.update(kwargs)

    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 8)
    monkeypatch.setattr(ctranslate2, "Translator", Recorder)
    monkeypatch.setenv("LOCAL_RANK", "4")
    translators.CT2Translator(ct2_dir, target_lang="da", compute_type="float32")
    assert seen["device"] == "cuda" and seen["device_index"] == 4


def test_evaluate_loads_onto_the_gpu_of_its_rank(eight_gpus, monkeypatch, tmp_path):
    from dfm_hpc import tiny
    from dfm_hpc.stages import evaluate

    path = tiny.resolve("tiny:llama", tmp_path)
    monkeypatch.setenv("LOCAL_RANK", "2")
    evaluate.load(path)
    assert eight_gpus[0][-1] == "cuda:2"


def test_qlora_base_loads_onto_the_gpu_of_its_rank(monkeypatch, tmp_path):
    """bitsandbytes puts a 4-bit model on the current device unless device_map says otherwise."""
    import torch
    import transformers
    from omegaconf import OmegaConf

    from dfm_hpc import tiny
    from dfm_hpc.job import train

    path = tiny.resolve("tiny:llama", tmp_path)
    seen = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: None)
    monkeypatch.setattr(transformers, "BitsAndBytesConfig", lambda **kw: kw)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda p, **kw: seen.update(kw) or "model")
    monkeypatch.setenv("LOCAL_RANK", "3")
    cfg = OmegaConf.create({"model": {"name_or_path": path, "chat_template": "keep"}, "peft": {"method": "qlora"},
                            "stages": ["sft"]})
    ctx = type("Ctx", (), {"run_dir": tmp_path, "is_main": True, "log": print})()
    st = OmegaConf.create({"init_from": None})
    model, _, _ = train.load_base(cfg, ctx, st, "sft")
    assert model == "model" and seen["device_map"] == {"": "cuda:3"}


def test_stages_without_a_model_of_their_own_place_nothing():
    """card and pii load no model; the tiny builders save to disk and place nothing (so they need no
    device choice). Every stage that does place one goes through dist (the tests above)."""
    import inspect

    from dfm_hpc import tiny
    from dfm_hpc.stages import card, pii
    from dfm_hpc.tiny import models

    for module in (card, pii, models, tiny):
        src = inspect.getsource(module)
        assert ".to(" not in src and '"cuda"' not in src and "device_map" not in src, module.__name__


def test_no_module_puts_a_model_on_gpu_0():
    """Every task of a LUMI node sees all 8 GCDs: "cuda", device=0 or .cuda() puts every rank of
    the node on GCD 0. Placement goes through dfm_hpc.job.device.torch_device (dist.gpu_index)."""
    import re
    from pathlib import Path

    import dfm_hpc

    bad = re.compile(r"""device\s*=\s*0\b|["']cuda["']\s*\)|device_map\s*=\s*["']auto|\.cuda\(\)""")
    root = Path(dfm_hpc.__file__).parent
    hits = [f"{p.relative_to(root)}:{i}: {line.strip()}" for p in sorted(root.rglob("*.py")) if p.name != "device.py"
            for i, line in enumerate(p.read_text().splitlines(), 1) if bad.search(line.split("#")[0])]
    assert not hits, "use dfm_hpc.job.device.torch_device() (or dist.gpu_index()) instead:\n" + "\n".join(hits)
