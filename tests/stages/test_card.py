"""The model card's training table (stages/card.py): a held-out loss that could not be computed is said,
with its reason, never printed as a number."""

from __future__ import annotations

import json


def test_no_held_out_tokens_is_said_not_printed_as_a_number(tmp_path):
    from dfm_hpc.rundir import stage_dir
    from dfm_hpc.stages import card

    during = [{"step": 5, "eval_loss": None}, {"step": 10, "eval_loss": 0.7}]
    for stage, summary in (("sft", {"steps": 20, "first_loss": 6.2, "final_loss": 6.1, "eval_loss": None,
                                    "eval_perplexity": None, "eval_during_training": [],
                                    "eval_note": "no held-out tokens: no held-out chats"}),
                           ("dpo", {"steps": 10, "first_loss": 0.69, "final_loss": 0.68, "eval_loss": 0.7,
                                    "eval_perplexity": 2.01, "eval_during_training": during})):
        d = stage_dir(tmp_path, stage)
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps(summary))
    sft, dpo = card.training_results(tmp_path, ["sft", "dpo"]).splitlines()[2:]
    assert sft == "| sft | 20 | 6.2000 | 6.1000 | no held-out tokens: no held-out chats | n/a | – |"
    assert dpo == "| dpo | 10 | 0.6900 | 0.6800 | 0.7000 | 2.0100 | step 10: 0.7000 |"
    assert "0.0000" not in sft + dpo and "1.0000" not in sft + dpo


def test_the_compute_table_names_the_hardware(tmp_path, monkeypatch):
    """Each stage's device: what its ranks saw (a training stage's summary.json), else the throughput entry
    the plan predicted from, marked planned."""
    from dfm_hpc import config_io
    from dfm_hpc.rundir import stage_dir
    from dfm_hpc.stages import card

    from helpers import dfm, run_dirs

    monkeypatch.delenv("SBATCH_ACCOUNT", raising=False)
    p = dfm("+experiment=munin_sft", "cluster=cuda_slurm", "cluster.partition=p", "cluster.account=X",
            "dry_run=true", cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr
    (run,) = run_dirs(tmp_path)
    for stage, job in (("sft", "101"), ("evaluate", "102")):
        stage_dir(run, stage).mkdir(parents=True, exist_ok=True)
        (stage_dir(run, stage) / "job_id").write_text(job + "\n")
    (stage_dir(run, "sft") / "summary.json").write_text(json.dumps({"device": "NVIDIA H100 80GB HBM3"}))
    used = card.compute_used(config_io.load_config(run), run)
    assert [r["device"] for r in used["stages"]] == ["NVIDIA H100 80GB HBM3", "h100 (planned)"]
    table = card.compute_section(used, "slurm").splitlines()
    assert table[0].startswith("| stage | where | device | hours |")
    assert table[2].startswith("| sft | Slurm job 101 | NVIDIA H100 80GB HBM3 | n/a |"), table
