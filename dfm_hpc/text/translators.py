"""Translation backends (Hugging Face transformers, CTranslate2) behind one interface, and batching.

MADLAD-400 is a T5: the target language is a ``<2xx>`` token at the start of the *source*
(``"<2da> Hello"``); the decoder starts from ``decoder_start_token_id`` like any T5. Both backends
tokenize with the model's Hugging Face tokenizer, so they see the same source ids.

Speed comes from batching by a token budget: sort the segments by length (longest first) and fill
each batch up to ``max_batch_tokens`` padded tokens. On a long-tailed length mix this wastes a few
percent on padding instead of most of the batch (see ``padding_efficiency``), and the first batch
holds the longest segments, so an out-of-memory shows up at once rather than at the end.

Greedy results do not depend on the batching: padded source positions are masked out of attention,
each row decodes from its own source only, and every segment is cut back to its own length limit
(``2 * source + 16`` new tokens, at most 512) whatever batch it ran in. Not bit-exact in floating
point, though: on the tiny T5 (fp32, CPU) first-step logits of a padded row differ from the same
segment alone by up to 2e-5 (logit std ~8, smallest top-1/top-2 gap seen 0.015), so token ids
agreed in every test; near-ties can flip, more so in bf16 on GPU. Beam search (num_beams > 1) is
not batch-invariant: how beams finish depends on the batch's length limit.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

MODEL_MAX_NEW_TOKENS = 512  # MADLAD's (T5's) usual generation limit


def make_batches(lengths: Sequence[int], max_tokens: int, sort: bool = True, max_batch: int = 512) -> list[list[int]]:
    """Indices into lengths, grouped so that len(batch) * max(lengths in batch) <= max_tokens.

    sort=True: by length, longest first (ties in input order), which minimizes padding;
    sort=False: greedy in input order. A single item longer than max_tokens gets its own batch.
    No batch holds more than max_batch items.
    """
    if max_tokens < 1 or max_batch < 1:
        raise ValueError(f"max_tokens ({max_tokens}) and max_batch ({max_batch}) must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)) if sort else range(len(lengths))
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i in order:
        n = max(1, int(lengths[i]))
        if cur and (len(cur) >= max_batch or (len(cur) + 1) * max(cur_max, n) > max_tokens):
            batches.append(cur)
            cur, cur_max = [], 0
        cur.append(i)
        cur_max = max(cur_max, n)
    if cur:
        batches.append(cur)
    return batches


def fixed_batches(n: int, batch_size: int) -> list[list[int]]:
    """The naive loop: consecutive fixed-size batches in input order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


