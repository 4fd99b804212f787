"""Benchmark: dataset generation throughput, per-stage CPU cost and bytes per video.

Generates the same dataset with 1 and 2 workers at 128² and 256² (a fresh directory each time,
Ray already started, so start-up is not timed), alternating 1 and 2 workers `--repeats` times
after a warm-up that runs each cell's scenario and resolution on both worker processes, and
prints the medians:
- videos/s per core (wall) and CPU-s per video split into simulate / render / encode+write,
- bytes per video on disk (Parquet shard, all columns),
- scaling efficiency from 1 to 2 workers,
against the paper's generator measured on this machine (Box2D + numpy render + MP4):
0.25 CPU-s per 256² video (4 videos/s per core), lossy, ~7 KB per video.

    .venv/bin/python bench/generate.py                      # uniform_motion and collision
    .venv/bin/python bench/generate.py --videos 4000 --scenarios collision
    .venv/bin/python bench/generate.py --plain              # + the machine's own 1 -> 2 scaling
    .venv/bin/python bench/generate.py --shard-size 250     # 8 shards of 250 instead of 2 of 1000

Shards hold the config's `shard_size` (1000) unless `--shard-size` says otherwise. A 2,000-video
set then has 2 shards: one worker writes both, two write one each, so the scaling shows what two
processes lose to each other and to Ray's own processes. Smaller shards add Ray's dispatch gap
between one shard and the next on the same worker, which a full-size set (30 shards and more)
pays once per 1,000 videos.

A worker process's first shard of a scenario and resolution is slower than its later ones (1.8
against 1.25 s for 1,000 uniform-motion videos at 128²), and a process's first task also pays
its imports (~0.6 s): measured once per setting, whichever run met them first looked slower.

`--plain` also builds the same shards in one and in two plain processes (no Ray; each process
writes half of the shards, so two do twice the work of one): the scaling this machine allows
before Ray's driver and raylet take their share of the cores.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from pathlib import Path

from phyray.config import load_data_config
from phyray.data.generate import generate_dataset, generate_shard, plan_dataset, shard_tasks
from phyray.runtime import init_ray

PAPER_CPU_S_PER_VIDEO_256 = 0.25
TARGETS = {"speedup_per_core": 20.0, "kb_per_video": {128: 15.0, 256: 40.0}, "scaling": 0.90}


def cell_config(scenario: str, resolution: int, shard_size: int | None):
    """The scenario's data config at `resolution`, with `shard_size` videos per shard (None: the config's)."""
    return load_data_config(scenario, [f"render.resolution={resolution}"] + ([f"shard_size={shard_size}"] if shard_size else []))


def run_once(scenario: str, resolution: int, videos: int, workers: int, root: Path, shard_size: int | None) -> dict:
    cfg = cell_config(scenario, resolution, shard_size)
    out = root / f"{scenario}-{resolution}-{workers}"
    start = time.perf_counter()
    manifest = generate_dataset(cfg, "train", str(videos), out, seed=0, num_workers=workers, progress=False)
    wall = time.perf_counter() - start
    shutil.rmtree(out)
    cpu = manifest["timings"]
    return {
        "wall_s": wall,
        "videos_per_s_per_core": videos / wall / workers,
        "cpu_ms": {stage: 1e3 * seconds / videos for stage, seconds in cpu.items()},
        "kb_per_video": manifest["bytes"] / videos / 1e3,
    }


def write_shards(rows: list[dict]) -> tuple[float, dict[str, float]]:
    """Build and write shards in this process; (seconds taken, CPU-seconds per stage)."""
    stages: dict[str, float] = {}
    start = time.perf_counter()
    for row in rows:
        for stage, seconds in json.loads(generate_shard(row)["timings"]).items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    return time.perf_counter() - start, stages


def median_run(runs: list[dict]) -> dict:
    """The run with the median wall time (of an odd number; the slower middle one of an even)."""
    return sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]


def plain_scaling(scenario: str, resolution: int, videos: int, root: Path, shard_size: int | None,
                  repeats: int) -> list[float]:
    """1 -> 2 plain processes (no Ray), `repeats` times, sorted: one process writes half of the
    shards, then two write half each at once; both warmed up on a shard first."""
    cfg = cell_config(scenario, resolution, shard_size)
    plan = plan_dataset(cfg, "train", str(videos), 0)
    out = root / f"{scenario}-{resolution}-plain"
    out.mkdir()
    rows = [{"task": json.dumps(task)} for task in shard_tasks(cfg, plan, out, list(range(plan.num_shards)))]
    half = len(rows) // 2
    scalings = []
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(write_shards, [rows[:1], rows[half:half + 1]])
        for _ in range(repeats):
            one, _ = pool.apply(write_shards, (rows[:half],))
            start = time.perf_counter()
            pool.map(write_shards, [rows[:half], rows[half:]])
            scalings.append(one / (time.perf_counter() - start))
        pool.close()  # let the workers exit: the pool's exit would SIGTERM them, and the Ray
        pool.join()   # signal handler they inherited prints a stack for each
    shutil.rmtree(out)
    return sorted(scalings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=["uniform_motion", "collision"])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--videos", type=int, default=2000)
    parser.add_argument("--shard-size", type=int, help="videos per shard (default: the config's, 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="1- and 2-worker runs per cell, alternating")
    parser.add_argument("--plain", action="store_true", help="also the scaling of plain processes (no Ray)")
    args = parser.parse_args()
    for scenario in args.scenarios:
        shard_size = cell_config(scenario, args.resolutions[0], args.shard_size).shard_size
        if args.videos < 2 * shard_size:  # one shard: a second worker (or plain process) has none
            parser.error(f"--videos {args.videos} makes fewer than 2 shards of {shard_size} ({scenario}); "
                         f"give --videos >= {2 * shard_size} or a smaller --shard-size")

    init_ray(num_cpus=2)
    baseline = 1 / PAPER_CPU_S_PER_VIDEO_256
    print(f"baseline (paper's generator, 256², this machine): {baseline:.1f} videos/s per core, "
          f"{PAPER_CPU_S_PER_VIDEO_256 * 1e3:.0f} CPU-ms per video, lossy MP4 ~7 KB")
    print(f"{'scenario':<15} {'res':>4} {'wk':>3} {'videos/s/core':>14} {'x paper':>8} "
          f"{'sim ms':>7} {'render ms':>9} {'enc+write ms':>12} {'KB/video':>9} {'scaling':>8}")
    with tempfile.TemporaryDirectory(prefix="phyray-bench-") as tmp:
        for scenario in args.scenarios:
            for resolution in args.resolutions:
                # Both worker processes start (imports) and make this cell's videos once: two
                # shards of 250 on two workers.
                run_once(scenario, resolution, 500, 2, Path(tmp), 250)
                runs: dict[int, list[dict]] = {1: [], 2: []}
                for _ in range(args.repeats):
                    for workers in (1, 2):
                        runs[workers].append(run_once(scenario, resolution, args.videos, workers, Path(tmp),
                                                      args.shard_size))
                pairs = sorted(one["wall_s"] / two["wall_s"] / 2 for one, two in zip(runs[1], runs[2]))
                single = median_run(runs[1])
                for workers in (1, 2):
                    r = median_run(runs[workers])
                    scaling = r["videos_per_s_per_core"] / single["videos_per_s_per_core"]
                    spread = f"  (runs: {pairs[0]:.2f}-{pairs[-1]:.2f})" if workers == 2 and len(pairs) > 1 else ""
                    print(
                        f"{scenario:<15} {resolution:>4} {workers:>3} {r['videos_per_s_per_core']:>14.1f} "
                        f"{r['videos_per_s_per_core'] / baseline:>8.1f} {r['cpu_ms']['simulate']:>7.2f} "
                        f"{r['cpu_ms']['render']:>9.2f} {r['cpu_ms']['encode']:>12.2f} "
                        f"{r['kb_per_video']:>9.2f} {scaling:>8.2f}{spread}"
                    )
                if args.plain:
                    plain = plain_scaling(scenario, resolution, args.videos, Path(tmp), args.shard_size, args.repeats)
                    print(f"{scenario:<15} {resolution:>4} plain processes, no Ray: scaling "
                          f"{plain[len(plain) // 2]:.2f}  (runs: {plain[0]:.2f}-{plain[-1]:.2f})")
    print(f"medians of {args.repeats} alternating runs per row; scaling from the median runs (the range: "
          f"each repeat's 1-worker run against its 2-worker run); shards of {args.shard_size or 'the config default'}")
    print(f"targets: >= {TARGETS['speedup_per_core']:.0f}x paper per core at the same resolution "
          f"(paper measured at 256²), <= {TARGETS['kb_per_video'][128]:.0f} KB at 128², "
          f"<= {TARGETS['kb_per_video'][256]:.0f} KB at 256², scaling 1->2 workers >= {TARGETS['scaling']:.0%}; "
          f"cores here: {os.cpu_count()}")


if __name__ == "__main__":
    main()
