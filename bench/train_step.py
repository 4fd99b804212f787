"""Benchmark: what Ray Train + Ray Data + DeepSpeed cost per training step.

Trains the same DiT on the same cached latents twice and prints step time and samples/s:
1. a plain single-process PyTorch loop (tensors in memory, torch AdamW), the baseline;
2. `phyray train` with 1 worker (TorchTrainer, DeepSpeed engine, Ray Data streaming).
Steady state only: the first logging window (start-up, warm-up) is dropped from both, and the
set is large enough (--videos) that the run stays within its first epoch: restarting a Ray Data
epoch costs seconds, which a real (30K+ video) epoch amortises but a 16-video one would not.
Target: Ray Train's overhead per step <= 5%.

    .venv/bin/python bench/train_step.py                      # DiT-M, 32², CPU
    .venv/bin/python bench/train_step.py --model DiT-S --resolution 128 --frames 32 \\
        --micro-batch 8 --gpu                                 # the GPU figures: bf16, MFU, memory

With --gpu it also reports tokens/s, MFU (from `phyray model info` FLOPs and the device's peak)
and peak memory of the plain loop.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def make_latents(root: Path, resolution: int, frames: int, videos: int, vae: str) -> Path:
    """Tiny pixel set -> a randomly initialised VAE export -> cached latents (what the DiT reads)."""
    from phyray.config import load_data_config
    from phyray.data.generate import generate_dataset
    from phyray.data.latents import encode_dataset
    from phyray.models.export import save_export
    from phyray.models.vae import build_vae

    cfg = load_data_config("uniform_motion", [f"render.resolution={resolution}", f"physics.num_frames={frames}"])
    generate_dataset(cfg, "train", str(videos), root / "pixels", progress=False)
    export = save_export(root / "vae", "vae", {"preset": vae}, build_vae(vae).state_dict())
    encode_dataset(root / "pixels", export, root / "latents", cond_frames=3, num_workers=1)
    return root / "latents"


def plain_loop(cfg, latents_dir: Path, device: torch.device, steps: int, window: int) -> list[float]:
    """Seconds per step of a single-process loop over in-memory latents, per logging window."""
    from phyray.data.latents import decode_latents
    from phyray.data.shards import read_shard, shard_paths
    from phyray.train.loop import autocast, build_objective

    table = read_shard(shard_paths(latents_dir)[0]).to_pydict()
    data = {k: torch.from_numpy(v).to(device) for k, v in decode_latents(table).items()}
    objective = build_objective(cfg).to(device)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=cfg.optim.lr)
    generator = torch.Generator(device=device).manual_seed(0)
    n = len(data["latent"])
    times, start = [], time.perf_counter()
    for step in range(1, steps + 1):
        idx = torch.randint(0, n, (cfg.micro_batch,), generator=torch.Generator().manual_seed(step))
        with autocast(cfg, device):
            loss = objective(data["latent"][idx], data["cond"][idx], generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), cfg.grad_clip)
        optimizer.step()
        if step % window == 0:
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - start) / window)
            start = time.perf_counter()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="DiT-M")
    parser.add_argument("--vae", default="vae-f4t2c4-tiny")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--videos", type=int, default=512, help="videos in the latent set")
    parser.add_argument("--zero-stage", type=int, default=1)
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args()

    from mlflow.tracking import MlflowClient

    from phyray.config import TrainConfig, validate
    from phyray.models.info import estimate_mfu, model_info, peak_flops
    from phyray.runtime import init_ray
    from phyray.train.trainer import train

    init_ray()
    device = torch.device("cuda" if args.gpu else "cpu")
    with tempfile.TemporaryDirectory(prefix="phyray-bench-train-") as tmp:
        root = Path(tmp)
        latents = make_latents(root, args.resolution, args.frames, args.videos, args.vae)
        cfg = validate(TrainConfig, {
            "task": "dit", "name": "bench", "output_dir": str(root / "runs"),
            "data": {"train": str(latents), "shuffle_buffer": 0},
            "model": {"vae": args.vae, "dit": args.model},
            "steps": args.steps, "batch_size": args.micro_batch, "micro_batch": args.micro_batch,
            "log_every": args.window, "checkpoint_every": args.steps, "workers": 1, "use_gpu": args.gpu,
            # Ray caps a worker's torch threads at its CPUs; give it the plain loop's threads.
            "cpus_per_worker": torch.get_num_threads(),
            "zero_stage": args.zero_stage,
        })
        if args.gpu:
            torch.cuda.reset_peak_memory_stats()
        plain = statistics.median(plain_loop(cfg, latents, device, args.steps, args.window)[1:])
        peak_mem = torch.cuda.max_memory_allocated() / 2**30 if args.gpu else None
        run = train(cfg)
        history = MlflowClient(run.tracking_uri).get_metric_history(run.run_id, "train/samples_per_s")
        ray_step = statistics.median(args.micro_batch / m.value for m in sorted(history, key=lambda m: m.step)[1:])

    info = model_info(args.model, args.resolution, args.frames, vae=args.vae)
    print(f"{args.model} on {args.vae} latents of {args.frames}x{args.resolution}², micro-batch {args.micro_batch}, "
          f"{info['tokens_per_video']} tokens/video, device {device}, ZeRO stage {args.zero_stage}")
    for name, step_s in (("plain loop", plain), ("phyray train (1 worker)", ray_step)):
        samples = args.micro_batch / step_s
        line = f"  {name:<24} {1e3 * step_s:8.1f} ms/step {samples:8.2f} samples/s {samples * info['tokens_per_video']:10.0f} tokens/s"
        if args.gpu:
            peak = peak_flops(torch.cuda.get_device_name())
            mfu = estimate_mfu(info["train_flops_per_video"], samples, peak)
            line += f"  MFU {100 * mfu:.1f}%" if mfu is not None else "  MFU n/a"
        print(line)
    if peak_mem is not None:
        print(f"  peak memory (plain loop): {peak_mem:.2f} GiB")
    print(f"Ray Train overhead per step: {100 * (ray_step / plain - 1):+.1f}% (target <= 5%)")


if __name__ == "__main__":
    main()
