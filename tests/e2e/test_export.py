"""Export: a ZeRO-3 CPT run's final model and its checkpoints as plain HF model dirs; reloaded, they
give the trained model's logits (probe.pt, computed by the sharded model at the end of training)."""

from __future__ import annotations

import pytest

from helpers import dfm, run_dirs

pytest.importorskip("deepspeed")


def _logits(path, ids):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_export_from_zero3_reloads_with_the_trained_logits(tmp_path):
    import torch
    from transformers import AutoTokenizer

    from dfm_hpc.job import export

    p = dfm("+experiment=cpt_tiny", "deepspeed=zero3", "stages=[cpt,card]", "cpt.max_steps=10",
            "cpt.save_every_steps=5", cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    s = run / "stages" / "cpt"
    probe = torch.load(s / "probe.pt")
    ckpt = s / "checkpoints" / "checkpoint-10"
    assert list((ckpt / "global_step10").glob("zero_pp_rank_*_optim_states.pt"))  # sharded ZeRO-3 state
    for src, out in ((ckpt, tmp_path / "from-checkpoint"), (run, tmp_path / "from-run")):
        export.export(src, out)
        assert (out / "model.safetensors").exists() and (out / "config.json").exists()
        assert (out / "README.md").read_text() == (run / "stages" / "card" / "README.md").read_text()
        tok = AutoTokenizer.from_pretrained(out)
        assert torch.equal(tok(export_probe_text(), return_tensors="pt")["input_ids"], probe["input_ids"])
        logits = _logits(out, probe["input_ids"])
        assert torch.allclose(logits, probe["logits"], atol=1e-4), (out, (logits - probe["logits"]).abs().max())
    # an earlier checkpoint is another model: the comparison can tell them apart
    export.export(s / "checkpoints" / "checkpoint-5", tmp_path / "step5")
    assert not torch.allclose(_logits(tmp_path / "step5", probe["input_ids"]), probe["logits"], atol=1e-2)
    # the command line, as docs/training.md shows it
    import subprocess
    import sys

    c = subprocess.run([sys.executable, "-m", "dfm_hpc.job.export", str(ckpt), str(tmp_path / "cli")],
                       capture_output=True, text=True, timeout=300)
    assert c.returncode == 0, c.stderr[-2000:]
    assert torch.allclose(_logits(tmp_path / "cli", probe["input_ids"]), probe["logits"], atol=1e-4)


def export_probe_text():
    from dfm_hpc.job.train import PROBE_TEXT

    return PROBE_TEXT
