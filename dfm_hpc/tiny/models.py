"""Tiny models with random weights and locally trained tokenizers, for tests and the local demo.

Nothing here touches the Hugging Face Hub: the tokenizers are trained on the small English+Danish
text sample below, the weights are random (``torch.manual_seed(seed)``), and everything is written
with ``save_pretrained`` so the ordinary loading code (``from_pretrained(path)``) reads it. The real
models (hub ids, local paths) remain the default everywhere; ``resolve("tiny:t5", cache_dir)`` is the
only door into this module from configs.

Both builders are deterministic: the same arguments give byte-identical weights and tokenizer files.

The tiny T5 mirrors MADLAD-400's conventions, not T5's original ones:

    id 0 ``<unk>``  (also the decoder start token: MADLAD's ``decoder_start_token_id`` is 0)
    id 1 ``<pad>``  (MADLAD ``pad_token_id`` 1)
    id 2 ``</s>``   (MADLAD ``eos_token_id`` 2)
    ids 3.. the ``<2xx>`` target-language tokens, single pieces, then the learned vocabulary,
    and ``<extra_id_N>`` sentinels filling the rest up to ``vocab_size`` so that every id the
    model can emit has a token (the CTranslate2 converter and the tokenizer then agree on ids).

The architecture is T5 v1.1 / MADLAD style: gated-GELU feed-forward, untied input and output
embeddings. So a stage that works on the tiny model exercises the same code paths as on MADLAD.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from dfm_hpc.model_shape import tiny_config
from dfm_hpc.tiny.families import BUILDERS as FAMILY_BUILDERS

LANG_TOKENS = ("<2da>", "<2en>", "<2de>", "<2sv>", "<2no>")

T5_UNK, T5_PAD, T5_EOS = "<unk>", "<pad>", "</s>"
LLAMA_BOS, LLAMA_EOS, LLAMA_PAD = "<|begin_of_text|>", "<|im_end|>", "<|pad|>"
LLAMA_SPECIALS = (LLAMA_PAD, LLAMA_BOS, "<|im_start|>", LLAMA_EOS)

# ChatML with {% generation %} markers around what the assistant writes (content + <|im_end|>),
# so `apply_chat_template(..., return_assistant_tokens_mask=True)` and TRL's assistant_only_loss work.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# A few KB of varied English and Danish: chat-like questions and answers (OASST style), prose,
# numbers, punctuation, a bit of code and the Danish letters æ ø å Æ Ø Å.
SAMPLE_EN = """\
Can you explain how photosynthesis works in simple terms?
Plants take in sunlight, water and carbon dioxide, and turn them into sugar and oxygen.
What is the capital of Denmark, and how many people live there?
Copenhagen is the capital; about 1.4 million people live in the metropolitan area.
Write a short poem about the sea on a windy autumn morning.
The grey waves roll in, the gulls cry overhead, and the cold wind smells of salt.
How do I reverse a list in Python without modifying the original?
Use slicing: reversed_copy = my_list[::-1], or list(reversed(my_list)).
I have a job interview tomorrow. Do you have any tips?
Prepare a few examples of your work, arrive early, and ask thoughtful questions at the end.
Why is the sky blue during the day but red at sunset?
Sunlight is scattered by the air; blue light scatters most, but at sunset the light travels further.
Please summarize the main causes of the First World War.
Historians usually mention militarism, alliances, imperialism and nationalism.
What's the difference between a virus and a bacterium?
Bacteria are living cells that can reproduce on their own; viruses need a host cell.
Could you recommend three books for someone learning to cook?
Try a basic cookbook, a book about bread, and one about vegetables and seasonal food.
My computer is very slow after the last update. What should I do?
Restart it, check which programs start automatically, and make sure the disk is not full.
Translate "good morning" into French, German and Spanish.
Bonjour, Guten Morgen and Buenos dias.
How much water should an adult drink every day?
It depends on the weather and activity, but roughly two litres is a common guideline.
Tell me a joke about programmers.
Why do programmers prefer dark mode? Because light attracts bugs!
Is it safe to eat raw eggs?
There is a small risk of salmonella, so pasteurised eggs are the safer choice.
The meeting has been moved from Monday to Thursday at 10:30.
She bought 12 apples, 3 loaves of bread and a bottle of milk for 45 kroner.
Learning a new language takes patience, practice and a lot of listening.
The train to Aarhus leaves at 7:15 and arrives a little after ten o'clock.
Thank you for your help! That answer was exactly what I needed.
You're welcome. Let me know if you have any other questions.
"""

SAMPLE_DA = """\
Kan du forklare, hvordan fotosyntese virker, på en enkel måde?
Planter optager sollys, vand og kuldioxid og omdanner dem til sukker og ilt.
Hvad er Danmarks hovedstad, og hvor mange mennesker bor der?
København er hovedstaden; omkring 1,4 millioner mennesker bor i hovedstadsområdet.
Skriv et kort digt om havet en blæsende efterårsmorgen.
De grå bølger ruller ind, mågerne skriger over os, og den kolde vind lugter af salt.
Hvordan vender jeg en liste om i Python uden at ændre den oprindelige?
Brug udsnit: omvendt_kopi = min_liste[::-1], eller list(reversed(min_liste)).
Jeg skal til jobsamtale i morgen. Har du nogle gode råd?
Forbered et par eksempler på dit arbejde, mød op i god tid, og stil gennemtænkte spørgsmål til sidst.
Hvorfor er himlen blå om dagen, men rød ved solnedgang?
Sollyset spredes af luften; blåt lys spredes mest, men ved solnedgang rejser lyset længere.
Opsummér venligst de vigtigste årsager til Første Verdenskrig.
Historikere nævner som regel militarisme, alliancer, imperialisme og nationalisme.
Hvad er forskellen på en virus og en bakterie?
Bakterier er levende celler, der kan formere sig selv; virus har brug for en værtscelle.
Kan du anbefale tre bøger til en, der lærer at lave mad?
Prøv en grundkogebog, en bog om brød og en om grøntsager og årstidens råvarer.
Min computer er meget langsom efter den seneste opdatering. Hvad skal jeg gøre?
Genstart den, tjek hvilke programmer der starter automatisk, og sørg for, at disken ikke er fuld.
Oversæt "godmorgen" til fransk, tysk og spansk.
Hvor meget vand bør en voksen drikke hver dag?
Det afhænger af vejret og aktiviteten, men cirka to liter er en almindelig tommelfingerregel.
Fortæl mig en vittighed om programmører.
Hvorfor foretrækker programmører mørk tilstand? Fordi lys tiltrækker fejl!
Er det sikkert at spise rå æg?
Der er en lille risiko for salmonella, så pasteuriserede æg er det sikreste valg.
Mødet er flyttet fra mandag til torsdag kl. 10.30.
Hun købte 12 æbler, 3 brød og en flaske mælk for 45 kroner.
At lære et nyt sprog kræver tålmodighed, øvelse og masser af lytning.
Toget til Aarhus kører kl. 7.15 og ankommer lidt over klokken ti.
Tak for hjælpen! Det svar var præcis, hvad jeg havde brug for.
Selv tak. Sig til, hvis du har andre spørgsmål.
Æbleskiver, rødgrød med fløde og smørrebrød hører til det danske køkken.
Øresundsbroen forbinder Sjælland med Skåne, og Ålborg ligger i Nordjylland.
Blåbær, jordbær og hindbær modner i løbet af sommeren i haven.
"""

SAMPLE_PARALLEL = [
    ("Hello, how are you today?", "Hej, hvordan har du det i dag?"),
    ("The weather is nice and the children are playing outside.", "Vejret er godt, og børnene leger udenfor."),
    ("I would like a cup of coffee, please.", "Jeg vil gerne have en kop kaffe, tak."),
    ("Where is the nearest library?", "Hvor er det nærmeste bibliotek?"),
    ("We are going to the beach on Saturday.", "Vi tager til stranden på lørdag."),
    ("Can you help me write an email to my landlord?", "Kan du hjælpe mig med at skrive en e-mail til min udlejer?"),
]


def sample_text() -> list[str]:
    """The built-in training sample, one line per sentence (English, Danish, and a parallel set)."""
    lines = SAMPLE_EN.splitlines() + SAMPLE_DA.splitlines()
    for en, da in SAMPLE_PARALLEL:
        lines += [en, da, f"<2da> {en}", f"<2en> {da}"]
    return [ln for ln in lines if ln.strip()]


def _sp_vocab_limit(vocab_size: int) -> int:
    # The sample supports a unigram vocabulary of a few hundred pieces; the rest of the model's
    # vocabulary is filled with <extra_id_N> sentinels (as T5 does with its 100 sentinels).
    return min(vocab_size, 600)


def _train_sentencepiece(vocab_size: int) -> bytes:
    """A unigram SentencePiece model with MADLAD's special-id layout; returns the serialized model."""
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sample_text()),
        model_writer=buf,
        model_type="unigram",
        vocab_size=_sp_vocab_limit(vocab_size),
        hard_vocab_limit=False,  # a few KB of text may not support the full size: take what it gives
        character_coverage=1.0,  # keep every character of the sample (æ ø å included)
        user_defined_symbols=list(LANG_TOKENS),
        unk_id=0, pad_id=1, eos_id=2, bos_id=-1,  # MADLAD: decoder start 0, pad 1, eos 2; no bos
        unk_piece=T5_UNK, pad_piece=T5_PAD, eos_piece=T5_EOS,
        normalization_rule_name="nmt_nfkc",
        num_threads=1,  # single-threaded EM: byte-identical models for the same input
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    return buf.getvalue()


