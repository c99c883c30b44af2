"""The whole recipe in one command (`+experiment=pipeline_tiny`, munin_pipeline's stages with tiny
models): on this machine (the README's embedded default) and as chained jobs on the 2-node Slurm."""

from __future__ import annotations

import json
import re

import pytest

from helpers import dfm, run_dirs, wait_for

pytest.importorskip("deepspeed")
pytest.importorskip("trl")

STAGES = ["translate", "merge", "pii", "sft", "dpo", "evaluate", "card"]
PLANTED = "mette.hansen@example.dk"  # in a code block of the OASST fixture: kept verbatim by translation


def check_pipeline(run):
    """Every artifact a user expects, and the links between them."""
    from huggingface_hub import ModelCard

    s = run / "stages"
    assert all((s / st / "DONE").exists() for st in STAGES)
    # PII: the planted e-mail reached the merged data and was filtered before training
    assert PLANTED in (s / "merge" / "sft.jsonl").read_text()
    filtered = (s / "pii" / "sft.jsonl").read_text()
    assert PLANTED not in filtered and "<EMAIL>" in filtered
    assert json.loads((s / "pii" / "report.json").read_text())["counts"]["email"] >= 1
    # (a rerun links the finished sft stage, whose log names the first run's dir)
    sft_log = (s / "sft" / "logs" / "rank-0.log").read_text()
    assert f"sft data: {(s / 'sft').resolve().parent / 'pii' / 'sft.parquet'}" in sft_log
    for st in ("sft", "dpo"):
        assert (s / st / "model" / "adapter_model.safetensors").exists()
        assert (s / st / "merged" / "model.safetensors").exists()
        assert (s / st / "loss.png").exists()
    # evaluate: base, sft and dpo side by side
    res = json.loads((s / "evaluate" / "results.json").read_text())
    assert [m["name"] for m in res["models"]] == ["base", "sft", "dpo"]
    assert all(m["perplexity"] > 1 for m in res["models"])
    # ... and a benchmark that really scores: lm-eval on the Danish MC task dfm_hpc writes (issue #13)
    assert all(0 <= m["benchmarks"]["lm-eval/dfm_danish_mc"]["scores"]["acc"] <= 1 for m in res["models"])
    assert "| lm-eval dfm_danish_mc acc |" in (s / "evaluate" / "results.md").read_text()
    assert (s / "evaluate" / "results.md").exists() and (s / "evaluate" / "samples.md").exists()
    # the card: metadata loads with huggingface_hub, and it carries the run's numbers
    card = ModelCard.load(s / "card" / "README.md")
    assert card.data.language == "da" and card.data.license == "apache-2.0"
    assert card.data.model_name == "danish-foundation-models/pipeline-tiny-demo"
    (ev,) = [e for e in card.data.eval_results if e.metric_type == "perplexity"]
    assert ev.metric_value == round(res["models"][-1]["perplexity"], 4)
    (acc,) = [e for e in card.data.eval_results if e.dataset_type == "lm-eval/dfm_danish_mc" and e.metric_type == "acc"]
    assert acc.metric_value == round(res["models"][-1]["benchmarks"]["lm-eval/dfm_danish_mc"]["scores"]["acc"], 4)
    assert "| lm-eval dfm_danish_mc acc |" in card.text
    pii = json.loads((s / "pii" / "report.json").read_text())
    assert f"email {pii['counts']['email']}" in card.text
    assert "python -m dfm_hpc rerun" in card.text and "![sft training loss](loss_sft.png)" in card.text
    sheet = (s / "card" / "datasheets" / "oasst2-da" / "README.md").read_text()
    assert "## Personal information" in sheet and f"| email | {pii['counts']['email']} |" in sheet
    assert (s / "dpo" / "model" / "README.md").read_text() == (s / "card" / "README.md").read_text()
    # the gate: a verdict for SFT and DPO against the base in results.json, and the card's table and plot
    gate = json.loads((s / "evaluate" / "gate.json").read_text())
    assert gate["verdict"] == "passed" and list(gate["models"]) == ["sft", "dpo"]
    assert gate["reference"]["name"] == "base"
    assert [m.get("gate", {}).get("verdict") for m in res["models"]] == [None, "passed", "passed"]
    assert "### Promotion gate" in card.text and "](gate.png)" in card.text and (s / "card" / "gate.png").exists()
    return card


