#!/usr/bin/env bash
# bench/carry_wheels.sh (make gpu-wheels): the wheels the GPU check carries to the GPU machine, in ./.whl
# (git-ignored), and bench/gpu_wheels.json, their record; then the dry mode against the image's package list.
# Needs PyPI (pip download); builds deepspeed's sdist into a pure-Python wheel with DS_BUILD_OPS=0.
# PYTHON (default .venv/bin/python: it needs pip, packaging, setuptools; torch for deepspeed's setup.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
"$PY" bench/gpu_wheels.py build --dir .whl "$@"
