"""The chat template sft and dpo train with (`model.chat_template`), and the rows they train on.

`auto` keeps the tokenizer's own template whenever it has one (a fine-tuned Qwen keeps ChatML; no
{% generation %} marks needed: job/chat_render.py computes the assistant mask from the template's own
renders) and installs dfm_hpc's managed one (templates/chat_template.jinja, Mistral's [INST] format)
only when it has none (Mistral-7B's and Munin's base tokenizers). `keep` keeps whatever it has,
`managed` or a .jinja path replaces it. save_pretrained writes the template beside the model
(chat_template.jinja), so dpo, evaluate and inference use the one sft trained with.

`chat_rows` / `pair_rows` render a dataset of chats / preference pairs into the token columns TRL
takes as they are (input_ids + assistant_masks; prompt_ids + chosen_ids + rejected_ids). A
pre-tokenized chat store can hand those columns in instead.
"""

from __future__ import annotations

import re
from pathlib import Path

from dfm_hpc.job import chat_render
from dfm_hpc.job.chat_render import Rendered, TemplateSplitError, render, render_pair  # noqa: F401 (the API)

MANAGED = Path(__file__).resolve().parent.parent / "templates" / "chat_template.jinja"
MODES = ("auto", "managed", "keep")  # or a path to a .jinja file


def has_generation_marks(template) -> bool:
    """A {% generation %} block, as TRL looks for it (add_generation_prompt is no mark)."""
    return bool(template) and re.search(r"\{%-?\s*generation\s*-?%\}", template) is not None


def run_date(run_dir):
    """The day a run started, from its dir's name (rundir.new_run_dir: <YYYY-mm-dd_HH-MM-SS>_<hex>); None if
    the name has no date. Templates that print today's date render on it (chat_render._pinned_clock)."""
    import datetime

    try:
        return datetime.datetime.strptime(Path(run_dir).name[:10], "%Y-%m-%d").date()
    except ValueError:
        return None


def ensure(tokenizer, mode: str = "auto", log=print, date=None):
    """Give `tokenizer` the template to train with (in place); returns it. `mode`: auto (its own, the
    managed one if it has none), managed, keep (its own, whatever it is) or a template file. `date`
    (run_date): the day templates that print today's date render on, the same in every rank, stage and resume."""
    tokenizer.dfm_render_date = date
    own = getattr(tokenizer, "chat_template", None)
    if mode == "keep" or (mode == "auto" and own):
        tokenizer.dfm_template_source = "own"  # named in TemplateSplitError's message and fit's data line
        return tokenizer
    path = MANAGED if mode in ("auto", "managed") else Path(mode)
    tokenizer.chat_template = path.read_text()
    tokenizer.dfm_template_source = "managed" if path == MANAGED else f"file {path}"
    log(f"chat template: {path}" + (" (the tokenizer had no chat template)" if mode == "auto" else ""))
    if tokenizer.pad_token is None:  # Mistral's base tokenizer has none; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _tools(row):
    import json

    tools = row.get("tools")
    return json.loads(tools) if isinstance(tools, str) else tools


def options(st) -> dict:
    """A stage's rendering options (sft: train_reasoning, split_turns; dpo has neither: both off)."""
    return {"train_reasoning": bool(getattr(st, "train_reasoning", False)),
            "split_turns": bool(getattr(st, "split_turns", False))}


def chat_samples(tokenizer, messages, *, tools=None, index=None, train_reasoning: bool = False,
                 split_turns: bool = False) -> list:
    """One chat's training rows (Rendered): the whole chat, or with `split_turns` one per assistant turn, its
    history as inference renders it, only that turn trained. chat_rows and the chat store both render here."""
    kw = {"train_reasoning": train_reasoning, "tools": tools, "index": index}
    if not split_turns:
        return [render(tokenizer, messages, **kw)]
    return [render(tokenizer, messages[:end + 1], last_turn_only=True, **kw)
            for end in chat_render.assistant_turns(messages)]


