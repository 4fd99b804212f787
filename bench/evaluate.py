"""Benchmark: evaluation throughput per core, from stored shards to metrics.

Generates `--videos` videos per scenario and resolution with the generator (Ray, not timed) into a
temporary directory, then scores them against themselves in this process on one core (numpy,
BLAS and torch limited to one thread) and prints videos/s per core for:

- decode: reading the shards and decoding both streams of a video (rollout and reference);
- physics: `evaluate_physics` without pixel metrics: decode + parse + velocity metrics, for the
  rollout and, as its ground-truth floor, the reference (two streams per video);
- + psnr: the same with PSNR;
- + ssim: the same with PSNR and SSIM, on the first `--ssim-videos` videos only (SSIM's
  convolutions dominate on CPU).

Each figure is the best of `--repeats` runs, as wall time and as this process's CPU time (the
machine may be shared). Baseline: the paper's
evaluator, 0.16 s per stored 256² video on one core (MP4 decode 0.14 s + parse/metrics 0.02 s,
docs/paper.md §13), i.e. 6.25 videos/s; the target is >= 50x per core at 256² (>= 312 videos/s).

    .venv/bin/python bench/evaluate.py
    .venv/bin/python bench/evaluate.py --videos 200 --resolutions 128 --scenarios collision
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core: set before numpy and torch load their pools

import argparse  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from phyray.config import load_data_config  # noqa: E402
from phyray.data.generate import generate_dataset  # noqa: E402
from phyray.data.shards import decode_frames, read_shard, shard_paths  # noqa: E402
from phyray.eval.report import REFERENCE_COLUMNS, evaluate_physics  # noqa: E402
from phyray.runtime import init_ray  # noqa: E402

PAPER_S_PER_VIDEO_256 = 0.16
TARGET_SPEEDUP = 50.0


def best_of(repeats: int, fn) -> tuple[float, float]:
    """The shortest wall time and the shortest CPU time of `repeats` calls of fn().

    On a shared machine the CPU time (this process, one thread) is the fairer per-core figure.
    """
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def decode_all(directory: Path) -> None:
    """Read every shard and decode each video twice (the rollout and its reference)."""
    for path in shard_paths(directory):
        for row in read_shard(path, REFERENCE_COLUMNS).to_pylist():
            decode_frames(row)
            decode_frames(row)


def subset(directory: Path, videos: int, root: Path) -> Path:
    """A dataset of the first `videos` videos of `directory` (same manifest format)."""
    from phyray.artifacts import MANIFEST, atomic_write_json
    from phyray.data.shards import shard_name, write_shard

    out = root / f"{directory.name}-first{videos}"
    out.mkdir()
    table = read_shard(shard_paths(directory)[0]).slice(0, videos)
    entry = write_shard(table, out / shard_name(0))
    manifest = {"num_videos": table.num_rows, "shards": [entry]}
    atomic_write_json(out / MANIFEST, manifest)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=["uniform_motion", "collision"])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--videos", type=int, default=500)
    parser.add_argument("--ssim-videos", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parser", default="subpixel")
    args = parser.parse_args()

    torch.set_num_threads(1)
    init_ray(num_cpus=2)
    baseline = 1 / PAPER_S_PER_VIDEO_256
    print(f"baseline (paper's evaluator, 256², one core): {baseline:.2f} videos/s; "
          f"target >= {TARGET_SPEEDUP:.0f}x = {TARGET_SPEEDUP * baseline:.0f} videos/s per core at 256²")
    print(f"{'scenario':<15} {'res':>4} {'stage':<10} {'videos/s/core':>14} {'ms/video':>9} {'x paper':>8} "
          f"{'videos/CPU-s':>13} {'x paper':>8}")
    with tempfile.TemporaryDirectory(prefix="phyray-bench-eval-") as tmp:
        root = Path(tmp)
        for scenario in args.scenarios:
            for resolution in args.resolutions:
                cfg = load_data_config(scenario, [f"render.resolution={resolution}", "shard_size=250"])
                data = root / f"{scenario}-{resolution}"
                generate_dataset(cfg, "eval_id", str(args.videos), data, seed=0, num_workers=2, progress=False)
                small = subset(data, args.ssim_videos, root)
                common = {"parser": args.parser}
                stages = [
                    ("decode", args.videos, lambda: decode_all(data)),
                    ("physics", args.videos, lambda: evaluate_physics(data, data, psnr=False, ssim=False, **common)),
                    ("+ psnr", args.videos, lambda: evaluate_physics(data, data, ssim=False, **common)),
                    ("+ ssim", args.ssim_videos, lambda: evaluate_physics(small, small, **common)),
                ]
                for stage, videos, fn in stages:
                    wall, cpu = (seconds / videos for seconds in best_of(args.repeats, fn))
                    print(f"{scenario:<15} {resolution:>4} {stage:<10} {1 / wall:>14.1f} {1e3 * wall:>9.2f} "
                          f"{PAPER_S_PER_VIDEO_256 / wall:>8.1f} {1 / cpu:>13.1f} {PAPER_S_PER_VIDEO_256 / cpu:>8.1f}")
                shutil.rmtree(data)
    print(f"cores here: {os.cpu_count()}; 'x paper' compares with the paper's 256² figure at every resolution; "
          "each video is two decoded and parsed streams (rollout + ground-truth floor)")


if __name__ == "__main__":
    main()
