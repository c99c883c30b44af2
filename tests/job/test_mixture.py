"""Weighted mixtures of token stores: realised proportions, determinism, upsampling limits, budgets;
and a 2-source mixture through the cpt and card stages."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from helpers import LUMI, dfm, make_cfg, run_dirs

pytest.importorskip("datasets")


class WordIds:
    """A stand-in tokenizer: a document of integers is its own token ids."""

    eos_token_id = 1

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[int(w) for w in t.split()] for t in texts]}


def _store(path, lo, hi, n_tokens, shards=2, seed=0):
    """A store whose tokens (EOS aside) are all in [lo, hi): a block tells which source it came from."""
    import datasets

    from dfm_hpc.job import store

    rng = random.Random(seed)
    docs, n = [], 0
    while n < n_tokens:
        k = rng.randint(20, 200)
        docs.append(" ".join(str(rng.randrange(lo, hi)) for _ in range(k)))
        n += k + 1
    rows = datasets.Dataset.from_dict({"text": docs})
    path.mkdir(parents=True)
    for s, r in enumerate(store.shard_ranges(len(rows), shards)):
        store.write_shard(path, s, rows.select(r), WordIds(), np.dtype("<u2"), 500, lambda: False)
    store.finish(path, {"dtype": "<u2", "source": str(path)}, shards)
    return store.Store(path)


def _source_of(block):
    b = block[block != WordIds.eos_token_id]
    return int(b[0]) // 1000  # source k's tokens are in [1000 k, 1000 k + 1000)


def test_three_sources_on_a_million_tokens_hit_their_weights(tmp_path):
    from dfm_hpc.job import mixture, store

    seq, total = 64, 1_000_000 // 64
    stores = [_store(tmp_path / "a", 10, 1000, 400_000, seed=1), _store(tmp_path / "b", 1000, 2000, 330_000, seed=2),
              _store(tmp_path / "c", 2000, 3000, 60_000, seed=3)]
    specs = [{"name": "a", "source": "a", "weight": 6, "epochs": 2}, {"name": "b", "source": "b", "weight": 3},
             {"name": "c", "source": "c", "weight": 1, "epochs": 3}]
    parts = [(s, *s.split(0.01)[0]) for s in stores]
    available = [(b - a) // seq for _, a, b in parts]
    order, counts = mixture.order(specs, available, total, seq, seed=0)
    assert len(order) == total == sum(counts)
    blocks = store.Blocks(parts, seq, order=order)
    got = np.bincount([_source_of(blocks[i]["input_ids"].numpy()) for i in range(len(blocks))], minlength=3)
    share = got / got.sum()
    print("realised shares", share)
    for s, w in zip(share, (0.6, 0.3, 0.1)):
        assert abs(s - w) <= 0.01 * w, share
    head = np.bincount([_source_of(blocks[i]["input_ids"].numpy()) for i in range(1000)], minlength=3) / 1000
    assert np.allclose(head, (0.6, 0.3, 0.1), atol=0.05), head  # interleaved, not one source after another
    # upsampled sources repeat whole epochs before any block repeats a third time; no block is lost
    a = order[np.isin(order, np.arange(available[0]))]
    assert np.bincount(a, minlength=available[0]).max() == 2 and len(np.unique(a)) == available[0]
    rows = mixture.realised(specs, counts, available, seq)
    assert [round(r["target_share"], 6) for r in rows] == [0.6, 0.3, 0.1]
    assert rows[2]["epochs"] > 1 and rows[1]["epochs"] <= 1
    # deterministic from the seed; another seed, another order
    assert np.array_equal(order, mixture.order(specs, available, total, seq, seed=0)[0])
    assert not np.array_equal(order, mixture.order(specs, available, total, seq, seed=1)[0])


def test_budgets_and_the_epoch_limit():
    from dfm_hpc.job import mixture

    specs = [{"name": "da", "source": "da", "weight": 1.0}, {"name": "en", "source": "en", "tokens": 64 * 100}]
    assert mixture.allocate(specs, [10_000, 10_000], 1000, 64) == [900, 100]
    with pytest.raises(mixture.MixtureError, match="epochs"):
        mixture.allocate([{"name": "small", "source": "s", "weight": 1.0, "epochs": 1.0}], [99], 100, 64)
    with pytest.raises(mixture.MixtureError, match="exceed"):
        mixture.allocate(specs, [10_000, 10_000], 50, 64)


@pytest.mark.e2e
def test_mixture_trains_and_is_carded(tmp_path):
    """Two sources through cpt and card: the order's realised shares go to data/mixture.json and the
    card's datasheet; eval holds out each source's last documents."""
    pytest.importorskip("deepspeed")
    from huggingface_hub import DatasetCard

    other = tmp_path / "other.jsonl"
    with open(other, "w") as f:
        for i in range(200):
            f.write(json.dumps({"text": f"Dokument {i} handler om vejret i Aarhus og om havnen."}) + "\n")
    mix = f'data.mixture=[{{source:"tiny:corpus",weight:3,name:gigaword}},{{source:"{other}",weight:1,epochs:4}}]'
    p = dfm("+experiment=cpt_tiny", "stages=[cpt,card]", mix, "cpt.max_steps=8", cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    m = json.loads((run / "stages" / "cpt" / "data" / "mixture.json").read_text())
    assert m["blocks"] == 8 * 8 and [r["blocks"] for r in m["sources"]] == [48, 16]
    assert [r["share"] for r in m["sources"]] == [0.75, 0.25]
    log = (run / "stages" / "cpt" / "logs" / "rank-0.log").read_text()
    assert "mixture: gigaword: 3,072 tokens, share 0.7500 (target 0.7500)" in log
    sheet = DatasetCard.load(run / "stages" / "card" / "datasheets" / "cpt-mixture" / "README.md")
    assert "| gigaword | `tiny:corpus` | 3.0 | - | 0.7500 | 0.7500 | 3,072 |" in sheet.text
    card = (run / "stages" / "card" / "README.md").read_text()
    assert "**CPT mixture**" in card and "`gigaword` 75.0%" in card


def test_bad_mixtures_are_refused_at_plan_time(tmp_path):
    bad = ('data.mixture=[{source:"tiny:corpus",weight:-1},{source:"/nope/x.jsonl",weight:1},'
           '{source:"tiny:corpus",weight:1,tokens:640}]')
    p = dfm("+experiment=cpt_tiny", bad, cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    out = p.stdout + p.stderr
    assert "data.mixture[0].weight=-1.0: weights must be positive" in out
    assert "data.mixture[1].source='/nope/x.jsonl' does not exist" in out
    assert "data.mixture[2] ('tiny:corpus'): give exactly one of weight" in out
    assert "two sources share a name" in out and run_dirs(tmp_path) == []
    # budgets only, short of what training consumes (30 steps x 8 x 64 = 15,360 tokens)
    p = dfm("+experiment=cpt_tiny", 'data.mixture=[{source:"tiny:corpus",tokens:6400}]', cwd=tmp_path)
    assert p.returncode == 2 and "are less than what cpt trains on (15,360)" in p.stdout + p.stderr
    p = dfm("+experiment=cpt_tiny", "stages=[cpt,tokenize]", cwd=tmp_path)
    assert p.returncode == 2 and "tokenize must come before cpt" in p.stdout + p.stderr


def test_prefetch_lists_the_mixture_and_its_subset(tmp_path):
    from dfm_hpc.login import prefetch

    cfg = make_cfg("+experiment=munin_cpt", *LUMI)
    needs = {n.key: n for n in prefetch.needs(cfg)}
    assert needs["data.mixture[2]"].repo_id == "HuggingFaceFW/fineweb-edu"
    assert needs["data.mixture[2]"].subset == "sample-10BT"
    assert "data.corpus" not in needs and needs["model.name_or_path"].kind == "model"  # the tokenizer
