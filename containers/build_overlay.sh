#!/usr/bin/env bash
# build_overlay.sh: build the Python overlay that dfm_hpc's LUMI cluster profiles run in.
#
# Usage, on a LUMI login node (compute nodes have no internet), from a dfm_hpc checkout:
#   export SBATCH_ACCOUNT=project_465000670
#   bash containers/build_overlay.sh
#
# Output: a squashfs image (default /project/$SBATCH_ACCOUNT/dfm_hpc/dfm_hpc-venv.sqsh, which
# is container.overlay in conf/cluster/lumi.yaml) of a venv that was created *inside* the LUMI AI
# Factory PyTorch container ($SIF) with --system-site-packages. The venv holds dfm_hpc (this
# checkout, non-editable) and the packages the container lacks; torch and everything else the
# container ships stay the container's. Jobs mount the image at /user-software:
#   SINGULARITYENV_PREPEND_PATH=/user-software/bin \
#     singularity exec -B $OUT:/user-software:image-src=/ $SIF python ...
# which is the command line dfm_hpc renders for cluster=lumi|lumi_small|lumi_dev.
# Recipe: LUMI AI guide, 02-setting-up-environment (venv in the container, mksquashfs).
#
# Environment variables (all optional):
#   SIF        container image; default: container.image in conf/cluster/lumi.yaml
#   OUT        output .sqsh; default: /project/$SBATCH_ACCOUNT/dfm_hpc/dfm_hpc-venv.sqsh
#   EXTRAS     dfm_hpc extras to install (pyproject.toml); default: train,translate
#   EXTRA_PIP  further pip requirements, space separated, e.g. "wandb evaluate==0.4.3"
#   LOCK       the locked versions to install (make lock); default: requirements/lumi.txt of the
#              checkout. Packages the container has keep the container's version (PIN); the rest
#              get the locked one. LOCK= (empty) resolves anew from pyproject.toml's ranges.
#   PIN        all (default): every package the container has keeps its version; pip only
#              adds what is missing, choosing versions compatible with the container's.
#              torch: pin only torch/torchvision/torchaudio/triton; pip may then install newer
#              copies of other container packages into the venv (the build fails if the
#              container's copies would still be the ones imported).
#   MOUNT      where jobs mount the image, and so where the venv is built (a venv belongs to its path);
#              default /user-software. containers/build_harness.sh sets MOUNT=/harness-software,
#              NAME=dfm_hpc-harness.sqsh, DFM_HPC=0, PIN=torch and IMPORTS for the harness overlay
#   NAME       the default OUT's file name; default dfm_hpc-venv.sqsh
#   DFM_HPC    1 (default): install dfm_hpc from this checkout; 0: only LOCK and EXTRA_PIP
#   IMPORTS    the modules the image must import, the way jobs use it; default: dfm_hpc's own
#   WORK_DIR   where the venv is built (default: $TMPDIR or /tmp); a temp dir in it is removed
#              at the end unless KEEP_WORK=1
#   SINGULARITY_CACHEDIR, SINGULARITY_TMPDIR
#              default: /scratch/$SBATCH_ACCOUNT/$USER/singularity/{cache,tmp}, not $HOME
#              (singularity caches fill the 20 GB home quota)
#
# After changing dfm_hpc (or its dependencies), run this again: the overlay holds a copy of the
# code, and the ranks import that copy, not your checkout. Jobs that already started keep the
# image they mounted; jobs still pending mount the new one when they start.

set -euo pipefail
umask 022  # the image is shared with the project: files must be readable by everyone in it

say() { printf '==> %s\n' "$*"; }
warn() { printf 'build_overlay: warning: %s\n' "$*" >&2; }
die() { printf 'build_overlay: error: %s\n' "$*" >&2; exit 1; }

case "${1:-}" in
  -h | --help) sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
  "") ;;
  *) die "unknown argument '$1' (settings are environment variables; see --help)" ;;
esac

