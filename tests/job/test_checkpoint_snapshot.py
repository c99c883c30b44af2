"""job/checkpoint_snapshot.py: a checkpoint's weights kept for its evaluation (hard links that outlive the Trainer's
rotation, no optimizer state, the adapter's real base), which saves are due, and the request the host side reads."""

from __future__ import annotations

import json
import shutil

from dfm_hpc.job import checkpoint_snapshot


def _checkpoint(d):
    d.mkdir(parents=True)
    (d / "adapter_model.safetensors").write_bytes(b"w" * 64)
    (d / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/plain/base", "r": 4}))
    (d / "tokenizer_config.json").write_text("{}")
    for name in ("optimizer.pt", "scheduler.pt", "trainer_state.json", "training_args.bin", "rng_state_0.pth",
                 "latest"):
        (d / name).write_text("x")
    (d / "global_step10").mkdir()
    (d / "global_step10" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_text("x")
    return d


def test_the_kept_weights_are_links_that_survive_the_rotation(tmp_path):
    ckpt = _checkpoint(tmp_path / "checkpoints" / "checkpoint-10")
    out = checkpoint_snapshot.snapshot(ckpt, tmp_path / "evals" / "step-10", base="/run/stages/cpt/model")
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                     "tokenizer_config.json"]
    assert (out / "adapter_model.safetensors").stat().st_ino == (ckpt / "adapter_model.safetensors").stat().st_ino
    # the adapter was trained on the cpt model (PEFT wrote the plain base's origin)
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "/run/stages/cpt/model"
    assert json.loads((ckpt / "adapter_config.json").read_text())["base_model_name_or_path"] == "/plain/base"
    shutil.rmtree(ckpt)  # keep_checkpoints rotates it away
    assert (out / "adapter_model.safetensors").read_bytes() == b"w" * 64
    assert not (tmp_path / "evals" / "step-10.partial").exists()


def test_every_nth_save_is_due_counted_once_per_step_across_restarts(tmp_path):
    saves = tmp_path / "saves"
    due = [checkpoint_snapshot.due(saves, step, 2) for step in (10, 20, 30)]
    assert due == [False, True, False]
    assert checkpoint_snapshot.due(saves, 30, 2) is False  # a restart saving step 30 again: still the 3rd save
    assert checkpoint_snapshot.due(saves, 40, 2) is True
    assert saves.read_text().split() == ["10", "20", "30", "40"]
    assert all(checkpoint_snapshot.due(tmp_path / "every", s, 1) for s in (5, 6))


def test_the_request_names_run_stage_and_step_and_appears_whole(tmp_path):
    checkpoint_snapshot.request(tmp_path / "q", tmp_path / "run", "sft", 20)
    assert [p.name for p in (tmp_path / "q").iterdir()] == ["step-20"]
    assert (tmp_path / "q" / "step-20").read_text().splitlines() == [str((tmp_path / "run").resolve()), "sft", "20"]
