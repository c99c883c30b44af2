"""Chats to token ids with an exact assistant-loss mask, from the chat template's own renders.

Real templates (Qwen3/3.5, Llama-3.x, Gemma-3/4, Apertus, Ministral-3) have no {% generation %} marks,
so the mask is not read from marks: for each assistant message i the template renders
`messages[:i]` with the generation prompt and `messages[:i+1]`; the assistant's tokens are what the
second adds to the first (its end-of-turn token included). That only holds if every render is a
prefix of the next and of the whole chat, in text AND in tokens (a BPE merge can straddle the
boundary): checked for each turn. A template that rewrites earlier turns (Qwen3 drops an earlier
turn's empty <think> block) or whose generation prompt is not how it renders the turn is refused
with TemplateSplitError; a mask is never guessed.

`last_turn_only` (sft.split_turns, DPO) splits at the final assistant turn only: its history is the
template's generation-prompt render, exactly what inference sends, so a template that rewrites earlier
turns still trains exactly, one sample per turn.

`train_reasoning` (sft.train_reasoning): false drops `reasoning_content` and renders with the
template's thinking off (`enable_thinking=False`, passed only to templates that read it); true keeps
it, trained as part of the turn. A template that closes a turn only when the next one starts (Apertus
writes <|assistant_end|> before the next user turn) gets that eos counted to the turn it closes, the
final turn included (taken from what a following user turn would write).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
from dataclasses import dataclass, field


class TemplateSplitError(ValueError):
    """The chat template cannot be split into turns: a turn changes the tokens before it."""


@dataclass
class Rendered:
    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)  # 1 = a trained assistant token


def template_name(tokenizer) -> str:
    """'<name_or_path> (own|managed|file <path>)': which template, for error messages."""
    which = getattr(tokenizer, "dfm_template_source", None) or "own"
    return f"{getattr(tokenizer, 'name_or_path', '') or '<tokenizer>'} ({which} template)"


def _prepare(messages, train_reasoning: bool) -> list[dict]:
    out = []
    for m in messages:
        m = {k: v for k, v in dict(m).items() if v is not None}
        if not train_reasoning:
            m.pop("reasoning_content", None)
        out.append(m)
    return out


def _diff(a: str, b: str) -> str:
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"at char {i}: {a[max(0, i - 40):i + 40]!r} became {b[max(0, i - 40):i + 40]!r}"


def _kwargs(tokenizer, tools, train_reasoning: bool) -> dict:
    """Template variables: enable_thinking only where the template reads it (as inference would pass it)."""
    kw = {"tools": tools}
    if "enable_thinking" in (getattr(tokenizer, "chat_template", None) or ""):
        kw["enable_thinking"] = train_reasoning
    return kw


def assistant_turns(messages) -> list[int]:
    """The index of each assistant turn's last message (consecutive assistant messages are one turn)."""
    return [i for i, m in enumerate(messages) if m["role"] == "assistant"
            and not (i + 1 < len(messages) and messages[i + 1]["role"] == "assistant")]


def render(tokenizer, messages, *, train_reasoning: bool = False, tools=None, index=None,
           last_turn_only: bool = False) -> Rendered:
    """`messages` (dicts with role/content, tool_calls, reasoning_content) -> Rendered(ids, mask). `index`
    (the conversation's row) only goes into error messages. `last_turn_only`: train (and split at) only the
    final assistant turn; the history before it is the prompt exactly as inference renders it
    (sft.split_turns, DPO)."""
    with _pinned_clock(getattr(tokenizer, "dfm_render_date", None)):
        return _render(tokenizer, messages, train_reasoning, tools, index, last_turn_only)