def build_t5_tokenizer(vocab_size: int = 1000):
    """The tiny T5 tokenizer (fast, tokenizers-backed), padded with sentinels to exactly vocab_size.

    Returns (tokenizer, sentencepiece ModelProto). Deterministic: single-threaded SentencePiece
    training on the fixed sample; it does not depend on the model seed.
    """
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    proto = sp_pb2.ModelProto()
    proto.ParseFromString(_train_sentencepiece(vocab_size))
    pieces = [(p.piece, p.score) for p in proto.pieces]
    if [p for p, _ in pieces[:3]] != [T5_UNK, T5_PAD, T5_EOS]:
        raise RuntimeError(f"unexpected special pieces {pieces[:3]}")
    n_extra = vocab_size - len(pieces)
    if n_extra < 0:
        raise ValueError(f"vocab_size {vocab_size} is smaller than the trained vocabulary ({len(pieces)})")
    # Sentinels go after the learned pieces, highest number first (T5's layout); score 0 but they
    # are added tokens, so the unigram model never produces them from text.
    extra = [f"<extra_id_{i}>" for i in range(n_extra - 1, -1, -1)]
    vocab = pieces + [(t, 0.0) for t in extra]

    tok = Tokenizer(Unigram(vocab, unk_id=0, byte_fallback=False))
    # SentencePiece's normalization: nmt_nfkc, then remove_extra_whitespaces (strip, squeeze runs).
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap),
        normalizers.Strip(left=True, right=True),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    specials = [T5_UNK, T5_PAD, T5_EOS]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    # <2xx> as added tokens: matched before normalization/segmentation, so "<2da> Hello" always
    # starts with the single <2da> id (also when glued to the text: "<2da>Hello").
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LANG_TOKENS])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in reversed(extra)])
    tok.post_processor = processors.TemplateProcessing(
        single=["$A", T5_EOS], pair=["$A", T5_EOS, "$B", T5_EOS],
        special_tokens=[(T5_EOS, tok.token_to_id(T5_EOS))],
    )
    # A generic fast tokenizer, not T5Tokenizer: transformers 5's T5Tokenizer rebuilds the Unigram
    # model on load with T5's original layout (unk id 2), which would turn <unk> into </s> here.
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=T5_UNK, pad_token=T5_PAD, eos_token=T5_EOS,
        additional_special_tokens=list(LANG_TOKENS) + list(reversed(extra)), model_max_length=512,
    )
    return hf, proto


