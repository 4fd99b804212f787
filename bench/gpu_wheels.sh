#!/usr/bin/env bash
# Fills .whl/ (git-ignored) with what bench/gpu.sh installs on a GPU machine that has PyTorch but
# not phyray's other needs: CPython 3.12 wheels of pydantic and its needs, hjson, and DeepSpeed
# built here from its sdist (pure Python; no ops compiled). Versions follow this checkout's venv.
set -euo pipefail
cd "$(dirname "$0")/.."
version() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .whl \
  "pydantic==$(version pydantic)" "pydantic_core==$(version pydantic_core)" "annotated-types==$(version annotated-types)" \
  "typing-inspection==$(version typing-inspection)" "typing_extensions==$(version typing_extensions)" \
  "hjson==$(version hjson)"
src=$(mktemp -d)
python3 -m pip download -q --no-deps --no-binary=:all: -d "$src" "deepspeed==$(version deepspeed)"
.venv/bin/pip wheel -q --no-deps --no-build-isolation "$src"/deepspeed-*.tar.gz -w .whl
rm -rf "$src"
ls .whl
