"""Weighted mixtures of token stores: how many blocks each source gives, and in which order.

A source has a `weight` (a share of the blocks the training consumes) or a token budget `tokens`
(a fixed number of blocks); the budgets are taken first and the rest is split by weight with the
largest-remainder rule, so the realised counts are exact, not expected values. A source that must
give more blocks than it has is upsampled: epoch e is a fresh permutation of its blocks (seeded by
the run's seed, the source's position and e), up to `epochs` passes; beyond that it is an error.
The sources' blocks are then interleaved by a seeded shuffle, so every stretch of training sees the
mixture's proportions. The same seed gives the same order on every rank and after every restart.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from dfm_hpc import tokens


class MixtureError(ValueError):
    pass


def allocate(specs: List[Dict], available: List[int], total: int, seq_len: int) -> List[int]:
    """Blocks per source: token budgets first (tokens // seq_len), the rest of `total` by weight (tokens.allocate)."""
    budgets = [int(s["tokens"]) // seq_len if s.get("tokens") else None for s in specs]
    try:
        counts = tokens.allocate(budgets, [s.get("weight") for s in specs], total)
    except tokens.OverBudget:
        raise MixtureError(f"the token budgets ({sum(b or 0 for b in budgets) * seq_len:,} tokens) exceed what "
                           f"training consumes ({total * seq_len:,}); the weighted sources would get nothing") from None
    for s, n, a in zip(specs, counts, available):
        limit = float(s.get("epochs") or 1.0) * a
        if n > limit:
            raise MixtureError(f"mixture source {s['name']!r} must give {n:,} blocks of {seq_len} tokens but has "
                               f"{a:,} ({n / max(a, 1):.2f} epochs > epochs={s.get('epochs') or 1.0}); raise its "
                               "epochs, lower its weight or budget, or train fewer steps")
    return counts


def _picks(n: int, available: int, seed: int, source: int) -> np.ndarray:
    """n block indices of a source: epoch after epoch, each a fresh permutation."""
    out, e = [], 0
    while sum(len(x) for x in out) < n:
        out.append(np.random.default_rng([seed, source, e]).permutation(available))
        e += 1
    return np.concatenate(out)[:n] if out else np.zeros(0, dtype=np.int64)


def order(specs: List[Dict], available: List[int], total: int, seq_len: int, seed: int):
    """(order, counts): order[i] = the global block id (source s's block b is first[s] + b) of item i."""
    counts = allocate(specs, available, total, seq_len)
    first = np.concatenate([[0], np.cumsum(available)]).astype(np.int64)
    which = np.repeat(np.arange(len(specs)), counts)
    np.random.default_rng([seed, 1 << 20]).shuffle(which)
    out = np.empty(len(which), dtype=np.int64)
    for s, n in enumerate(counts):
        out[which == s] = first[s] + _picks(n, available[s], seed, s)
    return out, counts


def realised(specs: List[Dict], counts: List[int], available: List[int], seq_len: int) -> List[Dict]:
    """What the mixture gives: per source its blocks, tokens, share and epochs (the datasheet's table)."""
    total = max(1, sum(counts))
    weights = [float(s["weight"]) for s in specs if not s.get("tokens")]
    rows = []
    for s, n, a in zip(specs, counts, available):
        target = (n / total if s.get("tokens") else None)
        rows.append({"name": s["name"], "source": str(s["source"]), "weight": s.get("weight"),
                     "budget_tokens": s.get("tokens"), "blocks": n, "tokens": n * seq_len,
                     "share": n / total, "epochs": n / a if a else 0.0, "available_tokens": a * seq_len,
                     "target_share": target if target is not None
                     else (1 - sum(c for c, x in zip(counts, specs) if x.get("tokens")) / total)
                     * float(s["weight"]) / sum(weights)})
    return rows
