#!/usr/bin/env bash
# build_euroeval.sh: EuroEval's own environment for the evaluate stage on LUMI (docs/evaluation.md).
#
# EuroEval's pins conflict with the training stack, so it is not in the dfm_hpc overlay: the
# evaluate stage runs it as a separate process (`python -m euroeval.cli ... --api-base
# http://127.0.0.1:PORT/v1`) against the vLLM server the stage starts in the job. This builds that
# process's venv, *inside* the LUMI AI Factory container (its Python 3.12; --system-site-packages so
# the container's torch/ROCm stays the one imported), on /project where the evaluate job finds it
# (cluster.env.DFM_HPC_EUROEVAL_PYTHON in conf/cluster/lumi.yaml). EuroEval >= 17 needs Python >= 3.12
# and fixed air-gapped use (17.5.0); both are checked.
#
# Usage, on a LUMI login node (internet), from a dfm_hpc checkout:
#   export SBATCH_ACCOUNT=project_465000670
#   bash containers/build_euroeval.sh
# then fill its dataset cache (login node): python -m dfm_hpc prefetch +experiment=munin_sft --download
#
# Environment variables (all optional):
#   SIF       container image; default: container.image in conf/cluster/lumi.yaml
#   DEST      the venv; default: /project/$SBATCH_ACCOUNT/dfm_hpc/euroeval-venv
#   EUROEVAL  the pip requirement; default: euroeval>=17.5
set -euo pipefail
: "${SBATCH_ACCOUNT:?set SBATCH_ACCOUNT (project_<digits>)}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SIF="${SIF:-$(sed -n 's/^[[:space:]]*image:[[:space:]]*\([^[:space:]#]*\).*/\1/p' "$here/../conf/cluster/lumi.yaml" | head -n 1)}"
[[ -f "$SIF" ]] || { echo "container image $SIF does not exist; set SIF=..." >&2; exit 2; }
DEST="${DEST:-/project/$SBATCH_ACCOUNT/dfm_hpc/euroeval-venv}"
EUROEVAL="${EUROEVAL:-euroeval>=17.5}"
mkdir -p "$(dirname "$DEST")"
singularity exec -B "/project/$SBATCH_ACCOUNT" "$SIF" bash -euo pipefail -c '
  python3 -c "import sys; assert sys.version_info >= (3, 12), \"EuroEval >= 17 needs Python >= 3.12, the container has \" + sys.version"
  python3 -m venv --system-site-packages "$1"
  "$1/bin/pip" install --no-cache-dir "$2"
  "$1/bin/python" - <<PY
from importlib import metadata
v = metadata.version("euroeval")
assert int(v.split(".")[0]) >= 17, f"EuroEval {v}: the evaluate stage parses >= 17 and older, but LUMI wants >= 17"
print("EuroEval", v, "in", "$1")
PY
' _ "$DEST" "$EUROEVAL"
echo "done: $DEST/bin/python (cluster.env.DFM_HPC_EUROEVAL_PYTHON)"