@contextlib.contextmanager
def _pinned_clock(day):
    """Templates that print today's date (Llama-3's 'Today Date', Apertus' 'Current date': strftime_now) render
    on `day` (the run's start date, chat_template.ensure), so a resumed run or a chat store built over midnight
    renders the same tokens. transformers' strftime_now reads its module's `datetime.now()`; template variables
    cannot replace it (it turns callables into strings)."""
    from transformers.utils import chat_template_utils as ctu

    if day is None or getattr(ctu, "datetime", None) is not _dt.datetime:
        yield
        return

    class Pinned(_dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(day.year, day.month, day.day, tzinfo=tz)

    ctu.datetime = Pinned
    try:
        yield
    finally:
        ctu.datetime = _dt.datetime


def _render(tokenizer, messages, train_reasoning, tools, index, last_turn_only) -> Rendered:
    msgs = _prepare(messages, train_reasoning)
    kw = _kwargs(tokenizer, tools, train_reasoning)

    def text(k: int, gen: bool) -> str:
        return tokenizer.apply_chat_template(msgs[:k], tokenize=False, add_generation_prompt=gen, **kw)

    def encode(s: str) -> list[int]:
        return tokenizer(s, add_special_tokens=False)["input_ids"]

    def fail(turn: int, what: str, hint: bool = False) -> TemplateSplitError:
        where = f"conversation {index}, " if index is not None else ""
        role = msgs[turn]["role"] if turn < len(msgs) else "end"
        hint = " (sft.split_turns=true trains each assistant turn on the history as inference renders it)" \
            if hint and not last_turn_only else ""
        return TemplateSplitError(f"chat template of {template_name(tokenizer)} cannot be split into turns: "
                                  f"{where}turn {turn} ({role}): {what}{hint}")

    full = text(len(msgs), False)
    ids = encode(full)
    mask = [0] * len(ids)
    prev_text, prev_len = "", 0
    turns = assistant_turns(msgs)
    if last_turn_only:
        turns = turns[-1:]
    for i in turns:
        bounds = []
        for k, gen in ((_turn_start(msgs, i), True), (i + 1, False)):
            s = text(k, gen)
            turn = k if gen else i
            if not s.startswith(prev_text):
                raise fail(turn, f"this render changes the text before it, {_diff(prev_text, s)}")
            if not full.startswith(s):
                own = text(i + 1, False)  # this turn's own render: does the generation prompt lead to it?
                if gen and not own.startswith(s):
                    split = _prompt_suffix_split(text(k, False), s, own, encode)
                    if split and turns == [len(msgs) - 1]:  # the sample's last turn: prompt as inference sends it
                        return _close(tokenizer, msgs, kw, own, *split)
                    raise fail(i, "the generation prompt (what inference sends) is not how the template renders "
                                  f"the answer, {_diff(s, own)}", hint=bool(split))
                raise fail(turn, f"a later turn changes this render's text, {_diff(s, full)}", hint=True)
            t = encode(s)
            if t != ids[:len(t)] or len(t) < prev_len:
                raise fail(turn, f"tokens merge across the turn boundary (the render ends {s[-40:]!r})")
            bounds.append(len(t))
            prev_text, prev_len = s, len(t)
        start, end = bounds
        if end <= start:
            raise fail(i, "the assistant turn adds no tokens")
        if end < len(ids) and ids[end] == tokenizer.eos_token_id and ids[end - 1] != tokenizer.eos_token_id:
            end += 1  # a turn closed only when the next begins (Apertus): its eos is the assistant's
        mask[start:end] = [1] * (end - start)
    if turns and turns[-1] == len(msgs) - 1:
        _close_final_turn(tokenizer, msgs, kw, full, ids, mask)
    return Rendered(ids=ids, mask=mask)


def _close(tokenizer, msgs, kw, full: str, ids: list[int], mask: list[int]) -> Rendered:
    _close_final_turn(tokenizer, msgs, kw, full, ids, mask)
    return Rendered(ids=ids, mask=mask)


def _prompt_suffix_split(history: str, prompt: str, own: str, encode):
    """A final turn whose generation prompt adds a prompt-only suffix after the turn's header (Gemma-4 with
    thinking off: '<|turn>model\n' + an empty '<|channel>thought\n<channel|>' its answer render lacks): the
    sample is what inference sends, `prompt`, then what the template writes for the answer after the header,
    only that trained. (ids, mask), or None where the two renders do not share the header after the history
    (Apertus after a tool result opens a new turn) or the header's end is not a token boundary in both."""
    if not (prompt.startswith(history) and own.startswith(history)):
        return None
    n = len(history)
    while n < min(len(prompt), len(own)) and prompt[n] == own[n]:
        n += 1
    if n == len(history) or n == len(prompt) or n == len(own):  # no shared header, no suffix or no answer
        return None
    head, prompt_ids, own_ids = encode(prompt[:n]), encode(prompt), encode(own)
    if prompt_ids[:len(head)] != head or own_ids[:len(head)] != head:
        return None
    answer = own_ids[len(head):]
    return prompt_ids + answer, [0] * len(prompt_ids) + [1] * len(answer)


def _close_final_turn(tokenizer, msgs, kw, full: str, ids: list[int], mask: list[int]) -> None:
    """A template that writes a turn's end only when the next turn starts (Apertus' <|assistant_end|>)
    leaves a chat's final turn open, so the model would never learn to stop. The closing is taken from
    the template itself: what a following user turn writes first, when that is the eos token."""
    eos, eos_id = tokenizer.eos_token, tokenizer.eos_token_id
    if not eos or (ids and ids[-1] == eos_id):
        return
    probe = msgs + [{"role": "user", "content": "."}]
    try:
        nxt = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=False, **kw)
    except Exception:  # a template that refuses a following user turn has nothing to say about closing
        return
    if nxt.startswith(full) and nxt[len(full):].startswith(eos) and not full.rstrip().endswith(eos):
        ids.append(eos_id)
        mask.append(1)


def _turn_start(msgs, i: int) -> int:
    """The first of the consecutive assistant messages ending at i."""
    while i > 0 and msgs[i - 1]["role"] == "assistant":
        i -= 1
    return i


def render_pair(tokenizer, prompt, chosen, rejected, *, train_reasoning: bool = False, tools=None,
                index=None) -> dict:
    """One DPO pair, rendered as sft renders: prompt (a list of messages), chosen/rejected (the assistant's
    message(s)) -> TRL 1.16's pre-tokenized columns prompt_ids, chosen_ids, rejected_ids (the completions
    without the prompt). The prompt's render with the generation prompt must be a prefix of both."""
    out = {}
    for key, completion in (("chosen", chosen), ("rejected", rejected)):
        r = render(tokenizer, list(prompt) + list(completion), train_reasoning=train_reasoning, tools=tools,
                   index=index, last_turn_only=True)
        n = r.mask.index(1) if 1 in r.mask else len(r.ids)
        if "prompt_ids" in out and out["prompt_ids"] != r.ids[:n]:
            raise TemplateSplitError(f"chat template of {template_name(tokenizer)}: conversation {index}: the prompt "
                                     "renders differently before the chosen and the rejected answer")
        out["prompt_ids"] = r.ids[:n]
        out[f"{key}_ids"] = r.ids[n:]
    return out
