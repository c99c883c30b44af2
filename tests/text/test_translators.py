"""Tiny models (dfm_hpc.tiny) and the translation backends (dfm_hpc.text.translators), on CPU.

The tiny models are built once per module in a temp dir (a few seconds, mostly imports); every
test after that runs in well under a second or two.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

from dfm_hpc import tiny  # noqa: E402
from dfm_hpc.text.translators import (  # noqa: E402
    CT2Translator,
    HFTranslator,
    fixed_batches,
    make_batches,
    make_translator,
    padding_efficiency,
)

TEXTS = [
    "Hello, how are you today?",
    "Can you explain how photosynthesis works in simple terms?",
    "Thanks!",
    "The train to Aarhus leaves at 7:15 and arrives a little after ten o'clock, if it is on time.",
    "Why is the sky blue?",
    "Write a short poem about the sea on a windy autumn morning, with gulls and grey waves.",
    "Ok",
    "Blåbær og æbleskiver på Ærø.",
    "How do I reverse a list in Python without modifying the original?",
    "Tell me a joke.",
    "I have a job interview tomorrow. Do you have any tips about what to prepare and what to ask?",
    "Yes.",
]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """On a busy 2-core CI box torch's spinning worker threads made generate() ~30x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="module")
def t5_path(cache):
    return tiny.resolve("tiny:t5", cache)


@pytest.fixture(scope="module")
def llama_path(cache):
    return tiny.resolve("tiny:llama", cache)


@pytest.fixture(scope="module")
def hf(t5_path):
    return HFTranslator(t5_path, target_lang="da")


@pytest.fixture(scope="module")
def ct2(t5_path, cache):
    pytest.importorskip("ctranslate2")
    return make_translator("ctranslate2", t5_path, cache_dir=cache, intra_threads=1)


# --- tiny models --------------------------------------------------------------------------------

