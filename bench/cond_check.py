"""Where the benchmark's conditioning check sits: PSNR over a suite's conditioning frames of the
video itself encoded whole as H.264 (must pass), of another video of the suite (must fail) and
of the same video one frame later (a submission off by one frame).

    python bench/cond_check.py --videos-per-split 100 --bitrates 10000,40000

Prints, per suite and case, the distribution over videos (min, 1st percentile, median, 99th,
max); `phyray.benchmark.score.COND_PSNR_MIN` must lie between the first case's minimum and the
second's maximum.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from phyray.benchmark.media import decode_mp4, encode_mp4
from phyray.benchmark.score import COND_PSNR_MIN, _psnr
from phyray.benchmark.suites import (
    SUITE_NAMES,
    frame_columns,
    get_suite,
    reference_sets,
    suite_frames,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", default=",".join(SUITE_NAMES))
    parser.add_argument("--videos-per-split", type=int, default=100)
    parser.add_argument("--bitrates", default="10000,40000", help="bits/s of the whole-video encodes")
    parser.add_argument("--others", type=int, default=5, help="other videos compared with each video")
    parser.add_argument("--bench-dir", default="runs/bench")
    args = parser.parse_args()
    print(f"threshold: {COND_PSNR_MIN:g} dB over the conditioning frames")
    for name in args.suites.split(","):
        suite = get_suite(name, args.videos_per_split)
        references = reference_sets(suite, Path(args.bench_dir) / "data", log=lambda line: None)
        videos = [np.array(frames) for _, frames in suite_frames(suite, references, frame_columns(suite))]
        c = suite.cond_frames
        cases = {}
        with tempfile.TemporaryDirectory() as workdir:
            path = Path(workdir) / "video.mp4"
            for rate in (int(b) for b in args.bitrates.split(",")):
                kept = []
                for video in videos:
                    encode_mp4(video, path, suite.fps, bitrate=rate)
                    kept.append(_psnr(decode_mp4(path)[:c], video[:c]))
                cases[f"itself, H.264 at {rate / 1000:g} kb/s"] = kept
        rng = np.random.default_rng(0)
        pairs = [(i, int(j)) for i in range(len(videos)) for j in rng.choice(len(videos), args.others) if j != i]
        cases["another video of the suite"] = [_psnr(videos[j][:c], videos[i][:c]) for i, j in pairs]
        cases["itself one frame later"] = [_psnr(v[1 : c + 1], v[:c]) for v in videos]
        print(f"{suite.key} ({len(videos)} videos, c = {c})")
        for case, values in cases.items():
            q = np.percentile(np.array(values), [0, 1, 50, 99, 100])
            print(f"  {case:<30} min {q[0]:5.1f}  p1 {q[1]:5.1f}  median {q[2]:5.1f}  p99 {q[3]:5.1f}  max {q[4]:5.1f}")


if __name__ == "__main__":
    main()