def pair_sample(tokenizer, row, *, index=None, train_reasoning: bool = False, **_) -> dict:
    """One preference pair's row (prompt_ids, chosen_ids, rejected_ids); pair_rows and the chat store."""
    return render_pair(tokenizer, row["prompt"], row["chosen"], row["rejected"], train_reasoning=train_reasoning,
                       tools=_tools(row), index=index)


def chat_rows(ds, tokenizer, st):
    """sft: a `messages` dataset -> input_ids + assistant_masks (TRL uses them as they are: the masks
    become labels -100, packing included). A template that cannot be split raises TemplateSplitError.
    `sft.split_turns`: one row per assistant turn, its history as inference renders it, only that turn
    trained (templates that rewrite earlier turns: Qwen3/3.5 drop an earlier turn's empty <think>)."""
    opts = options(st)

    def one(rows, idxs):
        out = {"input_ids": [], "assistant_masks": []}
        for msgs, tools, idx in zip(rows["messages"], rows["tools"] if "tools" in rows else [None] * len(idxs), idxs):
            for r in chat_samples(tokenizer, msgs, tools=_tools({"tools": tools}), index=idx, **opts):
                out["input_ids"].append(r.ids)
                out["assistant_masks"].append(r.mask)
        return out

    return ds.map(one, with_indices=True, batched=True, batch_size=64, remove_columns=ds.column_names,
                  desc="rendering chats" + (" (one row per assistant turn)" if opts["split_turns"] else ""))


def pair_rows(ds, tokenizer, st):
    """dpo: prompt/chosen/rejected -> prompt_ids + chosen_ids + rejected_ids, rendered as sft renders."""
    opts = options(st)
    return ds.map(lambda row, idx: pair_sample(tokenizer, row, index=idx, **opts), with_indices=True,
                  remove_columns=ds.column_names, desc="rendering pairs")


def trains(tokenizer, row, st, index=None) -> bool:
    """Whether a chat's rows (as chat_rows renders them) have an assistant token within `st.seq_len`:
    data.split holds out such a chat, so the held-out loss is over something."""
    rows = chat_samples(tokenizer, row["messages"], tools=_tools(row), index=index, **options(st))
    return any(any(r.mask[:st.seq_len]) for r in rows)


def pair_trains(tokenizer, row, st, index=None) -> bool:
    """dpo: whether a pair's prompt leaves room for its answers within `st.seq_len` (else TRL drops it)."""
    return len(pair_sample(tokenizer, row, index=index, **options(st))["prompt_ids"]) < st.seq_len


def drop_untrained(train_ds, eval_ds, seq_len: int, log=print):
    """sft's rows with no trained token in their first `seq_len` tokens (TRL truncates there: a long system
    prompt, Ministral-3's is ~340 tokens) train on nothing (loss 0.0, grad_norm 0): dropped, counted in one
    line. No train row left stops the stage before training; an eval split left empty is None (no eval loss,
    not 0.0). Rows from chat_rows or the chat store alike."""
    out = []
    for name, ds in (("train", train_ds), ("eval", eval_ds)):
        if ds is None:
            out.append(None)
            continue
        kept = ds.filter(lambda row: any(row["assistant_masks"][:seq_len]), desc=f"{name} rows with trained tokens")
        if len(kept) < len(ds):
            log(f"sft: dropped {len(ds) - len(kept)} of {len(ds)} {name} rows with no assistant token within "
                f"sft.seq_len={seq_len} tokens (the prompt before the answer fills it)")
        if not len(kept) and name == "train":
            raise ValueError(f"sft: none of the {len(ds)} train rows has an assistant token within sft.seq_len="
                             f"{seq_len} tokens (the prompt before each answer is at least that long: a long system "
                             "prompt?); raise sft.seq_len or shorten the prompts")
        if not len(kept) and len(ds):
            log(f"sft: the eval split has no row with an assistant token within sft.seq_len={seq_len}: no eval loss")
        out.append(kept if len(kept) else None)
    return tuple(out)
