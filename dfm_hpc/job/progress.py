"""Progress of a rank's chunked work (translate, pii): when to print a line, the rate and the ETA.

A line after the first chunk (the first rate a person sees), then at most one per `every_s`, and
one at the end: a 20-hour translation prints a few hundred lines per rank, a tiny demo two. Every
chunk is on disk anyway (the shard files), so nothing is lost by not printing it.
"""

from __future__ import annotations

import time
from collections import Counter

from dfm_hpc import predict

EVERY_S = 60.0


class Progress:
    def __init__(self, total: float, every_s: float = EVERY_S, clock=time.monotonic):
        self.total, self.every_s, self.clock = total, every_s, clock
        self.done = 0.0  # work units (segments, bytes, rows), resumed ones included
        self._resumed = 0.0
        self.counts = Counter()  # what else this process counted for its line (pii: rows, bytes)
        self._t0 = clock()
        self._last = None  # when the last line was printed

    def resumed(self, n: float) -> None:
        """Work finished by an earlier start: done, but not part of this process's rate."""
        self.done += n
        self._resumed += n

    def add(self, n: float) -> None:
        self.done += n

    @property
    def elapsed(self) -> float:
        return max(self.clock() - self._t0, 1e-9)

    @property
    def rate(self) -> float:
        """Units per second of this process's own work (resumed work would make it look faster)."""
        return (self.done - self._resumed) / self.elapsed

    @property
    def eta(self) -> str:
        left = (self.total - self.done) / self.rate if self.rate > 0 else 0.0
        return predict.duration(left)

    def due(self) -> bool:
        """Whether to print a line now: the first time, the last, and once per every_s between."""
        now = self.clock()
        if self._last is None or self.done >= self.total or now - self._last >= self.every_s:
            self._last = now
            return True
        return False
