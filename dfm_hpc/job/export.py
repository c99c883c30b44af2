"""Export a trained model, or any checkpoint of it, as a plain Hugging Face model directory.

    python -m dfm_hpc.job.export RUN_DIR OUT [--stage cpt]          the stage's final model
    python -m dfm_hpc.job.export CHECKPOINT_DIR OUT                 e.g. .../stages/cpt/checkpoints/checkpoint-200

Compute side (torch, transformers, deepspeed), one process, no GPU needed. A checkpoint's ZeRO state
(any stage, written by any number of ranks) is consolidated into full fp32 weights by DeepSpeed's
zero_to_fp32, loaded into the model its config.json describes and saved as safetensors; the final
model/ is already whole (ZeRO-3 gathers the weights on save) and is loaded and saved the same way.
OUT gets model.safetensors, config.json, the tokenizer and the run's model card (README.md) when the
card stage wrote one.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def _run_of(path: Path) -> Path:
    """The run dir of a checkpoint (RUN/stages/<stage>/checkpoints/checkpoint-N) or of a run dir."""
    return path.parents[3] if path.name.startswith("checkpoint-") else path


def export(src, out, stage: str = "cpt") -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from dfm_hpc import config_io, tiny
    from dfm_hpc.rundir import stage_dir

    src, out = Path(src).resolve(), Path(out)
    run = _run_of(src)
    stage = src.parents[1].name if src.name.startswith("checkpoint-") else stage
    model_dir = stage_dir(run, stage) / "model"
    if src.name.startswith("checkpoint-"):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(src))
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src), dtype=torch.float32)
        missing, unexpected = model.load_state_dict(state, strict=False)
        tied = set(getattr(model, "_tied_weights_keys", None) or [])
        if unexpected or set(missing) - tied:
            raise RuntimeError(f"{src}: weights do not fit the config (missing {missing}, unexpected {unexpected})")
        model.tie_weights()
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    if (model_dir / "tokenizer_config.json").exists():
        tok_src = str(model_dir)
    else:  # a checkpoint before the stage finished: the tokenizer the run trained with
        tok_src = tiny.resolve(config_io.load_config(run, lenient=True).model.name_or_path, run / "cache")
    AutoTokenizer.from_pretrained(tok_src).save_pretrained(out)
    card = stage_dir(run, "card") / "README.md"
    if card.exists():
        shutil.copy(card, out / "README.md")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dfm_hpc.job.export", description=__doc__.splitlines()[0])
    ap.add_argument("src", help="a run dir or a checkpoint-N dir")
    ap.add_argument("out", help="the HF model directory to write")
    ap.add_argument("--stage", default="cpt", help="with a run dir: whose model (default cpt)")
    args = ap.parse_args(argv)
    print(export(args.src, args.out, args.stage))
    return 0


if __name__ == "__main__":
    sys.exit(main())