def padding_efficiency(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Real tokens / padded tokens (1.0 = no padding at all)."""
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
    return real / padded if padded else 1.0


@dataclass
class TranslationStats:
    """Counters, accumulated over translate() calls; for logs and benchmarks."""

    segments: int = 0
    batches: int = 0
    source_tokens: int = 0   # real source tokens (prefix and eos included)
    padded_tokens: int = 0   # source tokens including padding: sum of len(batch) * longest
    generated_tokens: int = 0  # output tokens, eos included when the model produced it
    seconds: float = 0.0

    @property
    def padding_efficiency(self) -> float:
        return self.source_tokens / self.padded_tokens if self.padded_tokens else 1.0

    def as_dict(self) -> dict:
        d = asdict(self)
        s = self.seconds or float("nan")
        d.update(padding_efficiency=round(self.padding_efficiency, 4), segments_per_s=self.segments / s,
                 source_tokens_per_s=self.source_tokens / s, generated_tokens_per_s=self.generated_tokens / s)
        return d


class _Translator:
    """Shared part: target prefix, tokenization, batching, decoding, stats."""

    def __init__(self, target_lang: str, num_beams: int, max_batch_tokens: int):
        self.target_lang = target_lang
        self.prefix = f"<2{target_lang}> "
        self.num_beams = int(num_beams)
        self.max_batch_tokens = int(max_batch_tokens)
        self.max_new_tokens_limit = MODEL_MAX_NEW_TOKENS
        self.stats = TranslationStats()

    def _check_prefix_token(self) -> None:
        token = self.prefix.strip()
        ids = self.tokenizer(token, add_special_tokens=False).input_ids
        if len(ids) != 1 or ids[0] == self.tokenizer.unk_token_id:
            raise ValueError(f"target language token {token!r} is not a single token of this tokenizer ({ids})")

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Source ids: target prefix + text + eos."""
        return self.tokenizer([self.prefix + t for t in texts], add_special_tokens=True).input_ids

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Source lengths in tokens, prefix and eos included."""
        return [len(ids) for ids in self.encode(texts)]

    def max_new_tokens(self, longest_source: int) -> int:
        return min(self.max_new_tokens_limit, int(2 * longest_source) + 16)

    def plan(self, lengths: Sequence[int], sort: bool = True, batch_size: int | None = None) -> list[list[int]]:
        """sort=False + batch_size: the naive fixed-size loop; otherwise token-budget batches
        (length-sorted when sort=True), at most batch_size (default 512) segments each."""
        if not sort and batch_size:
            return fixed_batches(len(lengths), batch_size)
        return make_batches(lengths, self.max_batch_tokens, sort=sort, max_batch=batch_size or 512)

    def translate_ids(self, texts: Sequence[str], sort: bool = True, batch_size: int | None = None) -> list[list[int]]:
        """Generated ids per text (input order), without decoder start and eos."""
        if not texts:
            return []
        t0 = time.perf_counter()
        src = self.encode(texts)
        lengths = [len(s) for s in src]
        out: list[list[int]] = [[] for _ in src]
        batches = self.plan(lengths, sort=sort, batch_size=batch_size)
        for batch in batches:
            longest = max(lengths[i] for i in batch)
            hyps = self._generate([src[i] for i in batch], self.max_new_tokens(longest))
            for i, (h, ended) in zip(batch, hyps):
                # Each segment gets its own limit, whatever batch it landed in: the batch runs to
                # the longest source's limit, shorter ones are cut back to theirs. Greedy output is
                # then the same as translating the segment alone (a prefix property of greedy search).
                cap = self.max_new_tokens(lengths[i])
                if len(h) >= cap:
                    h, ended = h[:cap], False
                out[i] = h
                self.stats.generated_tokens += len(h) + bool(ended)
            self.stats.padded_tokens += len(batch) * longest
        self.stats.segments += len(src)
        self.stats.batches += len(batches)
        self.stats.source_tokens += sum(lengths)
        self.stats.seconds += time.perf_counter() - t0
        return out

    def decode(self, ids: Sequence[int]) -> str:
        n = len(self.tokenizer)
        return self.tokenizer.decode([i for i in ids if 0 <= i < n], skip_special_tokens=True).strip()

    def translate(self, texts: Sequence[str], sort: bool = True, batch_size: int | None = None) -> list[str]:
        """Translations in input order. sort=True: token-budget batches of length-sorted segments;
        sort=False with batch_size: the naive loop (fixed-size batches in input order), for benchmarks."""
        return [self.decode(ids) for ids in self.translate_ids(texts, sort=sort, batch_size=batch_size)]

    def _generate(self, sources: list[list[int]], max_new_tokens: int) -> list[tuple[list[int], bool]]:
        """Per source: (generated ids without start and eos, whether it ended with eos)."""
        raise NotImplementedError


def _cut_at_eos(ids: Sequence[int], eos: int) -> tuple[list[int], bool]:
    ids = list(ids)
    if eos in ids:
        return ids[: ids.index(eos)], True
    return ids, False


def _dtype_kwarg(dtype) -> dict:
    """from_pretrained's dtype argument: `dtype` since transformers 4.56, `torch_dtype` before."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


class HFTranslator(_Translator):
    """T5ForConditionalGeneration + AutoTokenizer (MADLAD-400 or the tiny T5)."""

    def __init__(self, name_or_path, target_lang: str = "da", num_beams: int = 1, dtype: str = "bfloat16",
                 device: str | None = None, max_batch_tokens: int = 16384, revision: str | None = None):
        import torch
        from transformers import AutoTokenizer, T5ForConditionalGeneration

        from dfm_hpc.job.device import torch_device

        super().__init__(target_lang, num_beams, max_batch_tokens)
        # local rank r -> GPU r: every task of a LUMI node sees all 8 GCDs ("cuda" alone is GCD 0)
        self.device = torch.device(device or torch_device())
        # bf16 (or whatever was asked) only on GPU: CPU bf16 matmuls are slow and change results.
        self.dtype = getattr(torch, dtype) if self.device.type == "cuda" else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), revision=revision)
        self.model = T5ForConditionalGeneration.from_pretrained(
            str(name_or_path), revision=revision, **_dtype_kwarg(self.dtype)).to(self.device).eval()
        cfg = self.model.config
        self.pad_id = cfg.pad_token_id if cfg.pad_token_id is not None else self.tokenizer.pad_token_id
        self.eos_id = cfg.eos_token_id if cfg.eos_token_id is not None else self.tokenizer.eos_token_id
        self._check_prefix_token()

    def _generate(self, sources, max_new_tokens):
        import torch

        width = max(len(s) for s in sources)
        ids = torch.full((len(sources), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sources), width), dtype=torch.long)
        for row, s in enumerate(sources):  # right padding; masked out of attention
            ids[row, : len(s)] = torch.tensor(s)
            mask[row, : len(s)] = 1
        with torch.inference_mode():
            seqs = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                num_beams=self.num_beams, do_sample=False, max_new_tokens=max_new_tokens,
                pad_token_id=self.pad_id, eos_token_id=self.eos_id,
            )
        # column 0 is the decoder start token; rows that ended early are padded after their eos
        return [_cut_at_eos(row, self.eos_id) for row in seqs[:, 1:].tolist()]


