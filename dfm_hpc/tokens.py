"""How many tokens a training stage consumes, and how a data mixture shares them out: one home for both
rules, read by the checks, the launch's mixture print, predict, the cpt stage and job/mixture. Pure."""

from __future__ import annotations

import math
from typing import List, Optional, Sequence


def sequence_parallel(st) -> int:
    """Ranks sharing one sequence (sft.sequence_parallel, Ulysses); 1 for stages without the key."""
    return max(1, int(getattr(st, "sequence_parallel", 1) or 1))


def data_parallel(st, world_size: int) -> int:
    """Ranks that read different sequences: the world size / sequence_parallel (the ranks of one group share a
    sequence, so global_batch_size counts sequences per data-parallel rank, not per rank)."""
    return max(1, world_size // sequence_parallel(st))


def accumulation(st, world_size: int) -> int:
    """Gradient accumulation steps: global_batch_size / (data-parallel ranks x micro_batch_size), at least 1."""
    return max(1, st.global_batch_size // (data_parallel(st, world_size) * st.micro_batch_size))


def sequences(st) -> int:
    """Sequences a training stage consumes (cpt: blocks of seq_len tokens): max_steps x global_batch_size."""
    return st.max_steps * st.global_batch_size


def step_tokens(st, stage: str) -> int:
    """Tokens of one optimizer step: global_batch_size x seq_len; DPO's chosen and rejected both count."""
    return st.global_batch_size * st.seq_len * (2 if stage == "dpo" else 1)


def train_tokens(st, stage: str) -> int:
    """Tokens a training stage consumes: max_steps x global_batch_size x seq_len (x 2 for DPO)."""
    return st.max_steps * step_tokens(st, stage)


class OverBudget(ValueError):
    """The budgets take more than the total, so the weighted sources would get nothing."""


def allocate(budgets: Sequence[Optional[int]], weights: Sequence[Optional[float]], total: int) -> List[int]:
    """Units (tokens or blocks) per source out of `total`: a source's budget as given (None: it has a weight);
    the rest split by weight with the largest-remainder rule, so the counts are whole and add up exactly."""
    counts = [b or 0 for b in budgets]
    weighted = [i for i, b in enumerate(budgets) if b is None]
    rest = total - sum(counts)
    if not weighted:
        return counts
    if rest < 0:
        raise OverBudget(f"budgets of {sum(counts):,} exceed the total of {total:,}")
    w = [float(weights[i]) for i in weighted]
    wsum = sum(w)  # summed in order, as numpy sums a handful of floats
    exact = [rest * x / wsum for x in w]
    base = [math.floor(x) for x in exact]
    # the units the floors leave go to the largest remainders (ties: the earlier source)
    for k in sorted(range(len(w)), key=lambda k: -(exact[k] - base[k]))[: rest - sum(base)]:
        base[k] += 1
    for i, n in zip(weighted, base):
        counts[i] = n
    return counts
