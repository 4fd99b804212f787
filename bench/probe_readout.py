"""Accuracy of the attribute readout (phyray/eval/attributes.py) on probe videos, by resolution.

The probe metric is only as good as its readout: each frame's colour and shape must be read
right, its size within 5 %, its position at the velocity parser's floor. Two sources, both
scored against the states they were drawn from:

- ground truth: every shape in both colours of a pair, radii and speeds from the ID ranges,
  rendered at each `--resolutions` side (the renderer of the datasets);
- reconstructions (`--reconstructions DIR --reference DIR`): a VAE's reconstruction of a probe
  set (a study's `vae/<id>/reconstructions/<split>-<id>/`, or `phyray eval rollout` output),
  joined to its reference set by video_id. A VAE that turns squares into discs fails here, and
  would fake a probe's finding.

Prints, per source, the fraction of frames read (the object present and wholly in view), shape
and colour accuracy on them, the size error (mean and 99th percentile) and the position error
(mean, world units; the velocity parser's floor is ~0.003 at 32²), beside the same numbers on
the ground truth of the same videos.

    .venv/bin/python bench/probe_readout.py                                  # ground truth, 32/64/128
    .venv/bin/python bench/probe_readout.py --reference R --reconstructions V
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from phyray.config import SHAPES
from phyray.data.shards import decode_frames, iter_rows
from phyray.eval.attributes import read_attributes
from phyray.eval.probes import probe_config_of
from phyray.render import render_videos

COLOURS = np.array([[255, 0, 0], [0, 0, 255]], dtype=np.uint8)


def scores(readout, shapes: np.ndarray, colours: np.ndarray, sizes: np.ndarray, positions: np.ndarray) -> dict[str, float]:
    """Readout accuracy on (N, T) frames against the drawn attributes: shapes, colours (N,),
    sizes (N,), positions (N, T, 2)."""
    readable = readout.readable
    if not readable.any():  # nothing recognisable as an object wholly in view
        return {"read": 0.0, **dict.fromkeys(("shape", "colour", "size_err", "size_err_p99", "pos_err"), float("nan"))}
    size_error = np.abs(readout.size / sizes[:, None] - 1)[readable]
    return {
        "read": float(readable.mean()),
        "shape": float((readout.shape == shapes[:, None])[readable].mean()),
        "colour": float((readout.color == colours[:, None])[readable].mean()),
        "size_err": float(size_error.mean()),
        "size_err_p99": float(np.quantile(size_error, 0.99)),
        "pos_err": float(np.linalg.norm(readout.position - positions, axis=-1)[readable].mean()),
    }


def ground_truth(resolution: int, videos: int, frames: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    radius, velocity = rng.uniform(0.7, 1.4, videos), rng.uniform(1.0, 4.0, videos)
    x0 = rng.uniform(radius, 10 - radius - velocity * 0.1 * (frames - 1))
    y0 = rng.uniform(radius + 0.5, 9.5 - radius)
    positions = np.stack([x0[:, None] + velocity[:, None] * 0.1 * np.arange(frames), np.repeat(y0[:, None], frames, 1)], -1)
    shapes, colours = rng.integers(0, len(SHAPES), videos), rng.integers(0, 2, videos)
    drawn = render_videos(positions[:, :, None], radius[:, None], COLOURS[colours][:, None], resolution,
                          shapes=shapes[:, None])
    return scores(read_attributes(drawn, COLOURS), shapes, colours, radius, positions)


def reconstructions(reference_dir: str, rebuilt_dir: str) -> dict[str, dict[str, float]]:
    cfg = probe_config_of(reference_dir)
    if cfg is None:
        raise SystemExit(f"--reference: {reference_dir} is not an attribute-probe set")
    colours_rgb = np.array(cfg.probe.color, dtype=np.uint8)
    truth = {row["video_id"]: row for row in iter_rows(reference_dir)}
    rebuilt = list(iter_rows(rebuilt_dir, ["video_id", "frames", "frames_encoding", "frame_shape"]))
    rows = [truth[r["video_id"]] for r in rebuilt]
    shapes = np.array([SHAPES.index(row["shapes"][0]) for row in rows])
    colours = np.array([json.loads(row["params"])["color"] for row in rows])
    sizes = np.array([row["radii"][0] for row in rows])
    positions = np.array([np.asarray(row["positions"])[:, 0] for row in rows])
    result = {}
    for name, videos in (("ground truth", [decode_frames(r) for r in rows]), ("reconstruction", [decode_frames(r) for r in rebuilt])):
        readout = read_attributes(np.stack(videos), colours_rgb, cfg.physics.world_size, cfg.probe.ring_inner)
        result[name] = scores(readout, shapes, colours, sizes, positions)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--videos", type=int, default=300, help="ground-truth videos per resolution")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", help="a probe evaluation set (pixel shards)")
    parser.add_argument("--reconstructions", help="a VAE's reconstruction (or rollouts) of --reference")
    args = parser.parse_args()
    if bool(args.reference) != bool(args.reconstructions):
        parser.error("--reference and --reconstructions go together")
    header = f"{'source':<24} {'read':>6} {'shape':>7} {'colour':>7} {'size err':>9} {'p99':>7} {'pos err':>8} {'s':>6}"
    print(header)
    rows = []
    if args.reference:
        tick = time.perf_counter()
        for name, result in reconstructions(args.reference, args.reconstructions).items():
            rows.append((name, result, time.perf_counter() - tick))
    else:
        for resolution in args.resolutions:
            tick = time.perf_counter()
            result = ground_truth(resolution, args.videos, args.frames, args.seed)
            rows.append((f"ground truth {resolution}²", result, time.perf_counter() - tick))
    for name, r, seconds in rows:
        print(f"{name:<24} {r['read']:>6.3f} {r['shape']:>7.4f} {r['colour']:>7.4f} {r['size_err']:>9.4f} "
              f"{r['size_err_p99']:>7.4f} {r['pos_err']:>8.4f} {seconds:>6.1f}")


if __name__ == "__main__":
    main()
