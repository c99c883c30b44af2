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


def test_the_callback_keeps_due_saves_names_them_and_never_fails_the_training(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    from dfm_hpc import rundir

    from helpers import make_cfg, stage_ctx

    ctx = stage_ctx(tmp_path, "sft")
    cfg = make_cfg(sft={"eval_checkpoints": 2})
    monkeypatch.setenv(rundir.CHECKPOINT_QUEUE_ENV, str(tmp_path / "queue"))
    (cb,) = checkpoint_snapshot.callbacks(cfg, ctx, cfg.sft, "sft", base="/b")
    args = SimpleNamespace(output_dir=str(tmp_path / "ckpts"))
    for step in (10, 20, 30):
        _checkpoint(tmp_path / "ckpts" / f"checkpoint-{step}")
        cb.on_save(args, SimpleNamespace(global_step=step), None)
    d = ctx.stage_dir / rundir.CHECKPOINT_EVALS
    assert sorted(p.name for p in d.iterdir()) == ["logs", "saves", "step-20"]  # the 2nd save only
    assert [p.name for p in (tmp_path / "queue").iterdir()] == ["step-20"]
    cb.on_save(args, SimpleNamespace(global_step=40), None)  # the 4th save is due, but its checkpoint is missing
    assert "checkpoint at step 40: not kept for its evaluation" in capsys.readouterr().out
    assert not (d / "step-40").exists() and [p.name for p in (tmp_path / "queue").iterdir()] == ["step-20"]
    assert checkpoint_snapshot.callbacks(make_cfg(), ctx, make_cfg().sft, "sft") == []  # off by default