USER="${USER:-$(id -un)}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
[[ -f "$REPO/pyproject.toml" && -f "$REPO/dfm_hpc/__init__.py" ]] \
  || die "$REPO is not a dfm_hpc checkout (no pyproject.toml / dfm_hpc/)"

command -v singularity >/dev/null || die "singularity not found; run this on a LUMI login node"
command -v mksquashfs >/dev/null || die "mksquashfs not found; run this on a LUMI login node"

# ------------------------------------------------------------------ settings

if [[ -z "${SIF:-}" ]]; then
  SIF="$(sed -n 's/^[[:space:]]*image:[[:space:]]*\([^[:space:]#]*\).*/\1/p' "$REPO/conf/cluster/lumi.yaml" | head -n 1)"
  [[ -n "$SIF" ]] || die "could not read container.image from $REPO/conf/cluster/lumi.yaml; set SIF=/path/to/lumi-multitorch-full-*.sif"
fi
ACCOUNT="${SBATCH_ACCOUNT:-}"
if [[ -n "$ACCOUNT" && ! "$ACCOUNT" =~ ^project_[0-9]{9}$ ]]; then
  die "SBATCH_ACCOUNT=$ACCOUNT is not a LUMI project (project_ + 9 digits, e.g. project_465000670)"
fi
MOUNT="${MOUNT:-/user-software}"
NAME="${NAME:-dfm_hpc-venv.sqsh}"
DFM_HPC="${DFM_HPC:-1}"
IMPORTS="${IMPORTS:-dfm_hpc dfm_hpc.job.rank submitit torch hydra omegaconf rich}"
[[ "$MOUNT" =~ ^/[A-Za-z0-9._/-]+$ ]] || die "MOUNT=$MOUNT: an absolute path"
[[ "$IMPORTS" =~ ^[A-Za-z0-9_.\ ]+$ ]] || die "IMPORTS=$IMPORTS: module names, space separated"
if [[ -z "${OUT:-}" ]]; then
  [[ -n "$ACCOUNT" ]] || die "set SBATCH_ACCOUNT=project_<9 digits> (or OUT=/path/to/$NAME)"
  OUT="/project/$ACCOUNT/dfm_hpc/$NAME"
