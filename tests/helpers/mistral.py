"""Mistral-7B's real tokenizer, offline: mistral-common ships its SentencePiece model (tokenizer.model.v1)."""

from __future__ import annotations

from pathlib import Path


def mistral_7b_tokenizer():
    """As transformers loads Mistral-7B's: LlamaTokenizer (BPE, byte fallback, legacy ▁ prefix) from the
    SentencePiece model's own vocabulary and merges; 32,000 entries, no chat template."""
    import mistral_common
    from tokenizers.models import BPE
    from transformers import LlamaTokenizer
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    spm = SentencePieceExtractor(str(Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1")).extract(BPE)
    tok = LlamaTokenizer(vocab=spm["vocab"], merges=spm["merges"], legacy=True)
    tok.name_or_path = "mistralai/Mistral-7B-v0.1"
    assert len(tok) == 32000 and tok.chat_template is None
    return tok
