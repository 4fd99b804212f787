"""Throughput of PHYRE video simulation through the sidecar: videos/s per core.

    .venv/bin/python bench/generate_phyre.py                      # 6 templates, 480 videos
    .venv/bin/python bench/generate_phyre.py --videos 960 --batch 1 --templates heldout

One sidecar serves N videos (32 frames of 256 x 256 colour indices plus featurised objects
each) in requests of --batch videos; video i is trial i % K of seed i // (K * T) of the
(i // K) % T-th template, K = --trials-per-seed, T = number of templates, so consecutive trials
share a scene as in real generation (990 trials per seed). The timed part excludes the
sidecar's start (importing phyre) and one warm-up request.

Prints wall-clock videos/s, the CPU seconds per video spent in the sidecar (read from
/proc/<pid>/stat, so Linux only) and in this process, and videos/s per core =
videos / (sidecar CPU + client CPU). Encoding and writing are not included; index_to_rgb, the
first step of encoding, is timed separately.

End to end (`--end-to-end`): `generate_combinatorial` with 1 and then 2 workers (Ray Data
tasks, one sidecar per worker process; simulation + encoding + Parquet writing), wall-clock
videos/s per worker, bytes per video, and the time a 60-template x 100-seed x 10-trial set (60K
videos) would take; before them, the wall time of a small first set in a fresh Ray.
Targets: >= 100 videos/s per core; 60K videos in < 15 minutes on 2 cores.

    .venv/bin/python bench/generate_phyre.py --end-to-end --videos 960
"""

from __future__ import annotations

import argparse
import os
import time

from phyray.sim.phyre import PhyreSidecar, index_to_rgb, parse_templates


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def plan(templates: list[int], videos: int, trials_per_seed: int) -> list[tuple[int, int, int]]:
    per_round = trials_per_seed * len(templates)
    return [
        (templates[(i // trials_per_seed) % len(templates)], i // per_round, i % trials_per_seed)
        for i in range(videos)
    ]


def end_to_end(templates: list[int], videos: int, trials_per_seed: int) -> None:
    """Full generation (Ray Data, encode, write) with 1 and 2 workers, after a warm-up set."""
    import tempfile
    from pathlib import Path

    from phyray.data.combinatorial import generate_combinatorial
    from phyray.runtime import init_ray

    init_ray(num_cpus=4)
    seeds = max(1, videos // (trials_per_seed * len(templates)))
    n = seeds * trials_per_seed * len(templates)
    print(f"end to end: {n} videos ({len(templates)} templates x {seeds} seeds x {trials_per_seed} trials)")
    with tempfile.TemporaryDirectory(prefix="phyray-bench-phyre-") as tmp:
        # A fresh Ray's first dataset waits for its worker processes (and their sidecars) to
        # start; reported apart, so the timed sets below measure generation, as a study's
        # later datasets see it.
        start = time.perf_counter()
        generate_combinatorial(templates[:1], 1, 2 * trials_per_seed, "train", Path(tmp) / "warm",
                               shard_size=trials_per_seed, num_workers=2, progress=False)
        print(f"  warm-up: a {2 * trials_per_seed}-video set on 2 workers, the first in a fresh Ray: "
              f"{time.perf_counter() - start:.1f} s")
        for workers in (1, 2):
            start = time.perf_counter()
            manifest = generate_combinatorial(
                templates, seeds, trials_per_seed, "train", Path(tmp) / str(workers),
                shard_size=max(1, n // (4 * workers)), num_workers=workers, progress=False,
            )
            wall = time.perf_counter() - start
            print(
                f"  {workers} worker(s): {n / wall:7.1f} videos/s ({n / wall / workers:6.1f} per worker), "
                f"{manifest['bytes'] / n / 1e3:6.1f} KB/video, 60K videos in {60_000 / (n / wall) / 60:5.1f} min"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=480)
    parser.add_argument("--batch", type=int, default=16, help="videos per sidecar request")
    parser.add_argument("--templates", default="6", help="set name or ids, see parse_templates")
    parser.add_argument("--trials-per-seed", type=int, default=10)
    parser.add_argument("--end-to-end", action="store_true", help="full generation with 1 and 2 workers")
    args = parser.parse_args()
    if args.end_to_end:
        end_to_end(parse_templates(args.templates), args.videos, args.trials_per_seed)
        return

    items = plan(parse_templates(args.templates), args.videos, args.trials_per_seed)
    with PhyreSidecar() as sidecar:
        sidecar.simulate_batch(items[: args.batch])  # warm-up: imports, caches, page faults
        sidecar_cpu0, client_cpu0, wall0 = (
            process_cpu_seconds(sidecar.pid),
            time.process_time(),
            time.perf_counter(),
        )
        frames = 0
        for start in range(0, len(items), args.batch):
            for video in sidecar.simulate_batch(items[start : start + args.batch]):
                frames += len(video["frames"])
        wall = time.perf_counter() - wall0
        client_cpu = time.process_time() - client_cpu0
        sidecar_cpu = process_cpu_seconds(sidecar.pid) - sidecar_cpu0
        sample = video["frames"]

    decode0 = time.process_time()
    for _ in range(20):
        index_to_rgb(sample)
    decode = (time.process_time() - decode0) / 20

    n = len(items)
    print(
        f"PHYRE sidecar: {n} videos ({frames // n} frames of 256x256), batch {args.batch}, "
        f"templates {args.templates}, {args.trials_per_seed} trials per seed"
    )
    print(f"  wall            {wall:7.2f} s   {n / wall:7.1f} videos/s")
    print(f"  sidecar CPU     {1e3 * sidecar_cpu / n:7.2f} ms/video")
    print(f"  client CPU      {1e3 * client_cpu / n:7.2f} ms/video")
    print(
        f"  per core        {n / (sidecar_cpu + client_cpu):7.1f} videos/s (sidecar + client CPU)"
    )
    print(f"  index_to_rgb    {1e3 * decode:7.2f} ms/video (not included above)")


if __name__ == "__main__":
    main()
