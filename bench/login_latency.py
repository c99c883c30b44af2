"""Login-node latency (issue #2's targets, #20's help, #24's sweeps at the limit): --help, a LUMI dry run, a
64-point sweep dry run, a 4,096-point one on a cluster that takes it, and the 4,096-point LUMI sweep that its
per-user job limit refuses.

    python bench/login_latency.py [--repeat 15] [--big-runs 1]

Each command runs as a user types it (a fresh `python -m dfm_hpc` process) from a scratch dir;
prints the median and spread of the wall time, the child's CPU time (user + sys: less bent by a shared machine's
load than the wall time) and its peak RSS as a Markdown table for docs/benchmarks.md. The LUMI
dry run is also held against `python -c "import torch"` measured in the same run (target: at most
half of it), so the ratio holds on whatever machine and load the figures come from.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import List, Optional

DFM = [sys.executable, "-m", "dfm_hpc"]
LUMI = ["+experiment=munin_sft", "cluster=lumi", "cluster.account=project_465000670", "dry_run=true"]
LRS = ",".join(f"{x}e-5" for x in range(1, 9))
WARMUPS = ",".join(str(x) for x in range(0, 800, 100))
# 64 x 64 points: every lr and warmup a distinct point; warmup is read by a check (<= max_steps), lr by none
BIG = ["-m", "+experiment=munin_sft", "dry_run=true", "sft.lr=" + ",".join(f"{x}e-6" for x in range(1, 65)),
       "sft.warmup_steps=" + ",".join(str(x) for x in range(64)), "--large-sweep"]
DRY_RUN = "LUMI dry run (munin_sft, 2 stages)"
TORCH = 'python -c "import torch" (reference)'


@dataclass
class Case:
    cmd: List[str]
    target_s: Optional[float]
    rc: int = 0  # the exit status it must end with (2: a refusal)
    big: bool = False  # run --big-runs times (default 1), not in every round
    target_mb: Optional[float] = None


CASES = {
    "--help": Case([*DFM, "--help"], 0.5),
    DRY_RUN: Case([*DFM, *LUMI], 1.0),
    "64-point sweep dry run (8 lr x 8 warmup)": Case(
        [*DFM, "-m", *LUMI, f"sft.lr={LRS}", f"sft.warmup_steps={WARMUPS}"], 2.0),
    "4,096-point LUMI sweep, refused (job limits)": Case([*DFM, *BIG, "cluster=lumi",
                                                          "cluster.account=project_465000670"], 2.0, rc=2),
    "4,096-point sweep dry run, cluster=local (64 lr x 64 warmup)": Case([*DFM, *BIG, "cluster=local"], 60.0,
                                                                          big=True, target_mb=500),
    TORCH: Case([sys.executable, "-c", "import torch"], None),
}
TORCH_RATIO = 0.5  # the dry run takes at most this share of importing torch


def run(case: Case, cwd) -> tuple:
    """(wall s, CPU s, peak RSS MB) of one run of the command, a fresh process, its run dirs removed after."""
    t = time.perf_counter()
    p = subprocess.Popen(case.cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    elapsed = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != case.rc:
        raise SystemExit(f"exit {p.returncode}, not {case.rc}: {case.cmd}\n{err}")
    shutil.rmtree(os.path.join(cwd, "runs"), ignore_errors=True)
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--big-runs", type=int, default=1, help="runs of the 4,096-point dry run")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}; load average {load:.1f} at the start\n")
    runs = {name: args.big_runs if c.big else args.repeat if c.target_s is None or c.target_s <= 1
            else max(3, args.repeat // 3) for name, c in CASES.items()}
    times = {name: [] for name in CASES}
    with tempfile.TemporaryDirectory() as cwd:
        for c in CASES.values():
            if not c.big:
                run(c, cwd)  # warm the file cache once
        for i in range(max(runs.values())):  # in rounds: a change of load on a shared machine hits every case
            for name, c in CASES.items():
                if i < runs[name]:
                    times[name].append(run(c, cwd))
    print("| command | runs | median s | min s | max s | CPU s (median) | peak RSS MB | target |")
    print("|---|---|---|---|---|---|---|---|")
    medians = {name: statistics.median(w for w, _, _ in t) for name, t in times.items()}
    for name, c in CASES.items():
        wall = [w for w, _, _ in times[name]]
        cpu = statistics.median(x for _, x, _ in times[name])
        rss = max(m for _, _, m in times[name])
        met = c.target_s is not None and medians[name] <= c.target_s
        verdict = "-" if c.target_s is None else f"{c.target_s:.1f} s {'(met)' if met else '(MISSED)'}"
        if c.target_mb:
            verdict += f", {c.target_mb:.0f} MB {'(met)' if rss <= c.target_mb else '(MISSED)'}"
        print(f"| {name} | {runs[name]} | {medians[name]:.2f} | {min(wall):.2f} | {max(wall):.2f} | {cpu:.2f} | "
              f"{rss:.0f} | {verdict} |")
    ratio = medians[DRY_RUN] / medians[TORCH]
    print(f"\nLUMI dry run / import torch: {ratio:.2f} (target <= {TORCH_RATIO}: "
          f"{'met' if ratio <= TORCH_RATIO else 'MISSED'}); load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
