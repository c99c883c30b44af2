"""The LUMI dry run renders what shared/reference/lumi.md §18 asks for, and bills it right."""

from __future__ import annotations

import os
import re

import pytest

from dfm_hpc import lumi

from helpers import GOLDEN, LUMI, LUMI_ACCOUNT, dfm, lumi_args, make_cfg, run_dirs

MASKS = ("0x00fe000000000000,0xfe00000000000000,0x0000000000fe0000,0x00000000fe000000,"
         "0x00000000000000fe,0x000000000000fe00,0x000000fe00000000,0x0000fe0000000000")


def _dry(tmp_path, *extra):
    p = dfm("+experiment=munin_sft", f"cluster.account={LUMI_ACCOUNT}", "dry_run=true", *extra, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (run,) = run_dirs(tmp_path)
    return p, run


def test_standard_g_script_passes_the_checklist(tmp_path):
    p, run = _dry(tmp_path, "cluster=lumi")
    s = (run / "stages" / "sft" / "sbatch.sh").read_text()
    srun = next(line for line in s.splitlines() if line.startswith("srun "))
    for line in ("#SBATCH --account=project_465000670", "#SBATCH --partition=standard-g", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --ntasks-per-node=8", "#SBATCH --cpus-per-task=7", "#SBATCH --mem=480G",
                 "#SBATCH --time=960", "#SBATCH --exclusive", "#SBATCH --kill-on-invalid-dep=yes",
                 'export NCCL_SOCKET_IFNAME="hsn0,hsn1,hsn2,hsn3"', 'export NCCL_NET_GDR_LEVEL="PHB"',
                 'export FI_CXI_DEFAULT_CQ_SIZE="131072"', 'export CXI_FORK_SAFE="1"', 'export OMP_NUM_THREADS="7"',
                 'export MIOPEN_USER_DB_PATH="/tmp/', 'export HF_HOME="/scratch/project_465000670/',
                 'export HF_HUB_OFFLINE="1"', 'export TRANSFORMERS_OFFLINE="1"', 'export HF_DATASETS_OFFLINE="1"',
                 'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
                 "export MASTER_PORT=$(( 10000 + SLURM_JOB_ID % 10000 ))"):
        assert line in s, line
    assert re.search(r"#SBATCH --signal=USR\d@300", s)
    assert "--cpus-per-task=7" in srun  # srun does not inherit it since Slurm 22.05
    assert f"--cpu-bind=mask_cpu:{MASKS}" in srun
    # LAIF images (§19): module purge + the bindings module on the host, `singularity run` (its
    # runscript sets the GPU environment), no host-library binds (the image has its own libfabric)
    lines = s.splitlines()
    mods = ["module purge  # its warnings are harmless", "module use /appl/local/laifs/modules",
            "module load lumi-aif-singularity-bindings"]
    assert lines[lines.index(mods[0]):lines.index(mods[0]) + 3] == mods
    assert lines.index(mods[2]) < lines.index('export NCCL_SOCKET_IFNAME="hsn0,hsn1,hsn2,hsn3"')
    overlay = "/project/project_465000670/dfm_hpc/dfm_hpc-venv.sqsh:/user-software:image-src=/"
    assert f" singularity run -B {overlay} " in srun
    assert "/opt/cray" not in srun and "libcxi" not in srun and " exec " not in srun
    assert ".sif python -u -m submitit.core._submit" in srun
    # never 64 cores; 8 x 7 = 56
    assert "#SBATCH --cpus-per-task=8" not in s
    # the dependent stage waits for the first
    ev = (run / "stages" / "evaluate" / "sbatch.sh").read_text()
    assert "#SBATCH --dependency='afterok:<job id of sft>'" in ev
    # evaluate is one process: a one-GCD slice of small-g (cluster.single_device), not a whole node
    for line in ("#SBATCH --partition=small-g", "#SBATCH --gpus-per-node=1", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --mem-per-gpu=60G", "#SBATCH --cpus-per-task=7"):
        assert line in ev, line
    assert "--exclusive" not in ev and "--cpu-bind" not in ev and "--mem=" not in ev
    # printed to stdout too, with the cost
    assert srun in p.stdout
    # time=auto: sft 16 h x 1 node x 4 + evaluate 0:55 x 1 GCD slice x 0.5
    assert "64.5 LUMI billing units" in p.stdout


def test_mask_list_is_gcd_ordered():
    """Local rank i -> GCD i -> the 7 cores closest to it (LUMI's GCD/NUMA map)."""
    cores = {0: range(49, 56), 1: range(57, 64), 2: range(17, 24), 3: range(25, 32),
             4: range(1, 8), 5: range(9, 16), 6: range(33, 40), 7: range(41, 48)}
    for i, mask in enumerate(MASKS.split(",")):
        assert int(mask, 16) == sum(1 << c for c in cores[i])


def test_single_process_stages_of_the_pipeline_take_a_gcd_slice_or_lumi_c(tmp_path):
    """A single-process stage that needs a GPU takes a small-g GCD; one that needs none, LUMI-C small
    (tests/login/test_cpu_stages.py)."""
    p = dfm("+experiment=munin_pipeline", *LUMI, "dry_run=true",
            cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (run,) = run_dirs(tmp_path)
    part = {st: re.search(r"#SBATCH --partition=(\S+)", (run / "stages" / st / "sbatch.sh").read_text())[1]
            for st in ("translate", "merge", "pii", "sft", "dpo", "evaluate", "card")}
    assert part == {"translate": "standard-g", "merge": "small", "pii": "small", "sft": "standard-g",
                    "dpo": "standard-g", "evaluate": "small-g", "card": "small"}
    # a stage given a partition, or more than one process, keeps the run's profile
    (tmp_path / "2").mkdir()
    p = dfm("+experiment=munin_pipeline", *LUMI, "dry_run=true",
            "card.partition=standard-g", "card.gpus_per_node=8", "pii.tasks_per_node=8", "pii.gpus_per_node=8",
            cwd=tmp_path / "2")
    assert p.returncode == 0, p.stderr
    (run,) = run_dirs(tmp_path / "2")
    for st in ("card", "pii"):
        assert "#SBATCH --partition=standard-g" in (run / "stages" / st / "sbatch.sh").read_text()


def test_small_g_is_per_gcd_without_masks(tmp_path):
    _, run = _dry(tmp_path, "cluster=lumi_small")
    s = (run / "stages" / "sft" / "sbatch.sh").read_text()
    assert "#SBATCH --partition=small-g" in s and "#SBATCH --gpus-per-node=1" in s
    assert "#SBATCH --mem-per-gpu=60G" in s and "--cpu-bind" not in s and "--exclusive" not in s
    # the same container integration and host-side lines as standard-g (issue #10)
    for line in ("module load lumi-aif-singularity-bindings", "export MASTER_PORT=$(( 10000 + SLURM_JOB_ID % 10000 ))",
                 'scontrol requeue "$DFM_HPC_JOB" && exit 0', "exit $dfm_hpc_rc"):
        assert line in s, line
    assert " singularity run " in s


def test_torchrun_mode_is_one_task_per_node(tmp_path):
    _, run = _dry(tmp_path, "cluster=lumi", "cluster.launcher=torchrun")
    s = (run / "stages" / "sft" / "sbatch.sh").read_text()
    assert "#SBATCH --ntasks-per-node=1" in s and "#SBATCH --cpus-per-task=56" in s
    assert "export DFM_HPC_LAUNCHER=torchrun" in s and "export DFM_HPC_NPROC_PER_NODE=8" in s


@pytest.mark.parametrize("partition,nodes,hours,gcds,cpus,mem,units", [
    ("standard-g", 4, 24, 8, 56, 480, 384.0),  # LUMI docs: 4 nodes x 24 h = 384 GPU-hours
    ("small-g", 1, 10, 1, 7, 60, 5.0),  # one GCD slice, half a unit per hour
    ("small-g", 1, 10, 1, 32, 60, 20.0),  # 32 cores = 4 slices
    ("small-g", 1, 10, 2, 7, 200, 20.0),  # 200 GB = 4 memory slices
    ("dev-g", 2, 1, 8, 56, 480, 8.0),
])
def test_billing_units(partition, nodes, hours, gcds, cpus, mem, units):
    assert lumi.billing_units(partition, nodes, hours, gcds, cpus, mem) == units


def test_golden_script(tmp_path):
    """The whole standard-g script against a reviewed reference (UPDATE_GOLDEN=1 rewrites it)."""
    _, run = _dry(tmp_path, "cluster=lumi")
    text = (run / "stages" / "sft" / "sbatch.sh").read_text().replace(str(run), "<RUN_DIR>")
    golden = GOLDEN / "munin_sft_lumi_sft.sbatch"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


def test_older_images_get_the_host_binds_instead_of_the_module(tmp_path):
    """The documented switch for the LUST/AMD images of 2024-25 (§9): binds, exec, no module."""
    _, run = _dry(tmp_path, "cluster=lumi", "cluster.container.bindings_module=null", "cluster.container.verb=exec",
                  "cluster.container.image=/appl/local/containers/sif-images/lumi-pytorch-rocm-6.2.4.sif")
    s = (run / "stages" / "sft" / "sbatch.sh").read_text()
    srun = next(line for line in s.splitlines() if line.startswith("srun "))
    assert "module " not in s
    host = "/var/spool/slurmd,/opt/cray,/usr/lib64/libcxi.so.1,/usr/lib64/libjansson.so.4,/pfs,"
    assert f" singularity exec -B {host}" in srun
    assert "/scratch/project_465000670,/project/project_465000670,/flash/project_465000670,/appl," in srun


def test_requeue_and_accounting_are_host_side(tmp_path):
    """The ranks' container has no Slurm tools (§19): the script requeues after the step when a rank
    left the marker, records sacct for the card, and keeps the step's exit status."""
    _, run = _dry(tmp_path, "cluster=lumi")
    s = (run / "stages" / "sft" / "sbatch.sh").read_text()
    lines = s.splitlines()
    folder = run / "stages" / "sft" / "submitit"
    srun = next(i for i, line in enumerate(lines) if line.startswith("srun "))
    after = [line for line in lines[srun + 1:] if line and not line.startswith("#")]
    assert f'export DFM_HPC_REQUEUE_MARKER={folder}/requeue."$SLURM_JOB_ID"' in lines[:srun]
    assert "trap '' USR2  # the pre-timeout signal is for the ranks; this script lives on to requeue" in lines[:srun]
    assert after[0].startswith("dfm_hpc_rc=$?")
    assert after[1] == (f"mkdir -p {folder}/accounting && sacct -X -D -P -n -j \"$SLURM_JOB_ID\" "
                        f"--format=JobID,State,NNodes,ElapsedRaw >{folder}/accounting/\"$SLURM_JOB_ID\".psv "
                        "2>/dev/null || true")
    # then the checkpoint evaluations' last queue pass (munin_sft: sft.eval_checkpoints; test_checkpoint_evals.py),
    # the hang watchdog's part (tests/login/test_watchdog.py), and the end-state rule (run with stubs in
    # tests/login/test_end_state.py)
    assert after[2:4] == ['kill "$dfm_hpc_checkpoint_evals_pid" 2>/dev/null', "dfm_hpc_queue_checkpoint_evals"]
    assert after[4] == 'kill "$dfm_hpc_watchdog_pid" 2>/dev/null'
    assert after[5].startswith('[ -e "$DFM_HPC_HUNG_MARKER" ]')
    assert after[6] == 'if [ -e "$DFM_HPC_REQUEUE_MARKER" ] && [ "$dfm_hpc_rc" -eq 0 ]; then'
    assert '  scontrol requeue "$DFM_HPC_JOB" && exit 0' in after and after[-1] == "exit $dfm_hpc_rc"
    # MASTER_ADDR too is computed by the script, before the step
    assert lines.index('export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"') < srun


def test_master_port_is_outside_the_ephemeral_range():
    from dfm_hpc.dist import PORT_BASE, PORT_SPAN

    assert 1024 < PORT_BASE and PORT_BASE + PORT_SPAN - 1 < 32768  # Linux: 32768-60999


def test_torchrun_mode_binds_each_rank_to_its_numa_node(tmp_path, monkeypatch):
    _, run = _dry(tmp_path, "cluster=lumi", "cluster.launcher=torchrun")
    s = (run / "stages" / "sft" / "sbatch.sh").read_text()
    assert 'export DFM_HPC_TORCHRUN_ARGS="--numa-binding=exclusive"' in s
    from dfm_hpc.job import rank

    seen = []
    monkeypatch.setattr(rank.subprocess, "call", lambda cmd: seen.append(cmd) or 0)
    for k, v in {"DFM_HPC_TORCHRUN_ARGS": "--numa-binding=exclusive", "MASTER_ADDR": "nid1", "MASTER_PORT": "12345",
                 "DFM_HPC_NPROC_PER_NODE": "8"}.items():
        monkeypatch.setenv(k, v)
    rank._spawn_torchrun(run, "sft", 0)
    assert "--numa-binding=exclusive" in seen[0] and seen[0].index("--numa-binding=exclusive") < seen[0].index("-m", 3)


def test_small_g_memory_bound_and_mem0_billing(tmp_path):
    p = dfm("+experiment=munin_sft", *lumi_args(cluster="lumi_small"), "dry_run=true",
            "cluster.mem_per_gpu=64G", cwd=tmp_path)
    assert p.returncode == 2 and "at most 60G per GCD on small-g" in p.stderr, p.stderr
    assert run_dirs(tmp_path) == []
    # --mem=0 on a per-GCD partition is all of the node's memory: billed as all 8 slices
    assert lumi.billing_units("small-g", 1, 10, 1, 7, 0) == 40.0
    assert lumi.billing_units("small-g", 1, 10, 1, 7, None) == 5.0
    p, run = _dry(tmp_path, "cluster=lumi_small", "cluster.mem=0", "cluster.mem_per_gpu=null", "stages=[sft]",
                  "sft.time=12:00:00")
    assert "#SBATCH --mem=0" in (run / "stages" / "sft" / "sbatch.sh").read_text()
    # sft: 12 h x 8 slices x 0.5 = 48 units a start; one GCD needs 8 starts (85 h), each can bill its full walltime
    assert "warning: sft: predicted 85.0 h" in p.stdout and "(8 starts)" in p.stdout
    assert "at most (every start's full walltime): 96.0 GPU(GCD)-hours, 384.0 LUMI billing units" in p.stdout
    (tmp_path / "x").mkdir()
    p = dfm("+experiment=munin_sft", *lumi_args(cluster="lumi_small"), "dry_run=true",
            "cluster.mem=0", cwd=tmp_path / "x")
    assert p.returncode == 2 and "sbatch takes one of them" in p.stderr


def test_a_chain_dev_g_would_refuse_halfway_exits_2_and_writes_nothing(tmp_path):
    """dev-g: 2 jobs submitted, 1 running per user; a chain of 4 GPU stages cannot be queued there (its 3 CPU
    stages go to LUMI-C small)."""
    short = [f"{st}.time=02:00:00" for st in ("translate", "sft", "dpo")]
    p = dfm("+experiment=munin_pipeline", *lumi_args(cluster="lumi_dev"), *short, cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "dev-g accepts at most 2 submitted jobs per user (1 running)" in p.stderr
    assert "this run is 4 stage jobs there (translate, sft, dpo, evaluate)" in p.stderr, p.stderr
    assert "stages=[translate,sft]" in p.stderr
    assert "cluster=lumi" in p.stderr
    assert not (tmp_path / "runs").exists()
    # two stages fit
    p = dfm("+experiment=munin_pipeline", *lumi_args(cluster="lumi_dev"), *short,
            "stages=[translate,sft]", "sft.dataset=tiny:chats", "sft.max_steps=100", "dry_run=true", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (run,) = run_dirs(tmp_path)
    s = (run / "stages" / "sft" / "sbatch.sh").read_text()
    for line in ("#SBATCH --partition=dev-g", "module load lumi-aif-singularity-bindings", " singularity run ",
                 'scontrol requeue "$DFM_HPC_JOB" && exit 0'):
        assert line in s, line


def test_a_sweep_dev_g_would_refuse_halfway_exits_2(tmp_path):
    """Each point alone fits dev-g's 2 jobs; the sweep's 3 points are queued together and do not."""
    args = ["-m", "+experiment=demo", *lumi_args(cluster="lumi_dev"), "stages=[demo]"]
    p = dfm(*args, "demo.value=1,2,3", cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "this sweep queues 3 jobs there (3 points x 1 job(s))" in p.stderr and "Sweep at most 2 point(s)" in p.stderr
    assert not (tmp_path / "runs").exists()
    assert dfm(*args, "demo.value=1,2", "dry_run=true", cwd=tmp_path).returncode == 0


def test_a_single_process_stage_gets_the_single_device_place_never_a_stale_one():
    """plan() merges cluster.single_device over the profile once per job, which carries it (StageJob.cluster);
    a config that changed is merged afresh, and a launch's frozen config gives a frozen merge."""
    from omegaconf import OmegaConf

    from dfm_hpc.plan import plan, stage_cluster

    plain = OmegaConf.to_container(make_cfg("+experiment=munin_sft", *LUMI), resolve=True, enum_to_str=True)
    cfg = OmegaConf.create(plain)
    assert stage_cluster(cfg, "evaluate").partition == "small-g" and stage_cluster(cfg, "sft") is cfg.cluster
    cfg.cluster.single_device.partition = "dev-g"
    assert stage_cluster(cfg, "evaluate").partition == "dev-g"
    frozen = OmegaConf.create(plain, flags={"readonly": True})
    jobs = {j.stage: j for j in plan(frozen)}
    assert jobs["evaluate"].cluster.partition == "small-g" and jobs["sft"].cluster is frozen.cluster
    with pytest.raises(Exception, match="read-only|ReadOnly"):
        jobs["evaluate"].cluster.partition = "standard-g"  # what was checked is what is submitted