def is_ct2_dir(path) -> bool:
    p = Path(path)
    return (p / "model.bin").is_file() and any((p / f).is_file() for f in _CT2_VOCABS)


_CT2_VOCABS = ("shared_vocabulary.json", "shared_vocabulary.txt", "target_vocabulary.json", "target_vocabulary.txt")
_CT2_MARKER = "dfm_ct2_source.json"


def _ct2_vocabulary(model_dir: Path) -> list[str]:
    for name in _CT2_VOCABS:
        f = model_dir / name
        if f.is_file():
            if name.endswith(".json"):
                return json.loads(f.read_text(encoding="utf-8"))
            return f.read_text(encoding="utf-8").split("\n")[:-1]
    raise FileNotFoundError(f"no CTranslate2 vocabulary in {model_dir}")


class CT2Translator(_Translator):
    """A CTranslate2 conversion of the same T5 (see convert_to_ct2).

    The source is tokenized exactly as for HFTranslator (``<2da>`` prefix, eos at the end) and handed
    to ctranslate2 as token strings; the converted model's config carries decoder_start_token, so no
    target prefix is needed. Batching is ours (make_batches), one translate_batch call per batch, so
    both backends get identical batches and the same per-batch max_new_tokens; ctranslate2's own
    max_batch_size/batch_type="tokens" would re-sort and re-split with one global length limit.
    """

    def __init__(self, name_or_path, target_lang: str = "da", num_beams: int = 1, dtype: str = "bfloat16",
                 device: str | None = None, max_batch_tokens: int = 16384, revision: str | None = None,
                 compute_type: str | None = None, tokenizer=None, intra_threads: int = 0):
        import ctranslate2
        from transformers import AutoTokenizer

        super().__init__(target_lang, num_beams, max_batch_tokens)
        self.model_dir = Path(name_or_path)
        if not is_ct2_dir(self.model_dir):
            raise FileNotFoundError(
                f"{self.model_dir} is not a CTranslate2 model dir (use make_translator or convert_to_ct2)")
        from dfm_hpc import dist

        gpus = ctranslate2.get_cuda_device_count()
        self.device = device or ("cuda" if gpus > 0 else "cpu")
        # local rank r -> GPU r, as HFTranslator (ctranslate2 takes the index apart from the device)
        self.device_index = (dist.gpu_index(visible=gpus) or 0) if self.device == "cuda" and gpus else 0
        if compute_type is None:
            # GPU: the requested dtype (bf16 by default); CPU: whatever the model was saved as
            # (float32, or int8 for a quantized conversion).
            compute_type = dtype if self.device == "cuda" else "default"
        self.compute_type = compute_type
        self.translator = ctranslate2.Translator(str(self.model_dir), device=self.device,
                                                 device_index=self.device_index,
                                                 compute_type=compute_type, intra_threads=intra_threads)
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(self.model_dir), revision=revision)
        self.vocab = _ct2_vocabulary(self.model_dir)
        self.token_to_id = {t: i for i, t in enumerate(self.vocab)}
        self.eos_id = self.tokenizer.eos_token_id
        self._check_prefix_token()

    def _generate(self, sources, max_new_tokens):
        tokens = [self.tokenizer.convert_ids_to_tokens(s) for s in sources]
        results = self.translator.translate_batch(
            tokens, beam_size=self.num_beams, max_decoding_length=max_new_tokens,
            max_batch_size=0, return_scores=False,
        )
        hyps = []
        for r in results:
            # ctranslate2 leaves the decoder start token and the final eos out of hypotheses; a
            # hypothesis shorter than max_decoding_length therefore ended with eos.
            h, ended = _cut_at_eos([self.token_to_id[t] for t in r.hypotheses[0]], self.eos_id)
            hyps.append((h, ended or len(h) < max_new_tokens))
        return hyps


