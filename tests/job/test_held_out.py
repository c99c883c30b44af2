"""Honest held-out numbers (job/held_out.py, data.split, store.Store.split): a held-out loss over no token is
"no held-out tokens" with the reason, never 0.0 / perplexity 1.0, and the splits hold out something that
can be scored when the data has it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("datasets")

CONV = [{"role": "system", "content": "Du er en hjælpsom assistent."},
        {"role": "user", "content": "Hvad er Danmarks hovedstad?"},
        {"role": "assistant", "content": "København."}]


def test_a_loss_over_no_token_is_none():
    from dfm_hpc.job import held_out

    assert held_out.loss(0.0) is None and held_out.loss(float("nan")) is None and held_out.loss(None) is None
    assert held_out.loss(1.25) == 1.25
    # no held-out set: no evaluation at all, and the reason is kept
    r = held_out.results(SimpleNamespace(eval_dataset=None), ("eval_loss",), "no held-out chats")
    assert r == {"eval_loss": None, "eval_perplexity": None, "eval_note": "no held-out tokens: no held-out chats"}


def test_the_split_holds_out_a_chat_that_trains():
    """The demo's case: the one held-out chat's prompt fills sft.seq_len, so its loss was over nothing (0.0). A
    chat that trains within seq_len takes its place; the untrainable one goes to train (where it is dropped)."""
    import datasets

    from dfm_hpc.job import chat_template, data
    from dfm_hpc.schema import SftStage
    from dfm_hpc.tiny.tokenizers import build_family_tokenizer

    t = build_family_tokenizer("llama3", 512, 2048)
    (r,) = chat_template.chat_samples(t, CONV)
    st = SftStage(seq_len=r.mask.index(1) + 5)  # the short chat trains within it, the long one does not
    long = [{"role": "system", "content": " ".join(["Du er en hjælpsom assistent."] * 40)}] + CONV[1:]
    plain = data.split(datasets.Dataset.from_dict({"i": list(range(20))}))
    held = plain[1]["i"][0]  # the chat data.split holds out of 20 (5 %: one)
    short = [j for j in range(20) if j != held][:3]
    ds = datasets.Dataset.from_list([{"messages": CONV if i in short else long} for i in range(20)])
    trains = [chat_template.trains(t, ds[i], st) for i in range(20)]
    assert [i for i, x in enumerate(trains) if x] == short

    train, ev = data.split(ds, trained=lambda i: trains[i])
    assert len(ev) == 1 and ev[0]["messages"] == CONV and len(train) == 19
    assert sum(r["messages"] == CONV for r in train) == 2
    # without the predicate (dpo, evaluate): the split as before, ds.train_test_split's
    train, ev = data.split(ds)
    assert ev[0]["messages"] == long
    # one chat trains: training keeps it, and there is no held-out loss (reported as such)
    train, ev = data.split(ds, trained=lambda i: i == short[0])
    assert ev[0]["messages"] == long


class WordIds:
    eos_token_id = 1

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[int(w) for w in t.split()] for t in texts]}


def test_cpt_holds_out_documents_until_they_fill_a_block(tmp_path):
    """Short last documents: the held-out documents grow until they hold one block of seq_len tokens (the
    train part keeps the rest); eval_fraction's share when that already fills one."""
    import datasets

    from dfm_hpc.job import store

    docs = [" ".join(["7"] * 200)] + [" ".join(["5"] * 9)] * 10  # 201 tokens, then 10 x 10 (EOS included)
    path = tmp_path / "s"
    path.mkdir()
    store.write_shard(path, 0, datasets.Dataset.from_dict({"text": docs}), WordIds(), np.dtype("<u2"), 500,
                      lambda: False)
    store.finish(path, {"dtype": "<u2", "source": str(path)}, 1)
    s = store.Store(path)
    assert s.split(0.05) == ((0, 291), (291, 301), 1)  # before: 10 tokens held out, no 64-token block
    (a, b), (c, d), n = s.split(0.05, min_tokens=64)
    assert (n, d - c, b) == (7, 70, 231) and len(store.Blocks([(s, c, d)], 64)) == 1
    assert s.split(0.05, min_tokens=10_000)[2] == 10  # never the whole corpus: one document trains
    assert s.split(0.9, min_tokens=64)[2] == 9  # eval_fraction already holds a block
