#!/usr/bin/env bash
# Idempotent setup of the PHYRE sidecar environment: a second virtual environment at .venv-phyre
# in the repo root with phyre==0.2.2 and numpy<1.24. PHYRE 0.2.2 ships wheels only up to
# Python 3.9, and numpy >= 1.24 breaks its RGB conversion, so it cannot live in the main .venv;
# phyray talks to it through a subprocess (phyray/sim/phyre.py).
#   bash scripts/setup_phyre.sh
# Environment:
#   PHYRAY_PHYRE_PYTHON   a Python 3.9 interpreter: used as is if it already has phyre, else
#                         the base of the venv (default: python3.9 on PATH, then pyenv's
#                         3.9.* versions, via `pyenv root` or ~/.pyenv)
# Without any Python 3.9 it prints one line saying what to install and exits 0, so that the main
# setup never fails because of the optional PHYRE data.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-phyre

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import phyre, zstandard' 2>/dev/null; then
  echo "phyray setup: $VENV ready (phyre already installed)"
  exit 0
fi
# phyray runs $PHYRAY_PHYRE_PYTHON itself when it is set (phyray/sim/phyre.py), so an
# interpreter that already has phyre needs no venv.
if [ -n "${PHYRAY_PHYRE_PYTHON:-}" ] && "$PHYRAY_PHYRE_PYTHON" -c 'import phyre' 2>/dev/null; then
  echo "phyray setup: using PHYRAY_PHYRE_PYTHON=$PHYRAY_PHYRE_PYTHON (phyre already installed)"
  exit 0
fi

is_py39() {
  # pyenv shims exist on PATH for every installed version but fail unless selected: run it.
  "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 9) else 1)' >/dev/null 2>&1
}

pick_python39() {
  local cands=("${PHYRAY_PHYRE_PYTHON:-}" python3.9)
  local root
  root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  cands+=("$root"/versions/3.9.*/bin/python)
  for cand in "${cands[@]}"; do
    [ -n "$cand" ] || continue
    if command -v "$cand" >/dev/null 2>&1 && is_py39 "$cand"; then
      command -v "$cand"; return 0
    fi
  done
  return 1
}

if ! PY=$(pick_python39); then
  echo "phyray setup: skipping PHYRE (no Python 3.9 found; install one, e.g. 'pyenv install 3.9', or set PHYRAY_PHYRE_PYTHON, then run bash scripts/setup_phyre.sh)"
  exit 0
fi

echo "phyray setup: creating $VENV with $("$PY" --version) for PHYRE"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
# zstandard: the sidecar sends frames already encoded (the bytes pyarrow's zstd level 1 makes;
# tests/test_phyre.py checks they are the same), a fifth less CPU per video end to end.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "phyre==0.2.2" "numpy<1.24" "zstandard==0.25.0"
"$VENV/bin/python" -c 'import phyre' # fail loudly if the install is broken
echo "phyray setup: $VENV ready (phyre 0.2.2, $("$VENV/bin/python" -c 'import numpy; print("numpy", numpy.__version__)'))"
if [ -n "${PHYRAY_PHYRE_PYTHON:-}" ]; then
  echo "phyray setup: note: phyray runs PHYRAY_PHYRE_PYTHON directly; unset it to use $VENV"
fi
