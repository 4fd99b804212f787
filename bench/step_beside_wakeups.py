"""Benchmark (a control, no Ray): what other processes' wake-ups cost a step on every core.

Runs the plain loop of `bench/train_step.py` (same DiT, random latents of the same shape) alone
and beside --sleepers processes that each do what an idle Ray process does on this machine:
wake every --tick-ms, use --busy-us of CPU, sleep again (docs/performance.md, 2026-12-06 (6):
Ray's actors, raylet, GCS, agents and driver, ~17 of them during a one-worker trial). The
sleepers run at each scheduling policy in turn: normal, SCHED_BATCH (a waking sleeper does not
preempt), SCHED_IDLE (it runs only when a core is free). Conditions alternate round by round,
since this machine's step time drifts by several percent within minutes; the figure per
condition is the median of its rounds' medians, and its cost is against the rounds' "alone".

It tells whether the two-thread overhead of `phyray train` is Ray's wake-ups: if sleepers cost
a plain step as much and idle priority removes it, but idle priority for Ray's own threads does
not (docs/performance.md, 2026-12-06 (7)), the overhead lies elsewhere.

    .venv/bin/python bench/step_beside_wakeups.py --threads 2 --rounds 3
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import add_step_arguments, plain_loop, random_latents, train_config  # noqa: E402

# One sleeper: its policy first (lowering one's own priority needs no privilege), then the loop.
SLEEPER = """
import os, sys, time
policy, tick, busy = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
os.sched_setscheduler(0, policy, os.sched_param(0))
while True:
    time.sleep(tick)
    start = time.perf_counter()
    while time.perf_counter() - start < busy:
        pass
"""
POLICIES = {"normal": os.SCHED_OTHER, "batch": os.SCHED_BATCH, "idle": os.SCHED_IDLE}


def step_ms(args, cfg, data) -> float:
    """Median ms/step of the plain loop, first logging window dropped."""
    return 1000 * statistics.median(plain_loop(cfg, data, torch.device("cpu"), args.steps, args.window)[1:])


def beside_sleepers(args, cfg, data, policy: str) -> float:
    sleepers = [subprocess.Popen([sys.executable, "-c", SLEEPER, str(POLICIES[policy]), str(args.tick_ms / 1e3),
                                  str(args.busy_us / 1e6)]) for _ in range(args.sleepers)]
    time.sleep(2.0)  # their interpreters' start-up is not a wake-up
    try:
        return step_ms(args, cfg, data)
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()


def main() -> None:
    from phyray.models.info import model_info

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="DiT-M")
    add_step_arguments(parser)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the step (every core here)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sleepers", type=int, default=17, help="processes beside the step")
    parser.add_argument("--tick-ms", type=float, default=10.0, help="each sleeper wakes this often")
    parser.add_argument("--busy-us", type=float, default=50.0, help="CPU each wake-up uses")
    parser.add_argument("--policies", default="normal,batch,idle")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    info = model_info(args.model, args.resolution, args.frames, vae=args.vae)
    policies = args.policies.split(",")
    with tempfile.TemporaryDirectory(prefix="phyray-bench-wakeups-") as tmp:
        cfg = train_config(args, args.model, Path(tmp), None, gpu=False)
        data = random_latents(info["latent_shape"], args.videos, torch.device("cpu"))
        share = args.sleepers * args.busy_us / (args.tick_ms * 1e3) / (os.cpu_count() or 1)
        print(f"{args.model}, {args.frames}x{args.resolution}², micro-batch {args.micro_batch}, {args.threads} threads "
              f"of {os.cpu_count()} cores; {args.sleepers} sleepers waking every {args.tick_ms:g} ms for "
              f"{args.busy_us:g} us ({100 * share:.1f} % of the cores)", flush=True)
        results: dict[str, list[float]] = {"alone": [], **{policy: [] for policy in policies}}
        for round_index in range(args.rounds):
            results["alone"].append(step_ms(args, cfg, data))
            for policy in policies:
                results[policy].append(beside_sleepers(args, cfg, data, policy))
            print(f" round {round_index + 1}/{args.rounds}: " + ", ".join(
                f"{name} {times[-1]:.1f}" for name, times in results.items()) + " ms/step", flush=True)
    results_alone = results.pop("alone")
    alone = statistics.median(results_alone)
    print(f"  alone                    {alone:6.1f} ms/step")
    for policy, times in results.items():
        costs = ", ".join(f"{100 * (t / a - 1):+.1f}%" for t, a in zip(times, results_alone))
        print(f"  beside sleepers, {policy:<7} {statistics.median(times):6.1f} ms/step   "
              f"{100 * (statistics.median(times) / alone - 1):+.1f}% (rounds {costs})")


if __name__ == "__main__":
    main()
