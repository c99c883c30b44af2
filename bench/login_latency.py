"""Login-node latency (issue #2's targets, #20's help): --help, a LUMI dry run, a 64-point sweep dry run.

    python bench/login_latency.py [--repeat 15]

Each command runs as a user types it (a fresh `python -m dfm_hpc` process) from a scratch dir;
prints the median and spread of the wall time as a Markdown table for docs/benchmarks.md. The LUMI
dry run is also held against `python -c "import torch"` measured in the same run (target: at most
half of it), so the ratio holds on whatever machine and load the figures come from.
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

DFM = [sys.executable, "-m", "dfm_hpc"]
LUMI = ["+experiment=munin_sft", "cluster=lumi", "cluster.account=project_465000670", "dry_run=true"]
LRS = ",".join(f"{x}e-5" for x in range(1, 9))
WARMUPS = ",".join(str(x) for x in range(0, 800, 100))
DRY_RUN = "LUMI dry run (munin_sft, 2 stages)"
TORCH = 'python -c "import torch" (reference)'
CASES = {  # name: (command, target seconds or None)
    "--help": ([*DFM, "--help"], 0.5),
    DRY_RUN: ([*DFM, *LUMI], 1.0),
    "64-point sweep dry run (8 lr x 8 warmup)": ([*DFM, "-m", *LUMI, f"sft.lr={LRS}", f"sft.warmup_steps={WARMUPS}"],
                                                 5.0),
    TORCH: ([sys.executable, "-c", "import torch"], None),
}
TORCH_RATIO = 0.5  # the dry run takes at most this share of importing torch


def wall(cmd, cwd) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"failed: {cmd}\n{p.stderr}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}; load average {load:.1f} at the start\n")
    print("| command | runs | median s | min s | max s | target s |")
    print("|---|---|---|---|---|---|")
    runs = {name: args.repeat if target is None or target <= 1 else max(3, args.repeat // 3)
            for name, (cmd, target) in CASES.items()}
    times = {name: [] for name in CASES}
    with tempfile.TemporaryDirectory() as cwd:
        for cmd, _ in CASES.values():
            wall(cmd, cwd)  # warm the file cache once
        for i in range(max(runs.values())):  # in rounds: a change of load on a shared machine hits every case
            for name, (cmd, _) in CASES.items():
                if i < runs[name]:
                    times[name].append(wall(cmd, cwd))
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, (cmd, target) in CASES.items():
        t, med = times[name], medians[name]
        verdict = "-" if target is None else f"{target:.1f} {'(met)' if med <= target else '(MISSED)'}"
        print(f"| {name} | {runs[name]} | {med:.2f} | {min(t):.2f} | {max(t):.2f} | {verdict} |")
    ratio = medians[DRY_RUN] / medians[TORCH]
    print(f"\nLUMI dry run / import torch: {ratio:.2f} (target <= {TORCH_RATIO}: "
          f"{'met' if ratio <= TORCH_RATIO else 'MISSED'}); load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