def test_pipeline_locally_is_the_embedded_default(tmp_path):
    p = dfm("+experiment=pipeline_tiny", cwd=tmp_path, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    check_pipeline(run)
    for st in STAGES:  # progress: every stage's banner and completion are shown as it runs
        assert f"─ {st}: " in p.stdout and f"stage {st} finished in 00:" in p.stdout
    assert f"model card: {run / 'stages' / 'card' / 'README.md'}" in p.stdout  # where to look next
    # the console is for a person (issue #14): about 100 lines, dfm_hpc's own, ending with the summary table
    console = (p.stdout + p.stderr).splitlines()
    assert len(console) <= 100, "\n".join(console)
    assert not re.search(r"\w+Warning\b|built successfully|it/s\]|\{'loss'", p.stdout + p.stderr)
    assert p.stdout.rstrip().splitlines()[-1].startswith("└")


@pytest.mark.slurm
def test_pipeline_on_two_nodes_fails_at_a_stage_and_rerun_continues(slurm_cluster, tmp_path):
    """Chained jobs on the 2-node Slurm. The held-out text names a hub dataset, which cannot be
    fetched here, so evaluate fails; the card (its dependent) must not run. A rerun with a local
    eval text reuses translate..dpo and continues at evaluate."""
    p = dfm("+experiment=pipeline_tiny", "cluster=slurm", "translate.nodes=2", "sft.nodes=2", "dpo.nodes=2",
            "data.eval_text=danish-foundation-models/no-such-eval-set", cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "queued; follow with" in p.stdout
    (run,) = run_dirs(tmp_path)

    def settled():
        out = dfm("status", str(run), cwd=tmp_path).stdout
        return out if "FAILED" in out and "CANCELLED" in out else None

    # files first (cheap, every 0.5 s); `dfm status`, a Python process, only once a stage has ended in failure
    wait_for(lambda: any((run / "stages").glob("*/FAILED")), timeout=900, every=0.5, what="a stage to fail")
    out = wait_for(settled, timeout=120, what="evaluate to fail and the card to be cancelled")
    assert "not run: evaluate did not finish" in out, out  # status shows why the chain stopped
    for st in STAGES[:5]:
        assert (run / "stages" / st / "DONE").exists(), out
    assert (run / "stages" / "evaluate" / "FAILED").exists()
    assert not (run / "stages" / "card" / "README.md").exists()
    assert "on node2" in (run / "stages" / "sft" / "logs" / "rank-1.log").read_text()
    # the stages that need no GPU ran in the CPU partition, on the node without GPUs (as LUMI-C beside LUMI-G)
    for st in ("merge", "pii"):
        assert re.search(r"on node[34] ", (run / "stages" / st / "logs" / "rank-0.log").read_text()), st
        assert "#SBATCH --partition=cpu" in (run / "stages" / st / "sbatch.sh").read_text()

    r = dfm("rerun", str(run), "data.eval_text=tiny:eval", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "reusing finished stages: translate, merge, pii, sft, dpo" in r.stderr, r.stderr
    new = next(d for d in run_dirs(tmp_path) if d != run)
    wait_for(lambda: (new / "stages" / "card" / "DONE").exists() or (new / "stages" / "card" / "FAILED").exists()
             or (new / "stages" / "evaluate" / "FAILED").exists(), timeout=600, every=0.5, what="the rerun's card")
    card = check_pipeline(new)
    assert "Slurm job" in card.text  # compute from sacct
    used = json.loads((new / "stages" / "card" / "card.json").read_text())["compute"]["stages"]
    assert [u["stage"] for u in used][:5] == STAGES[:5] and all(u["hours"] is not None for u in used[:5])
    # sacct counts whole seconds: pii or merge can take 0 s here; the training stages cannot
    assert all(u["hours"] > 0 for u in used if u["stage"] in ("translate", "sft", "dpo"))
