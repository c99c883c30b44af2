"""Tiny tokenizers of today's chat families: each family's real special tokens and real chat template.

`build_family_tokenizer(family, vocab_size, model_max_length)` trains a byte-level BPE on the built-in
sample (tiny/models.py: any UTF-8 text round-trips) with the family's specials (bos/eos/pad, turn
markers, think and tool tokens its template writes) as single tokens, exactly `vocab_size` tokens in
all, and gives it the family's template from chat_templates/<family>.jinja (SOURCES.md there says where
each comes from). So the chat-template code (job/chat_render.py) meets the templates it meets on LUMI
without the hub. Deterministic: the same arguments give the same tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "chat_templates"

_QWEN = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "</tool_call>",
         "<tool_response>", "</tool_response>")
_MISTRAL = ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CALLS]",
            "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[THINK]", "[/THINK]")


@dataclass(frozen=True)
class Family:
    specials: tuple[str, ...]  # in id order from 0, bos/eos/pad among them
    bos: str | None
    eos: str  # the token that ends the assistant turn: generation stops on it
    pad: str | None


FAMILIES = {
    "qwen3": Family(_QWEN, None, "<|im_end|>", "<|endoftext|>"),
    "qwen3_5": Family(_QWEN + ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"),
                      None, "<|im_end|>", "<|endoftext|>"),
    "llama3": Family(("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                      "<|eot_id|>", "<|eom_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>"),
                     "<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>"),
    "gemma3": Family(("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"),
                     "<bos>", "<end_of_turn>", "<pad>"),
    "gemma4": Family(("<pad>", "<eos>", "<bos>", "<unk>", "<|turn>", "<turn|>", "<|think|>", "<|channel>",
                      "<channel|>", "<|tool>", "<tool|>", "<|tool_call>", "<tool_call|>", "<|tool_response>",
                      "<tool_response|>", '<|"|>', "<|image|>", "<|audio|>", "<|video|>"),
                     "<bos>", "<turn|>", "<pad>"),
    "apertus": Family(("<pad>", "<s>", "</s>", "<|system_start|>", "<|system_end|>", "<|developer_start|>",
                       "<|developer_end|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>",
                       "<|assistant_end|>", "<|inner_prefix|>", "<|inner_suffix|>", "<|tools_prefix|>",
                       "<|tools_suffix|>"),
                      "<s>", "<|assistant_end|>", "<pad>"),
    "ministral3": Family(_MISTRAL + ("<pad>", "[IMG]", "[IMG_BREAK]", "[IMG_END]", "[ARGS]"), "<s>", "</s>", "<pad>"),
    "mistral": Family(_MISTRAL, "<s>", "</s>", None),
}


def template(family: str) -> str | None:
    """The family's real chat template, or None where none was found (SOURCES.md names those)."""
    path = TEMPLATES / f"{family}.jinja"
    return path.read_text() if path.exists() else None


def build_family_tokenizer(family: str, vocab_size: int, model_max_length: int):
    """A byte-level BPE PreTrainedTokenizerFast of exactly vocab_size tokens with `family`'s specials
    (single tokens, ids from 0) and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from dfm_hpc.tiny.models import sample_text

    if family not in FAMILIES:
        raise ValueError(f"unknown tokenizer family {family!r}; known: {', '.join(FAMILIES)}")
    fam = FAMILIES[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(fam.specials), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(sample_text(), trainer=trainer)
    named = {fam.bos, fam.eos, fam.pad}
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=fam.bos, eos_token=fam.eos, pad_token=fam.pad,
        additional_special_tokens=[t for t in fam.specials if t not in named], model_max_length=model_max_length,
    )
    if len(hf) != vocab_size:  # the sample must fill the vocabulary
        raise RuntimeError(f"tiny {family} tokenizer has {len(hf)} tokens, not {vocab_size}")
    hf.chat_template = template(family)
    return hf
