"""render(): ids equal the template's own, the mask is exactly the assistant turns (issue #21), on the
tiny family tokenizers carrying the families' real templates (dfm_hpc/tiny/chat_templates)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.chats import CONV

pytest.importorskip("transformers")

# the end of the assistant's turn as each template writes it (trained: the model learns to stop)
TURN_END = {"qwen3": "<|im_end|>\n", "qwen3_5": "<|im_end|>\n", "llama3": "<|eot_id|>", "gemma3": "<end_of_turn>\n",
            "apertus": "<|assistant_end|>", "ministral3": "</s>", "mistral": "</s>"}
FAMILIES = ("qwen3", "qwen3_5", "llama3", "gemma3", "gemma4", "apertus", "ministral3", "mistral")
SPLITTABLE = ("llama3", "gemma3", "apertus", "ministral3", "mistral")  # multi-turn chats split as they are


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


def own_ids(t, conv, **kw):
    """The template's own render, as inference code calls it (enable_thinking only where it is read)."""
    if "enable_thinking" in t.chat_template:
        kw.setdefault("enable_thinking", False)
    return t.apply_chat_template(conv, tokenize=True, return_dict=True, **kw)["input_ids"]


def conv_for(family):
    return CONV[1:] if family == "mistral" else CONV  # Mistral's v0.1/v0.2 template has no system role


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "gemma4"])
def test_single_and_multi_turn_masks_are_the_assistant_turns(family):
    from dfm_hpc.job.chat_render import TemplateSplitError, render

    t = tok(family)
    conv = conv_for(family)
    for n in (len(conv) - 2, len(conv)):
        c = conv[:n]
        try:
            r = render(t, c)
        except TemplateSplitError as e:  # Qwen3/3.5 rewrite an earlier turn (its empty <think> block)
            assert family not in SPLITTABLE and n == len(conv) and "turn 2 (assistant)" in str(e)
            assert "sft.split_turns=true" in str(e)
            continue
        # Apertus closes a turn only when the next starts: the final turn gets the <|assistant_end|> it writes then
        assert r.ids == own_ids(t, c) + ([t.eos_token_id] if family == "apertus" else [])
        answers = [m["content"] for m in c if m["role"] == "assistant"]
        assert [t.decode(run) for run in runs(r)] == [a + TURN_END[family] for a in answers]


@pytest.mark.parametrize("family", ["qwen3", "qwen3_5"])
def test_split_turns_trains_each_turn_on_the_history_inference_sends(family):
    """sft.split_turns: one row per assistant turn; the prompt is the template's generation-prompt render of
    the history (what inference sends), only that turn trained."""
    import datasets

    from dfm_hpc.job.chat_template import chat_rows
    from dfm_hpc.schema import SftStage

    t = tok(family)
    ds = datasets.Dataset.from_list([{"messages": CONV}])
    rows = chat_rows(ds, t, SftStage(split_turns=True))
    assert len(rows) == 2
    for row, k in zip(rows, (2, 4)):  # assistant turns at 2 and 4
        prompt = own_ids(t, CONV[:k], add_generation_prompt=True)
        assert row["input_ids"] == own_ids(t, CONV[:k + 1])
        assert row["input_ids"][:len(prompt)] == prompt and not any(row["assistant_masks"][:len(prompt)])
        assert all(row["assistant_masks"][len(prompt):])
        assert t.decode(row["input_ids"][len(prompt):]) == CONV[k]["content"] + TURN_END[family]
    with pytest.raises(Exception, match="split_turns"):
        chat_rows(ds, t, SftStage())