def test_resolve_builds_once_and_passes_other_names_through(t5_path, cache):
    assert t5_path == str(cache / "tiny-t5")
    stamp = (cache / "tiny-t5" / "model.safetensors").stat().st_mtime_ns
    assert tiny.resolve("tiny:t5", cache) == t5_path
    assert (cache / "tiny-t5" / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert tiny.resolve("google/madlad400-3b-mt", cache) == "google/madlad400-3b-mt"
    assert tiny.resolve("/some/local/model", cache) == "/some/local/model"
    with pytest.raises(ValueError, match="unknown tiny model"):
        tiny.resolve("tiny:gpt9", cache)
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp dirs left behind


def test_resolve_race_keeps_the_winner(tmp_path, monkeypatch):
    """Two processes building at once: the loser's os.replace fails, it keeps the winner's dir."""
    def build_while_another_process_wins(out):
        winner = tmp_path / "tiny-t5"
        winner.mkdir()
        (winner / "tiny_model.json").write_text('{"winner": true}')
        (out / "tiny_model.json").write_text('{"winner": false}')
        return out

    monkeypatch.setitem(tiny.BUILDERS, "t5", build_while_another_process_wins)
    assert tiny.resolve("tiny:t5", tmp_path) == str(tmp_path / "tiny-t5")
    assert json.loads((tmp_path / "tiny-t5" / "tiny_model.json").read_text()) == {"winner": True}
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-t5"]  # the loser's temp dir is gone


def test_t5_tokenizer_has_lang_tokens_as_single_ids(t5_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(t5_path)
    assert len(tok) == 1000
    ids = [tok.convert_tokens_to_ids(t) for t in tiny.LANG_TOKENS]
    assert len(set(ids)) == len(ids) and tok.unk_token_id not in ids
    for t, i in zip(tiny.LANG_TOKENS, ids):
        assert tok(t, add_special_tokens=False).input_ids == [i]
        assert tok(f"{t} Hello there").input_ids[0] == i
        assert tok(f"{t}Hello").input_ids[0] == i
    # MADLAD's layout: decoder start 0 (<unk>), pad 1, eos 2; eos appended to every source
    assert (tok.unk_token_id, tok.pad_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok("Hej").input_ids[-1] == 2
    text = "Blåbær, rødgrød med fløde og smørrebrød i Århus."
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text


def test_t5_round_trip_and_madlad_conventions(t5_path):
    import torch
    from transformers import T5ForConditionalGeneration

    cfg = json.loads((Path(t5_path) / "config.json").read_text())
    assert (cfg["decoder_start_token_id"], cfg["pad_token_id"], cfg["eos_token_id"]) == (0, 1, 2)
    assert cfg["feed_forward_proj"] == "gated-gelu" and cfg["tie_word_embeddings"] is False
    a = T5ForConditionalGeneration.from_pretrained(t5_path).eval()
    b = T5ForConditionalGeneration.from_pretrained(t5_path).eval()
    # untied lm_head (as MADLAD), encoder/decoder embeddings shared
    assert a.lm_head.weight.data_ptr() != a.shared.weight.data_ptr()
    assert not torch.equal(a.lm_head.weight, a.shared.weight)
    ids = torch.tensor([[3, 40, 41, 42, 2]])
    dec = torch.tensor([[0, 50, 51]])
    with torch.inference_mode():
        la = a(input_ids=ids, decoder_input_ids=dec).logits
        lb = b(input_ids=ids, decoder_input_ids=dec).logits
    assert torch.equal(la, lb)


def test_builds_are_deterministic(tmp_path, t5_path):
    import hashlib

    def digest(d):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}

    again = tiny.build_tiny_t5(tmp_path / "again")
    assert digest(again) == digest(Path(t5_path))
    other = tiny.build_tiny_t5(tmp_path / "seed1", seed=1)
    d_other = digest(other)
    assert d_other["model.safetensors"] != digest(again)["model.safetensors"]
    assert d_other["tokenizer.json"] == digest(again)["tokenizer.json"]


def test_tiny_llama_chat_template_and_danish(llama_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(llama_path)
    model = AutoModelForCausalLM.from_pretrained(llama_path)
    assert None not in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3
    assert model.config.vocab_size == len(tok)
    conv = [
        {"role": "system", "content": "Du er en hjælpsom assistent."},
        {"role": "user", "content": "Hvad er Danmarks hovedstad?"},
        {"role": "assistant", "content": "København – med Ørestad og Amager."},
    ]
    text = tok.apply_chat_template(conv, tokenize=False)
    assert text.startswith(tok.bos_token)
    assert text.count("<|im_start|>") == 3 and text.count("<|im_end|>") == 3
    for m in conv:
        assert f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>" in text
    prompt = tok.apply_chat_template(conv[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    # {% generation %} markers: the assistant mask covers exactly the answer and its <|im_end|>
    enc = tok.apply_chat_template(conv, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    answer = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert tok.decode(answer) == conv[2]["content"] + "<|im_end|>"
    danish = "Æbleskiver, rødgrød med fløde og smørrebrød — på Ærø, i Århus og i Ølstykke. ÆØÅ æøå"
    ids = tok(danish, add_special_tokens=False).input_ids
    assert tok.decode(ids) == danish
    assert tok.unk_token_id is None or tok.unk_token_id not in ids


# --- batching -----------------------------------------------------------------------------------

def _lognormal_lengths(n, seed=0):
    rng = random.Random(seed)
    return [min(400, max(5, round(rng.lognormvariate(3.5, 0.9)))) for _ in range(n)]


@pytest.mark.parametrize("sort", [True, False])
@pytest.mark.parametrize("max_tokens", [64, 1000, 4096])
def test_make_batches_respects_budget_and_covers_everything(sort, max_tokens):
    lengths = _lognormal_lengths(3000, seed=max_tokens) + [500, 1, 7]  # one item over the 64 budget
    batches = make_batches(lengths, max_tokens, sort=sort, max_batch=100)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))  # every index exactly once
    for b in batches:
        assert 1 <= len(b) <= 100
        assert len(b) * max(lengths[i] for i in b) <= max_tokens or len(b) == 1
    if sort:
        assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    else:
        assert flat == list(range(len(lengths)))
    assert make_batches([], max_tokens) == []


def test_padding_efficiency_sorted_vs_naive():
    lengths = _lognormal_lengths(2000)
    assert max(lengths) > 200 and sorted(lengths)[1000] < 50  # long-tailed
    sorted_eff = padding_efficiency(lengths, make_batches(lengths, 4096))
    naive_eff = padding_efficiency(lengths, fixed_batches(len(lengths), 32))
    assert sorted_eff >= 0.85
    assert naive_eff < 0.4
    # the default budget at OASST scale
    big = _lognormal_lengths(10000, seed=1)
    assert padding_efficiency(big, make_batches(big, 16384)) >= 0.9
    assert padding_efficiency([3, 3], [[0, 1]]) == 1.0


# --- translation --------------------------------------------------------------------------------

def test_hf_translate_order_determinism_and_batch_invariance(hf):
    out = hf.translate(TEXTS)
    assert len(out) == len(TEXTS) and all(isinstance(t, str) for t in out)
    assert hf.translate(TEXTS) == out  # deterministic
    ids = hf.translate_ids(TEXTS)
    # Batching must not change results: token budget (sorted), naive fixed-size, one by one.
    assert hf.translate_ids(TEXTS, sort=False, batch_size=5) == ids
    assert [hf.translate_ids([t])[0] for t in TEXTS] == ids
    # Order: a reversed input gives the reversed output.
    assert hf.translate_ids(TEXTS[::-1]) == ids[::-1]
    assert len(set(map(tuple, ids))) > len(TEXTS) // 2  # different inputs, different outputs
    lengths = hf.count_tokens(TEXTS)
    for n, h in zip(lengths, ids):
        assert len(h) <= hf.max_new_tokens(n)  # each segment capped by its own source length
    assert hf.translate([]) == []


def test_hf_count_tokens_and_stats(t5_path):
    t = HFTranslator(t5_path, max_batch_tokens=200)
    lengths = t.count_tokens(TEXTS)
    assert lengths == [len(t.tokenizer("<2da> " + x).input_ids) for x in TEXTS]
    assert t.count_tokens(["Hej"]) == [len(t.tokenizer("Hej").input_ids) + 1]  # + <2da>
    t.translate(TEXTS)
    s = t.stats
    assert s.segments == len(TEXTS) and s.source_tokens == sum(lengths)
    assert s.batches == len(make_batches(lengths, 200)) > 1
    assert s.source_tokens <= s.padded_tokens and 0 < s.padding_efficiency <= 1
    assert s.generated_tokens > 0 and s.seconds > 0
    assert set(s.as_dict()) >= {"segments", "source_tokens", "padded_tokens", "generated_tokens", "seconds"}


def test_target_language_token(t5_path):
    en = HFTranslator(t5_path, target_lang="en")
    assert en.encode(["Hej"])[0][0] == en.tokenizer.convert_tokens_to_ids("<2en>")
    with pytest.raises(ValueError, match="not a single token"):
        HFTranslator(t5_path, target_lang="xx")


def test_ct2_conversion_and_agreement_with_hf(hf, ct2, t5_path, cache):
    assert isinstance(ct2, CT2Translator)
    assert ct2.model_dir == cache / "tiny-t5-ct2" and (ct2.model_dir / "model.bin").is_file()
    assert ct2.vocab[:3] == ["<unk>", "<pad>", "</s>"] and len(ct2.vocab) == 1000
    ids = ct2.translate_ids(TEXTS)
    assert ct2.translate_ids(TEXTS, sort=False, batch_size=5) == ids
    assert ct2.count_tokens(TEXTS) == hf.count_tokens(TEXTS)
    # Greedy decoding of the same weights: token-for-token equal (measured 94/94 on the sample).
    assert ids == hf.translate_ids(TEXTS)
    assert ct2.translate(TEXTS) == hf.translate(TEXTS)
    # Idempotent: a second make_translator reuses the conversion.
    stamp = (ct2.model_dir / "model.bin").stat().st_mtime_ns
    again = make_translator("ct2", t5_path, cache_dir=cache, intra_threads=1)
    assert (again.model_dir / "model.bin").stat().st_mtime_ns == stamp
    assert make_translator("ctranslate2", again.model_dir, intra_threads=1).model_dir == again.model_dir


def test_convert_to_ct2_replaces_a_conversion_of_other_settings(t5_path, tmp_path):
    from dfm_hpc.text.translators import convert_to_ct2

    out = convert_to_ct2(t5_path, tmp_path / "m", quantization="int8")
    assert json.loads((out / "dfm_ct2_source.json").read_text())["quantization"] == "int8"
    assert convert_to_ct2(t5_path, tmp_path / "m") == out
    assert json.loads((out / "dfm_ct2_source.json").read_text())["quantization"] is None
    assert CT2Translator(out, intra_threads=1).translate(["Hej"])[0] is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_ct2_beam_search_scale_fix(hf, ct2, t5_path):
    """transformers 5 + ctranslate2 4.8 would scale T5 v1.1 logits by d_model**-0.5 (see
    translators._ct2_t5_output_scale_fix); with the fix the 4-beam outputs mostly match HF."""
    hf4 = HFTranslator(t5_path, num_beams=4)
    ct4 = CT2Translator(ct2.model_dir, num_beams=4, intra_threads=1)
    a, b = hf4.translate_ids(TEXTS), ct4.translate_ids(TEXTS)
    assert sum(x == y for x, y in zip(a, b)) >= len(TEXTS) - 2


def test_make_translator_hf_and_unknown_backend(t5_path, cache):
    t = make_translator("hf", "tiny:t5", cache_dir=cache)
    assert isinstance(t, HFTranslator) and t.device.type == "cpu"
    import torch

    assert next(t.model.parameters()).dtype == torch.float32  # bf16 only on GPU
    with pytest.raises(ValueError, match="unknown translation backend"):
        make_translator("vllm", t5_path)
