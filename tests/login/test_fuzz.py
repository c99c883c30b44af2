"""Issue #11: a hundred-odd bad or hostile inputs across every subcommand.

Each case checks the exit code (2), the message (one paragraph, no traceback, naming the cause),
that nothing was written (the run dirs' files are unchanged; no new run dir), that nothing was
submitted or cancelled (sbatch and scancel are recording stubs on PATH), that no payload ran and
that no secret was printed. Config values go through `launch.launch` on configs composed once
(the CLI's path after Hydra); command lines and subcommands through `__main__.main` in-process.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from dfm_hpc.login.point import LaunchPoint

from helpers import LUMI, make_cfg, slurm_stubs

SECRETS = {"HF_TOKEN": "hf_FuzzSecretToken12345678", "WANDB_API_KEY": "wandbFuzzKey1234567890",
           "AWS_SECRET_ACCESS_KEY": "awsFuzzSecret/abcdef+123"}
BASES = {
    "demo": ["+experiment=demo", "dry_run=true"],
    "slurm": ["+experiment=demo", "cluster=slurm", "dry_run=true"],
    "lumi": ["+experiment=munin_sft", *LUMI, "dry_run=true"],
    "sft": ["+experiment=sft_tiny", "dry_run=true"],
    "cpt": ["+experiment=cpt_tiny", "dry_run=true"],
    "pipe": ["+experiment=pipeline_tiny", "dry_run=true"],
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Stubs, a payload marker, composed base configs, data files and run dirs of every kind."""
    from dfm_hpc.rundir import INCOMPLETE

    root = tmp_path_factory.mktemp("fuzz")
    w = {"root": root, "bin": root / "bin", "mark": root / "mark", "data": root / "data"}
    slurm_stubs.install(w["bin"])
    w["mark"].mkdir()
    w["bases"] = {k: make_cfg(*v) for k, v in BASES.items()}
    d = w["data"]
    d.mkdir()
    (d / "dir").mkdir()
    (d / "empty.jsonl").write_text("")
    (d / "bad.jsonl").write_text("this is not json\n")
    (d / "x.txt").write_text('{"messages": []}\n')
    (d / "nomsg.jsonl").write_text('{"text": "hej"}\n')
    (d / "nochosen.jsonl").write_text('{"prompt": "p", "rejected": "r"}\n')
    (d / "garbage.parquet").write_bytes(b"not parquet at all")
    (d / "array.jsonl").write_text("[1, 2, 3]\n")
    runs = root / "runs" / "demo"
    good = runs / "2026-01-01_00-00-00_aaaaaa"
    (good / "stages" / "demo").mkdir(parents=True)
    p = w["bases"]["slurm"]
    from omegaconf import OmegaConf
    cfg = OmegaConf.to_container(p, resolve=True, enum_to_str=True)
    (good / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (good / "overrides.yaml").write_text("- +experiment=demo\n")
    corrupt = runs / "2026-01-01_00-00-01_bbbbbb"
    corrupt.mkdir()
    (corrupt / "config.yaml").write_text("stages: [demo\n  : : {{{\n")
    empty = runs / "2026-01-01_00-00-02_cccccc"
    empty.mkdir()
    (empty / "config.yaml").write_text("")
    incomplete = runs / "2026-01-01_00-00-03_dddddd"
    incomplete.mkdir()
    (incomplete / INCOMPLETE).write_text("interrupted\n")
    edited = runs / "2026-01-01_00-00-04_eeeeee"  # a shared runs dir: someone edited the snapshot
    edited.mkdir()
    cfg2 = copy.deepcopy(cfg)
    cfg2["dry_run"] = False
    cfg2["cluster"]["account"] = f"x\ntouch {w['mark']}/edited\n#"
    (edited / "config.yaml").write_text(OmegaConf.to_yaml(cfg2))
    edited_key = runs / "2026-01-01_00-00-05_ffffff"
    edited_key.mkdir()
    cfg3 = copy.deepcopy(cfg)
    cfg3["dry_run"] = False
    cfg3["cluster"]["env"] = {"A;touch pwned": "1"}
    (edited_key / "config.yaml").write_text(OmegaConf.to_yaml(cfg3))
    sweep = root / "runs" / "sweepy" / "2026-01-01_00-00-06_abcabc"
    sweep.mkdir(parents=True)
    (sweep / "sweep.yaml").write_text("points: [{run_dir: 0}, {oops\n")
    results = root / "results.json"
    results.write_text('{"models": [ {"name": ')
    (root / "afile").write_text("not a dir\n")
    w.update(good=good, corrupt=corrupt, empty=empty, incomplete=incomplete, edited=edited, edited_key=edited_key,
             sweep=sweep, results=results, afile=root / "afile")
    return w


def _tree(root: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()
            and p.parent.name != "bin"}


def _check(world, capsys, run, expect: str, cwd: Path):
    before = _tree(world["root"])
    calls_before = len((world["bin"] / "calls.log").read_text().splitlines())
    code = run()
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 2, text
    assert expect.lower() in text.lower(), text
    assert "Traceback" not in text
    assert _tree(world["root"]) == before, "a file was written or changed"
    assert not (cwd / "runs").exists(), "a run dir was made"
    new_calls = (world["bin"] / "calls.log").read_text().splitlines()[calls_before:]
    assert not [c for c in new_calls if c.split(" ")[0] in ("sbatch", "scancel")], new_calls
    assert list(world["mark"].iterdir()) == [], "a payload ran"
    for v in SECRETS.values():
        assert v not in text, "a secret was printed"


@pytest.fixture
def env(world, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", slurm_stubs.env(world["bin"])["PATH"])
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("DFM_CLUSTER", raising=False)
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---------------------------------------------------------------- config values

def _set(cfg: dict, key: str, value) -> None:
    *path, leaf = key.split(".")
    for part in path:
        cfg = cfg.setdefault(part, {})
    cfg[leaf] = value


M = "{mark}"
NL = f"x\ntouch {M}/nl\n#"
CFG_CASES = [
    # (id, base, {key: value}, expected text)
    ("name-dotdot", "demo", {"name": "../../x"}, "plain directory name"),
    ("name-absolute", "demo", {"name": "/tmp/x"}, "plain directory name"),
    ("name-slash", "demo", {"name": "a/b"}, "plain directory name"),
    ("name-parent", "demo", {"name": ".."}, "plain directory name"),
    ("name-dash", "demo", {"name": "-rf"}, "plain directory name"),
    ("name-empty", "demo", {"name": ""}, "plain directory name"),
    ("name-newline", "slurm", {"name": NL}, "control characters"),
    ("name-subst", "slurm", {"name": f"$(touch {M}/n)"}, "plain directory name"),
    ("runs-root-newline", "slurm", {"runs_root": f"runs\ntouch {M}/r"}, "control characters"),
    ("runs-root-empty", "demo", {"runs_root": " "}, "runs_root is empty"),
    ("account-newline", "slurm", {"cluster.account": NL}, "control characters"),
    ("account-lumi-form", "lumi", {"cluster.account": f"$(touch {M}/a)"}, "project_ + 9 digits"),
    ("partition-newline", "slurm", {"cluster.partition": NL}, "control characters"),
    ("qos-newline", "slurm", {"cluster.qos": NL}, "control characters"),
    ("cluster-name-newline", "slurm", {"cluster.name": NL}, "control characters"),
    ("env-value-newline", "slurm", {"cluster.env": {"X": NL}}, "control characters"),
    ("env-value-escape", "slurm", {"cluster.env": {"X": "a\x1b[2Jb"}}, "control characters"),
    ("env-key-space", "slurm", {"cluster.env": {"A B": "1"}}, "not a shell variable name"),
    ("env-key-digit", "slurm", {"cluster.env": {"1X": "1"}}, "not a shell variable name"),
    ("env-key-semicolon", "slurm", {"cluster.env": {f"X;touch {M}/k": "1"}}, "not a shell variable name"),
    ("env-key-subst", "slurm", {"cluster.env": {f"$(touch {M}/k)": "1"}}, "not a shell variable name"),
    ("env-key-dash", "slurm", {"cluster.env": {"MY-VAR": "1"}}, "not a shell variable name"),
    ("sbatch-key-upper", "slurm", {"cluster.sbatch_extra": {"Mail": "x"}}, "not an sbatch option name"),
    ("sbatch-key-space", "slurm", {"cluster.sbatch_extra": {"a b": "x"}}, "not an sbatch option name"),
    ("sbatch-key-newline", "slurm", {"cluster.sbatch_extra": {"x\ny": "x"}}, "control characters"),
    ("sbatch-key-equals", "slurm", {"cluster.sbatch_extra": {"x=y": "1"}}, "not an sbatch option name"),
    ("sbatch-value-newline", "slurm", {"cluster.sbatch_extra": {"comment": NL}}, "control characters"),
    ("srun-arg-newline", "slurm", {"cluster.srun_args": [NL]}, "control characters"),
    ("cpu-bind-newline", "slurm", {"cluster.cpu_bind": NL}, "control characters"),
    ("image-newline", "slurm", {"cluster.container.image": NL}, "control characters"),
    ("python-newline", "slurm", {"cluster.container.python": NL}, "control characters"),
    ("bind-newline", "slurm", {"cluster.container.binds": [NL]}, "control characters"),
    ("overlay-newline", "slurm", {"cluster.container.overlay": NL}, "control characters"),
    ("setup-newline", "slurm", {"cluster.setup": [f"echo hi\ntouch {M}/s"]}, "control characters"),
    ("setup-secret", "slurm", {"cluster.setup": ["export HF_TOKEN=hf_abcdefghijklmnopqrstuvwx"]}, "assigns HF_TOKEN"),
    ("setup-secret-bare", "slurm", {"cluster.setup": ["WANDB_API_KEY=abcdef123456"]}, "assigns WANDB_API_KEY"),
    ("secret-under-plain-key", "slurm", {"cluster.env": {"PLAIN": SECRETS["HF_TOKEN"]}}, "holds the value of a secret"),
    ("secret-in-srun-args", "slurm", {"cluster.srun_args": [f"--comment={SECRETS['AWS_SECRET_ACCESS_KEY']}"]},
     "holds the value of a secret"),
    ("mem-newline", "slurm", {"cluster.mem": "480G\n"}, "control characters"),
    ("mem-words", "slurm", {"cluster.mem": "lots"}, "cannot read memory size"),
    ("time-99-99", "demo", {"demo.time": "99:99"}, "two digits, 00-59"),
    ("time-61-minutes", "demo", {"demo.time": "01:61:00"}, "two digits, 00-59"),
    ("time-four-parts", "demo", {"demo.time": "1:2:3:4"}, "walltime"),
    ("time-day-hours", "demo", {"demo.time": "2-25:00:00"}, "hours are 0-23"),
    ("time-words", "demo", {"demo.time": "forever"}, "cannot read walltime"),
    ("time-negative", "demo", {"demo.time": "-1"}, "walltime"),
    ("time-zero", "demo", {"demo.time": "0"}, "must be positive"),
    ("time-lumi-too-long", "lumi", {"sft.time": "3-00:00:00"}, "maximum"),
    ("max-steps-zero", "sft", {"sft.max_steps": 0}, "sft.max_steps=0"),
    ("max-steps-negative", "sft", {"sft.max_steps": -5}, "sft.max_steps=-5"),
    ("lr-zero", "sft", {"sft.lr": 0.0}, "learning rate must be positive"),
    ("lr-negative", "sft", {"dpo.lr": -1e-4}, "learning rate must be positive"),
    ("seq-len-zero", "sft", {"sft.seq_len": 0}, "sft.seq_len=0"),
    ("warmup-over", "sft", {"sft.warmup_steps": 10**6}, "0 to max_steps"),
    ("warmup-negative", "sft", {"sft.warmup_steps": -1}, "0 to max_steps"),
    ("save-every-zero", "sft", {"sft.save_every_steps": 0}, "save_every_steps=0"),
    ("keep-zero", "sft", {"sft.keep_checkpoints": 0}, "keep at least 1"),
    ("log-every-zero", "sft", {"sft.log_every_steps": 0}, "log_every_steps=0"),
    ("save-minutes-zero", "sft", {"sft.save_every_minutes": 0.0}, "positive, or null"),
    ("peft-r-zero", "sft", {"peft.r": 0}, "LoRA rank"),
    ("peft-dropout-two", "sft", {"peft.dropout": 2.0}, "peft.dropout=2.0"),
    ("peft-dropout-negative", "sft", {"peft.dropout": -0.1}, "peft.dropout=-0.1"),
    ("peft-alpha-zero", "sft", {"peft.alpha": 0}, "peft.alpha=0"),
    ("offload-zero2", "cpt", {"deepspeed.offload_params": True, "deepspeed.stage": 2}, "needs ZeRO-3"),
    ("merge-adapter-no-peft", "sft", {"peft.method": "none", "sft.merge_adapter": True}, "no adapter to merge"),
    ("dpo-beta-zero", "sft", {"dpo.beta": 0.0}, "temperature must be positive"),
    ("eval-fraction", "cpt", {"cpt.eval_fraction": 1.5}, "cpt.eval_fraction=1.5"),
    ("num-beams-zero", "pipe", {"translator.num_beams": 0}, "translator.num_beams=0"),
    ("max-new-tokens-zero", "pipe", {"evaluate.max_new_tokens": 0}, "evaluate.max_new_tokens=0"),
    ("length-ratios", "pipe", {"merge.min_length_ratio": 5.0}, "merge.min_length_ratio=5.0"),
    ("demo-sleep-negative", "demo", {"demo.sleep_s": -1.0}, "demo.sleep_s=-1.0"),
    ("array-huge", "demo", {"demo.array": 100000}, "Slurm's array limit"),
    ("array-zero", "demo", {"demo.array": 0}, "at least 1"),
    ("signal-delay-negative", "slurm", {"cluster.signal_delay_s": -5}, "cluster.signal_delay_s=-5"),
    # an explicit walltime (time=auto makes room for the signal)
    ("signal-delay-over-walltime", "slurm", {"cluster.signal_delay_s": 3600, "demo.time": "00:10:00"}, "longer than"),
    ("gpus-zero-standard-g", "lumi", {"sft.gpus_per_node": 0}, "a GPU partition"),
    ("gpus-nine-lumi", "lumi", {"sft.gpus_per_node": 9}, "8 GCDs"),
    ("micro-batch-zero", "sft", {"sft.micro_batch_size": 0}, "at least 1"),
    ("batch-indivisible", "sft", {"sft.global_batch_size": 3}, "not divisible"),
    ("nodes-zero", "demo", {"demo.nodes": 0}, "at least 1"),
    ("nodes-two-local", "demo", {"demo.nodes": 2}, "cluster=local runs on this machine only"),
    ("stage-unknown", "demo", {"stages": ["demo", "nosuch"]}, "unknown stage 'nosuch'"),
    ("stages-empty", "demo", {"stages": []}, "runs no stage"),
    ("stage-twice", "demo", {"stages": ["demo", "demo"]}, "listed twice"),
    ("sft-dataset-dir", "sft", {"sft.dataset": "{data}/dir"}, "is a directory"),
    ("sft-dataset-empty", "sft", {"sft.dataset": "{data}/empty.jsonl"}, "is empty"),
    ("sft-dataset-not-json", "sft", {"sft.dataset": "{data}/bad.jsonl"}, "does not start with a JSON record"),
    ("sft-dataset-txt", "sft", {"sft.dataset": "{data}/x.txt"}, "is not a .jsonl"),
    ("sft-dataset-no-messages", "sft", {"sft.dataset": "{data}/nomsg.jsonl"}, "has no messages"),
    ("sft-dataset-missing-dry", "sft", {"sft.dataset": "{data}/nosuch.jsonl"}, "does not exist"),
    ("dpo-dataset-no-chosen", "sft", {"dpo.dataset": "{data}/nochosen.jsonl"}, "has no chosen"),
    ("pii-input-empty", "pipe", {"pii.input": "{data}/empty.jsonl"}, "is empty"),
    ("pii-input-garbage-parquet", "pipe", {"pii.input": "{data}/garbage.parquet"}, "not a Parquet file"),
    ("pii-input-missing", "pipe", {"pii.input": "{data}/nosuch.jsonl"}, "does not exist"),
    ("corpus-array", "cpt", {"data.corpus": "{data}/array.jsonl"}, "does not start with a JSON object"),
    ("corpus-missing", "cpt", {"data.corpus": "{data}/nosuch.jsonl"}, "does not exist"),
    ("eval-model-unknown", "pipe", {"evaluate.models": ["nosuch"]}, "neither base"),
    ("init-from-missing", "sft", {"sft.init_from": "{data}/nosuch-run"}, "no such run directory"),
    ("translate-shards", "pipe", {"translate.shards": 1, "translate.tasks_per_node": 2}, "would sit idle"),
]


def _fill(value, world):
    if isinstance(value, str):
        return value.replace("{mark}", str(world["mark"])).replace("{data}", str(world["data"]))
    if isinstance(value, dict):
        return {_fill(k, world): _fill(v, world) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, world) for v in value]
    return value


@pytest.mark.parametrize("case", CFG_CASES, ids=[c[0] for c in CFG_CASES])
def test_bad_config_value(case, world, env, capsys):
    from omegaconf import OmegaConf

    from dfm_hpc.login import launch

    _, base, updates, expect = case
    cfg = OmegaConf.to_container(world["bases"][base], resolve=True, enum_to_str=True)
    for k, v in updates.items():
        _set(cfg, k, _fill(v, world))
    point = LaunchPoint(cfg, [f"{k}=..." for k in updates])
    _check(world, capsys, lambda: launch.launch([point], ["python", "-m", "dfm_hpc"], sweep=False), expect, env)


def test_the_bases_themselves_launch(world, env, capsys):
    """The control: each base config, unchanged, passes (a dry run in a scratch dir)."""
    from omegaconf import OmegaConf

    from dfm_hpc.login import launch

    for name, base in world["bases"].items():
        cfg = OmegaConf.to_container(base, resolve=True, enum_to_str=True)
        cfg["runs_root"] = str(env / "ok")
        assert launch.launch([LaunchPoint(cfg, [])], ["x"], sweep=False) == 0, (name, capsys.readouterr().err)


# ---------------------------------------------------------------- command lines and subcommands

CLI_CASES = [
    ("typo-status", ["stauts"], "Did you mean status"),
    ("typo-list", ["lsit"], "Did you mean list"),
    ("typo-rerun", ["rerunn", "x"], "Did you mean rerun"),
    ("sweep-without-m", ["+experiment=demo", "demo.value=1,2"], "add -m"),
    ("key-without-plus", ["+experiment=demo", "cluster.env.FOO=1"], "prefix it with +"),
    ("experiment-unknown", ["+experiment=nosuch"], "unknown experiment 'nosuch'"),
    ("experiment-without-plus", ["experiment=demo"], "leading '+'"),
    ("key-typo", ["+experiment=demo", "cluster.acount=x"], "Did you mean cluster.account"),
    ("value-type", ["+experiment=demo", "demo.value=abc"], "demo.value"),
    ("bool-type", ["+experiment=demo", "dry_run=maybe"], "dry_run"),
    ("cluster-unknown", ["+experiment=demo", "cluster=nosuch"], "unknown cluster option"),
    ("choice-unknown", ["+experiment=demo", "cluster.launcher=mpirun"], "use one of"),
    # a list of choices: refused where the config is composed, with the element's index
    ("pii-type-unknown", ["+experiment=pipeline_tiny", "dry_run=true", "pii.types=[cpr,dna]"],
     "pii.types[1]='dna': use one of"),
    ("sweep-too-large", ["-m", "+experiment=demo", "demo.value=range(0,300)", "dry_run=true"], "--large-sweep"),
    ("sweep-syntax", ["-m", "+experiment=demo", "demo.value=range(1,"], "bad override or sweep syntax"),
    ("name-newline-cli", ["+experiment=demo", "dry_run=true", "name=a\nb"], "bad override"),
    ("runs-root-file", ["+experiment=demo", "dry_run=true", "runs_root={afile}"], "cannot write the run dir"),
    ("runs-root-under-file", ["+experiment=demo", "dry_run=true", "runs_root={afile}/sub"], "cannot write the run dir"),
    ("status-nosuch", ["status", "nosuch", "--runs-root", "{runs}"], "no run 'nosuch'"),
    ("status-corrupt", ["status", "{corrupt}"], "unreadable"),
    ("status-empty-config", ["status", "{empty}"], "unreadable"),
    ("status-bad-sweep", ["status", "{sweep}"], "unreadable"),
    ("logs-nosuch", ["logs", "nosuch", "--runs-root", "{runs}"], "no run 'nosuch'"),
    ("logs-corrupt", ["logs", "{corrupt}"], "unreadable"),
    ("logs-empty-config", ["logs", "{empty}"], "no list of stages"),
    ("logs-rank-negative", ["logs", "{good}", "--rank", "-1"], "has ranks 0..0"),
    ("logs-rank-huge", ["logs", "{good}", "--rank", "999"], "has ranks 0..0"),
    ("logs-stage-nosuch-follow", ["logs", "{good}", "--stage", "nosuch", "--follow"], "has no stage 'nosuch'"),
    ("logs-lines-negative", ["logs", "{good}", "--lines", "-1"], "--lines -1"),
    ("logs-rank-not-int", ["logs", "{good}", "--rank", "abc"], "invalid int value"),
    ("logs-by-name-elsewhere", ["logs", "aaaaaa"], "no run 'aaaaaa'"),
    ("cancel-nosuch", ["cancel", "nosuch", "--runs-root", "{runs}"], "no run 'nosuch'"),
    ("cancel-corrupt", ["cancel", "{corrupt}"], "unreadable"),
    ("cancel-dry-run", ["cancel", "{good}"], "dry run"),
    ("cancel-no-arg", ["cancel"], "the following arguments are required"),
    ("rerun-nosuch", ["rerun", "nosuch", "--runs-root", "{runs}"], "no run 'nosuch'"),
    ("rerun-corrupt", ["rerun", "{corrupt}"], "cannot be read"),
    ("rerun-empty-config", ["rerun", "{empty}"], "empty or not a mapping"),
    ("rerun-incomplete", ["rerun", "{incomplete}"], "incomplete"),
    ("rerun-group", ["rerun", "{good}", "cluster=lumi"], "launch anew"),
    ("rerun-bad-value", ["rerun", "{good}", "demo.nodes=0"], "at least 1"),
    ("rerun-unknown-key", ["rerun", "{good}", "demo.nosuch=1"], "unknown config key"),
    ("rerun-edited-newline", ["rerun", "{edited}"], "control characters"),
    ("rerun-edited-env-key", ["rerun", "{edited_key}"], "not a shell variable name"),
    ("compare-broken-json", ["compare", "{results}"], "JSONDecodeError"),
    ("compare-nosuch", ["compare", "nosuch", "--runs-root", "{runs}"], "no run 'nosuch'"),
    ("export-evals-broken-json", ["export-evals", "{results}"], "JSONDecodeError"),
    ("export-evals-nosuch", ["export-evals", "nosuch", "--runs-root", "{runs}"], "no run 'nosuch'"),
    ("prefetch-unknown-experiment", ["prefetch", "+experiment=nosuch"], "unknown experiment"),
    ("prefetch-bad-key", ["prefetch", "+experiment=demo", "nosuch.key=1"], "unknown config key"),
    ("list-bad-flag", ["list", "--nosuch"], "unrecognized arguments"),
]


def _argv(args, world):
    subs = {"{runs}": str(world["root"] / "runs"), "{afile}": str(world["afile"])}
    subs.update({"{" + k + "}": str(world[k]) for k in ("good", "corrupt", "empty", "incomplete", "edited",
                                                      "edited_key", "sweep", "results")})
    out = []
    for a in args:
        for k, v in subs.items():
            a = a.replace(k, v)
        out.append(a)
    return out


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_command_line(case, world, env, capsys):
    from dfm_hpc.__main__ import main

    _, args, expect = case
    argv = _argv(args, world)

    def run():
        try:
            return main(argv)
        except SystemExit as e:  # argparse's usage errors
            return e.code
    _check(world, capsys, run, expect, env)


def test_bad_dfm_cluster_is_named(world, env, capsys, monkeypatch):
    from dfm_hpc.__main__ import main

    monkeypatch.setenv("DFM_CLUSTER", "lumii")
    _check(world, capsys, lambda: main(["+experiment=demo", "dry_run=true"]), "DFM_CLUSTER='lumii'", env)


def test_there_are_a_hundred_cases():
    names = [c[0] for c in CFG_CASES + CLI_CASES]
    assert len(set(names)) == len(names) >= 100


# ---------------------------------------------------------------- damaged runs among good ones

def test_list_and_status_show_damaged_runs_among_the_others(world, env, capsys):
    from dfm_hpc.__main__ import main

    runs = str(world["root"] / "runs")
    assert main(["list", "--runs-root", runs]) == 0
    out = capsys.readouterr().out
    assert "unreadable:" in out and "incomplete" in out and "aaaaaa" in out and "demo: -" in out


def test_log_lines_are_text_not_markup(tmp_path, monkeypatch, capsys):
    """A log line with rich markup neither crashes status nor loses its brackets."""
    from dfm_hpc.__main__ import main

    from helpers import dfm, run_dirs

    p = dfm("+experiment=demo", "dry_run=true", cwd=tmp_path)
    assert p.returncode == 0
    (run,) = run_dirs(tmp_path)
    logs = run / "stages" / "demo" / "logs"
    logs.mkdir(parents=True)
    (logs / "rank-0.log").write_text("[rank0]: step [/bold] 5 [red]x\n")
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["status", str(run)]) == 0
    assert "[rank0]: step [/bold] 5 [red]x" in capsys.readouterr().out