def build_tiny_t5(out_dir, seed: int = 0, d_model: int = 64, num_layers: int = 2, num_heads: int = 4,
                  d_ff: int = 128, vocab_size: int = 1000) -> Path:
    """A random-weight MADLAD-style T5 + its tokenizer, saved with save_pretrained into out_dir."""
    import torch
    from transformers import GenerationConfig, T5Config, T5ForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer, proto = build_t5_tokenizer(vocab_size)
    assert len(tokenizer) == vocab_size, (len(tokenizer), vocab_size)
    unk, pad, eos = (tokenizer.convert_tokens_to_ids(t) for t in (T5_UNK, T5_PAD, T5_EOS))
    config = T5Config(
        vocab_size=vocab_size, d_model=d_model, d_kv=d_model // num_heads, d_ff=d_ff,
        num_layers=num_layers, num_decoder_layers=num_layers, num_heads=num_heads,
        relative_attention_num_buckets=32, relative_attention_max_distance=128,
        dropout_rate=0.0, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        is_encoder_decoder=True, decoder_start_token_id=unk, pad_token_id=pad, eos_token_id=eos,
    )
    # MADLAD (T5 v1.1 style): encoder and decoder embeddings shared, lm_head separate, decoder output
    # not scaled. transformers 4 builds that from tie_word_embeddings=False; transformers 5 forces
    # T5Config.tie_word_embeddings=True (keeping the passed False as scale_decoder_outputs=False) and
    # ties lm_head to the embeddings, so untie it by hand. (A tied random T5 is also a poor test
    # model: its logits favour the token just fed in, so greedy output repeats one token forever.)
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config).eval()
    if model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr():
        weight = torch.empty_like(model.lm_head.weight).normal_(0.0, config.initializer_factor)
        model.lm_head.weight = torch.nn.Parameter(weight)
        getattr(model, "all_tied_weights_keys", {}).pop("lm_head.weight", None)
    assert model.encoder.embed_tokens.weight.data_ptr() == model.shared.weight.data_ptr()
    model.generation_config = GenerationConfig(decoder_start_token_id=unk, pad_token_id=pad, eos_token_id=eos)
    model.save_pretrained(out)
    # Say "untied" in config.json as MADLAD does: transformers 5 reads it as scale_decoder_outputs=False
    # (and warns on load that lm_head differs from the embeddings, as it does for MADLAD); 4 unties.
    cfg_path = out / "config.json"
    cfg_json = json.loads(cfg_path.read_text())
    cfg_json["tie_word_embeddings"] = False
    cfg_path.write_text(json.dumps(cfg_json, indent=2, sort_keys=True) + "\n")
    _save_tokenizer(tokenizer, out)
    (out / "spiece.model").write_bytes(proto.SerializeToString())  # for sentencepiece users
    _write_info(out, kind="t5", seed=seed, d_model=d_model, num_layers=num_layers, num_heads=num_heads,
                d_ff=d_ff, vocab_size=vocab_size)
    return out


