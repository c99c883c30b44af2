"""prefetch: what an experiment loads from the Hub, whether the jobs' cache has it (checked against
what transformers and datasets really read offline), and validation refusing what is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from dfm_hpc.login import prefetch

from helpers import LUMI, dfm, make_cfg, run_dirs

HASH = "0123456789abcdef0123456789abcdef01234567"


def test_needs_of_the_whole_recipe():
    cfg = make_cfg("+experiment=munin_pipeline", *LUMI)
    assert [(n.kind, n.repo_id, n.key) for n in prefetch.needs(cfg)] == [
        ("model", "google/madlad400-3b-mt", "translator.name_or_path"),
        ("dataset", "OpenAssistant/oasst2", "data.oasst2"),
        ("model", "danish-foundation-models/munin-7b-alpha", "model.name_or_path"),
        # the evaluate stage's benchmarks: lm-eval's Danish tasks, EuroEval's (its own downloader)
        ("dataset", "facebook/belebele", "lm-eval belebele_dan_Latn"),
        ("dataset", "alexandrainst/m_arc", "lm-eval arc_da"),
        ("dataset", "alexandrainst/m_hellaswag", "lm-eval hellaswag_da"),
        ("dataset", "alexandrainst/m_mmlu", "lm-eval m_mmlu_da"),
        ("dataset", "alexandrainst/m_truthfulqa", "lm-eval truthfulqa_da_mc1"),
        ("euroeval", "EuroEval Danish", "evaluate.euroeval")]
    assert str(prefetch.hf_home(cfg)) == "/scratch/project_465000670/hf-cache"  # the jobs' HF_HOME
    assert prefetch.needs(make_cfg("+experiment=pipeline_tiny")) == []  # tiny:* and local only


def _hub_model(home, repo):
    """A model in the hub cache layout (refs/main -> snapshots/<hash>/), as snapshot_download leaves it."""
    from dfm_hpc import tiny

    src = tiny.resolve("tiny:llama", home / "build")
    d = home / "hub" / f"models--{repo.replace('/', '--')}"
    shutil.copytree(src, d / "snapshots" / HASH)
    (d / "refs").mkdir()
    (d / "refs" / "main").write_text(HASH)


def _prepared_dataset(home, repo):
    """A dataset as an online load_dataset(repo) leaves it in the datasets cache (prepared Arrow)."""
    code = f"""
import datasets, glob, os, shutil
import pyarrow as pa, pyarrow.parquet as pq
pq.write_table(pa.table({{"text": ["Hej med dig.", "Efter en kommer to."]}}), "{home}/x.parquet")
ds = datasets.load_dataset("parquet", data_files="{home}/x.parquet", split="train")
src = os.path.dirname(ds.cache_files[0]["filename"])
org, name = "{repo}".split("/")
snake = "{prefetch._snake(repo.split('/')[1])}"
dst = os.path.join("{home}", "datasets", org + "___" + snake, "default", "0.0.0", os.path.basename(src))
shutil.copytree(src, dst)
os.rename(os.path.join(dst, "parquet-train.arrow"), os.path.join(dst, snake + "-train.arrow"))
"""
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "HF_HOME": str(home)})


def test_cache_check_matches_what_offline_loading_reads(tmp_path):
    pytest.importorskip("datasets")
    from datasets.naming import camelcase_to_snakecase

    for name in ("TinySet", "oasst2", "danish-gigaword", "OpenAssistantV2Data"):
        assert prefetch._snake(name) == camelcase_to_snakecase(name)
    home = tmp_path / "hf"
    _hub_model(home, "testorg/tiny-llama")
    _prepared_dataset(home, "testorg/TinySet")
    args = ["+experiment=sft_tiny", "stages=[evaluate]", "model.name_or_path=testorg/tiny-llama",
            "data.eval_text=testorg/TinySet", f"+cluster.env.HF_HOME={home}"]
    cfg = make_cfg(*args)
    assert [n.repo_id for n in prefetch.needs(cfg)] == ["testorg/tiny-llama", "testorg/TinySet"]
    assert prefetch.missing(cfg) == []
    # ...and that is exactly what transformers and datasets find with the hub out of reach
    load = ("from transformers import AutoConfig; import datasets;"
            "print(AutoConfig.from_pretrained('testorg/tiny-llama').model_type,"
            " datasets.load_dataset('testorg/TinySet', split='train')['text'][0])")
    out = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True,
                         env={**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert out.returncode == 0 and out.stdout.split() == ["llama", "Hej", "med", "dig."], out.stderr[-2000:]
    other = make_cfg(*args[:-1], f"+cluster.env.HF_HOME={tmp_path / 'empty'}")
    assert [n.repo_id for n in prefetch.missing(other)] == ["testorg/tiny-llama", "testorg/TinySet"]
    pinned = make_cfg("+experiment=oasst2_translate_tiny", "translator.name_or_path=testorg/tiny-llama",
                      f"translator.revision={HASH}", f"+cluster.env.HF_HOME={home}")
    assert prefetch.missing(pinned) == []
    wrong = make_cfg("+experiment=oasst2_translate_tiny", "translator.name_or_path=testorg/tiny-llama",
                     "translator.revision=v2", f"+cluster.env.HF_HOME={home}")
    assert [n.repo_id for n in prefetch.missing(wrong)] == ["testorg/tiny-llama"]


def test_prefetch_cli_lists_and_reports_what_it_could_not_fetch(tmp_path):
    home = tmp_path / "hf"
    _hub_model(home, "testorg/tiny-llama")
    base = ["prefetch", "+experiment=sft_tiny", "stages=[sft]", f"+cluster.env.HF_HOME={home}"]
    p = dfm(*base, "model.name_or_path=testorg/tiny-llama", cwd=tmp_path)
    assert p.returncode == 0 and "everything is cached" in p.stdout, p.stdout + p.stderr
    # no hub here: the download fails at once and says so; nothing is left half-done
    p = dfm(*base, "model.name_or_path=testorg/not-there", "--download", cwd=tmp_path,
            env={"HF_ENDPOINT": "http://127.0.0.1:9"})
    assert p.returncode == 1 and "failed: model testorg/not-there" in p.stdout and "1 still missing" in p.stdout
    assert run_dirs(tmp_path) == []


def test_offline_jobs_are_refused_what_is_not_cached(tmp_path):
    """On the cluster's own machine (check_paths), with HF_HUB_OFFLINE=1 in the jobs' env: a model
    missing from their cache is a login-node error that names the prefetch command."""
    p = dfm("+experiment=munin_sft", *LUMI, "cluster.check_paths=true", f"cluster.env.HF_HOME={tmp_path}",
            "sft.dataset=OpenAssistant/oasst2", cwd=tmp_path)
    assert p.returncode == 2 and run_dirs(tmp_path) == []
    assert "model danish-foundation-models/munin-7b-alpha (model.name_or_path)" in p.stderr
    assert "python -m dfm_hpc prefetch <the same arguments> --download" in p.stderr
    p = dfm("+experiment=munin_sft", *LUMI, "cluster.check_paths=true", f"cluster.env.HF_HOME={tmp_path}",
            "dry_run=true", cwd=tmp_path)  # a dry run only shows the plan: no cache needed
    assert "Hugging Face cache" not in p.stderr
