"""Benchmark: evaluation throughput per core, from stored shards to metrics.

Generates `--videos` videos per scenario and resolution with the generator (Ray, not timed) into a
temporary directory, then scores them against themselves in this process on one core (numpy,
BLAS and torch limited to one thread) and prints videos/s per core for:

- decode: reading the shards and decoding both streams of a video (rollout and reference);
- physics: `evaluate_physics` without pixel metrics: decode + parse + velocity metrics, for the
  rollout and, as its ground-truth floor, the reference (two streams per video);
- + kept floor: the same with the reference's floor kept from an earlier evaluation
  (`floor_cache`, as a study's trials after the first find it): one stream per video, the
  paper's evaluator's work;
- + psnr: the same with PSNR;
- + ssim: the same with PSNR and SSIM, on the first `--ssim-videos` videos only (SSIM's
  convolutions dominate on CPU).

Each figure is the best of `--repeats` runs, as wall time and as this process's CPU time (the
machine may be shared). Baseline: the paper's
evaluator, 0.16 s per stored 256² video on one core (MP4 decode 0.14 s + parse/metrics 0.02 s,
docs/paper.md §13), i.e. 6.25 videos/s; the target is >= 50x per core at 256² (>= 312 videos/s).

    .venv/bin/python bench/evaluate.py
    .venv/bin/python bench/evaluate.py --videos 200 --resolutions 128 --scenarios collision

`--video-metrics` runs instead a benchmark of the video metrics, also on one core (torch limited
to one thread), on real PHYRE videos: `--metric-videos` videos (default 8: templates 10003,
10005, 10016 and 10023, task seeds 0 and 1, evaluation trial 990) simulated through the PHYRE
sidecar (`.venv-phyre`, not timed), their first 16 frames decoded with `index_to_rgb` (256²) and
area-averaged (`area_downsample`) to 64². Each reference is scored against a "rollout" that is
the reference rolled by one pixel to the right (deterministic, so no metric is trivially exact),
cond_frames = 1, i.e. 15 scored frames per video. Printed per resolution (`--metric-resolutions`,
default 64 and 256), as videos/s per core:

- psnr+ssim: `pixel_metrics` (PSNR and SSIM, torchmetrics' values);
- lpips: `lpips_videos` with a seeded random AlexNet backbone (no ImageNet weights are available
  here; the speed does not depend on the weight values) and the real heads at
  `.weights/lpips-v0.1-alex.pth` when present, else random heads;
- abnormal: the abnormal-rate judge, `palette_labels` + `find_violations` on the rollout's RGB
  frames;

and once, as clips/s per core, fvd-i3d: `i3d_features` of `--fvd-clips` 16-frame clips (default
8, the 64² videos reused in turn) resized to 224², with the real I3D weights at
`DEFAULT_I3D_WEIGHTS` (the line is skipped with a message when they are absent). Each figure is
the best of `--repeats` runs after one untimed warm-up video (clip), as wall time and as CPU time
(`time.process_time`); "mean" is the metric's mean over the videos (abnormal: the number of
rollouts flagged, and of the unperturbed references for comparison; fvd-i3d: the warm-up clip's
mean |logit|), a check that the work was done. About 80 CPU-seconds with the defaults (more wall
time on a busy machine: 4.6 min at load ~3 on 2 cores).

    .venv/bin/python bench/evaluate.py --video-metrics
    .venv/bin/python bench/evaluate.py --video-metrics --metric-videos 16 --fvd-clips 16 --repeats 2
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core: set before numpy and torch load their pools

import argparse  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from phyray.config import load_data_config  # noqa: E402
from phyray.data.generate import generate_dataset  # noqa: E402
from phyray.data.shards import area_downsample, decode_frames, read_shard, shard_paths  # noqa: E402
from phyray.eval.report import REFERENCE_COLUMNS, evaluate_physics  # noqa: E402
from phyray.runtime import init_ray  # noqa: E402

PAPER_S_PER_VIDEO_256 = 0.16
TARGET_SPEEDUP = 50.0

# --video-metrics
METRIC_TEMPLATES = (10003, 10005, 10016, 10023)
METRIC_TRIAL = 990  # the in-template evaluation trial (bench/abnormal.py)
METRIC_FRAMES = 16
METRIC_COND_FRAMES = 1  # 15 scored frames
FVD_RESOLUTION = 64  # the clips' source resolution; i3d_features resizes them to 224²


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


def phyre_videos(count: int) -> list[np.ndarray]:
    """`count` real PHYRE videos, (METRIC_FRAMES, 256, 256, 3) uint8 RGB: METRIC_TEMPLATES in turn,
    task seeds 0, 1, ..., trial METRIC_TRIAL, simulated through the sidecar."""
    from phyray.sim.phyre import PhyreSidecar, index_to_rgb

    items = [(METRIC_TEMPLATES[i % len(METRIC_TEMPLATES)], i // len(METRIC_TEMPLATES), METRIC_TRIAL)
             for i in range(count)]
    with PhyreSidecar() as phyre:
        simulated = phyre.simulate_batch(items)
    return [np.ascontiguousarray(index_to_rgb(video["frames"][:METRIC_FRAMES])) for video in simulated]


def perturbed(video: np.ndarray) -> np.ndarray:
    """The stand-in rollout: the video rolled one pixel to the right (wrapping around)."""
    return np.roll(video, 1, axis=2)


def video_metrics(args: argparse.Namespace) -> None:
    """The --video-metrics benchmark (see the module docstring)."""
    from phyray.eval.abnormal import find_violations, palette_labels
    from phyray.eval.fvd import DEFAULT_I3D_WEIGHTS, i3d_features, load_i3d
    from phyray.eval.lpips import DEFAULT_HEADS, LPIPS, load_heads, lpips_videos
    from phyray.eval.video import pixel_metrics

    c = METRIC_COND_FRAMES
    print(f"command: {shlex.join(sys.orig_argv)}")
    print(f"one core: torch threads {torch.get_num_threads()}, OMP/OpenBLAS/MKL threads "
          f"{os.environ['OMP_NUM_THREADS']}/{os.environ['OPENBLAS_NUM_THREADS']}/{os.environ['MKL_NUM_THREADS']}; "
          f"cores here: {os.cpu_count()}; best of {args.repeats} after one untimed warm-up")
    start = time.perf_counter()
    full = phyre_videos(args.metric_videos)
    templates = sorted({METRIC_TEMPLATES[i % len(METRIC_TEMPLATES)] for i in range(args.metric_videos)})
    print(f"videos: {len(full)} real PHYRE videos (templates {', '.join(map(str, templates))}; trial "
          f"{METRIC_TRIAL}), first {METRIC_FRAMES} frames, simulated in {time.perf_counter() - start:.1f} s "
          f"(not timed); rollout = reference rolled 1 px right; cond_frames {c}, "
          f"{METRIC_FRAMES - c} scored frames")

    torch.manual_seed(0)
    lpips_model = LPIPS()  # seeded random AlexNet backbone and heads
    heads = "random heads"
    if DEFAULT_HEADS.is_file():
        load_heads(lpips_model, DEFAULT_HEADS)
        heads = f"real heads {DEFAULT_HEADS.relative_to(Path(__file__).resolve().parents[1])}"
    print(f"lpips: seeded random AlexNet backbone (torch.manual_seed(0); no ImageNet weights are available "
          f"here; speed does not depend on weight values), {heads}")

    print(f"{'metric':<10} {'res':>4} {'n':>3} {'unit':<6} {'/s/core':>9} {'ms each':>9} "
          f"{'/CPU-s':>9} {'CPU-ms each':>11}  mean")

    def report(name: str, resolution: int, unit: str, count: int, fn, warm_up, mean: str) -> None:
        warm_up()
        wall, cpu = (seconds / count for seconds in best_of(args.repeats, fn))
        print(f"{name:<10} {resolution:>4} {count:>3} {unit:<6} {1 / wall:>9.2f} {1e3 * wall:>9.1f} "
              f"{1 / cpu:>9.2f} {1e3 * cpu:>11.1f}  {mean}", flush=True)

    def judge(videos: list[np.ndarray]) -> list[bool]:
        return [find_violations(palette_labels(video)).abnormal for video in videos]

    by_resolution = {}
    for resolution in args.metric_resolutions:
        refs = [video if resolution == video.shape[1] else area_downsample(video, resolution) for video in full]
        rolls = [perturbed(video) for video in refs]
        by_resolution[resolution] = refs
        n = len(refs)
        pixel = pixel_metrics(rolls, refs, cond_frames=c)
        report("psnr+ssim", resolution, "videos", n, lambda: pixel_metrics(rolls, refs, cond_frames=c),
               lambda: pixel_metrics(rolls[:1], refs[:1], cond_frames=c),
               f"psnr {pixel['psnr'].mean():.2f} dB, ssim {pixel['ssim'].mean():.4f}")
        lpips = lpips_videos(rolls, refs, lpips_model, cond_frames=c)
        report("lpips", resolution, "videos", n, lambda: lpips_videos(rolls, refs, lpips_model, cond_frames=c),
               lambda: lpips_videos(rolls[:1], refs[:1], lpips_model, cond_frames=c), f"{lpips.mean():.4f}")
        flagged = judge(rolls)
        report("abnormal", resolution, "videos", n, lambda: judge(rolls), lambda: judge(rolls[:1]),
               f"{sum(flagged)}/{n} rollouts flagged (references {sum(judge(refs))}/{n})")

    weights = Path(DEFAULT_I3D_WEIGHTS)
    if not weights.is_file():
        print(f"fvd-i3d: skipped, no I3D weights at {weights} (run `bash scripts/fetch_weights.sh`)")
        return
    i3d = load_i3d(weights)
    source = by_resolution.get(FVD_RESOLUTION) or [area_downsample(video, FVD_RESOLUTION) for video in full]
    clips = [source[i % len(source)] for i in range(args.fvd_clips)]
    features = i3d_features(clips[:1], i3d)
    report("fvd-i3d", FVD_RESOLUTION, "clips", len(clips), lambda: i3d_features(clips, i3d), lambda: None,
           f"|logit| {np.abs(features).mean():.3f} (warm-up clip)")
    print(f"fvd-i3d: {METRIC_FRAMES}-frame clips of the {FVD_RESOLUTION}² videos resized to 224², real weights "
          f"{weights.name} (sha256 {i3d.weights_sha256[:12]}...), batch 8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=["uniform_motion", "collision"])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--videos", type=int, default=500)
    parser.add_argument("--ssim-videos", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parser", default="subpixel")
    parser.add_argument("--video-metrics", action="store_true",
                        help="benchmark PSNR+SSIM, LPIPS, the abnormal judge and I3D features instead")
    parser.add_argument("--metric-videos", type=int, default=8, help="--video-metrics: PHYRE videos")
    parser.add_argument("--metric-resolutions", nargs="+", type=int, default=[64, 256],
                        help="--video-metrics: sides (divisors of 256)")
    parser.add_argument("--fvd-clips", type=int, default=8, help="--video-metrics: I3D clips")
    args = parser.parse_args()

    torch.set_num_threads(1)
    if args.video_metrics:
        video_metrics(args)
        return
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
                # The reference's floor kept (as every trial after a study's first finds it).
                kept = {"floor_cache": root / f"scores-{scenario}-{resolution}"}
                evaluate_physics(data, data, psnr=False, ssim=False, **common, **kept)
                stages = [
                    ("decode", args.videos, lambda: decode_all(data)),
                    ("physics", args.videos, lambda: evaluate_physics(data, data, psnr=False, ssim=False, **common)),
                    ("+ kept floor", args.videos,
                     lambda: evaluate_physics(data, data, psnr=False, ssim=False, **common, **kept)),
                    ("+ psnr", args.videos, lambda: evaluate_physics(data, data, ssim=False, **common)),
                    ("+ ssim", args.ssim_videos, lambda: evaluate_physics(small, small, **common)),
                ]
                for stage, videos, fn in stages:
                    wall, cpu = (seconds / videos for seconds in best_of(args.repeats, fn))
                    print(f"{scenario:<15} {resolution:>4} {stage:<10} {1 / wall:>14.1f} {1e3 * wall:>9.2f} "
                          f"{PAPER_S_PER_VIDEO_256 / wall:>8.1f} {1 / cpu:>13.1f} {PAPER_S_PER_VIDEO_256 / cpu:>8.1f}")
                shutil.rmtree(data)
    print(f"cores here: {os.cpu_count()}; 'x paper' compares with the paper's 256² figure at every resolution; "
          "each video is two decoded and parsed streams (rollout + ground-truth floor), except '+ kept floor': "
          "the rollout's only, as the paper's evaluator does, the floor read from its kept scores")


if __name__ == "__main__":
    main()
