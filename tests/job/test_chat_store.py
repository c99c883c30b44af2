"""Pretokenized chats (tokenize.chats, dfm_hpc/job/chat_store.py): the store's train and eval rows are
exactly what chat_template.chat_rows / pair_rows give for the on-the-fly split, split_turns included (several
rows per chat: split by chat); an interrupted build resumes to the same bytes, another run reuses it, a change
of template, train_reasoning, split_turns or data gives another store, and dpo after sft (the sft model's saved
copy of the tokenizer) finds the store the tokenize stage made with the base's. Packing (TRL's bfd, as sft
configures it): position ids restart at each conversation, and with sdpa and eager a conversation does not see
the one packed before it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import make_cfg, stage_ctx

pytest.importorskip("transformers")


def _cfg(**tokenize):
    return make_cfg(model={"name_or_path": "tiny:llama"}, stages=["tokenize", "sft", "dpo"],
                    sft={"dataset": "tiny:chats"}, dpo={"dataset": "tiny:chats"},
                    tokenize={"chats": True, "shards": 3, "batch_docs": 16, **tokenize})


def _run(root: Path) -> Path:
    run = root / "runs" / "x" / "run"
    run.mkdir(parents=True, exist_ok=True)
    return run


def _build(run: Path, cfg, stop_after=None):
    from dfm_hpc.job import chat_store

    ctx = stage_ctx(run, "tokenize")
    calls = []
    ctx.should_stop = lambda: calls.append(1) or (stop_after is not None and len(calls) > stop_after)
    return {p["kind"]: p for p in chat_store.build(cfg, ctx, 0, 1)}


def _same_rows_as_on_the_fly(cfg, run, kind):
    """The store's (train, eval) rows == chat_rows / pair_rows of data.split's chats; returns the stored parts."""
    from dfm_hpc.job import chat_store, chat_template, data

    ctx = stage_ctx(run, kind)
    tok = chat_store.tokenizer_for(cfg, ctx, kind)
    stored = chat_store.load(cfg, ctx, kind, tok)
    fly = data.split(data.load_chats(cfg[kind].dataset, ctx, kind))
    rows = chat_template.chat_rows if kind == "sft" else chat_template.pair_rows
    for part, chats in zip(stored, fly):
        want = rows(chats, tok, cfg[kind])
        assert part.column_names == list(chat_store.COLUMNS[kind]) and len(part) == len(want) > 0
        assert all(list(part[c]) == list(want[c]) for c in chat_store.COLUMNS[kind])
    return stored


def test_the_store_is_what_chat_rows_gives_on_each_split(tmp_path):
    cfg, run = _cfg(), _run(tmp_path)
    plans = _build(run, cfg)
    train, ev = _same_rows_as_on_the_fly(cfg, run, "sft")
    assert len(train) + len(ev) == 200 and 1 in train[0]["assistant_masks"]  # one row per chat
    _same_rows_as_on_the_fly(cfg, run, "dpo")
    m = json.loads((Path(plans["sft"]["store"]) / "manifest.json").read_text())
    assert m["format"] == "dfm_hpc-chat-store/2" and m["documents"] == 200 and m["kind"] == "sft"
    assert m["tokens"] == sum(len(x) for p in (train, ev) for x in p["input_ids"]) and 0 < m["trained"] < m["tokens"]


def _multi_turn(path: Path, n: int = 40) -> str:
    """n chats of 1 to 3 assistant turns (some with reasoning), as JSONL: Qwen3.5's template drops an earlier
    turn's <think>, so only split_turns renders them."""
    rows = []
    for i in range(n):
        msgs = [{"role": "system", "content": "Svar kort."}] if i % 4 == 0 else []
        for t in range(1 + i % 3):
            msgs += [{"role": "user", "content": f"Spørgsmål {i}.{t}: hvad er {i * 7 + t}?"},
                     {"role": "assistant", "content": f"Det er {i * 7 + t}.",
                      **({"reasoning_content": "Jeg tænker."} if (i + t) % 2 else {})}]
        rows.append({"messages": msgs})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return str(path)


