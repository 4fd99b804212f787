"""Benchmark: what `eval.precision: bf16` does to a finished study's time and numbers.

For every trial of a study that ran in fp32 (the default), rolls each of its evaluation sets out
again through `phyray.eval.rollouts.rollout_dataset`, the function the study called, at the
study's sampler (its rollouts' DDIM steps, conditioning frames and seed, its `eval.batch_size`)
and on one thread, as a trial's Tune process runs it (Ray gives it OMP_NUM_THREADS=1: float sums
over another thread count may round a pixel the other way), once in fp32 and once in bf16, into
a temporary directory. The baseline, from the same run: the
fp32 rollout, which must equal the study's own rollouts byte for byte (the default precision
changed nothing). For each it prints the wall time (writing the shards included), the headline
metric with its 95% bootstrap interval (the study's parser, no paper filter), and how far bf16's
pixels are from fp32's.

    .venv/bin/python bench/rollout_precision.py --study runs/studies/mini
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from phyray.data.shards import decode_frames, iter_rows, read_manifest
from phyray.eval.report import evaluate_physics
from phyray.eval.rollouts import rollout_dataset
from phyray.study.settings import load_study_config


def videos(rollouts: Path) -> dict[str, np.ndarray]:
    return {row["video_id"]: decode_frames(row) for row in iter_rows(rollouts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, type=Path, help="a study directory (<output_dir>/<name>)")
    args = parser.parse_args()

    study = load_study_config(args.study / "study.yaml")
    metric = study.eval.headline_metric
    if study.eval.precision != "fp32":
        parser.error(f"{args.study}: its rollouts are {study.eval.precision}; this compares an fp32 study's with bf16")
    torch.set_num_threads(1)
    print(f"{args.study}: {metric}, parser {study.eval.parser}, rollout batch {study.eval.batch_size}, one thread", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        for trial in sorted(p for p in (args.study / "trials").iterdir() if (p / "rollouts").is_dir()):
            print(trial.name, flush=True)
            for theirs in sorted((trial / "rollouts").iterdir()):
                manifest = read_manifest(theirs)
                settings, reference = manifest["identity"]["settings"], manifest["sources"]["reference"]
                split = theirs.name.rsplit("-", 1)[0]
                study_videos = videos(theirs)
                for precision in ("fp32", "bf16"):
                    out = Path(scratch) / trial.name / f"{split}-{precision}"
                    start = time.perf_counter()
                    rollout_dataset(trial, reference, out, settings["sample_steps"], study.eval.batch_size,
                                    settings["seed"], precision=precision)
                    seconds = time.perf_counter() - start
                    rows = evaluate_physics(out, reference, study.eval.parser, settings["cond_frames"], ssim=False)
                    (pooled,) = [r for r in rows if r["metric"] == metric and r["ood_level"] in ("id", "pooled")]
                    ours = videos(out)
                    difference = np.concatenate(
                        [np.abs(ours[v].astype(int) - video.astype(int)).ravel() for v, video in study_videos.items()]
                    )
                    print(f"  {split} {precision}: {seconds:.1f} s, {metric} {pooled['value']:.4f} "
                          f"[{pooled['ci_low']:.4f}, {pooled['ci_high']:.4f}] over {pooled['n']} videos; pixels against "
                          f"the study's rollouts: {100 * (difference == 0).mean():.1f}% identical, mean |difference| "
                          f"{difference.mean():.3f}, max {difference.max()} (of 255)", flush=True)


if __name__ == "__main__":
    main()
