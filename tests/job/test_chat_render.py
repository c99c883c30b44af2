"""render(): ids equal the template's own, the mask is exactly the assistant turns (issue #21), on the
tiny family tokenizers carrying the families' real templates (dfm_hpc/tiny/chat_templates)."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

CONV = [
    {"role": "system", "content": "Du er en hjælpsom assistent."},
    {"role": "user", "content": "Hvad er Danmarks hovedstad?"},
    {"role": "assistant", "content": "København."},
    {"role": "user", "content": "Og den næststørste by?"},
    {"role": "assistant", "content": "Aarhus, i Østjylland."},
]
# the end of the assistant's turn as each template writes it (trained: the model learns to stop)
TURN_END = {"qwen3": "<|im_end|>\n", "qwen3_5": "<|im_end|>\n", "llama3": "<|eot_id|>"}


def tok(family):
    from dfm_hpc.tiny.tokenizers import build_family_tokenizer

    return build_family_tokenizer(family, 512, 2048)


def runs(r):
    out, cur = [], []
    for i, m in zip(r.ids, r.mask):
        if m:
            cur.append(i)
        elif cur:
            out, cur = out + [cur], []
    return out + ([cur] if cur else [])


@pytest.mark.parametrize("family", ["llama3", "qwen3", "qwen3_5"])
def test_single_and_multi_turn_masks_are_the_assistant_turns(family):
    from dfm_hpc.job.chat_render import TemplateSplitError, render

    t = tok(family)
    convs = [CONV[:3], CONV]
    for conv in convs:
        try:
            r = render(t, conv)
        except TemplateSplitError as e:  # Qwen3/3.5 rewrite an earlier turn (its empty <think> block)
            assert family.startswith("qwen") and len(conv) == 5 and "turn 2 (assistant)" in str(e)
            continue
        own = t.apply_chat_template(conv, tokenize=True, return_dict=True, enable_thinking=False)["input_ids"]
        assert r.ids == own
        answers = [m["content"] for m in conv if m["role"] == "assistant"]
        assert [t.decode(run) for run in runs(r)] == [a + TURN_END[family] for a in answers]


def test_llama3_tool_call_and_result():
    from dfm_hpc.job.chat_render import render

    t = tok("llama3")
    call = {"type": "function", "function": {"name": "vejret", "arguments": {"by": "Aarhus"}}}
    conv = [CONV[1], {"role": "assistant", "tool_calls": [call]}, {"role": "tool", "content": "12 grader"},
            {"role": "assistant", "content": "Det er 12 grader."}]
    r = render(t, conv)
    assert r.ids == t.apply_chat_template(conv, tokenize=True, return_dict=True)["input_ids"]
    masked = [t.decode(run) for run in runs(r)]
    assert masked == ['{"name": "vejret", "parameters": {"by": "Aarhus"}}<|eot_id|>', "Det er 12 grader.<|eot_id|>"]


def test_reasoning_is_dropped_or_trained():
    from dfm_hpc.job.chat_render import render

    t = tok("qwen3")
    conv = CONV[1:2] + [{"role": "assistant", "content": "København.", "reasoning_content": "Hovedstaden er..."}]
    assert "Hovedstaden" not in t.decode([i for i, m in zip(*vars(render(t, conv)).values()) if m])
    masked = t.decode([i for i, m in zip(*vars(render(t, conv, train_reasoning=True)).values()) if m])
    assert masked == "<think>\nHovedstaden er...\n</think>\n\nKøbenhavn.<|im_end|>\n"


def test_a_template_that_rewrites_earlier_turns_is_refused_by_name():
    from dfm_hpc.job.chat_render import TemplateSplitError, render

    t = tok("qwen3")
    t.name_or_path = "Qwen/Qwen3-8B"
    with pytest.raises(TemplateSplitError, match=r"Qwen/Qwen3-8B \(own template\).*conversation 7, turn 2 \(assis"):
        render(t, CONV, index=7)


def test_saved_tokenizer_keeps_its_template(tmp_path):
    from transformers import AutoTokenizer

    from dfm_hpc.job import chat_template

    t = chat_template.ensure(tok("llama3"), "auto", log=lambda _: None)
    own = t.chat_template
    t.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).chat_template == own
