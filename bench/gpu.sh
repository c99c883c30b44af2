#!/usr/bin/env bash
# bench/gpu.sh: the GPU benchmark (issues #14, #21), one script under 10 minutes on one GPU:
# full-FT SFT of a ~1B Qwen3-shaped model at 8k tokens (fullft: plain torch, no DeepSpeed; runs first),
# CPT tokens/s + MFU of a ~1B Llama-shaped model (bf16, SDPA, DeepSpeed ZeRO-2 and ZeRO-3), LoRA SFT
# tokens/s, and MADLAD-3B-shaped translation with hf and ctranslate2 (sorted token budget vs naive).
# Random weights, nothing from a hub. Writes $BENCH_OUT/gpu_bench.json and gpu_bench.md.
#
#   bash bench/gpu.sh                # on a GPU machine (docs/benchmarks.md#gpu-benchmark)
#   bash bench/gpu.sh --only fullft  # the full fine-tuning part alone (torch + transformers suffice)
#   bash bench/gpu.sh --smoke        # tiny shapes on the CPU: what make test runs (tests/test_gpu_bench.py)
#
# BENCH_OUT (default bench/out), PYTHON (default .venv/bin/python, else python3), BENCH_TIMEOUT
# (seconds, default 600); further arguments go to bench/gpu_bench.py (--only fullft,cpt,sft,translate,
# --strict).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3
OUT_DIR="${BENCH_OUT:-bench/out}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false TRANSFORMERS_VERBOSITY=error TQDM_DISABLE=1
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null \
   && [[ " $* " != *" --smoke "* ]]; then
  echo "bench/gpu.sh: no GPU visible to $PY; run with --smoke for the CPU smoke mode" >&2
  exit 2
fi
exec timeout "${BENCH_TIMEOUT:-600}" "$PY" bench/gpu_bench.py --out "$OUT_DIR" "$@"
