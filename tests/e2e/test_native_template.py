"""Issue #21's acceptance: `model.chat_template=auto` trains with the tokenizer's own template, generation
marks or not, and saves it unchanged; a template that cannot be split into turns stops sft before training.
One rank, one step (CI time: 22 s for both on the 2-core dev VM)."""

from __future__ import annotations

import re

import pytest

from helpers import dfm, run_dirs

pytest.importorskip("deepspeed")
pytest.importorskip("trl")

SFT = ("+experiment=sft_tiny", "stages=[sft]", "model.chat_template=auto", "sft.tasks_per_node=1",
       "sft.max_steps=1", "sft.global_batch_size=2", "sft.micro_batch_size=2", "sft.save_every_steps=100")


def _base_with_template(tmp_path, template: str):
    """tiny:llama copied to a local dir, its tokenizer given `template` (what a downloaded base looks like)."""
    from transformers import AutoTokenizer

    from dfm_hpc import tiny

    base = tmp_path / "base"
    src = tiny.resolve("tiny:llama", tmp_path / "cache")
    tok = AutoTokenizer.from_pretrained(src)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(src).save_pretrained(base)
    tok.chat_template = template
    tok.save_pretrained(base)
    return base, tok


def test_lora_sft_keeps_a_chatml_template_without_generation_marks(tmp_path):
    from transformers import AutoTokenizer

    from dfm_hpc import tiny
    from dfm_hpc.job import chat_template

    own = AutoTokenizer.from_pretrained(tiny.resolve("tiny:llama", tmp_path / "cache")).chat_template
    chatml = re.sub(r"\{%-?\s*(end)?generation\s*-?%\}", "", own)
    assert "<|im_start|>" in chatml and not chat_template.has_generation_marks(chatml)
    base, _ = _base_with_template(tmp_path, chatml)
    p = dfm(*SFT, f"model.name_or_path={base}", "sft.merge_adapter=true", cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    s = run / "stages" / "sft"
    assert "the tokenizer's own chat template" in (s / "logs" / "rank-0.log").read_text()
    for saved in (s / "model", s / "merged"):  # byte for byte, and as transformers loads it
        assert (saved / "chat_template.jinja").read_text() == chatml, saved
        assert AutoTokenizer.from_pretrained(saved).chat_template == chatml


def test_a_template_that_cannot_be_split_stops_sft_before_training(tmp_path):
    """Gemma-4's template (thinking off) opens the answer with an empty thought channel its render of the
    answer in history lacks: a chat's last turn trains on the prompt inference sends, but the earlier turns of a
    multi-turn chat cannot (without sft.split_turns): refused, naming the template and the turn, before the model
    is loaded."""
    import json

    from dfm_hpc.tiny.tokenizers import template

    base, _ = _base_with_template(tmp_path, template("gemma4"))
    turns = [{"role": r, "content": c} for r, c in (("user", "Hej"), ("assistant", "Hej!"), ("user", "Og?"),
                                                     ("assistant", "Farvel."))]
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": turns}) + "\n" for _ in range(8)))
    p = dfm(*SFT, f"model.name_or_path={base}", f"sft.dataset={chats}", cwd=tmp_path, timeout=600)
    assert p.returncode != 0
    (run,) = run_dirs(tmp_path)
    s = run / "stages" / "sft"
    log = (s / "logs" / "rank-0.log").read_text() + p.stdout + p.stderr
    assert re.search(rf"chat template of {re.escape(str(base))} \(own template\) cannot be split into turns: "
                     r"conversation \d+, turn 1 \(assistant\): the generation prompt.*sft.split_turns=true",
                     log), log[-3000:]
    assert not (s / "metrics.jsonl").exists() and not (s / "model").exists()