def test_split_turns_stores_a_row_per_turn_split_by_chat_on_qwen3_5(tmp_path):
    from dfm_hpc.job import chat_store
    from dfm_hpc.job.chat_template import TemplateSplitError
    from dfm_hpc.tiny.tokenizers import build_family_tokenizer

    build_family_tokenizer("qwen3_5", 512, 2048).save_pretrained(str(tmp_path / "qwen3_5"))
    chats = _multi_turn(tmp_path / "multi.jsonl")

    def cfg(split: bool):
        return make_cfg(model={"name_or_path": str(tmp_path / "qwen3_5")}, stages=["tokenize", "sft"],
                        sft={"dataset": chats, "split_turns": split}, tokenize={"chats": True, "shards": 3})

    on, off = cfg(True), cfg(False)
    run = _run(tmp_path)
    plans = _build(run, on)
    train, ev = _same_rows_as_on_the_fly(on, run, "sft")
    assert len(train) + len(ev) == 79  # 40 chats of 1, 2 or 3 turns (14, 13, 13)
    m = json.loads((Path(plans["sft"]["store"]) / "manifest.json").read_text())
    assert m["split_turns"] is True and sum(s["chats"] for s in m["shards"]) == 40 and m["documents"] == 79
    ctx = stage_ctx(run, "sft")
    tok = chat_store.tokenizer_for(on, ctx, "sft")
    assert chat_store.locate(off, ctx, tok, "sft")["store"] != plans["sft"]["store"]
    with pytest.raises(TemplateSplitError, match="split_turns"):  # whole multi-turn Qwen chats: refused
        _build(_run(tmp_path / "off"), off)


def test_dpo_after_sft_finds_the_store_through_the_saved_tokenizer(tmp_path):
    """[tokenize, sft, dpo]: tokenize renders dpo's pairs with the base tokenizer; dpo loads the copy sft saved
    (stages/sft/model, template kept): the same key, so the same store."""
    from transformers import AutoTokenizer

    from dfm_hpc.job import chat_store, chat_template
    from dfm_hpc.rundir import stage_dir
    from dfm_hpc.tiny.tokenizers import build_family_tokenizer

    for family in ("qwen3_5", "mistral", "llama3"):  # mistral has no template: the managed one, saved by sft
        base = chat_template.ensure(build_family_tokenizer(family, 512, 2048), "auto", log=lambda _: None)
        base.save_pretrained(str(tmp_path / family))
        saved = chat_template.ensure(AutoTokenizer.from_pretrained(str(tmp_path / family)), "auto", log=lambda _: None)
        assert chat_store.tokenizer_key(saved) == chat_store.tokenizer_key(base), family
        assert chat_store.template_hash(saved) == chat_store.template_hash(base), family
    base.add_special_tokens({"additional_special_tokens": ["<|ny|>"]})  # what matters does change the key
    assert chat_store.tokenizer_key(base) != chat_store.tokenizer_key(saved)
    cfg, run = _cfg(), _run(tmp_path / "run")
    plans = _build(run, cfg)
    sft_model = stage_dir(run, "sft") / "model"
    chat_store.tokenizer_for(cfg, stage_ctx(run, "sft"), "sft").save_pretrained(str(sft_model))  # as sft saves it
    tok = chat_template.ensure(AutoTokenizer.from_pretrained(str(sft_model)), "auto", log=lambda _: None)
    assert chat_store.locate(cfg, stage_ctx(run, "dpo"), tok, "dpo")["store"] == plans["dpo"]["store"]
    assert chat_store.load(cfg, stage_ctx(run, "dpo"), "dpo", tok) is not None


