"""The demo dataset: a small train / ID-eval / OOD-eval set of all three ball scenarios.

    .venv/bin/python studies/demo_data.py [--out runs/demo-data] [--size 200] [--resolution 64]

Runs on the embedded local Ray (or the cluster under `ray job submit`) and prints where each
split went. Rerunning finishes or reuses what is already there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from phyray.config import BALL_SCENARIOS, load_data_config
from phyray.data.generate import generate_dataset

REPO_ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "demo-data")
    parser.add_argument("--size", default="200", help="training videos per scenario")
    parser.add_argument("--eval-size", default="60", help="videos per evaluation split")
    parser.add_argument("--resolution", type=int, default=64)
    args = parser.parse_args()

    # [1] One config per scenario, at the demo resolution.
    for scenario in BALL_SCENARIOS:
        cfg = load_data_config(scenario, [f"render.resolution={args.resolution}"])
        # [2] Train, ID evaluation and OOD evaluation splits, each its own shard set.
        for split, size in (("train", args.size), ("eval_id", args.eval_size), ("eval_ood", args.eval_size)):
            out = args.out / scenario / split
            manifest = generate_dataset(cfg, split, size, out, seed=0)
            print(f"{scenario:>15} {split:<9} {manifest['num_videos']:>5} videos -> {out}")
    print(f"demo data: {args.out}")


if __name__ == "__main__":
    main()
