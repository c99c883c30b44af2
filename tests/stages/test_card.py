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
