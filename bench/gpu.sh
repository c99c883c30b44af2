#!/usr/bin/env bash
# bench/gpu.sh: the GPU check (issues #14, #21, #25), one device call of ~8 minutes on one GPU, on the GPU
# machine's image as it is: the wheels in ./.whl (bench/carry_wheels.sh made them here; the call carries them)
# go into $GPU_SITE with pip --no-index --no-deps and onto PYTHONPATH, then bench/gpu_bench.py runs each part
# in a process of its own (CPT with and without ZeRO-2/3, LoRA SFT, MADLAD-3B-shaped translation, full-FT SFT,
# the tiny pipeline with cluster=node), skipping with the reason what cannot run. Writes $BENCH_OUT/gpu_bench.json,
# gpu_bench.md and gpu_bench.log. docs/benchmarks.md#gpu-check has the device call.
#
#   BENCH_OUT=$OUT bash bench/gpu.sh     # on the GPU machine
#   bash bench/gpu.sh --only cpt,sft     # some parts (env always): cpt, sft, translate, fullft, pipeline
#   bash bench/gpu.sh --smoke            # tiny shapes on the CPU: what tests/test_gpu_bench.py runs
#   bash bench/gpu.sh --dry              # here: the carried set against the image's package list (no GPU)
#
# BENCH_OUT (default bench/out), PYTHON (default .venv/bin/python, else python3), BENCH_DEADLINE (seconds for
# the parts, default 450), BENCH_PIPELINE (the pipeline part's arguments), GPU_SITE (default /tmp/site).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3
OUT_DIR="${BENCH_OUT:-bench/out}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false TRANSFORMERS_VERBOSITY=error TQDM_DISABLE=1 HF_HUB_OFFLINE=1
if [[ "${1:-}" == "--dry" ]]; then
  shift
  [[ -d .whl ]] && set -- --dir .whl "$@"  # the wheels too where they are here: they install, they import
  exec "$PY" bench/gpu_wheels.py check "$@"
fi
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null \
   && [[ " $* " != *" --smoke "* ]]; then
  echo "bench/gpu.sh: no GPU visible to $PY; run with --smoke for the CPU smoke mode, --dry for the wheels" >&2
  exit 2
fi
if [[ " $* " != *" --smoke "* ]]; then
  SITE="${GPU_SITE:-/tmp/site}"
  if compgen -G ".whl/*.whl" >/dev/null; then
    # a failed install is reported, not fatal: the parts that need a carried package skip with the reason
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
         .whl/*.whl; then
      export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
      echo "bench/gpu.sh: $(ls .whl/*.whl | wc -l) carried wheels installed into $SITE"
    else
      echo "bench/gpu.sh: installing the carried wheels failed; going on without them" >&2
    fi
  else
    echo "bench/gpu.sh: no .whl/ (bench/carry_wheels.sh; carry it): DeepSpeed, the pipeline will skip" >&2
  fi
fi
exec timeout "${BENCH_TIMEOUT:-540}" "$PY" bench/gpu_bench.py --out "$OUT_DIR" "$@"