def build_llama_tokenizer(vocab_size: int, model_max_length: int):
    """A byte-level BPE tokenizer (any UTF-8 text round-trips) with ChatML specials and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(LLAMA_SPECIALS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(sample_text(), trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=LLAMA_BOS, eos_token=LLAMA_EOS, pad_token=LLAMA_PAD,
        additional_special_tokens=["<|im_start|>"], model_max_length=model_max_length,
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def build_tiny_llama(out_dir, seed: int = 0) -> Path:
    """A random-weight LlamaForCausalLM + byte-level BPE tokenizer with a ChatML chat template, shaped as
    tiny/configs/llama.json says (the plan's estimates read the same file: model_shape.py)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = tiny_config("llama")
    tokenizer = build_llama_tokenizer(spec["vocab_size"], spec["max_position_embeddings"])
    if len(tokenizer) != spec["vocab_size"]:  # the sample must fill the vocabulary the file states
        raise RuntimeError(f"tiny llama tokenizer has {len(tokenizer)} tokens, llama.json says {spec['vocab_size']}")
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    config = LlamaConfig(**{k: v for k, v in spec.items() if k != "model_type"},
                         bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    model.save_pretrained(out)
    _save_tokenizer(tokenizer, out)
    _write_info(out, kind="llama", seed=seed)  # the shape: config.json beside it
    return out


def _save_tokenizer(tokenizer, out: Path) -> None:
    tokenizer.save_pretrained(out)
    # "PreTrainedTokenizerFast" loads tokenizer.json verbatim in transformers 4 and 5 alike
    # (5 calls the class TokenizersBackend and writes that name, which 4 does not know).
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def _write_info(out: Path, **info) -> None:
    (out / "tiny_model.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


BUILDERS = {"t5": build_tiny_t5, "llama": build_tiny_llama, **FAMILY_BUILDERS}


def default_cache_dir() -> Path:
    return Path(os.environ.get("DFM_HPC_CACHE", Path.home() / ".cache" / "dfm_hpc"))


def resolve(name_or_path: str, cache_dir=None) -> str:
    """'tiny:t5' / 'tiny:llama' / 'tiny:<family>' (families.py) -> a built model dir under cache_dir (built
    once); others unchanged.

    Race-safe: each builder writes into a private temp dir next to the target and moves it into
    place with os.replace; a process that loses the race throws its copy away and uses the winner's.
    """
    name = str(name_or_path)
    if not name.startswith("tiny:"):
        return name_or_path
    kind = name.removeprefix("tiny:")
    if kind not in BUILDERS:
        raise ValueError(f"unknown tiny model {name!r}; known: {', '.join('tiny:' + k for k in BUILDERS)}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = cache / f"tiny-{kind}"
    if (final / "tiny_model.json").exists():
        return str(final)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tiny-{kind}.", dir=cache))
    try:
        BUILDERS[kind](tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            # Someone else finished first (os.replace onto a non-empty dir fails): keep theirs.
            if not (final / "tiny_model.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(final)
