"""Issue #11: config text never runs as code, and no secret lands in a file or on the terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import LUMI, dfm, make_cfg, run_dirs, slurm_stubs

SECRETS = {"HF_TOKEN": "hf_S3cretTokenValue1234567", "WANDB_API_KEY": "wandbSecretKey0987654321",
           "AWS_SECRET_ACCESS_KEY": "awsSecretAccessKey/abc+XYZ"}
SFT = ["+experiment=munin_sft", *LUMI]


def _payloads(mark: Path):
    """Shell that would create a file under `mark` if it ever ran (command substitution, backticks,
    a backslash breaking out of double quotes, a quote breaking out of single quotes, ;)."""
    return [f"a$(touch {mark}/p1)b", f"c`touch {mark}/p2`d", f'e\\"; touch {mark}/p3; echo \\"f',
            f"g'; touch {mark}/p4; echo 'h", f"i;touch {mark}/p5", f"$(touch {mark}/p6)", f'"`touch {mark}/p7`"']


def _hostile_cluster(cfg, mark: Path):
    p = _payloads(mark)
    cl = cfg.cluster
    cl.name, cl.account, cl.partition, cl.qos = p[0], p[1], p[2], p[3]
    cl.mem, cl.cpu_bind = p[4], p[5]
    cl.env = {"PLAIN": p[0], "TICKS": p[1], "BACKSLASH": p[2], "QUOTE": p[3], "SEMI": p[4], "DOLLAR": p[5],
              "MIXED": p[6], "EXPANDED": f"expand:/tmp/$USER/{p[0]}", "HF_TOKEN": "x"}
    cl.sbatch_extra = {"comment": p[6], "mail-user": p[0]}
    cl.srun_args = [p[1], p[2]]
    cl.setup = []
    cl.container.runtime, cl.container.python = "singularity", p[3]
    cl.container.image, cl.container.overlay = p[0], p[1]
    cl.container.binds = [p[2], p[4]]
    cl.container.module_path, cl.container.bindings_module = p[5], p[6]
    cl.launcher, cl.torchrun_args = "torchrun", [p[0], p[3]]
    return cl


def test_hostile_values_in_every_field_never_run(tmp_path):
    """Every field that reaches sbatch.sh or the srun line holds a payload; the script parses (bash -n)
    and runs with stub commands; nothing executes and srun gets each value literally."""
    from omegaconf import OmegaConf

    from dfm_hpc.login import slurm
    from dfm_hpc.plan import plan, stage_cluster

    mark = tmp_path / "mark"
    mark.mkdir()
    cfg = make_cfg(*SFT)
    OmegaConf.set_struct(cfg, False)
    cl = _hostile_cluster(cfg, mark)
    payloads = _payloads(mark)
    folder = tmp_path / f"run {payloads[0]} {payloads[3]}" / "stages" / "sft" / "submitit"
    job = plan(cfg)[0]
    params = slurm.executor_params(job, stage_cluster(cfg, job.stage), f"dfm-{payloads[2]}-sft",
                                   f"afterok:{payloads[1]}")
    params["partition"] = payloads[6]
    script = slurm.render(params, folder, slurm.python_command(cl), 1)
    f = tmp_path / "sbatch.sh"
    f.write_text(script)
    assert subprocess.run(["bash", "-n", str(f)], capture_output=True).returncode == 0
    bin_dir = tmp_path / "bin"  # srun: the stage finished (the end-state rule needs its marker)
    done = 'mkdir -p "${DFM_HPC_DONE_MARKER%/*}" && touch "$DFM_HPC_DONE_MARKER"'
    slurm_stubs.install(bin_dir, bodies={"srun": done})
    env = {**os.environ, **slurm_stubs.env(bin_dir), "SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "node1",
           "HF_TOKEN": "from-the-environment"}
    r = subprocess.run(["bash", str(f)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert list(mark.iterdir()) == [], "a payload ran"
    (srun,) = slurm_stubs.calls(bin_dir, "srun")
    for value in (payloads[1], payloads[2], payloads[3]):  # srun_args, binds, python: literal
        assert value in srun
    # env values arrive literally; expand: expands $NAME only
    probe = tmp_path / "probe.sh"
    probe.write_text(script.split("# command")[0] + '\nenv -0 > "$1"\n')
    out = tmp_path / "env.bin"
    subprocess.run(["bash", str(probe), str(out)], env=env, check=True, cwd=tmp_path)
    got = dict(x.split("=", 1) for x in out.read_bytes().decode().split("\0") if "=" in x)
    for k in ("PLAIN", "TICKS", "BACKSLASH", "QUOTE", "SEMI", "DOLLAR", "MIXED"):
        assert got[k] == cl.env[k], k
    assert got["EXPANDED"] == f"/tmp/{os.environ.get('USER', '')}/{payloads[0]}"
    import shlex
    assert shlex.split(got["DFM_HPC_TORCHRUN_ARGS"]) == [payloads[0], payloads[3]]
    assert got["HF_TOKEN"] == "from-the-environment" and "from-the-environment" not in script
    assert list(mark.iterdir()) == []


@pytest.mark.parametrize("field", ["cluster.account", "cluster.partition", "cluster.qos", "cluster.mem",
                                   "cluster.env.X", "cluster.sbatch_extra.comment", "cluster.srun_args",
                                   "cluster.container.python", "cluster.name"])
def test_a_newline_never_reaches_the_renderer(field, tmp_path):
    from omegaconf import OmegaConf

    from dfm_hpc.login import slurm
    from dfm_hpc.plan import plan, stage_cluster

    cfg = make_cfg(*SFT)
    OmegaConf.set_struct(cfg, False)
    value = "x\ntouch pwned\n#"
    OmegaConf.update(cfg, field, [value] if field.endswith("srun_args") else value, merge=False)
    job = plan(cfg)[0]
    with pytest.raises(ValueError, match="control characters"):
        params = slurm.executor_params(job, stage_cluster(cfg, job.stage), "dfm-x-sft")
        slurm.render(params, tmp_path / "f", slurm.python_command(cfg.cluster), 1)


def test_env_keys_and_sbatch_options_are_checked():
    from dfm_hpc.login import shell

    assert shell.check_env_key("HF_HOME") == [] and shell.check_env_key("A1_b") == []
    for bad in ("1A", "A-B", "A B", "A;touch x", "$(x)", ""):
        assert shell.check_env_key(bad), bad
    assert shell.check_sbatch_option("mail-type") == []
    for bad in ("Mail", "a b", "x=y", "--x", "a;b", "a\nb"):
        assert shell.check_sbatch_option(bad), bad
    with pytest.raises(ValueError):
        shell.export_line("A;touch x", "v")


def _grep(root: Path, text: str):
    return [str(f) for f in root.rglob("*") if f.is_file() and text in f.read_text(errors="replace")]


def _no_secret(p, root: Path):
    for name, value in SECRETS.items():
        assert value not in p.stdout + p.stderr, f"{name} printed"
        assert _grep(root, value) == [], f"{name} written"


def _secret_args():
    return [f"+cluster.env.{k}={v}" for k, v in SECRETS.items()]


def test_no_secret_in_a_dry_run_a_sweep_a_run_and_a_rerun(tmp_path):
    bin_dir = tmp_path / "bin"
    slurm_stubs.install(bin_dir)
    env = {**SECRETS, **slurm_stubs.env(bin_dir)}
    # a dry run (prints its scripts) and a sweep
    p = dfm(*SFT, "dry_run=true", *_secret_args(), cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    _no_secret(p, tmp_path / "runs")
    assert 'export HF_TOKEN="${HF_TOKEN:?' in p.stdout
    p = dfm("-m", *SFT, "dry_run=true", "sft.lr=1e-4,2e-4", *_secret_args(), cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    _no_secret(p, tmp_path / "runs")
    # a real submission (sbatch is a stub): the job gets the secrets by name from sbatch's environment
    work = tmp_path / "submit"
    work.mkdir()
    p = dfm("+experiment=demo", "cluster=slurm", *_secret_args(), cwd=work, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    _no_secret(p, work / "runs")
    (run,) = run_dirs(work)
    assert yaml.safe_load((run / "config.yaml").read_text())["cluster"]["env"]["HF_TOKEN"] == "***REDACTED***"
    assert slurm_stubs.calls(bin_dir, "sbatch")
    # rerun: the values come from this shell's environment, never the placeholder ...
    r = dfm("rerun", str(run), "--fresh", cwd=work, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    _no_secret(r, work / "runs")
    assert len(run_dirs(work)) == 2
    # ... or the rerun refuses
    bare = {k: v for k, v in os.environ.items() if k not in SECRETS}
    r = subprocess.run([sys.executable, "-m", "dfm_hpc", "rerun", str(run), "--fresh"], cwd=work, capture_output=True,
                       text=True, env={**bare, **slurm_stubs.env(bin_dir), "COLUMNS": "200"})
    assert r.returncode == 2 and "was redacted" in r.stderr and "export HF_TOKEN" in r.stderr
    assert len(run_dirs(work)) == 2


def test_secret_in_a_setup_line_or_under_a_plain_name_is_refused(tmp_path):
    env = {"HF_TOKEN": SECRETS["HF_TOKEN"]}
    p = dfm(*SFT, "dry_run=true", "cluster.setup=['export HF_TOKEN=hf_abcdefghijklmnopqrstuv']", cwd=tmp_path, env=env)
    assert p.returncode == 2 and "cluster.setup[0] assigns HF_TOKEN" in p.stderr
    p = dfm(*SFT, "dry_run=true", f"+cluster.env.PLAIN={SECRETS['HF_TOKEN']}", cwd=tmp_path, env=env)
    assert p.returncode == 2 and "cluster.env.PLAIN" in p.stderr and SECRETS["HF_TOKEN"] not in p.stderr
    assert not (tmp_path / "runs").exists()


def test_redaction_of_free_text():
    from dfm_hpc.redact import REDACTED, redact_text

    diff = ('+HF_TOKEN = "hf_abcdefghijklmnopqrstuvwxyz"\n+aws_secret_access_key: zzzzzzzz\n'
            '+password=hunter22\n+max_tokens = 4096\n+key=value\n')
    out = redact_text(diff, ["zzzzzzzz"])
    assert "hf_abcdefghij" not in out and "zzzzzzzz" not in out and "hunter22" not in out
    assert "max_tokens = 4096" in out and "key=value" in out and out.count(REDACTED) == 3
    assert redact_text("use key=a,b,c") == "use key=a,b,c"


def test_the_working_directory_is_not_a_secret(tmp_path):
    """PWD ends in 'pwd' like a password key, but a path under the current directory is ordinary input."""
    from dfm_hpc import redact

    assert not redact.is_secret_key("PWD") and not redact.is_secret_key("OLDPWD")
    assert redact.is_secret_key("DB_PWD") and redact.is_secret_key("HF_TOKEN")
    assert str(tmp_path) not in redact.secret_values(environ={"PWD": str(tmp_path), "OLDPWD": "/home/someone"})
    data = tmp_path / "chats.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "Hej"}, {"role": "assistant", "content": "Hej!"}]}\n')
    p = dfm("+experiment=sft_tiny", "stages=[sft]", f"sft.dataset={data}", "dry_run=true", cwd=tmp_path,
            env={"PWD": str(tmp_path)})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
