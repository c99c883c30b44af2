"""How a sweep goes to Slurm (sbatch is a recording stub): points whose jobs are the same go out as one array;
points whose scripts differ (a sweep over cluster settings) go out one chain each, each with its own settings."""

from __future__ import annotations

import re

from helpers import dfm, run_dirs, slurm_stubs

SWEEP = ["-m", "+experiment=demo", "cluster=slurm", "stages=[demo]"]


def _submit(tmp_path, *overrides):
    bin_dir = tmp_path / "bin"
    slurm_stubs.install(bin_dir)
    p = dfm(*SWEEP, *overrides, cwd=tmp_path, env=slurm_stubs.env(bin_dir))
    assert p.returncode == 0, p.stdout + p.stderr
    scripts = [(d / "stages" / "demo" / "sbatch.sh").read_text() for d in sorted(run_dirs(tmp_path)[0].glob("[0-9]"))]
    return slurm_stubs.calls(bin_dir, "sbatch"), scripts


def test_points_with_the_same_jobs_go_out_as_one_array(tmp_path):
    sbatch, scripts = _submit(tmp_path, "demo.value=1,2")
    assert len(sbatch) == 1 and len(scripts) == 2
    assert all(re.search(r"#SBATCH --array=0-1", s) for s in scripts)


def test_a_sweep_over_cluster_settings_gives_each_point_its_own_script(tmp_path):
    """Before, the points went out as one array of the first point's script: every point ran with DFM_NOTE=a."""
    sbatch, scripts = _submit(tmp_path, "+cluster.env.DFM_NOTE=a,b")
    assert len(sbatch) == 2
    notes = sorted(re.search(r'export DFM_NOTE="(\w)"', s).group(1) for s in scripts)
    assert notes == ["a", "b"] and not any("--array" in s for s in scripts)
