"""sft/dpo from a base tokenizer with no chat template (Mistral-7B's, Munin's): the managed template
marks each assistant turn, eos included, and sft trains on exactly those tokens (issue #10)."""

from __future__ import annotations

import pytest

from helpers import dfm, run_dirs

pytest.importorskip("transformers")

CONV = [
    {"role": "system", "content": "Du er en hjælpsom assistent."},
    {"role": "user", "content": "Hvad er Danmarks hovedstad?"},
    {"role": "assistant", "content": "København."},
    {"role": "user", "content": "Og den næststørste by?"},
    {"role": "assistant", "content": "Aarhus, i Østjylland."},
]


def mistral_like_tokenizer():
    """Built like Mistral-7B-v0.1's: SentencePiece-style BPE (▁ word marks, byte fallback), <unk> <s>
    </s>, bos added to every text, no pad token and no chat template."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from dfm_hpc import tiny

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>", *bytes_],
                                  show_progress=False)
    tok.train_from_iterator(tiny.models.sample_text(), trainer=trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    assert hf.chat_template is None and hf.pad_token is None
    return hf


def test_managed_template_masks_each_assistant_turn_with_its_eos():
    from dfm_hpc.job import chat_template

    tok = mistral_like_tokenizer()
    chat_template.ensure(tok, "auto", log=lambda _: None)
    assert chat_template.has_generation_marks(tok.chat_template) and tok.pad_token == "</s>"
    enc = tok.apply_chat_template(CONV, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    assert ids[0] == tok.bos_token_id
    turns, cur = [], []  # the runs of masked tokens
    for i, m in zip(ids, mask):
        if m:
            cur.append(i)
        elif cur:
            turns.append(cur)
            cur = []
    turns += [cur] if cur else []
    answers = [m["content"] for m in CONV if m["role"] == "assistant"]
    assert len(turns) == len(answers)
    for turn, answer in zip(turns, answers):
        assert turn[-1] == tok.eos_token_id  # the end of the turn is trained too: the model learns to stop
        assert tok.decode(turn[:-1]).strip() == answer
    # nothing of the user's or the system's text is in the mask
    masked = tok.decode([i for i, m in zip(ids, mask) if m])
    assert "hovedstad" not in masked and "hjælpsom" not in masked


def test_auto_keeps_the_tokenizers_own_template_marks_or_not(tmp_path):
    """Issue #21: `auto` keeps any template the tokenizer has (a fine-tuned Qwen keeps ChatML); the managed one
    only for a tokenizer without one."""
    from transformers import AutoTokenizer

    from dfm_hpc import tiny
    from dfm_hpc.job import chat_template

    tok = AutoTokenizer.from_pretrained(tiny.resolve("tiny:llama", tmp_path))  # ChatML with marks
    own = tok.chat_template
    assert chat_template.ensure(tok, "auto", log=lambda _: None).chat_template == own
    tok.chat_template = own.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    unmarked = tok.chat_template
    assert chat_template.ensure(tok, "auto", log=lambda _: None).chat_template == unmarked
    assert chat_template.ensure(tok, "managed", log=lambda _: None).chat_template == chat_template.MANAGED.read_text()
    tok.chat_template = "x"
    assert chat_template.ensure(tok, "keep").chat_template == "x"
    (tmp_path / "t.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert chat_template.ensure(tok, str(tmp_path / "t.jinja"), log=lambda _: None).chat_template.startswith("{% for")


@pytest.mark.e2e
def test_sft_starts_from_a_base_tokenizer_without_a_chat_template(tmp_path):
    """The whole stage (one rank: CI time; the 2-rank path is test_finetune's): without the managed
    template TRL refuses assistant-only loss on a tokenizer without generation marks."""
    pytest.importorskip("trl")
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = mistral_like_tokenizer()
    base = tmp_path / "mistral-like-base"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2, bos_token_id=tok.bos_token_id,
                                 eos_token_id=tok.eos_token_id)).save_pretrained(base)
    tok.save_pretrained(base)
    p = dfm("+experiment=sft_tiny", f"model.name_or_path={base}", "stages=[sft]", "sft.max_steps=1",
            "sft.tasks_per_node=1", "sft.save_every_steps=100", cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    s = run / "stages" / "sft"
    log = (s / "logs" / "rank-0.log").read_text()
    assert "chat template: " in log and "(the tokenizer had no chat template)" in log
    assert (s / "DONE").exists() and (s / "model" / "adapter_model.safetensors").exists()
    # the saved tokenizer carries the template on (dpo, evaluate, inference)
    from transformers import AutoTokenizer

    from dfm_hpc.job import chat_template

    assert AutoTokenizer.from_pretrained(s / "model").chat_template == chat_template.MANAGED.read_text()


def test_add_generation_prompt_is_not_a_generation_mark():
    from dfm_hpc.job import chat_template

    assert not chat_template.has_generation_marks("{% if add_generation_prompt %}x{% endif %}")
    assert chat_template.has_generation_marks("{%- generation %}a{%- endgeneration %}")
    assert chat_template.has_generation_marks(chat_template.MANAGED.read_text())
