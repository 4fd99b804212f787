#!/usr/bin/env bash
# The GPU path of issue 21 in one device call (an H200 with PyTorch but without Ray or MLflow):
# the training step at the paper's setting (DiT-S and DiT-B, 128², 32 frames, bf16 autocast;
# one rank, so the engine runs ZeRO stage 0) at micro-batch 32 and 128, then rollouts of the
# mini and paper presets.
# Wheels that machine lacks (pydantic, DeepSpeed and their needs) travel in .whl/, which
# bench/gpu_wheels.sh fills (docs/performance.md); every figure goes to $OUT/gpu.log.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
log="${OUT:-.}/gpu.log"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  cd bench
  common=(--gpu --no-ray --models DiT-S,DiT-B --resolution 128 --frames 32 --vae vae-f8t4c4 --steps 60 --window 10)
  timeout 240 python3 train_step.py "${common[@]}" --micro-batch 32
  timeout 150 python3 train_step.py "${common[@]}" --micro-batch 128 --variants engine,engine-compiled --steps 30 --window 5
  timeout 180 python3 rollout.py --presets mini,paper --gpu
} 2>&1 | grep -v -e "UserWarning" -e "warnings.warn" | tee "$log"
