"""evaluate.gate at plan time (login/checks/gate.py): a bad gate exits 2 with its reason before anything is written."""

from __future__ import annotations

import json

from dfm_hpc.login.checks.gate import check_gate

from helpers import dfm, make_cfg, run_dirs

TINY = ["+experiment=pipeline_tiny"]


def _problems(*over):
    return check_gate(make_cfg(*TINY, *over), None)


def test_the_demo_gate_and_references_that_exist(tmp_path):
    assert _problems() == []
    assert _problems("evaluate.gate.reference=sft", "evaluate.gate.models=[dpo]") == []
    res = tmp_path / "old" / "stages" / "evaluate" / "results.json"
    res.parent.mkdir(parents=True)
    res.write_text(json.dumps({"models": [{"name": "base"}, {"name": "sft"}]}))
    assert _problems(f"evaluate.gate.reference={tmp_path / 'old'}") == []
    assert _problems(f"evaluate.gate.reference={res}", "evaluate.gate.reference_model=sft") == []
    (bad,) = _problems(f"evaluate.gate.reference={res}", "evaluate.gate.reference_model=dpo")
    assert "reference_model=dpo: not in" in bad and "base, sft" in bad


def test_bad_gates_are_named():
    assert "neither a model evaluate scores" in _problems("evaluate.gate.reference=/nonexistent/run")[0]
    assert "'cpt' is not a stage before evaluate" in _problems("evaluate.gate.models=[cpt]")[0]
    assert "also a gated model" in _problems("evaluate.gate.reference=dpo", "evaluate.gate.models=[dpo]")[0]
    assert "evaluate does not score it" in _problems("evaluate.models=[sft]")[0]  # the base is not scored
    assert "no benchmark to gate on" in _problems("evaluate.lm_eval_tasks=[]")[0]
    assert _problems("stages=[sft]") == []  # an experiment's gate on a run of some of its stages: nothing to gate


def test_a_bad_reference_exits_2_before_a_run_dir_is_made(tmp_path):
    out = dfm(*TINY, "evaluate.gate.reference=/nonexistent/run", "dry_run=true", f"runs_root={tmp_path}",
              cwd=tmp_path)
    assert out.returncode == 2 and "evaluate.gate.reference=/nonexistent/run" in out.stdout + out.stderr
    assert run_dirs(tmp_path) == []
