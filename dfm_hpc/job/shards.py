"""Splitting work over workers and resuming it: balanced shards, chunks, durable appends, resume points.

The resumable-chunk protocol of translate and pii: a shard file grows by whole chunks (one fsync'd
append each), so after a kill the file ends on a chunk boundary, or a torn tail that `recover` cuts off.
"""

from __future__ import annotations

import heapq
import json
import os
from pathlib import Path
from typing import List, Sequence


def balance(costs: Sequence[int], n: int) -> List[List[int]]:
    """Greedy LPT: item indices into n shards of near-equal total cost; each shard in input order."""
    heap = [(0, s) for s in range(n)]
    shards: List[List[int]] = [[] for _ in range(n)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, s = heapq.heappop(heap)
        shards[s].append(i)
        heapq.heappush(heap, (load + costs[i], s))
    return [sorted(s) for s in shards]


def chunks(segment_counts: Sequence[int], chunk_size: int) -> List[List[int]]:
    """Consecutive message positions, about chunk_size segments per chunk (a message is never split)."""
    out: List[List[int]] = []
    cur: List[int] = []
    n = 0
    for i, c in enumerate(segment_counts):
        cur.append(i)
        n += c
        if n >= chunk_size:
            out.append(cur)
            cur, n = [], 0
    if cur:
        out.append(cur)
    return out


def recover(path: Path, chunk_sizes: Sequence[int]) -> int:
    """Number of complete chunks in a shard file; cuts anything after them (a torn or partial chunk)."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    pos, good_end, done, seen = 0, 0, 0, 0
    while done < len(chunk_sizes):
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        try:
            row = json.loads(data[pos:nl])
        except ValueError:
            break
        if row.get("chunk") != done:
            break
        pos, seen = nl + 1, seen + 1
        if seen == chunk_sizes[done]:
            done, seen, good_end = done + 1, 0, pos
    if good_end != len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return done


def resume_point(path: Path, chunk_sizes: Sequence[int], shard: int, ctx) -> int:
    """Where a shard file's work continues: its complete chunks (a torn tail is cut), logged."""
    start = recover(path, chunk_sizes)
    if start:
        ctx.log(f"shard {shard}: resuming after {start} of {len(chunk_sizes)} chunks")
    return start


def append_durable(path: Path, lines: List[str]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())