@contextmanager
def _ct2_t5_output_scale_fix():
    """Make ctranslate2's T5 converter scale the decoder output only when the model does.

    ctranslate2 (4.8) scales T5 logits by d_model**-0.5 when config.tie_word_embeddings is true,
    which was the rule in transformers 4. transformers 5 always sets tie_word_embeddings=True for
    T5 and keeps the real rule in config.scale_decoder_outputs (False for T5 v1.1 / MADLAD). Left
    alone, the conversion of MADLAD gets logits scaled by 1/sqrt(d_model): greedy output is unchanged
    (same argmax), but beam search and scores are not. On the tiny T5 (94 sample sentences, 4 beams)
    0 of 94 outputs matched transformers without this fix, 92 with it (the rest: HF's and
    ctranslate2's beam searches differ in details such as how finished hypotheses are kept and
    length-normalized; greedy agrees 94/94).
    """
    from ctranslate2.converters import transformers as ct2_tf
    from ctranslate2.specs import model_spec

    base = ct2_tf._MODEL_LOADERS.get("T5Config")
    if base is None:
        yield
        return

    class T5LoaderScaleFix(type(base)):
        def get_model_spec(self, model):
            spec = super().get_model_spec(model)
            if getattr(model.config, "scale_decoder_outputs", None) is False:
                spec.decoder.scale_outputs = model_spec.OPTIONAL
            return spec

    ct2_tf._MODEL_LOADERS["T5Config"] = T5LoaderScaleFix()
    try:
        yield
    finally:
        ct2_tf._MODEL_LOADERS["T5Config"] = base


def convert_to_ct2(hf_path, out_dir, quantization: str | None = None, revision: str | None = None) -> Path:
    """Convert a Hugging Face T5 to CTranslate2 into out_dir (with its tokenizer); idempotent.

    Skips the work when out_dir already holds a conversion of the same source and quantization.
    Converts into a temp dir next to out_dir and moves it into place, so a crash leaves nothing
    half-written and two processes converting at once both end with a complete model.
    """
    import ctranslate2
    from transformers import AutoTokenizer

    out = Path(out_dir)
    source = str(Path(hf_path).resolve()) if Path(hf_path).exists() else str(hf_path)
    want = {"source": source, "quantization": quantization, "revision": revision}
    marker = out / _CT2_MARKER

    def done() -> bool:
        return is_ct2_dir(out) and marker.is_file() and json.loads(marker.read_text()) == want

    if done():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with _ct2_t5_output_scale_fix():
            ctranslate2.converters.TransformersConverter(str(hf_path), revision=revision).convert(
                str(tmp), quantization=quantization, force=True)
        AutoTokenizer.from_pretrained(str(hf_path), revision=revision).save_pretrained(tmp)
        (tmp / _CT2_MARKER).write_text(json.dumps(want, indent=2) + "\n")
        if not done():  # else another process finished the same conversion meanwhile: keep theirs
            if out.exists():  # a conversion of another source or quantization
                shutil.rmtree(out)
            try:
                os.replace(tmp, out)
            except OSError:
                if not done():
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def ct2_dir_for(name_or_path, cache_dir=None, quantization: str | None = None) -> Path:
    """Where the CTranslate2 conversion of a model goes: into cache_dir if given, else next to it."""
    suffix = "-ct2" + (f"-{quantization}" if quantization else "")
    if cache_dir is not None:
        slug = str(name_or_path).rstrip("/").replace("\\", "/")
        slug = Path(slug).name if Path(slug).exists() else slug.replace("/", "--")
        return Path(cache_dir) / f"{slug}{suffix}"
    p = Path(name_or_path)
    if not p.is_dir():
        raise ValueError(f"{name_or_path!r} is not a local model dir: give a cache_dir for its CTranslate2 conversion")
    return p.with_name(p.name + suffix)


def make_translator(backend: str, name_or_path, *, cache_dir=None, quantization: str | None = None, **kw):
    """'hf' | 'ctranslate2' (alias 'ct2') translator for a model id, a local dir, or 'tiny:t5'.

    ctranslate2 takes a converted dir as is, else converts (once) into cache_dir or next to the model.
    """
    from dfm_hpc import tiny

    name = tiny.resolve(str(name_or_path), cache_dir)
    if backend == "hf":
        return HFTranslator(name, **kw)
    if backend in ("ctranslate2", "ct2"):
        if is_ct2_dir(name):
            return CT2Translator(name, **kw)
        out = convert_to_ct2(name, ct2_dir_for(name, cache_dir, quantization), quantization=quantization,
                             revision=kw.get("revision"))
        kw.pop("revision", None)
        return CT2Translator(out, **kw)
    raise ValueError(f"unknown translation backend {backend!r} (hf | ctranslate2)")
