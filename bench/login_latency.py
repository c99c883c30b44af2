"""Login-node latency of planning (issue #2's targets): a LUMI dry run and a 64-point sweep dry run.

    python bench/login_latency.py [--repeat 15]

Each command runs as a user types it (a fresh `python -m dfm_hpc` process) from a scratch dir;
prints the median and spread of the wall time as a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

LUMI = ["+experiment=munin_sft", "cluster=lumi", "cluster.account=project_465000670", "dry_run=true"]
LRS = ",".join(f"{x}e-5" for x in range(1, 9))
WARMUPS = ",".join(str(x) for x in range(0, 800, 100))
CASES = {
    "LUMI dry run (munin_sft, 2 stages)": (LUMI, 1.0),
    "64-point sweep dry run (8 lr x 8 warmup)": (["-m", *LUMI, f"sft.lr={LRS}", f"sft.warmup_steps={WARMUPS}"], 5.0),
}


def wall(args, cwd) -> float:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "dfm_hpc", *args], cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"failed: {args}\n{p.stderr}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}\n")
    print("| command | runs | median s | min s | max s | target s |")
    print("|---|---|---|---|---|---|")
    for name, (argv, target) in CASES.items():
        n = args.repeat if target <= 1 else max(3, args.repeat // 3)
        with tempfile.TemporaryDirectory() as cwd:
            wall(argv, cwd)  # warm the file cache once
            times = [wall(argv, cwd) for _ in range(n)]
        med = statistics.median(times)
        print(f"| {name} | {n} | {med:.2f} | {min(times):.2f} | {max(times):.2f} | {target:.1f} "
              f"{'(met)' if med <= target else '(MISSED)'} |")


if __name__ == "__main__":
    main()
