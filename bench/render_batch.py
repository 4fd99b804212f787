"""Benchmark: the render batch size (`RENDER_BATCH_BYTES`) in one and in two plain processes.

A shard is rendered a batch of videos at a time into one reused frame buffer, and each video's
frames are compressed right after. Big batches amortise numpy's per-call overhead; small ones
keep the frames in cache between drawing and compressing them. This prints, per batch size,
videos/s of one process writing 8 shards of 250 videos, videos/s per process of two writing 4
each at once, and the per-stage CPU-ms per video, so the size can be chosen again on other
hardware. No Ray: this is the generator's own speed.

    .venv/bin/python bench/render_batch.py                                  # uniform motion, 256²
    .venv/bin/python bench/render_batch.py --scenario collision --resolution 128 --mib 24 8 4
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from pathlib import Path

from generate import write_shards  # bench/generate.py, this script's neighbour

import phyray.data.generate as data_generate
from phyray.config import load_data_config

VIDEOS = 2000
SHARD_SIZE = 250


def measure(scenario: str, resolution: int, mib: int, root: Path) -> tuple[float, float, dict, dict]:
    """(videos/s of one process, videos/s per process of two, stages of one, stages of two)."""
    data_generate.RENDER_BATCH_BYTES = mib * 2**20  # before the pool forks: its processes inherit it
    cfg = load_data_config(scenario, [f"render.resolution={resolution}", f"shard_size={SHARD_SIZE}"])
    plan = data_generate.plan_dataset(cfg, "train", str(VIDEOS), 0)
    out = Path(tempfile.mkdtemp(dir=root))
    rows = [{"task": json.dumps(task)} for task in data_generate.shard_tasks(cfg, plan, out, list(range(plan.num_shards)))]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(write_shards, [rows[:1], rows[1:2]])  # warm both processes
        one, stages_one = pool.apply(write_shards, (rows,))
        start = time.perf_counter()
        halves = pool.map(write_shards, [rows[0::2], rows[1::2]])
        two = time.perf_counter() - start
        pool.close()  # let the workers exit rather than be terminated
        pool.join()
    stages_two = {stage: halves[0][1][stage] + halves[1][1][stage] for stage in stages_one}
    return VIDEOS / one, VIDEOS / two / 2, stages_one, stages_two


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="uniform_motion")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--mib", nargs="+", type=int, default=[24, 8, 4], help="batch sizes to compare, in MiB")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    def per_video(stages: dict[str, float]) -> str:
        return " ".join(f"{stage} {1e3 * seconds / VIDEOS:.2f}" for stage, seconds in stages.items())

    print(f"{args.scenario} at {args.resolution}², {VIDEOS} videos in shards of {SHARD_SIZE}; "
          f"the library's batch: {data_generate.RENDER_BATCH_BYTES // 2**20} MiB; CPU-ms per video per stage")
    with tempfile.TemporaryDirectory(prefix="phyray-bench-batch-") as tmp:
        for _ in range(args.repeats):
            for mib in args.mib:
                one, two, stages_one, stages_two = measure(args.scenario, args.resolution, mib, Path(tmp))
                print(f"  {mib:3d} MiB: 1 process {one:7.1f} videos/s [{per_video(stages_one)}]   "
                      f"2 processes {two:7.1f} videos/s each [{per_video(stages_two)}]   scaling {two / one:.2f}")


if __name__ == "__main__":
    main()
