"""A PNG contact sheet: ground truth above, a VAE's reconstruction or a model's rollout below.

For looking at what a floor or an error number hides (a VAE that smears moving objects, a rollout
that loses a ball). Both datasets are phyray shards; rows are joined by video_id, so the second
can be a study's `vae/<id>/reconstructions/<split>-<id>/` or a `phyray eval rollout` output.

    .venv/bin/python scripts/contact_sheet.py --reference REF --compare VAE_OR_ROLLOUT --out sheet.png
    ... --videos 4 --every 5 --scale 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from phyray.artifacts import atomic_write_bytes
from phyray.data.shards import decode_frames, iter_rows


def contact_sheet(reference: Path, compare: Path, videos: int, every: int, scale: int) -> np.ndarray:
    """(rows * H * scale, frames * W * scale, 3) uint8: per video, its reference frames 0, every,
    2 * every, ... in one row and the compared video's same frames in the row below."""
    compared = {row["video_id"]: row for row in iter_rows(compare)}
    strips = []
    for row in iter_rows(reference):
        if row["video_id"] not in compared:
            continue
        truth = decode_frames(row)  # (T, H, W, 3)
        other = decode_frames(compared[row["video_id"]], truth.shape[1])
        frames = range(0, min(len(truth), len(other)), every)
        strips += [np.concatenate([video[t] for t in frames], axis=1) for video in (truth, other)]
        if len(strips) == 2 * videos:
            break
    if not strips:
        raise SystemExit(f"--compare {compare}: no video_id in common with --reference {reference}")
    sheet = np.concatenate(strips, axis=0)
    return sheet.repeat(scale, axis=0).repeat(scale, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="ground-truth shards")
    parser.add_argument("--compare", type=Path, required=True, help="reconstruction or rollout shards")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--every", type=int, default=5, help="every k-th frame")
    parser.add_argument("--scale", type=int, default=2, help="pixel repeat, for small frames")
    args = parser.parse_args()
    sheet = contact_sheet(args.reference, args.compare, args.videos, args.every, args.scale)
    atomic_write_bytes(args.out, iio.imwrite("<bytes>", sheet, extension=".png"))
    print(f"{args.out}: {sheet.shape[1]}x{sheet.shape[0]}")


if __name__ == "__main__":
    main()
