"""tokens.py: a training stage's tokens and a mixture's allocation, the one rule the checks, the launch's
mixture print, predict, cpt and job/mixture share."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from dfm_hpc import tokens


def test_a_stage_consumes_steps_x_batch_x_length_and_dpo_twice():
    st = SimpleNamespace(max_steps=30, global_batch_size=8, seq_len=64)
    assert tokens.sequences(st) == 240
    assert tokens.train_tokens(st, "cpt") == tokens.train_tokens(st, "sft") == 15_360
    assert tokens.step_tokens(st, "dpo") == 2 * 8 * 64 and tokens.train_tokens(st, "dpo") == 30_720


def test_budgets_first_then_the_weights_split_the_rest():
    assert tokens.allocate([None, 100], [1.0, None], 1000) == [900, 100]
    assert tokens.allocate([None, None, None], [0.6, 0.3, 0.1], 4_194_304_000) == [2_516_582_400, 1_258_291_200,
                                                                                    419_430_400]
    assert tokens.allocate([None, None, None], [1, 1, 1], 10) == [4, 3, 3]  # the leftover unit: largest remainder
    assert tokens.allocate([640, 6400], [None, None], 100) == [640, 6400]  # budgets alone: as given
    with pytest.raises(tokens.OverBudget):
        tokens.allocate([None, 2000], [1.0, None], 1000)


def test_an_allocation_is_whole_exact_and_near_each_share():
    rng = random.Random(0)
    for _ in range(2000):
        n = rng.randint(1, 6)
        budgets = [rng.randint(0, 50) if rng.random() < 0.3 else None for _ in range(n)]
        weights = [None if b is not None else rng.uniform(0.01, 10) for b in budgets]
        total = sum(b or 0 for b in budgets) + rng.randint(0, 10_000)
        counts = tokens.allocate(budgets, weights, total)
        weighted = [i for i, b in enumerate(budgets) if b is None]
        assert [counts[i] for i, b in enumerate(budgets) if b is not None] == [b for b in budgets if b is not None]
        if weighted:
            assert sum(counts) == total
            rest, wsum = total - sum(b or 0 for b in budgets), sum(weights[i] for i in weighted)
            assert all(abs(counts[i] - rest * weights[i] / wsum) < 1 for i in weighted)


def test_ranks_sharing_a_sequence():
    """With sft.sequence_parallel=N, N ranks read one sequence: data-parallel ranks = world / N, and the
    accumulation fills the global batch with those (global 64, micro 1, 32 ranks, SP 4: 8 x 8)."""
    from types import SimpleNamespace

    from dfm_hpc import tokens

    sft = SimpleNamespace(sequence_parallel=4, global_batch_size=64, micro_batch_size=1)
    assert (tokens.data_parallel(sft, 32), tokens.accumulation(sft, 32)) == (8, 8)
    cpt = SimpleNamespace(global_batch_size=64, micro_batch_size=1)  # no key: every rank its own sequences
    assert (tokens.data_parallel(cpt, 32), tokens.accumulation(cpt, 32)) == (32, 2)
