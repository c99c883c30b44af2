"""The plan that predicts: per-stage summaries, predicted hours and cost from the throughput table,
requeue warnings and refusals, plan.json (read by status and the card), calibrate."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from dfm_hpc import estimates, predict
from dfm_hpc.plan import plan

from helpers import LUMI, dfm, make_cfg, run_dirs

# munin_cpt at the scale docs/performance.md plans (~158 h), whatever the experiment's step count
CPT_158H = ["+experiment=munin_cpt", "cpt.max_steps=20000"]


def records(*overrides):
    cfg = make_cfg(*overrides)
    return cfg, {r["stage"]: r for r in predict.records(cfg, plan(cfg))}


def test_munin_cpt_prediction_is_the_documented_158_hours_with_three_requeues():
    cfg, recs = records(*CPT_158H, *LUMI)
    p = recs["cpt"]["prediction"]
    # 20,000 steps x 512 x 4096 = 41.9 B tokens; Mistral-7B at 4k: 49.9 GFLOP/token; 30 % of 191.5 TF
    # = 1,151 tok/s/GCD x 64 GCDs -> 158 h (docs/performance.md), + 4 starts x 300 s start-up
    tokens = 20_000 * 512 * 4096
    assert p["work"] == "41.9 B tokens" and p["device"] == "mi250x_gcd" and p["basis"] == "work"
    tps = 0.30 * 191.5e12 / predict.train_flops_per_token(cfg, "cpt")
    assert 1140 < tps < 1160
    assert p["hours"] == pytest.approx(tokens / (tps * 64) / 3600 + 4 * 300 / 3600, rel=1e-3)
    assert 157 < p["hours"] < 160 and p["starts"] == 4 and p["requeues"] == 3 and p["resumable"]
    assert p["gpu_hours"] == pytest.approx(p["hours"] * 64, rel=1e-3)
    assert p["billing"] == pytest.approx(p["hours"] * 8 * 4, rel=1e-3)  # standard-g: 4 units per node-hour
    assert "ZeRO-2" in p["summary"] and "seq 4096" in p["summary"] and "global batch 512" in p["summary"]
    (w,) = predict.warnings(list(recs.values()))
    assert w.startswith("cpt: predicted 158") and "3 requeues (4 starts)" in w and "checkpoints" in w


def test_translate_names_madlad_and_scales_with_workers_and_messages():
    _, recs = records("+experiment=oasst2_translate", *LUMI)
    p = recs["translate"]["prediction"]
    assert "MADLAD-400 3B" in p["summary"] and "backend hf" in p["summary"] and "32 workers" in p["summary"]
    assert p["hours"] == pytest.approx((4.5e6 / (750 * 32) + 300) / 3600, rel=1e-3)
    _, half = records("+experiment=oasst2_translate", *LUMI, "translate.max_messages=67587")
    assert half["translate"]["prediction"]["hours"] < p["hours"]
    _, ten = records("+experiment=oasst2_translate", *LUMI, "translator=madlad400_10b")
    assert "MADLAD-400 10B" in ten["translate"]["prediction"]["summary"]
    assert ten["translate"]["prediction"]["hours"] > 2.5 * p["hours"] - 300 / 3600 * 2


def test_lora_is_two_thirds_of_full_training_and_dpo_adds_the_reference_forward():
    cfg, lora = records("+experiment=munin_sft", *LUMI)
    full_cfg, full = records("+experiment=munin_sft", *LUMI, "peft=none", "deepspeed=zero3_offload")
    assert predict.train_flops_per_token(cfg, "sft") == pytest.approx(
        predict.train_flops_per_token(full_cfg, "sft") * 2 / 3)
    assert "LoRA r=16" in lora["sft"]["prediction"]["summary"] and "ZeRO-3" in lora["sft"]["prediction"]["summary"]
    assert "offload optimizer+params" in full["sft"]["prediction"]["summary"]
    assert full["sft"]["prediction"]["hours"] > lora["sft"]["prediction"]["hours"]
    pcfg, _ = records("+experiment=munin_pipeline", *LUMI)
    n = 7_241_732_096  # Mistral-7B; dpo runs at seq 2048 in munin_pipeline
    assert predict.train_flops_per_token(pcfg, "dpo") == pytest.approx(
        estimates.flops_per_token(n, 32, 4096, 2048) * 2 / 3 + 2 * n)


def test_a_changed_throughput_table_changes_the_prediction():
    _, base = records(*CPT_158H, *LUMI)
    _, fast = records(*CPT_158H, *LUMI, "throughput.devices.mi250x_gcd.train_mfu=0.6")
    assert fast["cpt"]["prediction"]["hours"] == pytest.approx(
        (base["cpt"]["prediction"]["hours"] - 4 * 300 / 3600) / 2 + 2 * 300 / 3600, rel=1e-3)
    assert fast["cpt"]["prediction"]["requeues"] == 1
    _, h200 = records(*CPT_158H, *LUMI, "throughput.device=h200")
    assert h200["cpt"]["prediction"]["device"] == "h200"
    _, unknown = records(*CPT_158H, *LUMI, "throughput.device=tpu")
    assert unknown["cpt"]["prediction"]["hours"] is None  # no entry: no estimate, nothing invented


def test_lumi_dry_runs_print_summaries_predictions_and_the_requeue_warning(tmp_path):
    for exp, must in (("oasst2_translate", ["MADLAD-400 3B", "translate:", "merge:"]),
                      ("munin_cpt", ["ZeRO-2"]),
                      ("munin_sft", ["ZeRO-3", "LoRA r=16"]),
                      ("munin_pipeline", ["MADLAD-400 3B", "ZeRO-3", "DPO, LoRA r=16"])):
        p = dfm(f"+experiment={exp}", *LUMI, "dry_run=true", cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        for text in must + ["cost predicted:", "LUMI billing units", "; at most (every start's full walltime):",
                            "pred."]:
            assert text in p.stdout, (exp, text)
    assert "requeues (" not in dfm("+experiment=munin_sft", *LUMI, "dry_run=true", cwd=tmp_path).stdout
    p = dfm(*CPT_158H, *LUMI, "dry_run=true", cwd=tmp_path)
    assert "warning: cpt: predicted 158" in p.stdout and "3 requeues (4 starts)" in p.stdout
    # the most it can cost counts the 4 starts: time=auto caps cpt at standard-g's 48 h: 8 nodes x 8 GCDs x 48 h x 4
    # = 12,288 GCD-h (+ evaluate's 0:55 on one GCD); tokenize runs on LUMI-C: 16 array tasks x 16 cores x 0:55
    # (30 min guessed x 1.5 + 2 min start-up + the 5 min stop signal, rounded up) = 234.7 core-hours (CPU allocation)
    assert "10,140/12,288" in p.stdout and "at most (every start's full walltime): 12,288.9 GPU(GCD)-hours" in p.stdout
    assert "and 234.7 LUMI-C core-hours (the CPU allocation)" in p.stdout


def test_a_stage_that_cannot_resume_and_would_outlast_its_walltime_is_refused(tmp_path):
    p = dfm("+experiment=demo", "demo.sleep_s=900", "demo.time=00:05:00", "dry_run=true", cwd=tmp_path)
    assert p.returncode == 2 and not (tmp_path / "runs").exists()
    assert "demo: predicted" in p.stderr and "cannot resume" in p.stderr
    assert "demo.time=00:19:00" in p.stderr  # (900 s + the cpu entry's 40 s start-up) x 1.2, rounded up
    assert "(or demo.time=auto)" in p.stderr


def test_plan_json_is_what_status_and_the_card_read(tmp_path):
    assert dfm(*CPT_158H, *LUMI, "dry_run=true", cwd=tmp_path).returncode == 0
    (run,) = run_dirs(tmp_path)
    stages = json.loads((run / "plan.json").read_text())["stages"]
    stages = [s for s in stages if s["stage"] != "tokenize"]  # (munin_cpt may tokenize first)
    assert [s["stage"] for s in stages] == ["cpt", "evaluate"]
    assert stages[0]["nodes"] == 8 and stages[0]["prediction"]["requeues"] == 3
    st = dfm("status", str(run), cwd=tmp_path)
    assert st.returncode == 0 and "predicted" in st.stdout
    assert re.search(r"6-14:2\d:\d\d", st.stdout)  # 158.4 h as D-HH:MM:SS, like elapsed
    # status shows what was planned at launch, not what today's code would plan
    stages[0]["nodes"], stages[0]["prediction"]["hours"] = 3, 1.5
    (run / "plan.json").write_text(json.dumps({"version": 1, "stages": stages}))
    from dfm_hpc.login.status import stage_rows
    from dfm_hpc.stages.card import compute_used

    rows = {r["stage"]: r for r in stage_rows(run, {})}
    assert rows["cpt"]["nodes"] == 3 and rows["cpt"]["predicted"] == "01:30:00"
    (run / "stages" / "cpt" / "job_id").write_text("424242\n")
    from dfm_hpc import config_io

    used = compute_used(config_io.load_config(run), run)
    assert used["stages"][0]["stage"] == "cpt" and used["stages"][0]["where"] == "Slurm job 424242"
    # a run dir made before plan.json existed still shows (planned again)
    (run / "plan.json").unlink()
    rows = {r["stage"]: r for r in stage_rows(run, {})}
    assert rows["cpt"]["nodes"] == 8 and rows["cpt"]["predicted"] == "-"
    assert dfm("status", str(run), cwd=tmp_path).returncode == 0


def test_calibrate_prints_the_entries_a_finished_run_measured(tmp_path):
    assert dfm("+experiment=demo", cwd=tmp_path).returncode == 0
    (run,) = run_dirs(tmp_path)
    p = dfm("calibrate", str(run), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "demo_check on cpu: took" in p.stdout and "predicted" in p.stdout
    import yaml

    body = yaml.safe_load("\n".join(ln for ln in p.stdout.splitlines() if not ln.startswith("#")))
    assert body["devices"]["cpu"]["stage_minutes"]["demo_check"] > 0
    shutil.rmtree(run / "stages" / "demo_check")
    (run / "stages" / "demo" / "DONE").unlink()
    p = dfm("calibrate", str(run), cwd=tmp_path)
    assert p.returncode == 1 and "nothing to calibrate" in p.stdout
    assert dfm("calibrate", "no-such-run", cwd=tmp_path).returncode == 2


def test_status_shows_elapsed_against_predicted_while_a_job_runs():
    from dfm_hpc.login.status import _predicted

    assert _predicted({"hours": 2.0, "basis": "work"}, 3600, "RUNNING") == "02:00:00 (50%)"
    assert _predicted({"hours": 2.0, "basis": "work"}, 7200, "COMPLETED") == "02:00:00"
    assert _predicted({"hours": 0.25, "basis": "fixed"}, 0, "PENDING") == "00:15:00~"
    assert _predicted({"hours": 158.4, "basis": "work"}, 0, "-").startswith("6-14:24")
    assert _predicted(None, 10, "RUNNING") == _predicted({"hours": None}, 10, "RUNNING") == "-"


def test_calibrate_times_translation_from_its_plan_to_the_last_shard(tmp_path):
    """The translate rate must not hinge on the table's guessed start-up (a 12 s run minus a 40 s guess)."""
    import os

    from dfm_hpc.login.calibrate import _translate_busy_s

    (tmp_path / "shards").mkdir()
    assert _translate_busy_s(tmp_path) == 0.0  # nothing finished: unknown
    (tmp_path / "plan.json").write_text("{}")
    os.utime(tmp_path / "plan.json", (1000, 1000))
    for i, t in enumerate((1003, 1007.5)):
        (tmp_path / "shards" / f"shard-{i:05d}.done").write_text("{}")
        os.utime(tmp_path / "shards" / f"shard-{i:05d}.done", (t, t))
    assert _translate_busy_s(tmp_path) == 7.5
