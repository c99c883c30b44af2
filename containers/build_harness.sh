#!/usr/bin/env bash
# build_harness.sh: the harness overlay, EuroEval's and inspect_ai's environment for the evaluate stage on LUMI.
#
# Usage, on a LUMI login node (compute nodes have no internet), from a dfm_hpc checkout:
#   export SBATCH_ACCOUNT=project_465000670
#   bash containers/build_harness.sh
# then fill EuroEval's dataset cache (docs/lumi.md): python -m dfm_hpc prefetch +experiment=munin_sft --download
#
# EuroEval's and inspect's pins conflict with the training stack, so they are not in the dfm_hpc overlay: the
# evaluate stage runs them as separate processes against the vLLM server it starts in the job. This builds
# their venv the way build_overlay.sh builds the main one (it runs build_overlay.sh): inside the LUMI AI
# Factory container, with --system-site-packages so that the container's torch/ROCm is the one imported,
# squashed into one file (default /project/$SBATCH_ACCOUNT/dfm_hpc/dfm_hpc-harness.sqsh, which is
# container.harness_overlay in conf/cluster/lumi.yaml) and mounted by the evaluate job alone at
# /harness-software (its python: cluster.env.DFM_HPC_EUROEVAL_PYTHON). The same checks as the main overlay:
# the venv sees the container's torch (no second torch), and every package installed into the venv is the
# copy Python imports. Only torch and its family are pinned to the container's (PIN=torch): EuroEval may
# need newer releases of other packages than the container's, which then live in the venv.
#
# Not a plain venv on /project (containers/build_euroeval.sh, removed): thousands of small files on Lustre,
# against the project's 100k-file quota, and the evaluate job on LUMI refuses one (login/checks/harness.py).
#
# Environment variables (all optional; the rest as build_overlay.sh --help lists them):
#   SIF        container image; default: container.image in conf/cluster/lumi.yaml
#   OUT        output .sqsh; default: /project/$SBATCH_ACCOUNT/dfm_hpc/dfm_hpc-harness.sqsh
#   HARNESSES  the pip requirements; default: "euroeval>=17.5 inspect-ai>=0.3.150"
#   LOCK       locked versions; default: requirements/harness-lumi.txt (make lock; Python 3.12, no torch),
#              less what the container pins (torch and its family); LOCK= resolves HARNESSES anew
set -euo pipefail

case "${1:-}" in
  -h | --help) sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
  "") ;;
  *) echo "build_harness: unknown argument '$1' (settings are environment variables; see --help)" >&2; exit 1 ;;
esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
SIF="${SIF:-$(sed -n 's/^[[:space:]]*image:[[:space:]]*\([^[:space:]#]*\).*/\1/p' "$here/../conf/cluster/lumi.yaml" | head -n 1)}"
[[ -f "$SIF" ]] || { echo "build_harness: container image $SIF does not exist; set SIF=..." >&2; exit 1; }
command -v singularity >/dev/null || { echo "build_harness: singularity not found; run this on a LUMI login node" >&2; exit 1; }

# EuroEval >= 17 (the Every Eval Ever records, air-gapped use fixed in 17.5) needs Python >= 3.12
singularity exec "$SIF" python -c 'import sys; assert sys.version_info >= (3, 12), "EuroEval >= 17 needs Python >= 3.12; the container has " + sys.version' \
  || { echo "build_harness: the container's Python is too old for EuroEval >= 17" >&2; exit 1; }

export SIF MOUNT=/harness-software NAME=dfm_hpc-harness.sqsh DFM_HPC=0 PIN="${PIN:-torch}" LOCK="${LOCK-$here/../requirements/harness-lumi.txt}"
export EXTRA_PIP="${HARNESSES:-euroeval>=17.5 inspect-ai>=0.3.150}${EXTRA_PIP:+ $EXTRA_PIP}"
export IMPORTS="euroeval euroeval.cli inspect_ai torch"
bash "$here/build_overlay.sh"

out="${OUT:-/project/${SBATCH_ACCOUNT:-}/dfm_hpc/$NAME}"
echo "==> the harnesses' versions in $out:"
singularity exec -B "$out:$MOUNT:image-src=/" "$SIF" "$MOUNT/bin/python" -c '
from importlib import metadata
v = metadata.version("euroeval")
assert int(v.split(".")[0]) >= 17, f"EuroEval {v}: LUMI wants >= 17 (the evaluate stage parses both formats)"
print("EuroEval", v, "inspect_ai", metadata.version("inspect_ai"), "torch", metadata.version("torch"))
'
echo "==> done: the evaluate job mounts it at $MOUNT (cluster.container.harness_overlay=$out)"
