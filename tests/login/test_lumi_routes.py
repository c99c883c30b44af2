"""LUMI routes as dry runs (issue #24 items 2 and 4): ctranslate2 is refused on GPU nodes without a GPU
build, a single-process stage on lumi_dev takes one GCD, and the small-g translate route documented in
conf/experiment/oasst2_translate.yaml runs as written."""

from __future__ import annotations

import shlex

from dfm_hpc.login.checks import lumi_rules
from dfm_hpc.plan import plan

from helpers import LUMI_ACCOUNT, REPO, dfm, lumi_args, make_cfg, run_dirs

ACCOUNT_ENV = {"SBATCH_ACCOUNT": LUMI_ACCOUNT}


def test_ctranslate2_on_lumi_exits_2_with_the_reason_and_writes_nothing(tmp_path):
    """The issue's command, as typed (the account from SBATCH_ACCOUNT)."""
    p = dfm("+experiment=oasst2_translate", "cluster=lumi", "translator.backend=ctranslate2", "dry_run=true",
            cwd=tmp_path, env=ACCOUNT_ENV)
    assert p.returncode == 2, p.stdout + p.stderr
    for why in ("translator.backend=ctranslate2 on standard-g would run on the CPU", "PyPI wheel has no HIP",
                "built for RDNA GPUs (gfx1030-gfx1201), not LUMI's MI250X (gfx90a)", "its 32 GCDs would idle",
                "translator.backend=hf", "cluster.container.ctranslate2_gpu=true"):
        assert why in p.stderr, why
    assert "Traceback" not in p.stderr and not (tmp_path / "runs").exists()


def test_ctranslate2_passes_with_a_declared_gpu_build_off_lumi_and_with_hf():
    refused = make_cfg("+experiment=oasst2_translate", *lumi_args(), "translator.backend=ctranslate2")
    assert lumi_rules.check_translator(refused, plan(refused))
    for cfg in (make_cfg("+experiment=oasst2_translate", *lumi_args(), "translator.backend=ctranslate2",
                         "cluster.container.ctranslate2_gpu=true"),
                make_cfg("+experiment=oasst2_translate", *lumi_args()),
                make_cfg("+experiment=oasst2_translate", "cluster=slurm", "translator.backend=ctranslate2")):
        assert lumi_rules.check_translator(cfg, plan(cfg)) == []
    # a translate job without GPUs (a CPU partition) runs CTranslate2 where it is meant to run
    cpu = make_cfg("+experiment=oasst2_translate", *lumi_args(), "translator.backend=ctranslate2",
                   "translate.gpus_per_node=0")
    assert lumi_rules.check_translator(cpu, plan(cpu)) == []


def test_a_single_process_stage_on_lumi_dev_takes_one_gcd_slice_of_dev_g(tmp_path):
    p = dfm("+experiment=munin_sft", *lumi_args(cluster="lumi_dev"), "sft.time=02:00:00", "sft.max_steps=100",
            "dry_run=true", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (run,) = run_dirs(tmp_path)
    ev = (run / "stages" / "evaluate" / "sbatch.sh").read_text()
    for line in ("#SBATCH --partition=dev-g", "#SBATCH --gpus-per-node=1", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --cpus-per-task=7", "#SBATCH --mem-per-gpu=60G"):
        assert line in ev, line
    assert "#SBATCH --exclusive" not in ev and "--mem=480G" not in ev and "mask_cpu" not in ev
    sft = (run / "stages" / "sft" / "sbatch.sh").read_text()  # the 8-rank stage keeps the whole node
    assert "#SBATCH --gpus-per-node=8" in sft and "#SBATCH --exclusive" in sft
    # billed as one slice: 0.5 units per hour of its auto walltime (0:55 for a predicted 0:35), not a node's 4
    row = next(line for line in p.stdout.splitlines() if line.startswith("evaluate "))
    assert row.split()[5:7] == ["0:55", "0:35~"] and row.split()[-2:] == ["0.3/0.5", "-"], row


def test_the_documented_small_g_translate_route_dry_runs_as_written(tmp_path):
    """The command in the experiment's comment, word for word: merge (a CPU stage) goes to LUMI-C small
    (tests/login/test_cpu_stages.py) instead of failing validation on gpus_per_node=0."""
    text = (REPO / "conf" / "experiment" / "oasst2_translate.yaml").read_text()
    (line,) = [ln for ln in text.splitlines() if ln.lstrip("# ").startswith("cluster=lumi_small")]
    args = shlex.split(line.lstrip("# "))
    p = dfm("+experiment=oasst2_translate", *args, "dry_run=true", cwd=tmp_path, env=ACCOUNT_ENV)
    assert p.returncode == 0, p.stdout + p.stderr
    (run,) = run_dirs(tmp_path)
    tr = (run / "stages" / "translate" / "sbatch.sh").read_text()
    for want in ("#SBATCH --partition=small-g", "#SBATCH --gpus-per-node=1", "#SBATCH --array=0-31"):
        assert want in tr, want
    merge = (run / "stages" / "merge" / "sbatch.sh").read_text()
    assert "#SBATCH --partition=small\n" in merge and "--gpus-per-node" not in merge
