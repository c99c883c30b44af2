"""Bad input: exit 2 on the login node, every problem printed, no run dir, no job."""

from __future__ import annotations

import pytest

from dfm_hpc import CONF_DIR

from helpers import LUMI, dfm, run_dirs

SFT_DRY = ["+experiment=munin_sft", *LUMI, "dry_run=true"]

CASES = {
    "unknown key": (["+experiment=demo", "cluster.acount=x"], "Did you mean cluster.account"),
    "key in the wrong place": (["+experiment=demo", "lr=1e-4"], "sft.lr"),
    "unknown experiment": (["+experiment=munin_sftt"], "Did you mean munin_sft"),
    "experiment without +": (["experiment=demo"], "+experiment=NAME"),
    "unknown cluster": (["+experiment=demo", "cluster=lumii"], "Did you mean lumi"),
    "bad sweep syntax": (["-m", "+experiment=demo", "demo.value=range(1,"], "sweep syntax"),
    "wrong type": (["+experiment=demo", "demo.nodes=abc"], "demo.nodes"),
    "bad walltime": (["+experiment=demo", "demo.time=soon"], "cannot read walltime"),
    "bad account": ([*SFT_DRY, "cluster.account=project_123"], "project_ + 9 digits"),
    "missing account": (["+experiment=munin_sft", "cluster=lumi", "dry_run=true"], "cluster.account=None"),
    "walltime over partition max": ([*SFT_DRY, "sft.time=72:00:00"], "over standard-g's maximum of 48 h"),
    "dev-g walltime": ([*SFT_DRY, "cluster=lumi_dev", "sft.time=04:00:00"], "over dev-g's maximum of 3 h"),
    "too many nodes small-g": ([*SFT_DRY, "cluster=lumi_small", "sft.nodes=8"], "small-g allows at most 4 nodes"),
    "too many nodes standard-g": ([*SFT_DRY, "sft.nodes=2000"], "standard-g allows at most 1024 nodes"),
    "too many cores": ([*SFT_DRY, "cluster.cpus_per_task=8"], "56 usable"),
    "too many GPUs": ([*SFT_DRY, "cluster.gpus_per_node=16"], "8 GCDs"),
    "partial node on standard-g": ([*SFT_DRY, "sft.gpus_per_node=4", "sft.tasks_per_node=4"], "allocates whole nodes"),
    "memory over node": ([*SFT_DRY, "cluster.mem=600G"], "at most 480G"),
    "unreadable memory": ([*SFT_DRY, "cluster.mem=lots"], "cannot read memory size"),
    "batch not divisible": ([*SFT_DRY, "sft.global_batch_size=100"], "not divisible by world size 8"),
    "unknown partition": ([*SFT_DRY, "cluster.partition=gpu"], "not a LUMI partition"),
    "qlora with zero3": ([*SFT_DRY, "peft=qlora"], "use deepspeed=zero2"),
    "missing data path": (["+experiment=oasst2_translate_tiny", "data.oasst2=./nope/oasst2.jsonl", "dry_run=true"],
                          "does not exist"),
    "missing init_from": (["+experiment=munin_dpo", *SFT_DRY[1:], "cluster.check_paths=true",
                           "dpo.init_from=/nonexistent/run"], "no such run directory"),
    "multi-node on local": (["+experiment=demo", "demo.nodes=2"], "cluster=local runs on this machine only"),
    "unknown stage": (["+experiment=demo", "stages=[demo,trian]"], "unknown stage 'trian'"),
    "unknown launcher": (["+experiment=demo", "cluster.launcher=mpirun"], "cluster.launcher='mpirun'"),
    "fewer shards than workers": (["+experiment=oasst2_translate", *LUMI,
                                   "dry_run=true", "translate.shards=16"], "16 would sit idle"),
    "unknown translator backend": (["+experiment=oasst2_translate_tiny", "translator.backend=vllm"],
                                   "translator.backend='vllm': use one of hf, ctranslate2"),
    "stage array below 1": (["+experiment=oasst2_translate_tiny", "translate.array=0"], "translate.array=0"),
    "sft without data": (["+experiment=sft_tiny", "sft.dataset=null"], "sft.dataset is unset"),
    "missing sft data file": (["+experiment=sft_tiny", "sft.dataset=./nope/chats.jsonl"], "does not exist"),
    "unknown tracker": (["+experiment=sft_tiny", "sft.report_to=[tensorboard,mlflow]"],
                        "sft.report_to[1]='mlflow': use one of tensorboard, wandb"),
    "bad wandb mode": (["+experiment=sft_tiny", "dpo.wandb_mode=offlne"], "dpo.wandb_mode='offlne'"),
    "unknown pii type": (["+experiment=munin_pipeline", *SFT_DRY[1:], "pii.types=[cpr,names]"],
                         "pii.types[1]='names': use one of cpr, email, phone, ip, iban"),
    "misspelt pii type": (["+experiment=munin_pipeline", "pii.types=[cpr,emial]"],
                          "pii.types[1]='emial': use one of cpr, email, phone, ip, iban. Did you mean email?"),
    "sequence over the model's positions": (["+experiment=sft_tiny", "sft.seq_len=4096"],
                                            "sft.seq_len=4096: longer than the 2,048 positions the model has"),
    "misspelt merge flag": (["+experiment=munin_sft", "merge.drop=[emtpy]"],
                            "merge.drop[0]='emtpy': use one of empty, untranslated, repetition, length_ratio. "
                            "Did you mean empty?"),
    "unknown container runtime": (["+experiment=munin_sft", "cluster.container.runtime=docker"],
                                  "cluster.container.runtime='docker': use one of singularity, bwrap"),
    "unknown container verb": (["+experiment=demo", "cluster.container.verb=start"],
                               "cluster.container.verb='start': use one of exec, run"),
    "misspelt dpo loss": (["+experiment=munin_dpo", "dpo.loss_type=sigmod"],
                          "dpo.loss_type='sigmod': use one of sigmoid, hinge, ipo"),
    "unknown translator dtype": (["+experiment=oasst2_translate_tiny", "translator.dtype=fp16"],
                                 "translator.dtype='fp16': use one of bfloat16, float16, float32"),
    "bad pii replacement": (["+experiment=munin_pipeline", *SFT_DRY[1:], "pii.replacement=mask"],
                            "pii.replacement='mask': use one of tags, fake"),
    "pii without input": (["+experiment=cpt_tiny", "stages=[pii,cpt]"], "pii.input is unset"),
    "evaluate unknown model": (["+experiment=sft_tiny", "stages=[sft,evaluate]", "evaluate.models=[dpo]"],
                               "'dpo' is not a stage before evaluate"),
    "evaluate without held-out text": (["+experiment=sft_tiny", "stages=[evaluate]", "data.eval_text=null"],
                                       "data.eval_text is unset"),
    "unknown attention": (["+experiment=sft_tiny", "sft.attn_implementation=flash"],
                          "use one of sdpa, flash_attention_2"),
    "unknown precision": (["+experiment=cpt_tiny", "cpt.precision=fp16"],
                          "cpt.precision='fp16': use one of bf16, fp32"),
    "qlora on CPU": (["+experiment=sft_tiny", "peft=qlora", "deepspeed=zero2"], "peft=qlora needs GPUs"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_and_leaves_nothing(name, tmp_path):
    args, expected = CASES[name]
    p = dfm(*args, cwd=tmp_path)
    assert p.returncode == 2, f"{name}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    assert expected in p.stderr, f"{name}: {expected!r} not in:\n{p.stderr}"
    assert "nothing was created or submitted" in p.stderr
    assert run_dirs(tmp_path) == [], f"{name} left a run dir"
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "outputs").exists()


def test_every_problem_is_reported(tmp_path):
    p = dfm(*SFT_DRY, "cluster.account=nope", "sft.time=99:00:00", "sft.nodes=2000", cwd=tmp_path)
    assert p.returncode == 2
    # the batch rule fires too: 2000 nodes x 8 ranks x 4 does not divide 64
    assert "4 problems" in p.stderr
    for text in ("project_ + 9 digits", "maximum of 48 h", "at most 1024 nodes", "not divisible"):
        assert text in p.stderr


def test_every_unknown_key_is_reported_at_once(tmp_path):
    p = dfm("+experiment=demo", "demo.valeu=2", "cluster.acount=x", "+experiment=nope", cwd=tmp_path)
    assert p.returncode == 2
    assert "3 problems" in p.stderr and "demo.value" in p.stderr and "cluster.account" in p.stderr


def test_every_bad_choice_is_reported_at_once(tmp_path):
    """OmegaConf stops at the first value outside a choice; the user still hears of all the command line's in
    one go, from a launch and from a subcommand. One in an experiment's YAML is merged before any override, so
    it stops the composition: it is named as clearly (Hydra's wrapper said only 'ValidationError raised')."""
    bad = ["pii.types=[cpr,emial]", "cluster.container.runtime=docker", "dpo.loss_type=sigmoidd",
           "merge.drop=[emtpy,empty]"]
    p = dfm("+experiment=munin_sft", *bad, cwd=tmp_path)
    assert p.returncode == 2 and "4 problems" in p.stderr, p.stderr
    for text in ("pii.types[1]='emial'", "runtime='docker'", "loss_type='sigmoidd'", "merge.drop[0]='emtpy'"):
        assert text in p.stderr
    assert not (tmp_path / "runs").exists()
    p = dfm("prefetch", "+experiment=munin_sft", "cluster.container.verb=execute", "translator.dtype=bf16",
            cwd=tmp_path)
    assert p.returncode == 2 and "2 problems" in p.stderr and "Did you mean bfloat16" in p.stderr, p.stderr
    experiment = tmp_path / "conf" / "experiment"
    experiment.mkdir(parents=True)
    for group in CONF_DIR.iterdir():  # a conf/ whose experiment sets a bad choice in its YAML
        if group.name != "experiment":
            (tmp_path / "conf" / group.name).symlink_to(group)
    (experiment / "bad.yaml").write_text("# @package _global_\nstages: [sft]\nsft:\n  precision: fp8\n")
    p = dfm("+experiment=bad", "dpo.loss_type=sigmoidd", cwd=tmp_path, env={"DFM_HPC_CONF": str(tmp_path / "conf")})
    assert p.returncode == 2 and "sft.precision='fp8': use one of bf16, fp32" in p.stderr, p.stderr


def test_a_bad_sweep_point_stops_the_whole_sweep(tmp_path):
    p = dfm("-m", *SFT_DRY, "sft.nodes=1,2000", cwd=tmp_path)
    assert p.returncode == 2
    assert "sft.nodes=2000" in p.stderr and "at most 1024 nodes" in p.stderr
    assert run_dirs(tmp_path) == []


def _typed(**over):
    from omegaconf import OmegaConf

    from dfm_hpc import config_io

    return OmegaConf.create(config_io.typed(over))


def test_ranges_are_read_from_the_schema_one_checker_for_all():
    """A key's range is its field's metadata (schema.ranged); login/checks/ranges.py checks every group that is
    not a stage, a stage's group only when it runs, and a range a subclass inherits (sft.lr)."""
    from dfm_hpc.login.checks.ranges import check_ranges

    cfg = _typed(stages=["demo"], sft={"lr": 0.0}, peft={"dropout": 1.0}, cluster={"signal_delay_s": -1})
    assert check_ranges(cfg) == ["cluster.signal_delay_s=-1: 0 or more seconds before the time limit",
                                 "peft.dropout=1.0: a probability from 0 up to 1"]
    cfg = _typed(stages=["sft"], sft={"lr": 0.0, "save_every_minutes": 0.0, "tasks_per_node": 0})
    assert check_ranges(cfg) == ["sft.tasks_per_node=0: at least 1, or null",
                                 "sft.lr=0.0: the learning rate must be positive, e.g. 1e-4",
                                 "sft.save_every_minutes=0.0: positive, or null"]


def test_ranges_reach_lists_maps_and_the_single_device_settings():
    from dfm_hpc.login.checks.ranges import check_ranges

    cfg = _typed(stages=["cpt"], data={"mixture": [{"source": "tiny:corpus", "weight": 1},
                                                   {"source": "tiny:corpus", "weight": -2, "epochs": 0}]},
                 throughput={"devices": {"gpu": {"train_mfu": 1.5}}},
                 cluster={"single_device": {"cpus_per_task": 0, "partition": "small-g"}})
    assert check_ranges(cfg) == ["data.mixture[1].weight=-2.0: weights must be positive, or null",
                                 "data.mixture[1].epochs=0.0: the most passes over the source must be positive",
                                 "throughput.devices.gpu.train_mfu=1.5: 0 to 1",
                                 "cluster.single_device.cpus_per_task=0: at least 1"]


def test_every_range_hint_says_the_rule():
    """A hint words the rule around {rule}, so the numbers live only in the metadata."""
    import dataclasses

    from dfm_hpc import schema
    from dfm_hpc.login.checks.ranges import ranged_fields

    classes = [c for c in vars(schema).values() if dataclasses.is_dataclass(c)]
    fields = [(c.__name__, name, meta) for c in classes for name, meta, _ in ranged_fields(c)]
    assert len(fields) > 40
    assert [(c, n) for c, n, meta in fields if "{rule}" not in meta["hint"]] == []
    assert [(c, n) for c, n, meta in fields if not {"gt", "ge", "lt", "le"} & set(meta)] == []
