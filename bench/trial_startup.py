"""Benchmark: how long a training run takes to reach its first step, and where the time goes.

Runs `phyray train` (Ray Train + DeepSpeed + Ray Data, the real engine) for a couple of steps on
a small cached latent set, several times on one warm local Ray, and prints the workers'
`startup/*` milestones (seconds from the `train()` call, logged by rank 0) and the whole call's
wall time. The baseline, from the same run: a fresh plain Python process that imports the same
libraries, builds the same model and optimiser, loads the same latents and takes the same
steps, with no Ray at all: what start-up costs without distribution. Target: a run's first step
<= 15 s after `train()` is called on this 2-core machine.

    .venv/bin/python bench/trial_startup.py                    # DiT-T, 1 worker, 3 runs
    .venv/bin/python bench/trial_startup.py --workers 2 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train_step import make_latents

MILESTONES = ("worker_entered", "imports_done", "model_built", "engine_ready", "first_batch", "first_step")

# The baseline process: what one plain training process must do before its first step.
PLAIN = """
import sys, time
started = time.time()
import torch, deepspeed  # noqa: F401  (the worker imports both)
from phyray.config import TrainConfig
from phyray.data.latents import decode_latents
from phyray.data.shards import read_shard, shard_paths
from phyray.train.engine import build_objective, objective_inputs
cfg = TrainConfig.model_validate_json(sys.argv[1])
objective = build_objective(cfg)
optimizer = torch.optim.AdamW(objective.parameters(), lr=cfg.optim.lr)
table = read_shard(shard_paths(cfg.data.train)[0]).to_pydict()
batch = {k: torch.from_numpy(v)[: cfg.micro_batch] for k, v in decode_latents(table).items()}
generator = torch.Generator().manual_seed(0)
for _ in range(cfg.steps):
    loss = objective(*objective_inputs(cfg, batch), generator=generator)
    optimizer.zero_grad(); loss.backward(); optimizer.step()
print(time.time() - started)
"""


def plain_start(cfg) -> float:
    """Wall seconds of the baseline process, from exec to its last step (interpreter start included)."""
    started = time.time()
    subprocess.run([sys.executable, "-c", PLAIN, cfg.model_dump_json()], check=True, capture_output=True)
    return time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="DiT-T")
    parser.add_argument("--vae", default="vae-f4t2c4-tiny")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--videos", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from mlflow.tracking import MlflowClient

    from phyray.config import TrainConfig, validate
    from phyray.runtime import init_ray
    from phyray.train.trainer import train

    started = time.time()
    init_ray()
    ray_up = time.time() - started
    with tempfile.TemporaryDirectory(prefix="phyray-bench-startup-") as tmp:
        root = Path(tmp)
        latents = make_latents(root, args.resolution, args.frames, args.videos, args.vae)
        base = {
            "task": "dit", "output_dir": str(root / "runs"),
            "data": {"train": str(latents), "shuffle_buffer": 0},
            "model": {"vae": args.vae, "dit": args.model},
            "steps": args.steps, "batch_size": 4 * args.workers, "micro_batch": 4,
            "log_every": args.steps, "checkpoint_every": args.steps, "workers": args.workers,
        }
        plain = [plain_start(validate(TrainConfig, {**base, "name": "plain"})) for _ in range(args.repeats)]
        runs = []
        for repeat in range(args.repeats):
            cfg = validate(TrainConfig, {**base, "name": f"run-{repeat}"})
            called = time.time()
            run = train(cfg)
            total = time.time() - called
            metrics = MlflowClient(run.tracking_uri).get_run(run.run_id).data.metrics
            runs.append({**{m: metrics[f"startup/{m}_s"] for m in MILESTONES}, "total": total})

    print(f"{args.model} on {args.vae} latents of {args.frames}x{args.resolution}², {args.workers} worker(s), "
          f"{args.steps} steps, {args.repeats} runs on one warm local Ray (ray.init: {ray_up:.1f} s, once)")
    print("  seconds from train() called, per run [median]:")
    for name in (*MILESTONES, "total"):
        label = "train() returned" if name == "total" else name
        values = [r[name] for r in runs]
        print(f"    {label:<18} {' '.join(f'{v:6.1f}' for v in values)}   [{statistics.median(values):5.1f}]")
    print(f"  baseline, a plain process to its step {args.steps} (no Ray): "
          f"{' '.join(f'{v:.1f}' for v in plain)} s [{statistics.median(plain):.1f}]")
    first_step = statistics.median(r["first_step"] for r in runs)
    print(f"first step after {first_step:.1f} s = {first_step / statistics.median(plain):.1f}x the plain process "
          f"(target <= 15 s)")


if __name__ == "__main__":
    main()
