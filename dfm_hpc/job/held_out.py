"""Held-out numbers that are true: a loss over zero held-out tokens is reported as "no held-out tokens"
with the reason (eval_loss None, eval_note), never as 0.0 and a perfect perplexity of 1.0.
Shared by cpt, sft and dpo (train.fit and the metrics callback); the card prints eval_note."""

from __future__ import annotations

import math
from typing import Optional

NO_TOKENS = "no held-out tokens"
MASKED = f"{NO_TOKENS}: every held-out label is masked (prompts only, or cut off at seq_len)"


def loss(value) -> Optional[float]:
    """A held-out loss, or None where it was over no token: the Trainer's mean over zero labels reads
    0.0 (or NaN)."""
    return None if value is None or not math.isfinite(value) or value == 0.0 else float(value)


def results(trainer, eval_keys, why_none: str) -> dict:
    """The summary's held-out numbers: `eval_keys` and eval_perplexity, or eval_loss None and eval_note
    saying why there are none (`why_none`: why the held-out set is empty)."""
    if trainer.eval_dataset is None or not len(trainer.eval_dataset):
        return {"eval_loss": None, "eval_perplexity": None, "eval_note": f"{NO_TOKENS}: {why_none}"}
    ev = trainer.evaluate()
    out = {k: ev[k] for k in eval_keys if k in ev}
    if "eval_loss" in out:
        out["eval_loss"] = loss(out["eval_loss"])
        if out["eval_loss"] is None:
            return {**out, "eval_perplexity": None, "eval_note": MASKED}
        out["eval_perplexity"] = math.exp(min(out["eval_loss"], 50))
    return out
