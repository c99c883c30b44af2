"""login/checks/harness.py: EuroEval and inspect score a served model; on LUMI they run from the harness overlay,
and a plain venv is refused at plan time (exit 2, nothing written)."""

from __future__ import annotations

from dfm_hpc.login.checks import harness

from helpers import LUMI, dfm, make_cfg, run_dirs

PLAIN = "/project/project_465000670/dfm_hpc/euroeval-venv/bin/python"  # what containers/build_euroeval.sh made


def test_lumi_default_route_is_the_harness_overlay():
    cfg = make_cfg("+experiment=munin_pipeline", *LUMI)
    assert cfg.evaluate.euroeval and cfg.evaluate.inspect_tasks and cfg.evaluate.server == "vllm"
    assert cfg.cluster.container.harness_overlay.endswith("dfm_hpc-harness.sqsh")
    assert harness.check_harness(cfg, None) == []


def test_a_plain_venv_or_no_harness_overlay_is_refused_on_lumi_only():
    cfg = make_cfg("+experiment=munin_pipeline", *LUMI, f"cluster.env.DFM_HPC_EUROEVAL_PYTHON={PLAIN}")
    (p,) = harness.check_harness(cfg, None)  # EuroEval and inspect share it: one problem
    assert p.startswith(f"cluster.env.DFM_HPC_EUROEVAL_PYTHON={PLAIN}: a plain venv is refused on LUMI")
    assert "containers/build_harness.sh" in p and "/harness-software/bin/python" in p
    cfg = make_cfg("+experiment=munin_pipeline", *LUMI, f"evaluate.inspect_python={PLAIN}")
    (p,) = harness.check_harness(cfg, None)
    assert p.startswith(f"evaluate.inspect_python={PLAIN}")
    cfg = make_cfg("+experiment=munin_pipeline", *LUMI, "cluster.container.harness_overlay=null")
    (p,) = harness.check_harness(cfg, None)
    assert "cluster.container.harness_overlay is not set" in p
    cfg = make_cfg("+experiment=munin_pipeline", *LUMI, "cluster.container.harness_overlay=null",
                   "evaluate.euroeval=false", "evaluate.inspect_tasks=[]")
    assert harness.check_harness(cfg, None) == []  # no harness, nothing to mount
    # elsewhere a venv is how the harness runs (.venv-euroeval here)
    assert harness.check_harness(make_cfg("+experiment=munin_pipeline", f"evaluate.euroeval_python={PLAIN}"),
                                 None) == []


def test_inspect_needs_a_server_everywhere():
    cfg = make_cfg("+experiment=sft_tiny", "stages=[evaluate]", "evaluate.inspect_tasks=[dfm:danish_qa]")
    (p,) = harness.check_harness(cfg, None)
    assert "inspect is a client of a served model; set evaluate.server" in p
    ok = make_cfg("+experiment=sft_tiny", "stages=[evaluate]", "evaluate.inspect_tasks=[dfm:danish_qa]",
                  "evaluate.server=transformers")
    assert harness.check_harness(ok, None) == []


def test_the_plain_venv_exits_2_before_anything_is_written(tmp_path):
    p = dfm("+experiment=munin_pipeline", *LUMI, f"cluster.env.DFM_HPC_EUROEVAL_PYTHON={PLAIN}", "dry_run=true",
            cwd=tmp_path)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    assert "a plain venv is refused on LUMI" in p.stdout + p.stderr and not run_dirs(tmp_path)
