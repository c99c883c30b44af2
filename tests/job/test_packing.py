"""SFT packing as the sft stage configures TRL (packing=True, assistant-only loss): on an OASST-like
length mix the packed batches are (nearly) all real tokens, and the loss over the same examples
equals the unpacked loss, because attention and positions stay per example."""

from __future__ import annotations

import random

import pytest

trl = pytest.importorskip("trl")


def _chats(n=64, seed=0):
    rng = random.Random(seed)
    words = "jeg du han hun vi de er var har kan vil skal til fra med og men hvis når der her".split()
    out = []
    for _ in range(n):  # long-tailed turn lengths, like OASST's
        q, a = (max(2, int(rng.lognormvariate(mu, 0.8))) for mu in (3.0, 3.5))
        out.append({"messages": [{"role": "user", "content": " ".join(rng.choice(words) for _ in range(q))},
                                 {"role": "assistant", "content": " ".join(rng.choice(words) for _ in range(a))}]})
    return out


def _first_step(path, tok, ds, packing, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa")
    # all 64 examples in one step either way: one padded batch of 64, or one packed row
    args = trl.SFTConfig(output_dir=str(tmp_path / f"out{packing}"), max_steps=1, report_to=[], use_cpu=True,
                         bf16=False, per_device_train_batch_size=1 if packing else len(ds),
                         max_length=16384 if packing else 512, packing=packing, assistant_only_loss=True,
                         learning_rate=0.0, save_strategy="no")
    t = trl.SFTTrainer(model=model, args=args, processing_class=tok, train_dataset=ds)
    batch = next(iter(t.get_train_dataloader()))
    mask = batch.get("attention_mask")
    # padded: the attention mask; packed rows are padding-free, so count pad tokens (none expected)
    real = int(mask.sum()) if mask is not None else int((batch["input_ids"] != tok.pad_token_id).sum())
    return real / batch["input_ids"].numel(), t.train().training_loss


@pytest.mark.e2e
def test_packing_wastes_no_tokens_and_keeps_the_loss(tmp_path):
    import datasets
    from transformers import AutoTokenizer

    from dfm_hpc import tiny

    path = tiny.resolve("tiny:llama", tmp_path / "cache")
    tok = AutoTokenizer.from_pretrained(path)
    ds = datasets.Dataset.from_list(_chats())
    padded_real, padded_loss = _first_step(path, tok, ds, False, tmp_path)
    packed_real, packed_loss = _first_step(path, tok, ds, True, tmp_path)
    print(f"real-token fraction: padded {padded_real:.3f}, packed {packed_real:.3f}; "
          f"loss padded {padded_loss:.6f}, packed {packed_loss:.6f}")
    assert packed_real >= 0.95 and padded_real < 0.6
    assert packed_loss == pytest.approx(padded_loss, rel=1e-5)
