"""Benchmark: the training step eager and under `torch.compile` (a run's `compile: true`), no Ray.

The plain loop of `bench/train_step.py` (objective, AdamW, clipping) on random latents, eager
and with the DiT compiled in place as `phyray.train.engine.compile_network` does, rounds
alternating. Defaults are a mini-study trial's step: DiT-W on `vae-f4t2c4-slim` latents of
16x32², micro-batch 16, one thread (`cpus_per_worker: 1`). The compile is timed from a fresh
inductor cache, as a trial on a fresh machine pays it; later rounds in this process reuse it.

    .venv/bin/python bench/compile_step.py --rounds 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import add_step_arguments, plain_loop, random_step_inputs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="DiT-W")
    add_step_arguments(parser)
    parser.set_defaults(vae="vae-f4t2c4-slim", frames=16, micro_batch=16, steps=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a trial's worker: cpus_per_worker)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="phyray-bench-compile-") as tmp:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor")  # cold, as on a fresh machine
        cfg, data, info = random_step_inputs(args, args.model, Path(tmp), torch.device("cpu"))
        print(f"{args.model} on {args.vae} latents of {args.frames}x{args.resolution}², micro-batch "
              f"{args.micro_batch}, {info['tokens_per_video']} tokens/video, {args.threads} of {os.cpu_count()} "
              f"cores; {args.steps} steps a loop, first window of {args.window} dropped", flush=True)
        steady: dict[bool, list[float]] = {False: [], True: []}
        for round_index in range(args.rounds):
            line = []
            for compiled in (False, True):
                start = time.perf_counter()
                times = plain_loop(cfg, data, torch.device("cpu"), args.steps, args.window, compiled=compiled)
                step_s = statistics.median(times[1:])
                steady[compiled].append(step_s)
                # What the first window took beyond its steady steps: the compile, in a compiled loop.
                first_extra = args.window * (times[0] - step_s)
                line.append(f"{'compiled' if compiled else 'eager'} {1000 * step_s:.1f} ms/step "
                            f"(first window {first_extra:+.1f} s, loop {time.perf_counter() - start:.1f} s)")
            print(f" round {round_index + 1}/{args.rounds}: " + "; ".join(line), flush=True)
    eager, compiled = (statistics.median(steady[flag]) for flag in (False, True))
    ratios = ", ".join(f"{e / c:.2f}x" for e, c in zip(steady[False], steady[True]))
    print(f"  eager     {1000 * eager:6.1f} ms/step")
    print(f"  compiled  {1000 * compiled:6.1f} ms/step   {eager / compiled:.2f}x (rounds {ratios})")


if __name__ == "__main__":
    main()
