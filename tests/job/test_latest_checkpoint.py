"""A new start resumes from the newest WHOLE checkpoint: a save cut short by Ctrl-C or a kill mid-write (seen in CI:
cluster=node's interrupted sft left checkpoint-20 without trainer_state.json, and the rerun crashed on it)."""

from __future__ import annotations

from types import SimpleNamespace

from dfm_hpc.job import train


def test_an_interrupted_save_is_skipped_and_named(tmp_path):
    said = []
    ctx = SimpleNamespace(stage_dir=tmp_path, log=said.append)
    assert train.latest_checkpoint(ctx) is None  # no checkpoints/ yet
    for step, whole in ((5, True), (10, True), (20, False)):
        d = tmp_path / "checkpoints" / f"checkpoint-{step}"
        d.mkdir(parents=True)
        (d / "adapter_model.safetensors").write_bytes(b"w")
        if whole:
            (d / "trainer_state.json").write_text("{}")
    assert train.latest_checkpoint(ctx) == str(tmp_path / "checkpoints" / "checkpoint-10")  # 10 > 5 by number
    assert said == ["skipping checkpoint-20: an interrupted save (no trainer_state.json)"]
    (tmp_path / "checkpoints" / "checkpoint-20" / "trainer_state.json").write_text("{}")
    assert train.latest_checkpoint(ctx) == str(tmp_path / "checkpoints" / "checkpoint-20")