def test_gemma4_last_turn_trains_on_the_prompt_inference_sends():
    """Gemma-4's generation prompt with thinking off adds an empty thought channel ('<|turn>model\n' +
    '<|channel>thought\n<channel|>') that its render of the answer in history lacks. The sample's last turn
    (single-turn chat, sft.split_turns, DPO) trains on exactly what inference sends, then the answer as the
    template writes it after the header; a multi-turn chat without split_turns stays refused (its earlier turns'
    context is not what inference sent). With thinking on the generation prompt is the header and turns split."""
    import datasets

    from dfm_hpc.job.chat_render import TemplateSplitError, render, render_pair
    from dfm_hpc.job.chat_template import chat_rows
    from dfm_hpc.schema import SftStage

    t = tok("gemma4")
    for k in (2, 4):  # a single-turn chat, and the last turn of a split multi-turn one
        r = render(t, CONV[:k + 1], last_turn_only=k == 4)
        prompt = own_ids(t, CONV[:k], add_generation_prompt=True)
        assert t.decode(prompt).endswith("<|turn>model\n<|channel>thought\n<channel|>")
        answer = t(CONV[k]["content"] + "<turn|>\n", add_special_tokens=False)["input_ids"]
        assert r.ids == prompt + answer and r.mask == [0] * len(prompt) + [1] * len(answer)
    rows = chat_rows(datasets.Dataset.from_list([{"messages": CONV}]), t, SftStage(split_turns=True))
    assert [t.decode([i for i, m in zip(*row.values()) if m]) for row in rows] == \
        ["København.<turn|>\n", "Aarhus, i Østjylland.<turn|>\n"]
    pair = render_pair(t, CONV[:4], [{"role": "assistant", "content": "Aarhus."}], [CONV[4]])
    assert pair["prompt_ids"] == own_ids(t, CONV[:4], add_generation_prompt=True)
    assert t.decode(pair["chosen_ids"]) == "Aarhus.<turn|>\n"
    with pytest.raises(TemplateSplitError, match=r"turn 2 \(assistant\): the generation prompt .*sft.split_turns=true"):
        render(t, CONV)
    r = render(t, CONV, train_reasoning=True)
    assert r.ids == own_ids(t, CONV, enable_thinking=True)
    assert [t.decode(run) for run in runs(r)] == ["København.<turn|>\n", "Aarhus, i Østjylland.<turn|>\n"]


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_and_reloaded_tokenizer_keeps_the_template(family, tmp_path):
    from transformers import AutoTokenizer

    from dfm_hpc.job import chat_template

    t = chat_template.ensure(tok(family), "auto", log=lambda _: None)
    own = t.chat_template
    assert own == (Path(__file__).parents[2] / "dfm_hpc/tiny/chat_templates" / f"{family}.jinja").read_text()
    t.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).chat_template == own


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


TOOLS = [{"type": "function", "function": {"name": "vejret", "description": "Vejret i en by", "parameters": {
    "type": "object", "properties": {"by": {"type": "string", "description": "byen"}}, "required": ["by"]}}}]


def tool_chat(arguments):
    call = {"id": "abc123def", "type": "function", "function": {"name": "vejret", "arguments": arguments}}
    return [{"role": "user", "content": "Hvordan er vejret i Aarhus?"}, {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "abc123def", "content": "12 grader"},
            {"role": "assistant", "content": "Det er 12 grader."}]


@pytest.mark.parametrize("family,reasoning,call", [
    ("qwen3_5", False,
     "<tool_call>\n<function=vejret>\n<parameter=by>\nAarhus\n</parameter>\n</function>\n</tool_call>"),
    ("ministral3", False, '[TOOL_CALLS]vejret[ARGS]{"by": "Aarhus"}'),
    ("gemma4", True, '<|tool_call>call:vejret{by:<|"|>Aarhus<|"|>}<tool_call|>'),
])
def test_tool_call_and_result_are_masked_as_the_template_writes_them(family, reasoning, call):
    """The call is trained, the tool's result is not; ids are the template's own (tools declared)."""
    from dfm_hpc.job.chat_render import render

    t = tok(family)
    conv = tool_chat({"by": "Aarhus"})
    r = render(t, conv, tools=TOOLS, train_reasoning=reasoning)
    assert r.ids == own_ids(t, conv, tools=TOOLS, **({"enable_thinking": True} if reasoning else {}))
    assert [t.decode(run) for run in runs(r)] == [call + TURN_END.get(family, "<turn|>\n"),
                                                  "Det er 12 grader." + TURN_END.get(family, "<turn|>\n")]


def test_apertus_tool_results_inside_the_assistant_turn_are_refused():
    """Apertus writes a tool's result inside the open assistant turn, but its generation prompt opens a new
    <|assistant_start|>: what inference sends after a tool result is not the trained render, so refused."""
    import json

    from dfm_hpc.job.chat_render import TemplateSplitError, render

    with pytest.raises(TemplateSplitError, match=r"turn 3 \(assistant\): the generation prompt"):
        render(tok("apertus"), tool_chat(json.dumps({"by": "Aarhus"})), tools=TOOLS)