fi
[[ "$OUT" == /* ]] || OUT="$PWD/$OUT"
EXTRAS="${EXTRAS-train,translate}"
PIN="${PIN:-all}"
[[ "$PIN" == all || "$PIN" == torch ]] || die "PIN=$PIN: use PIN=all or PIN=torch"
read -r -a EXTRA_REQS <<<"${EXTRA_PIP:-}"
LOCK="${LOCK-$REPO/requirements/lumi.txt}"
[[ -z "$LOCK" || -f "$LOCK" ]] || die "LOCK=$LOCK does not exist (make lock writes requirements/lumi.txt)"

# Singularity's cache and temp files go to scratch, never to the 20 GB home directory.
if [[ -z "${SINGULARITY_CACHEDIR:-}" || -z "${SINGULARITY_TMPDIR:-}" ]]; then
  if [[ -n "$ACCOUNT" && -d "/scratch/$ACCOUNT" ]]; then
    sing_base="/scratch/$ACCOUNT/$USER/singularity"
  else
    sing_base="${TMPDIR:-/tmp}/$USER-singularity"
  fi
  export SINGULARITY_CACHEDIR="${SINGULARITY_CACHEDIR:-$sing_base/cache}"
  export SINGULARITY_TMPDIR="${SINGULARITY_TMPDIR:-$sing_base/tmp}"
fi
export APPTAINER_CACHEDIR="$SINGULARITY_CACHEDIR" APPTAINER_TMPDIR="$SINGULARITY_TMPDIR"
mkdir -p "$SINGULARITY_CACHEDIR" "$SINGULARITY_TMPDIR"

# Keep the host's Python setup out of the container: ~/.local packages, PYTHONPATH, an active venv.
export PYTHONNOUSERSITE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV PIP_USER PIP_TARGET PIP_PREFIX
# ... and a job environment left over in this shell (it would put $MOUNT/bin first on PATH).
unset SINGULARITYENV_PREPEND_PATH SINGULARITYENV_APPEND_PATH SINGULARITYENV_PATH SINGULARITYENV_PYTHONPATH \
  APPTAINERENV_PREPEND_PATH APPTAINERENV_APPEND_PATH APPTAINERENV_PATH APPTAINERENV_PYTHONPATH

# ------------------------------------------------------------------ checks

[[ -f "$SIF" ]] || die "container image $SIF does not exist (list: ls -d /appl/local/laifs/containers/*/); set SIF=..."
mkdir -p "$(dirname "$OUT")" || die "cannot create $(dirname "$OUT")"
[[ -w "$(dirname "$OUT")" ]] || die "cannot write to $(dirname "$OUT"); set OUT=..."

WORK="$(mktemp -d "${WORK_DIR:-${TMPDIR:-/tmp}}/dfm_hpc-overlay.XXXXXX")"
WORK="$(cd "$WORK" && pwd -P)"  # the real path: project and scratch paths are symlinks
TMP_OUT="$OUT.tmp.$$"
cleanup() {
  rm -f "$TMP_OUT"
  if [[ "${KEEP_WORK:-0}" == 1 ]]; then say "kept the build dir $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
mkdir -p "$WORK/venv" "$WORK/src" "$WORK/tmp"
# Run everything from an empty directory: `python -c`/`python -` put the current directory first
# on sys.path, and from a checkout that would import the checkout's dfm_hpc instead of the venv's.
cd "$WORK/tmp"

# Run in the container with the venv directory mounted where the image will be mounted later, so
# that the venv's scripts and paths point at $MOUNT.
in_container() {
  singularity exec -B "$WORK" -B "$WORK/venv:$MOUNT" "$SIF" "$@"
}

say "container: $SIF"
say "output:    $OUT"
say "build dir: $WORK"

# ------------------------------------------------------------------ what the container has

TORCH_VERSION="$(in_container python -c 'import torch; print(torch.__version__)')" \
  || die "the container's python cannot import torch; is $SIF a lumi-multitorch-full-*.sif?"
say "container torch $TORCH_VERSION (kept: pip may not replace it)"

# Constraints: name==version of what the container has (PIN=all) or of torch & co. (PIN=torch).
# Later runs of pip take only versions these allow, so nothing of the container is replaced.
# The container's site-packages are recorded too, for the venv in case it cannot see them.
in_container python - "$PIN" "$WORK/constraints.txt" "$WORK/container-site.txt" <<'PY'
import importlib.metadata as md
import re
import site
import sys
import sysconfig

try:
    from packaging.version import InvalidVersion, Version
except ImportError:
    from pip._vendor.packaging.version import InvalidVersion, Version

mode, out, site_out = sys.argv[1:4]
torch_family = re.compile(r"^(torch|torchvision|torchaudio|triton|pytorch-triton(-rocm)?)$")
skip = {"pip", "setuptools", "wheel", "dfm-hpc"}  # the venv has its own pip; dfm_hpc is built here
pins = {}
for dist in md.distributions():  # in sys.path order: the first copy is the one imported
    name = dist.metadata["Name"]
    if not name:
        continue
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in pins or key in skip or (mode == "torch" and not torch_family.match(key)):
        continue
    try:
        Version(dist.version)
    except InvalidVersion:
        print(f"build_overlay: not pinning {name} {dist.version} (not a PEP 440 version)", file=sys.stderr)
        continue
    pins[key] = f"{name}=={dist.version}"
if "torch" not in pins:
    sys.exit("build_overlay: torch is not installed in this container")
with open(out, "w") as f:
    f.write("\n".join(sorted(pins.values(), key=str.lower)) + "\n")
dirs = site.getsitepackages() + [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
with open(site_out, "w") as f:
    f.write("\n".join(dict.fromkeys(dirs)) + "\n")
print(f"==> pinned {len(pins)} container package(s) in {out} (PIN={mode})")
PY

# ------------------------------------------------------------------ the venv

say "creating the venv (python -m venv --system-site-packages $MOUNT) in the container"
in_container python -m venv --system-site-packages "$MOUNT"

venv_torch="$(in_container "$MOUNT/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)"
if [[ "$venv_torch" != "$TORCH_VERSION" ]]; then
  # The container's packages live in its own venv; a new venv's --system-site-packages only sees
  # the base interpreter's. Point the new venv at the container's site-packages explicitly
  # (a .pth file: they come after the venv's own packages on sys.path).
  warn "the new venv does not see the container's torch; adding the container's site-packages via a .pth file"
  in_container "$MOUNT/bin/python" - "$WORK/container-site.txt" <<'PY'
import sys
import sysconfig

dirs = [d for d in open(sys.argv[1]).read().splitlines() if d]
with open(f"{sysconfig.get_paths()['purelib']}/zz_container_site_packages.pth", "w") as f:
    f.write("\n".join(dirs) + "\n")
PY
  venv_torch="$(in_container "$MOUNT/bin/python" -c 'import torch; print(torch.__version__)')" \
    || die "the venv cannot import the container's torch"
  [[ "$venv_torch" == "$TORCH_VERSION" ]] || die "the venv sees torch $venv_torch, the container has $TORCH_VERSION"
fi

# A copy of the sources to build from: the checkout stays untouched (pip builds in place).
spec=()
if [[ "$DFM_HPC" == 1 ]]; then
  src_files=(pyproject.toml dfm_hpc)
  for f in README.md LICENSE; do
    if [[ -e "$REPO/$f" ]]; then src_files+=("$f"); fi
  done
  (cd "$REPO" && tar --exclude='__pycache__' --exclude='*.pyc' -cf - "${src_files[@]}") | tar -C "$WORK/src" -xf -
  spec=("$WORK/src${EXTRAS:+[$EXTRAS]}")
else
  EXTRAS=""
fi

# The lock, less what the container pins (its copies stay; two pins of one package cannot resolve).
lock_args=()
if [[ -n "$LOCK" ]]; then
  python3 - "$LOCK" "$WORK/constraints.txt" "$WORK/lock.txt" <<'PY'
import re
import sys

lock, pins, out = sys.argv[1:4]
norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
pinned = {norm(ln.split("==")[0]) for ln in open(pins) if "==" in ln}
kept = [ln.strip() for ln in open(lock) if re.match(r"^[A-Za-z0-9]", ln) and norm(ln.split("==")[0]) not in pinned]
open(out, "w").write("\n".join(kept) + "\n")
print(f"==> lock {lock}: {len(kept)} locked version(s) to install, the container's kept for the rest")
PY
  lock_args=(-r "$WORK/lock.txt")
fi

say "pip install ${spec[*]:+dfm_hpc${EXTRAS:+[$EXTRAS]} }${EXTRA_REQS[*]:-}(non-editable; constraints keep the container's packages)"
in_container env TMPDIR="$WORK/tmp" "$MOUNT/bin/python" -m pip install --no-cache-dir \
  -c "$WORK/constraints.txt" "${lock_args[@]}" "${spec[@]}" "${EXTRA_REQS[@]}" \
  || die "pip install failed (see above). Internet is needed: run on a login node. A 'ResolutionImpossible'
  with PIN=all means a package needs a newer version of something the container has: pin an older
  version of that package in EXTRA_PIP, or try PIN=torch."

# Every package pip put into the venv must be the copy Python imports. (If the container puts its
# site-packages on PYTHONPATH, those come first on sys.path and would hide newer copies here.)
say "checking that the venv's packages are the ones imported"
in_container "$MOUNT/bin/python" - $IMPORTS <<'PY'
import importlib
import importlib.metadata as md
import os
import re
import sys

venv = os.path.realpath(sys.prefix)
first, mine = {}, {}
for dist in md.distributions():  # sys.path order
    name = dist.metadata["Name"]
    if not name:
        continue
    key = re.sub(r"[-_.]+", "-", name).lower()
    where = os.path.realpath(str(dist.locate_file("")))
    first.setdefault(key, (dist.version, where))
    if where.startswith(venv + os.sep):
        mine.setdefault(key, dist.version)
hidden = [f"  {k} {v} (venv) is hidden by {first[k][0]} in {first[k][1]}" for k, v in sorted(mine.items())
          if k not in ("pip", "setuptools", "wheel") and not first[k][1].startswith(venv + os.sep)]
if hidden:
    sys.exit("build_overlay: these packages were installed into the venv but the container's copies "
             "are imported instead:\n" + "\n".join(hidden) + "\nUse PIN=all (the default), or pin "
             "versions the container has in EXTRA_PIP.")
for mod in sys.argv[1:]:
    importlib.import_module(mod)
import torch  # noqa: E402
print(f"==> ok: {len(mine)} package(s) in the venv, torch {torch.__version__} from {os.path.dirname(torch.__file__)}")
PY
in_container "$MOUNT/bin/python" -m pip check || warn "pip check reports inconsistencies (listed above); jobs may still work, but look at them"

# Provenance inside the image: what was built, from what.
git_rev="$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)"
if [[ "$git_rev" != unknown ]] && ! git -C "$REPO" diff --quiet HEAD -- pyproject.toml dfm_hpc 2>/dev/null; then
  git_rev="$git_rev + uncommitted changes"
fi
{
  echo "built: $(date '+%Y-%m-%dT%H:%M:%S%z') by ${USER:-?} on $(hostname)"
  echo "container: $SIF"
  echo "torch: $TORCH_VERSION"
  echo "pin: $PIN"
  echo "dfm_hpc git: $git_rev"
  echo "extras: ${EXTRAS:-none}; extra pip: ${EXTRA_REQS[*]:-none}"
  echo "lock: ${LOCK:-none}${LOCK:+ sha256 $(sha256sum "$LOCK" | cut -d' ' -f1)}"
  echo "packages in the venv (the rest are the container's):"
  in_container "$MOUNT/bin/python" -m pip list --local --format=freeze
} >"$WORK/venv/dfm_hpc-overlay.txt"

# ------------------------------------------------------------------ squash, check, install

# One squashfs file instead of thousands of small files on Lustre (LUMI AI guide: -processors 1
# is kind to the shared login node, -no-xattrs avoids warnings on LUMI).
say "squashing the venv into $TMP_OUT"
rm -f "$TMP_OUT"
mksquashfs "$WORK/venv" "$TMP_OUT" -processors 1 -no-xattrs

say "checking the image the way jobs use it"
SINGULARITYENV_PREPEND_PATH="$MOUNT/bin" \
  singularity exec -B "$TMP_OUT:$MOUNT:image-src=/" "$SIF" python -c '
import importlib, sys
mount, mods = sys.argv[1], sys.argv[2:]
assert sys.prefix == mount, f"python is {sys.executable}, not the overlay venv"
for m in mods:
    importlib.import_module(m)
import torch
print("==> ok:", sys.executable, "torch", torch.__version__)
' "$MOUNT" $IMPORTS || die "the squashed image does not work; $OUT was left as it was"

chmod 0644 "$TMP_OUT"
mv -f "$TMP_OUT" "$OUT"

say "smoke check of $OUT"
singularity exec -B "$OUT:$MOUNT:image-src=/" "$SIF" \
  "$MOUNT/bin/python" -c 'import torch; print(torch.__version__)'

say "done: $OUT ($(du -h "$OUT" | cut -f1)); build info inside: $MOUNT/dfm_hpc-overlay.txt"
if [[ -z "$ACCOUNT" || "$OUT" != "/project/$ACCOUNT/dfm_hpc/$NAME" ]]; then
  key=overlay
  if [[ "$MOUNT" != /user-software ]]; then key=harness_overlay; fi
  say "not the profile's default path: run with cluster.container.$key=$OUT"
fi
