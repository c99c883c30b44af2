"""The chat template sft and dpo train with (`model.chat_template`).

TRL's assistant-only loss needs a template that marks the assistant's turns ({% generation %});
DPO needs a template at all. Base tokenizers (Mistral-7B's, Munin's) have none, or one without the
marks. `auto` keeps a tokenizer's template when it has the marks and otherwise installs the managed
one (dfm_hpc/templates/chat_template.jinja); the tokenizer saved with the model carries it on to
dpo, evaluate and inference.
"""

from __future__ import annotations

import re
from pathlib import Path

MANAGED = Path(__file__).resolve().parent.parent / "templates" / "chat_template.jinja"
MODES = ("auto", "managed", "keep")  # or a path to a .jinja file


def has_generation_marks(template) -> bool:
    """A {% generation %} block, as TRL looks for it (add_generation_prompt is no mark)."""
    return bool(template) and re.search(r"\{%-?\s*generation\s*-?%\}", template) is not None


def ensure(tokenizer, mode: str = "auto", log=print):
    """Give `tokenizer` the template to train with (in place); returns it. `mode`: auto, managed,
    keep (the tokenizer's own, whatever it is) or a template file."""
    own = getattr(tokenizer, "chat_template", None)
    if mode == "keep" or (mode == "auto" and has_generation_marks(own)):
        return tokenizer
    path = MANAGED if mode in ("auto", "managed") else Path(mode)
    tokenizer.chat_template = path.read_text()
    why = "no chat template" if not own else "a chat template without generation marks"
    log(f"chat template: {path}" + (f" (the tokenizer had {why})" if mode == "auto" else ""))
    if tokenizer.pad_token is None:  # Mistral's base tokenizer has none; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
