"""The tokenize stage and the token store: format, manifest, resume after an interruption with the
same bytes, reuse; on 2 Slurm nodes with the pre-timeout signal; the LUMI dry run of munin_cpt."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers import LUMI, dfm, run_dirs, wait_for

pytest.importorskip("transformers")


def _corpus(path: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    words = "jeg du han hun vi de er var har kan vil skal til fra med og men hvis når der her".split()
    with open(path, "w") as f:
        for i in range(n):
            text = "" if i % 50 == 7 else " ".join(rng.choice(words) for _ in range(rng.randint(5, 40)))
            f.write(json.dumps({"text": text}) + "\n")  # some empty documents: skipped, as load_texts does
    return path


class _Ctx:
    def __init__(self, run_dir, stop_after=None):
        self.run_dir, self.stage_dir = run_dir, run_dir / "stages" / "tokenize"
        self.calls, self.stop_after = 0, stop_after
        self.rank, self.world_size, self.is_main = 0, 1, True

    def should_stop(self):
        self.calls += 1
        return self.stop_after is not None and self.calls > self.stop_after

    def log(self, msg):
        print(msg)


def _build(root: Path, corpus: Path, stop_after=None, shards=4):
    from transformers import AutoTokenizer

    from dfm_hpc import config_io, tiny
    from dfm_hpc.job import store

    run = root / "runs" / "x" / "run"
    run.mkdir(parents=True, exist_ok=True)
    cfg = config_io.typed({"data": {"corpus": str(corpus)}, "stages": ["tokenize"],
                        "tokenize": {"shards": shards, "batch_docs": 50}})
    tok = AutoTokenizer.from_pretrained(tiny.resolve("tiny:llama", root / "cache"))
    return store.build(cfg, _Ctx(run, stop_after), tok, 0, 1), tok


def test_store_format_resume_and_reuse(tmp_path):
    from dfm_hpc.job import data, store
    from dfm_hpc.job.rank import Preempted

    corpus = _corpus(tmp_path / "c.jsonl", 2000)
    (clean,), tok = _build(tmp_path / "clean", corpus)
    with pytest.raises(Preempted):  # stopped in the middle of a shard
        _build(tmp_path / "cut", corpus, stop_after=25)
    partial = sorted(p.name for p in Path(tmp_path / "cut" / "runs").glob("tokens-*/shard-*.done"))
    assert 0 < len(partial) < 4, partial  # some shards were done before the stop, not all
    (cut,), _ = _build(tmp_path / "cut", corpus)  # the resume
    a, b = Path(clean["store"]), Path(cut["store"])
    assert a.name == b.name  # content-addressed: same tokenizer, same source content
    for name in sorted(p.name for p in a.iterdir() if p.suffix in (".bin", ".npy")):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert not list(b.glob("*.tmp*"))
    m = json.loads((a / "manifest.json").read_text())
    assert m["tokenizer"] == "tiny:llama" and m["tokenizer_hash"] == store.tokenizer_hash(tok)
    assert m["dtype"] == "<u2" and m["source"] == str(corpus) and m["fingerprint"].startswith("file:sha256:")
    assert m["checksum"] == json.loads((b / "manifest.json").read_text())["checksum"] and store.verify(b)
    texts = data.load_texts(str(corpus), tmp_path / "cache")
    stream = data.token_stream(texts, tok)
    s = store.Store(a)
    assert (m["documents"], m["tokens"], s.n_docs) == (len(texts), len(stream), len(texts))
    assert s.tokens(0, s.n_tokens).tolist() == stream  # the shards, concatenated, are the whole stream
    ends = np.cumsum([len(x) + 1 for x in tok(texts, add_special_tokens=False)["input_ids"]])
    assert np.array_equal(s.doc_ends, ends)
    # a second build finds the manifest and tokenizes nothing
    (again,), _ = _build(tmp_path / "clean", corpus)
    assert "shards" not in again and again["store"] == clean["store"]
    # uint32 above 65,535 entries
    assert store.dtype_for(65_535).itemsize == 2 and store.dtype_for(65_536).itemsize == 4


@pytest.mark.e2e
def test_tokenize_stage_feeds_cpt_locally_as_an_array(tmp_path):
    """stages=[tokenize, cpt]: two array copies make the store, cpt reads it and tokenizes nothing."""
    pytest.importorskip("deepspeed")
    p = dfm("+experiment=cpt_tiny", "stages=[tokenize,cpt]", "tokenize.array=2", "tokenize.shards=3",
            "cpt.max_steps=2", cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    t = run / "stages" / "tokenize"
    assert (t / "DONE").exists() and json.loads((t / "stores.json").read_text())[0]["source"] == "tiny:corpus"
    assert "tokenized 2 of 3 shards" in (t / "logs" / "array-0-rank-0.log").read_text()
    assert "tokenized 1 of 3 shards" in (t / "logs" / "array-1-rank-0.log").read_text()
    cpt_log = (run / "stages" / "cpt" / "logs" / "rank-0.log").read_text()
    assert "tokenizing " not in cpt_log and "400 documents" in cpt_log


def test_tokenize_threads_are_the_cores_the_rank_owns():
    """A rank uses every core it is given: srun's -c for a rank that is its own Slurm task (LUMI-C small: 16),
    the node's mask shared among the ranks that share it (torchrun, the local launcher)."""
    from dfm_hpc.stages.tokenize import cores

    srun = {"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "WORLD_SIZE": "1", "SLURM_CPUS_PER_TASK": "16"}
    assert cores(srun, mask=16) == 16
    assert cores({**srun, "SLURM_CPUS_PER_TASK": "7"}, mask=128) == 7  # a mask wider than -c: -c
    assert cores({**srun, "SLURM_CPUS_PER_TASK": "16"}, mask=8) == 8  # fewer cores bound than -c: those
    torchrun = {"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "8"}
    assert cores(torchrun, mask=56) == 7
    assert cores({"LOCAL_WORLD_SIZE": "2"}, mask=2) == 1 and cores({}, mask=4) == 4 and cores({}, mask=1) == 1


def test_munin_cpt_lumi_dry_run_renders_the_tokenize_array_before_training(tmp_path):
    p = dfm("+experiment=munin_cpt", *LUMI, "dry_run=true", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    (run,) = run_dirs(tmp_path)
    tok = (run / "stages" / "tokenize" / "sbatch.sh").read_text()
    cpt = (run / "stages" / "cpt" / "sbatch.sh").read_text()
    # tokenizing needs no GPU: LUMI-C small (tests/login/test_cpu_stages.py)
    assert "#SBATCH --array=0-15%16" in tok and "#SBATCH --partition=small\n" in tok and "--gpus-per-node" not in tok
    assert "--dependency" not in tok
    assert "#SBATCH --dependency='afterok:<job id of tokenize>'" in cpt and "#SBATCH --nodes=8" in cpt
    assert "mixture (seed 0, 4,194,304,000 training tokens)" in p.stdout
    for name, share in (("gigaword", "60.0%"), ("dynaword", "30.0%"), ("english-replay", "10.0%")):
        assert any(name in ln and share in ln for ln in p.stdout.splitlines()), name


@pytest.mark.slurm
def test_tokenize_on_two_slurm_nodes_resumes_to_the_same_bytes(slurm_cluster, tmp_path):
    """Two nodes tokenize 16 shards; the pre-timeout signal stops the job mid-way, it requeues and
    finishes the missing shards; every shard equals an uninterrupted run's byte for byte. cpt then
    runs after it (afterok) from the store."""
    corpus = _corpus(tmp_path / "corpus.jsonl", 120_000)
    args = ["+experiment=cpt_tiny", "cluster=slurm", "stages=[tokenize,cpt]", f"data.corpus={corpus}",
            "tokenize.nodes=2", "tokenize.shards=16", "tokenize.batch_docs=200", "cpt.max_steps=2"]
    for d in ("clean", "stopped"):
        (tmp_path / d).mkdir()
        p = dfm(*args, cwd=tmp_path / d)
        assert p.returncode == 0, p.stdout + p.stderr
    (clean,) = run_dirs(tmp_path / "clean")
    (stopped,) = run_dirs(tmp_path / "stopped")
    t = stopped / "stages" / "tokenize"
    root = tmp_path / "stopped" / "runs"
    wait_for(lambda: list(root.glob("tokens-*/shard-*.done")), every=0.05, timeout=300, what="a first shard")
    subprocess.run(["scancel", "--signal=USR2", (t / "job_id").read_text().strip()], check=True)
    for run in (stopped, clean):
        wait_for(lambda: (run / "stages" / "cpt" / "DONE").exists() or list(run.rglob("FAILED")), timeout=600,
                 what="tokenize and cpt")
        assert not list(run.rglob("FAILED")), [f.read_text()[-2000:] for f in run.rglob("FAILED")]
    log = (t / "logs" / "rank-0.log").read_text() + (t / "logs" / "rank-1.log").read_text()
    assert "stopping for the time limit" in log and "requeue of job" in log, log[-3000:]
    # the tokenizer's threads are the job's cores (-c 1 on the test cluster's 2-CPU node), not the node's
    assert "tokenizer threads: 1 (cores this rank owns: 1)" in log, log[-3000:]
    (a,) = (tmp_path / "clean" / "runs").glob("tokens-*/manifest.json")
    (b,) = root.glob("tokens-*/manifest.json")
    names = sorted(p.name for p in a.parent.iterdir() if p.suffix in (".bin", ".npy"))
    assert len(names) == 32
    for name in names:
        assert (a.parent / name).read_bytes() == (b.parent / name).read_bytes(), name
    assert json.loads(a.read_text())["checksum"] == json.loads(b.read_text())["checksum"]
    assert "tokenizing " not in (stopped / "stages" / "cpt" / "logs" / "rank-0.log").read_text()
