"""The token store's writer (issue #24): the ids it stores are the tokenizer's own call's, on Mistral-7B's real
tokenizer and real Danish text, with one thread or several (the next batch encoded while one is written),
whatever truncation the tokenizer's backend carries; a tokenizer class with its own call keeps it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO

pytest.importorskip("transformers")
DDT = REPO / "bench" / "data" / "pii" / "ddt_sentences.txt"


def _rows(tmp: Path, docs):
    from dfm_hpc.job import store

    path = tmp / "c.jsonl"
    path.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs))
    return store.load_rows(str(path))


def _ddt_docs():
    sents = DDT.read_text().splitlines()
    docs = [" ".join(sents[i:i + 7]) for i in range(0, len(sents), 7)]
    return docs[:40] + ["", "   "] + docs[40:]  # blank documents are skipped


def _write(d: Path, rows, tok, threads: int, batch: int = 16, dtype=None):
    from dfm_hpc.job import store

    d.mkdir()
    info = store.write_shard(d, 0, rows, tok, dtype or store.dtype_for(len(tok)), batch, lambda: False, threads)
    return info, (d / "shard-00000.bin").read_bytes(), (d / "shard-00000.idx.npy").read_bytes()


def _expected(tok, docs):
    ids = tok([t for t in docs if t.strip()], add_special_tokens=False)["input_ids"]
    return [x for doc in ids for x in doc + [tok.eos_token_id]], np.cumsum([len(x) + 1 for x in ids])


def test_mistral_7b_store_holds_the_tokenizers_own_ids_on_one_or_more_threads(tmp_path):
    from helpers.mistral import mistral_7b_tokenizer

    tok = mistral_7b_tokenizer()
    docs = _ddt_docs()
    rows = _rows(tmp_path, docs)
    want, ends = _expected(tok, docs)
    one = _write(tmp_path / "one", rows, tok, threads=1)
    two = _write(tmp_path / "two", rows, tok, threads=2)
    assert one[1:] == two[1:] and one[0] == two[0]  # the same bytes, either way
    assert np.frombuffer(one[1], dtype="<u2").tolist() == want and len(want) > 20_000
    assert np.array_equal(np.load(tmp_path / "one" / "shard-00000.idx.npy"), ends)
    assert one[0]["documents"] == len(ends) and one[0]["tokens"] == len(want)
    from dfm_hpc.job import store

    assert one[0]["sha256"] == store.file_sha256(tmp_path / "one" / "shard-00000.bin")  # hashed as written


def test_a_backend_set_to_truncate_still_stores_whole_documents(tmp_path):
    from transformers import AutoTokenizer

    from dfm_hpc import tiny

    tok = AutoTokenizer.from_pretrained(tiny.resolve("tiny:llama", tmp_path / "cache"))
    docs = _ddt_docs()
    want, _ = _expected(tok, docs)
    tok.backend_tokenizer.enable_truncation(8)  # as a tokenizer.json can carry it
    from tokenizers import Encoding

    from dfm_hpc.job import store

    encode, _ = store.encoder(tok, docs[:4])
    assert isinstance(encode(docs[:1])[0], Encoding)  # still the backend's own encode, without the truncation
    info, data, _ = _write(tmp_path / "s", _rows(tmp_path, docs), tok, threads=2)
    assert np.frombuffer(data, dtype="<u2").tolist() == want and info["tokens"] > 8 * info["documents"]
    _, wide, _ = _write(tmp_path / "u4", _rows(tmp_path, docs), tok, threads=1, dtype=np.dtype("<u4"))
    assert np.frombuffer(wide, dtype="<u4").tolist() == want  # a vocabulary of 65,536 or more


def test_a_tokenizer_class_with_its_own_call_keeps_it(tmp_path):
    """A class whose call differs from its backend's encode (here: lower-cases first) is tokenized by its call."""
    from transformers import AutoTokenizer

    from dfm_hpc import tiny

    base = AutoTokenizer.from_pretrained(tiny.resolve("tiny:llama", tmp_path / "cache"))

    class Lower(type(base)):
        def __call__(self, text, *a, **kw):
            return super().__call__([t.lower() for t in text], *a, **kw)

    tok = Lower.from_pretrained(tiny.resolve("tiny:llama", tmp_path / "cache"))
    docs = _ddt_docs()
    want, _ = _expected(tok, docs)
    assert want != _expected(base, docs)[0]  # the test's premise: the call differs from the backend's
    _, data, _ = _write(tmp_path / "s", _rows(tmp_path, docs), tok, threads=2)
    assert np.frombuffer(data, dtype="<u2").tolist() == want
