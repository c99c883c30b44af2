"""The launch path on this machine: demo end to end, snapshot, secrets, Hydra flags, rerun."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from helpers import LUMI, LUMI_ACCOUNT, REPO, dfm, run_dirs


@pytest.mark.e2e
def test_demo_runs_locally_and_snapshots_everything(tmp_path):
    p = dfm("+experiment=demo", "demo.value=2.5", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    (run,) = run_dirs(tmp_path)
    result = json.loads((run / "stages" / "demo" / "result.json").read_text())
    assert result["world_size"] == 2 and result["sum"] == 2.5 * 3 == result["expected"]
    assert json.loads((run / "stages" / "demo_check" / "check.json").read_text())["ok"] is True
    for stage in ("demo", "demo_check"):
        assert (run / "stages" / stage / "DONE").exists()
    assert (run / "stages" / "demo" / "logs" / "rank-1.log").read_text().count("all_reduce sum = 7.5") == 1
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["name"] == "demo" and cfg["demo"]["value"] == 2.5 and cfg["cluster"]["name"] == "local"
    assert yaml.safe_load((run / "overrides.yaml").read_text()) == ["+experiment=demo", "demo.value=2.5"]
    assert "+experiment=demo demo.value=2.5" in (run / "command.txt").read_text()
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["python"] == sys.version.split()[0] and "git_commit" in prov and "git_dirty" in prov
    assert any(line.startswith("omegaconf==") for line in (run / "requirements.txt").read_text().splitlines())
    assert (run / "git.diff").exists()
    assert "all_reduce sum = 7.5" in p.stdout  # rank 0's log is shown while it runs
    st = dfm("status", str(run), cwd=tmp_path)
    assert st.returncode == 0 and st.stdout.count("COMPLETED") == 2


@pytest.mark.e2e
def test_run_dir_name_and_git_commit(tmp_path):
    p = dfm("+experiment=demo", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (run,) = run_dirs(tmp_path)
    assert run.parent.name == "demo"
    assert len(run.name) == len("2026-01-01_00-00-00_abcdef")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert json.loads((run / "provenance.json").read_text())["git_commit"] == head.stdout.strip()


def test_secrets_never_land_in_the_snapshot(tmp_path):
    secret = "hf_dontleakme123"
    p = dfm("+experiment=demo", f"+cluster.env.HF_TOKEN={secret}", f"+cluster.env.WANDB_API_KEY={secret}",
            f"+cluster.env.MY_DB_PASSWORD={secret}", "+cluster.env.MAX_TOKENS=7", "dry_run=true", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (run,) = run_dirs(tmp_path)
    for f in run.rglob("*"):
        if f.is_file():
            assert secret not in f.read_text(errors="replace"), f"secret in {f}"
    env = yaml.safe_load((run / "config.yaml").read_text())["cluster"]["env"]
    assert env["HF_TOKEN"] == env["WANDB_API_KEY"] == env["MY_DB_PASSWORD"] == "***REDACTED***"
    assert env["MAX_TOKENS"] == "7"  # a count of tokens is not a token


def test_redaction_rules():
    from dfm_hpc.redact import is_secret_key, redact_override

    for k in ("HF_TOKEN", "hf_token", "api_key", "WANDB_API_KEY", "password", "db_password", "secret", "client_secret"):
        assert is_secret_key(k), k
    for k in ("max_tokens", "token_budget", "monkey", "keys", "num_tokens", "key_path_count"):
        assert not is_secret_key(k), k
    assert redact_override("+cluster.env.HF_TOKEN=abc") == "+cluster.env.HF_TOKEN=***REDACTED***"


def test_run_dirs_never_collide(tmp_path):
    from dfm_hpc.rundir import new_run_dir

    made = [new_run_dir(tmp_path) for _ in range(200)]  # far more than one per second
    assert len(set(made)) == 200


def test_login_node_never_imports_heavy_packages(tmp_path):
    code = (
        "import sys; from dfm_hpc.__main__ import main\n"
        "rc = main(['+experiment=munin_pipeline', 'cluster=lumi', 'cluster.account=project_465000670', "
        "'dry_run=true'])\n"
        "rc2 = main(['status'])\n"
        "rc3 = main(['prefetch', '+experiment=munin_pipeline', 'cluster=lumi', 'cluster.account=project_465000670'])\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'deepspeed', 'trl', 'peft', 'datasets', 'accelerate') "
        "if m in sys.modules)\n"
        "print('HEAVY', heavy, rc, rc2, rc3)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert "HEAVY [] 0 0 1" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]  # prefetch: 1 = things missing


def test_hydra_flags_keep_working(tmp_path):
    h = dfm("--help", cwd=tmp_path)
    assert h.returncode == 0
    for exp in ("demo", "munin_sft", "munin_cpt", "munin_dpo", "munin_pipeline", "oasst2_translate"):
        assert exp in h.stdout
    c = dfm("+experiment=munin_sft", "--cfg", "job", cwd=tmp_path)
    assert c.returncode == 0 and "name: munin_sft" in c.stdout and "name_or_path:" in c.stdout
    i = dfm("+experiment=demo", "--info", "defaults", cwd=tmp_path)
    assert i.returncode == 0 and "experiment/demo" in i.stdout
    assert run_dirs(tmp_path) == []  # printing never launches


def test_every_experiment_dry_runs_on_lumi(tmp_path):
    for exp in ("oasst2_translate", "munin_cpt", "munin_sft", "munin_dpo", "munin_pipeline"):
        p = dfm(f"+experiment={exp}", *LUMI, "dry_run=true",
                cwd=tmp_path)
        assert p.returncode == 0, exp + p.stderr
    pipeline = next(tmp_path.glob("runs/munin_pipeline/*"))
    stages = sorted(p.name for p in (pipeline / "stages").iterdir())
    assert stages == sorted(["translate", "merge", "pii", "sft", "dpo", "evaluate", "card"])


@pytest.mark.e2e
def test_local_sweep_gives_one_run_dir_per_point(tmp_path):
    p = dfm("-m", "+experiment=demo", "demo.value=1,3", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (sweep,) = run_dirs(tmp_path)
    summary = yaml.safe_load((sweep / "sweep.yaml").read_text())
    assert [pt["run_dir"] for pt in summary["points"]] == ["0", "1"]
    sums = [json.loads((sweep / d / "stages" / "demo" / "result.json").read_text())["sum"] for d in ("0", "1")]
    assert sums == [3.0, 9.0]


@pytest.mark.e2e
def test_rerun_reproduces_the_config_and_reuses_finished_stages(tmp_path):
    p = dfm("+experiment=demo", "demo.value=2", "demo_check.fail=true", cwd=tmp_path)
    assert p.returncode == 1 and "stage demo_check failed" in p.stdout
    (first,) = run_dirs(tmp_path)
    assert (first / "stages" / "demo" / "DONE").exists() and (first / "stages" / "demo_check" / "FAILED").exists()
    # rerun with the cause fixed: demo is reused, demo_check runs again
    r = dfm("rerun", str(first), "demo_check.fail=false", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reusing finished stages: demo" in r.stderr
    second = next(d for d in run_dirs(tmp_path) if d != first)
    assert (second / "stages" / "demo").is_symlink()
    assert (second / "stages" / "demo_check" / "DONE").exists()
    assert json.loads((second / "provenance.json").read_text())["rerun_of"] == str(first.resolve())
    # --fresh reproduces the exact resolved config and runs everything again
    f = dfm("rerun", str(second), "--fresh", cwd=tmp_path)
    assert f.returncode == 0, f.stderr
    third = [d for d in run_dirs(tmp_path) if d not in (first, second)][0]
    assert (third / "config.yaml").read_text() == (second / "config.yaml").read_text()
    assert not (third / "stages" / "demo").is_symlink() and (third / "stages" / "demo" / "DONE").exists()


def test_rerun_rejects_bad_overrides(tmp_path):
    assert dfm("+experiment=demo", "dry_run=true", cwd=tmp_path).returncode == 0
    (run,) = run_dirs(tmp_path)
    for bad, text in (("demo.valeu=3", "Did you mean demo.value"), ("cluster=lumi", "launch anew"),
                      ("demo.nodes=abc", "demo.nodes")):
        p = dfm("rerun", str(run), bad, cwd=tmp_path)
        assert p.returncode == 2 and text in p.stderr, bad + p.stderr
    assert dfm("rerun", "no-such-run", cwd=tmp_path).returncode == 2
    assert len(run_dirs(tmp_path)) == 1


def test_runs_of_another_version_still_show_and_rerun_explains(tmp_path):
    """A run whose config has a key today's schema lacks (made by an older dfm_hpc): status and
    list still show it; rerun refuses with the reason instead of a traceback."""
    import yaml

    assert dfm("+experiment=demo", "dry_run=true", cwd=tmp_path).returncode == 0
    (run,) = run_dirs(tmp_path)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["card"]["retired_key"] = 0.5
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    for args in (("status", str(run)), ("list",)):
        p = dfm(*args, cwd=tmp_path)
        assert p.returncode == 0 and "demo_check" in p.stdout, p.stdout + p.stderr
    p = dfm("rerun", str(run), cwd=tmp_path)
    assert p.returncode == 2 and "does not fit this dfm_hpc version's schema" in p.stderr
    assert "retired_key" in p.stderr and "Traceback" not in p.stderr
    assert len(run_dirs(tmp_path)) == 1


def test_sweep_points_equal_single_runs(tmp_path):
    """The fast sweep path composes exactly what a single run with the same overrides does."""
    # one stage: dev-g takes at most 2 submitted jobs per user, so 2 points of a 2-stage chain would be refused
    # (and work that fits one start: dev-g refuses a stage that needs requeues)
    common = ["+experiment=munin_sft", "stages=[sft]", f"cluster.account={LUMI_ACCOUNT}", "dry_run=true",
              "sft.time=02:00:00", "sft.max_steps=100"]
    (tmp_path / "sweep").mkdir()
    (tmp_path / "one").mkdir()
    p = dfm("-m", *common, "sft.lr=0.0001,0.0003", "cluster=lumi,lumi_dev", cwd=tmp_path / "sweep")
    assert p.returncode == 0, p.stderr
    (sweep,) = run_dirs(tmp_path / "sweep")
    assert len(yaml.safe_load((sweep / "sweep.yaml").read_text())["points"]) == 4
    p = dfm(*common, "sft.lr=0.0003", "cluster=lumi_dev", cwd=tmp_path / "one")
    assert p.returncode == 0, p.stderr
    (single,) = run_dirs(tmp_path / "one")
    point = next(p for p in (sweep / str(i) for i in range(4))
                 if {"sft.lr=0.0003", "cluster=lumi_dev"} <= set(yaml.safe_load((p / "overrides.yaml").read_text())))
    assert (point / "config.yaml").read_text() == (single / "config.yaml").read_text()


def test_rerun_warns_when_the_code_changed(tmp_path):
    assert dfm("+experiment=demo", "dry_run=true", cwd=tmp_path).returncode == 0
    (run,) = run_dirs(tmp_path)
    prov = json.loads((run / "provenance.json").read_text())
    prov["git_commit"] = "0123456789abcdef0123456789abcdef01234567"
    (run / "provenance.json").write_text(json.dumps(prov))
    r = dfm("rerun", str(run), cwd=tmp_path)
    assert r.returncode == 0 and "the code has changed since" in r.stderr and "0123456789" in r.stderr


@pytest.mark.e2e
def test_logs_show_and_follow_a_finished_stage(tmp_path):
    assert dfm("+experiment=demo", cwd=tmp_path).returncode == 0
    (run,) = run_dirs(tmp_path)
    p = dfm("logs", run.name, "--stage", "demo", "--rank", "1", cwd=tmp_path)
    assert p.returncode == 0 and "rank 1/2" in p.stdout and "all_reduce sum = 3.0" in p.stdout
    f = dfm("logs", str(run), "--follow", cwd=tmp_path, timeout=30)  # ends once the stage is DONE
    assert f.returncode == 0 and "stage demo_check finished" in f.stdout
    # a rank the stage does not have is bad input (issue #11), a rank without a log yet is not
    missing = dfm("logs", str(run), "--stage", "demo", "--rank", "7", cwd=tmp_path)
    assert missing.returncode == 2 and "has ranks 0..1" in missing.stderr
    (run / "stages" / "demo" / "logs" / "rank-1.log").unlink()
    missing = dfm("logs", str(run), "--stage", "demo", "--rank", "1", cwd=tmp_path)
    assert missing.returncode == 1 and "no log yet" in missing.stderr


def test_a_plain_run_composes_what_hydra_main_does(tmp_path):
    """Plain key=value runs are composed once with Hydra's compose API; a hydra.* override takes the
    @hydra.main path (which composes twice). Both must give the same config."""
    common = ["+experiment=munin_sft", *LUMI, "dry_run=true",
              "sft.lr=0.0003"]
    for name, extra in (("plain", []), ("hydra_main", ["hydra.job.name=dfm_hpc"])):
        (tmp_path / name).mkdir()
        p = dfm(*common, *extra, cwd=tmp_path / name)
        assert p.returncode == 0, p.stderr
    (plain,), (via_main,) = run_dirs(tmp_path / "plain"), run_dirs(tmp_path / "hydra_main")
    assert (plain / "config.yaml").read_text() == (via_main / "config.yaml").read_text()
    assert "lr: 0.0003" in (plain / "config.yaml").read_text()
