"""Benchmark: the training step eager and under `torch.compile` in each `compile` scope, no Ray.

The plain loop of `bench/train_step.py` (objective, AdamW, clipping) on random latents, eager and
with the network compiled in place as `phyray.train.engine.compile_network` does: "blocks" (each
DiT block, one shared graph; what `compile: true` means) and "network" (the DiT whole). Defaults
are a mini-study trial's step: DiT-W on `vae-f4t2c4-slim` latents of 16x32², micro-batch 16, one
thread (`cpus_per_worker: 1`).

Two figures per scope:
- the cold compile: what the first window takes beyond its steady steps, in a fresh process
  with an empty inductor cache (`use_inductor_cache`, as a trial's: kernels and C++ precompiled
  headers), as the first compiled trial in an `output_dir` pays it. A process of its own,
  because inductor keeps built kernels in memory too, and the scopes build some of the same;
- the steady step: rounds alternating eager and each scope, in this process.

    .venv/bin/python bench/compile_step.py --rounds 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from phyray.train.engine import use_inductor_cache

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import add_step_arguments, plain_loop, random_step_inputs  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="DiT-W")
    add_step_arguments(parser)
    parser.set_defaults(vae="vae-f4t2c4-slim", frames=16, micro_batch=16, steps=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a trial's worker: cpus_per_worker)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scopes", default="blocks,network", help="compile scopes to compare with eager")
    parser.add_argument("--cold", metavar="SCOPE", help=argparse.SUPPRESS)  # the child process of cold_compile_s
    return parser.parse_args(argv)


def first_window_extra(args, tmp: Path, scope: str) -> tuple[float, float]:
    """(seconds the first window took beyond its steady steps, steady seconds per step) of one
    loop at `scope` ("off": eager). In a compiled loop the extra is the compile."""
    cfg, data, _ = random_step_inputs(args, args.model, tmp, torch.device("cpu"))
    times = plain_loop(cfg, data, torch.device("cpu"), args.steps, args.window, compiled=scope)
    step_s = statistics.median(times[1:])
    return args.window * (times[0] - step_s), step_s


def cold_compile_s(argv: list[str], scope: str) -> float:
    """The cold compile of `scope`, measured in a child process (`--cold`) with an empty cache."""
    child = subprocess.run([sys.executable, __file__, *argv, "--cold", scope, "--steps", str(2 * parse_args(argv).window)],
                           capture_output=True, text=True, check=True)
    return float(child.stdout.split()[-1])


def main() -> None:
    argv = sys.argv[1:]
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="phyray-bench-compile-") as tmp:
        use_inductor_cache(Path(tmp) / "inductor")  # empty, as a new output_dir's
        if args.cold:
            print(f"{first_window_extra(args, Path(tmp), args.cold)[0]:.2f}")
            return
        _, _, info = random_step_inputs(args, args.model, Path(tmp), torch.device("cpu"))
        print(f"{args.model} on {args.vae} latents of {args.frames}x{args.resolution}², micro-batch "
              f"{args.micro_batch}, {info['tokens_per_video']} tokens/video, {args.threads} of {os.cpu_count()} "
              f"cores; {args.steps} steps a loop, first window of {args.window} dropped", flush=True)
        scopes = args.scopes.split(",")
        for scope in scopes:
            print(f" cold compile, {scope}: {cold_compile_s(argv, scope):.1f} s beyond the first window's steady steps", flush=True)
        steady: dict[str, list[float]] = {scope: [] for scope in ["off", *scopes]}
        for round_index in range(args.rounds):
            line = []
            for scope in steady:
                start = time.perf_counter()
                _, step_s = first_window_extra(args, Path(tmp), scope)
                steady[scope].append(step_s)
                line.append(f"{'eager' if scope == 'off' else scope} {1000 * step_s:.1f} ms/step "
                            f"(loop {time.perf_counter() - start:.1f} s)")
            print(f" round {round_index + 1}/{args.rounds}: " + "; ".join(line), flush=True)
    eager = statistics.median(steady["off"])
    print(f"  eager     {1000 * eager:6.1f} ms/step")
    for scope in scopes:
        ratios = ", ".join(f"{e / c:.2f}x" for e, c in zip(steady["off"], steady[scope]))
        compiled = statistics.median(steady[scope])
        print(f"  {scope:<9} {1000 * compiled:6.1f} ms/step   {eager / compiled:.2f}x (rounds {ratios})")


if __name__ == "__main__":
    main()