def test_apertus_final_turn_ends_with_its_end_token():
    """Apertus closes a turn only when the next starts: the final turn's mask must still end with
    <|assistant_end|> (the model learns to stop), taken from what a following turn writes."""
    from dfm_hpc.job.chat_render import render

    t = tok("apertus")
    r = render(t, CONV[:3])
    assert r.ids[-1] == t.convert_tokens_to_ids("<|assistant_end|>") == t.eos_token_id and r.mask[-1] == 1
    following = t.apply_chat_template(CONV[:4], tokenize=False)
    assert following.startswith(t.decode(r.ids))  # exactly the text the template writes once a user turn follows


def test_sft_rows_without_a_trained_token_within_seq_len_are_dropped():
    """A prompt that fills sft.seq_len leaves no trained token (TRL truncates): such rows are dropped and counted,
    an eval split left empty gives no eval loss (None), and a train split left empty stops before training."""
    import datasets

    from dfm_hpc.job.chat_template import chat_rows, drop_untrained
    from dfm_hpc.schema import SftStage

    t = tok("llama3")
    long = [{"role": "system", "content": " ".join(["Du er en hjælpsom assistent."] * 40)}] + CONV[1:3]
    ds = chat_rows(datasets.Dataset.from_list([{"messages": CONV[:3]}, {"messages": long}]), t, SftStage())
    short_prompt = ds[0]["assistant_masks"].index(1)
    assert ds[1]["assistant_masks"].index(1) > short_prompt + 50
    logs = []
    train, ev = drop_untrained(ds, ds.select([1]), short_prompt + 5, logs.append)
    assert len(train) == 1 and train[0]["input_ids"] == ds[0]["input_ids"] and ev is None
    assert logs[0].startswith("sft: dropped 1 of 2 train rows with no assistant token within sft.seq_len=")
    assert "no eval loss" in logs[-1]
    with pytest.raises(ValueError, match="none of the 2 train rows has an assistant token within sft.seq_len=4"):
        drop_untrained(ds, None, 4, logs.append)


def test_dpo_with_no_pair_within_seq_len_stops_with_the_reason():
    """Every prompt at least dpo.seq_len long: TRL's length filter leaves nothing; a clear error rather than
    torch's 'num_samples=0' once training starts."""
    from types import SimpleNamespace

    import datasets
    import trl

    from dfm_hpc.job.chat_render import render_pair
    from dfm_hpc.stages import dpo

    t = tok("llama3")
    pair = render_pair(t, CONV[:2], [CONV[2]], [{"role": "assistant", "content": "Aarhus."}])
    ds = datasets.Dataset.from_list([pair])
    prepare = dpo._trainer_class(trl)._prepare_dataset
    args = SimpleNamespace(max_length=len(pair["prompt_ids"]), truncation_mode="keep_start")
    with pytest.raises(ValueError, match="no train pair left: every prompt fills dpo.seq_len="):
        prepare(None, ds, t, args, "train")
    assert len(prepare(None, ds, t, SimpleNamespace(max_length=len(pair["prompt_ids"]) + 1,
                                                    truncation_mode="keep_start"), "train")) == 1


@pytest.mark.parametrize("family", ["llama3", "apertus"])
def test_templates_that_print_todays_date_render_on_the_runs_start_date(family):
    """Llama-3 ('Today Date', strftime_now) and Apertus ('Current date') print the day they render: pinned to the
    run's start date (its dir's name) by chat_template.ensure, so a resumed run or a store built over midnight
    renders the same tokens; transformers' own clock is left as it was."""
    import datetime

    from dfm_hpc.job import chat_template
    from dfm_hpc.job.chat_render import render

    day = chat_template.run_date("/runs/2025-12-31_23-59-58_a1b2c3")
    assert day == datetime.date(2025, 12, 31) and chat_template.run_date("/runs/my-run") is None
    t = chat_template.ensure(tok(family), "auto", log=lambda _: None, date=day)
    text = t.decode(render(t, CONV[1:3]).ids)  # no system prompt: Apertus writes its default, dated
    assert ("Today Date: 31 Dec 2025" if family == "llama3" else "Current date: 2025-12-31") in text, text
    before = datetime.date.today()
    today = t.apply_chat_template(CONV[1:3], tokenize=False)  # outside render: today, as inference prints it
    fmt = "%d %b %Y" if family == "llama3" else "%Y-%m-%d"
    assert any(d.strftime(fmt) in today for d in (before, datetime.date.today()))
