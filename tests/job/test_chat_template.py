"""sft/dpo from a base tokenizer with no chat template (Mistral-7B's, Munin's): the managed template
marks each assistant turn, eos included, and sft trains on exactly those tokens (issue #10)."""

from __future__ import annotations

import pytest

from helpers import dfm, run_dirs
from helpers.chats import CONV

pytest.importorskip("transformers")



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


def mistral_7b_tokenizer():
    """Mistral-7B's real tokenizer (mistral-common ships it: tokenizer.model.v1) as transformers loads
    Mistral-7B's: LlamaTokenizer (BPE, byte fallback, legacy ▁ prefix) from the SentencePiece model's
    own vocabulary and merges. No chat template, as the base model has none."""
    from pathlib import Path

    import mistral_common
    from tokenizers.models import BPE
    from transformers import LlamaTokenizer
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    spm = SentencePieceExtractor(str(Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1")).extract(BPE)
    tok = LlamaTokenizer(vocab=spm["vocab"], merges=spm["merges"], legacy=True)
    tok.name_or_path = "mistralai/Mistral-7B-v0.1"
    assert len(tok) == 32000 and tok.chat_template is None
    return tok


def mistral_reference(conv):
    """mistral-common's reference encoding of the chat (v1 instruct: Mistral-7B) and which ids are the
    assistant's (each answer + </s>), message by message as its instruct tokenizer encodes them."""
    from mistral_common.protocol.instruct.messages import AssistantMessage, UserMessage
    from mistral_common.protocol.instruct.request import InstructRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    inst = MistralTokenizer.v1().instruct_tokenizer
    system = next((m["content"] for m in conv if m["role"] == "system"), None)
    msgs = [UserMessage(content=m["content"]) if m["role"] == "user" else AssistantMessage(content=m["content"])
            for m in conv if m["role"] != "system"]
    ids = inst.encode_instruct(InstructRequest(messages=msgs, system_prompt=system)).tokens
    mask = [0] * len(ids)
    for k, m in enumerate(msgs):  # the request up to each answer: its tokens are the answer's
        if isinstance(m, AssistantMessage):
            n = len(inst.encode_instruct(InstructRequest(messages=msgs[:k + 1], system_prompt=system)).tokens)
            a = len(inst.encode_assistant_message(m, False))
            mask[n - a:n] = [1] * a
    return ids, mask


@pytest.mark.parametrize("conv", [CONV[1:], CONV], ids=["no-system", "system"])
def test_mistral_7b_trains_on_mistral_commons_reference_ids(conv):
    """Issue #21: for Mistral-7B (no chat template: the managed one) the ids dfm_hpc trains on are
    mistral-common's reference encoding, and the mask is exactly the assistant's tokens (+ </s>)."""
    from dfm_hpc.job import chat_template
    from dfm_hpc.job.chat_render import render

    tok = chat_template.ensure(mistral_7b_tokenizer(), "auto", log=lambda _: None)
    r = render(tok, conv)
    ids, mask = mistral_reference(conv)
    assert r.ids == ids and r.mask == mask
    assert sum(mask) == sum(len(tok(m["content"], add_special_tokens=False)["input_ids"]) + 1
                            for m in conv if m["role"] == "assistant")


def test_mistral_7b_real_template_differs_from_the_reference_at_each_answers_first_token():
    """Mistral-7B-Instruct's own (v0.1/v0.2-era) template writes '[/INST]' + answer with no space, so
    transformers tokenizes the answer's first word without SentencePiece's ▁ while mistral-common encodes
    each answer on its own (with ▁): recorded here, and why `auto` with the managed template is the
    reference for Mistral-7B's base tokenizer."""
    from dfm_hpc.job.chat_render import render
    from dfm_hpc.tiny.tokenizers import template

    tok = mistral_7b_tokenizer()
    tok.chat_template = template("mistral")
    r = render(tok, CONV[1:])
    ids, mask = mistral_reference(CONV[1:])
    assert len(r.ids) == len(ids) and r.mask == mask
    differ = [k for k, (a, b) in enumerate(zip(r.ids, ids)) if a != b]
    firsts = [k for k in range(len(mask)) if mask[k] and not mask[k - 1]]
    assert differ == firsts
    assert all(tok.convert_ids_to_tokens(ids[k]).startswith("▁") for k in firsts)
    assert not any(tok.convert_ids_to_tokens(r.ids[k]).startswith("▁") for k in firsts)
