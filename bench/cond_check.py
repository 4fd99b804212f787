"""Where the benchmark's conditioning check sits: PSNR of a suite's conditioning frames against
themselves through H.264 (must pass), against another video's (must fail) and against the next
frame (a submission off by one frame).

    python bench/cond_check.py --videos-per-split 100 --bitrates 10000,40000

Prints, per suite, the minimum and median PSNR (dB) of each case over every conditioning frame;
`phyray.benchmark.score.COND_PSNR_MIN` must lie between the first and the other two.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from phyray.benchmark.media import decode_mp4, encode_mp4
from phyray.benchmark.score import COND_PSNR_MIN, _psnr
from phyray.benchmark.suites import frame_columns, get_suite, reference_sets, suite_frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", default="uniform_motion,collision,parabola")
    parser.add_argument("--videos-per-split", type=int, default=100)
    parser.add_argument("--bitrates", default="10000,40000")
    parser.add_argument("--bench-dir", default="runs/bench")
    args = parser.parse_args()
    print(f"threshold: {COND_PSNR_MIN:g} dB")
    for name in args.suites.split(","):
        suite = get_suite(name, args.videos_per_split)
        references = reference_sets(suite, Path(args.bench_dir) / "data", log=lambda line: None)
        videos = [np.array(frames[: suite.cond_frames + 1]) for _, frames in suite_frames(suite, references, frame_columns(suite))]
        c = suite.cond_frames
        cases = {}
        with tempfile.TemporaryDirectory() as workdir:
            for rate in (int(b) for b in args.bitrates.split(",")):
                path = Path(workdir) / "clip.mp4"
                own = []
                for video in videos:
                    encode_mp4(video[:c], path, suite.fps, bitrate=rate)
                    decoded = decode_mp4(path)
                    own += [_psnr(decoded[k], video[k]) for k in range(c)]
                cases[f"itself as H.264 at {rate / 1000:g} kb/s"] = own
        rng = np.random.default_rng(0)
        pairs = [(i, int(j)) for i in range(len(videos)) for j in rng.choice(len(videos), 5) if j != i]
        cases["another video of the suite"] = [_psnr(videos[i][k], videos[j][k]) for i, j in pairs for k in range(c)]
        if c >= 1:
            cases["the same video one frame later"] = [_psnr(v[k + 1], v[k]) for v in videos for k in range(c)]
        print(f"{suite.key} ({len(videos)} videos, {c} conditioning frames)")
        for case, values in cases.items():
            print(f"  {case:<36} min {min(values):6.1f}  median {float(np.median(values)):6.1f}  max {max(values):6.1f}")


if __name__ == "__main__":
    main()