def test_rerun_of_a_dry_run_reuses_nothing(tmp_path):
    from helpers import dfm, run_dirs

    assert dfm("+experiment=demo", "dry_run=true", cwd=tmp_path).returncode == 0
    (old,) = run_dirs(tmp_path)
    r = dfm("rerun", str(old), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "reusing" not in r.stderr and "continuing" not in r.stderr
    new = next(d for d in run_dirs(tmp_path) if d != old)
    assert not any(p.is_symlink() for p in (new / "stages").iterdir())
    assert json.loads((new / "provenance.json").read_text())["rerun_of"] == str(old.resolve())


def test_an_interrupted_launch_leaves_no_unmarked_dir(tmp_path, monkeypatch):
    """A sweep stopped while its point dirs are written: nothing is left (or it is marked INCOMPLETE)."""
    from dfm_hpc import rundir
    from dfm_hpc.__main__ import main

    monkeypatch.chdir(tmp_path)
    calls = {"n": 0}
    real = rundir.snapshot

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(rundir, "snapshot", interrupted)
    assert main(["-m", "+experiment=demo", "dry_run=true", "demo.value=1,2,3,4"]) == 130
    left = [p for p in tmp_path.glob("runs/*/*")]
    assert all(rundir.is_incomplete(p) for p in left), left
    assert not left  # removed outright
    os.environ.pop("HYDRA_FULL_ERROR", None)