def test_an_interrupted_build_resumes_to_the_same_store_and_is_reused(tmp_path):
    from dfm_hpc.job import chat_store
    from dfm_hpc.job.rank import Preempted

    cfg = _cfg()
    clean = _build(_run(tmp_path / "clean"), cfg)
    cut_run = _run(tmp_path / "cut")
    with pytest.raises(Preempted):  # stopped inside a shard
        _build(cut_run, cfg, stop_after=5)
    done = list((tmp_path / "cut" / "runs").glob("chats-*/shard-*.done"))
    assert 0 < len(done) < 6 and not list((tmp_path / "cut" / "runs").glob("chats-*/manifest.json"))
    cut = _build(cut_run, cfg)  # the rerun
    for kind in ("sft", "dpo"):
        a, b = Path(clean[kind]["store"]), Path(cut[kind]["store"])
        assert a.name == b.name and not list(b.glob("*.tmp"))
        for f in sorted(x.name for x in a.iterdir() if x.suffix in (".arrow", ".done")):
            assert (a / f).read_bytes() == (b / f).read_bytes(), f
    again = _build(_run(tmp_path / "clean"), cfg)  # the manifests are there: nothing to do
    assert all("shards" not in p for p in again.values())
    assert again["sft"]["store"] == clean["sft"]["store"]
    # another template or train_reasoning is another store; tokenize.chats off or no sft stage: none
    ctx = stage_ctx(_run(tmp_path / "clean"), "sft")
    tok = chat_store.tokenizer_for(cfg, ctx, "sft")
    other = make_cfg(model={"name_or_path": "tiny:llama"}, stages=["tokenize", "sft"],
                     sft={"dataset": "tiny:chats", "train_reasoning": True}, tokenize={"chats": True})
    assert chat_store.locate(other, ctx, tok, "sft")["store"] != clean["sft"]["store"]
    assert chat_store.load(other, ctx, "sft", tok) is None  # no such store yet: on the fly
    tok.chat_template = tok.chat_template + " "
    assert chat_store.locate(cfg, ctx, tok, "sft")["store"] != clean["sft"]["store"]
    assert chat_store.load(_cfg(), ctx, "sft", tok) is None
    off = make_cfg(model={"name_or_path": "tiny:llama"}, stages=["tokenize", "sft"], sft={"dataset": "tiny:chats"})
    assert chat_store.kinds(off) == [] and chat_store.load(off, ctx, "sft", tok) is None


def _conversations(tok):
    msgs = [[{"role": "user", "content": f"Hvad er {w}?"}, {"role": "assistant", "content": f"{w} er et ord."}]
            for w in ("hus", "sol og vind", "en meget lang sætning om ingenting")]
    out = [tok.apply_chat_template(m, tokenize=True, return_dict=True)["input_ids"] for m in msgs]
    return [{"input_ids": ids, "assistant_masks": [0] * (len(ids) // 2) + [1] * (len(ids) - len(ids) // 2)}
            for ids in out]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_a_packed_row_restarts_positions_and_keeps_conversations_apart(tmp_path, attn):
    """Rows as chat_store.load gives them, through SFTTrainer as the sft stage packs (bfd, padding-free):
    the position ids restart at each conversation, and each conversation's logits in the packed row are
    its logits alone. transformers 5.24 builds a block-diagonal causal mask from restarting position ids
    for sdpa/eager/flex (masking_utils.find_packed_sequence_indices) only without a KV cache:
    SFTTrainer.compute_loss passes use_cache=False; with a cache the conversations see each other."""
    import datasets
    import torch
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dfm_hpc import tiny

    path = tiny.resolve("tiny:llama", tmp_path / "cache")
    tok = AutoTokenizer.from_pretrained(path)
    rows = _conversations(tok)
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn)
    args = trl.SFTConfig(output_dir=str(tmp_path / "out"), max_steps=1, report_to=[], use_cpu=True, bf16=False,
                         per_device_train_batch_size=1, max_length=512, packing=True, save_strategy="no")
    t = trl.SFTTrainer(model=model, args=args, processing_class=tok, train_dataset=datasets.Dataset.from_list(rows))
    batch = next(iter(t.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch  # one packed row, padding-free
    pos, ids = batch["position_ids"][0].tolist(), batch["input_ids"][0].tolist()
    starts = [i for i, p in enumerate(pos) if p == 0]
    lengths = [b - a for a, b in zip(starts, starts[1:] + [len(pos)])]
    assert sorted(lengths) == sorted(len(r["input_ids"]) for r in rows)  # one restart per conversation
    model.eval()
    with torch.no_grad():
        _, out = t.compute_loss(model, dict(batch), return_outputs=True)
        cached = model(**batch, use_cache=True).logits[0]
        for a, n in zip(starts, lengths):
            assert pos[a:a + n] == list(range(n))
            assert any(ids[a:a + n] == r["input_ids"] for r in rows)  # each conversation whole
            assert int(batch["labels"][0, a]) == -100  # nothing trained across the boundary
            alone = model(torch.tensor([ids[a:a + n]])).logits[0]
            assert torch.allclose(out.logits[0, a:a + n], alone, atol=1e-5)
        later = starts[-1]  # the check would see cross-attention: with a KV cache the mask is plain causal
        assert not torch.allclose(cached[later:], out.logits[0, later:], atol=1e-3)
