"""Benchmark (a control): what other processes' wake-ups cost a step on every core.

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

With --actors, Ray's own idle processes instead of synthetic ones: a local Ray is started first
(so "alone" is the step beside an idle Ray), and each round adds the step beside that many idle
actors (`num_cpus=0`; each actor's task loop wakes every 10 ms to check for signals), then
--in-actor the step in a thread of a Ray actor, as Ray Train's worker runs it. A one-worker
trial has ~11 actors beside its worker (controller, placement-group cleaner, synchronization,
preemption watcher, dataset manager, Ray Data's split coordinator, stats, autoscaling
coordinator and location tracker) and Ray's idle workers (docs/performance.md, 2026-12-07).

    .venv/bin/python bench/step_beside_wakeups.py --threads 2 --rounds 3
    .venv/bin/python bench/step_beside_wakeups.py --threads 2 --rounds 3 --policies '' --actors 5,10,15 --in-actor
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
from train_step import add_step_arguments, plain_loop, random_step_inputs  # noqa: E402

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


def start_ray() -> None:
    """A local Ray whose workers can import this directory's modules, with no idle workers kept
    (Ray keeps up to its CPU count of them, each waking as an actor does, and a new actor takes
    one: the count beside the step would change with each condition)."""
    import ray

    paths = [str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, paths))  # an empty entry would add the cwd
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             _system_config={"num_workers_soft_limit": 0})


def beside_actors(args, cfg, data, count: int) -> float:
    import ray

    @ray.remote(num_cpus=0)
    class Idle:
        def ready(self) -> bool:
            return True

    actors = [Idle.remote() for _ in range(count)]
    ray.get([actor.ready.remote() for actor in actors])
    time.sleep(2.0)  # the other idle workers Ray started meanwhile are culled after 1 s
    try:
        return step_ms(args, cfg, data)
    finally:
        for actor in actors:
            ray.kill(actor)
        time.sleep(2.0)


def in_actor(args) -> float:
    """The step in a thread of a Ray actor whose own main thread stays in Ray's task loop."""
    import threading

    import ray

    @ray.remote(num_cpus=0)
    class Stepper:
        def start(self) -> None:
            def run() -> None:
                torch.set_num_threads(args.threads)
                with tempfile.TemporaryDirectory(prefix="phyray-bench-wakeups-") as tmp:
                    cfg, data, _ = random_step_inputs(args, args.model, Path(tmp), torch.device("cpu"))
                    self.ms = step_ms(args, cfg, data)

            self.ms = None
            threading.Thread(target=run, name="TrainingThread", daemon=True).start()

        def result(self) -> float | None:
            return self.ms

    stepper = Stepper.remote()
    ray.get(stepper.start.remote())
    try:
        while (ms := ray.get(stepper.result.remote())) is None:
            time.sleep(1.0)
        return ms
    finally:
        ray.kill(stepper)
        time.sleep(2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="DiT-M")
    add_step_arguments(parser)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the step (every core here)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sleepers", type=int, default=17, help="processes beside the step")
    parser.add_argument("--tick-ms", type=float, default=10.0, help="each sleeper wakes this often")
    parser.add_argument("--busy-us", type=float, default=50.0, help="CPU each wake-up uses")
    parser.add_argument("--policies", default="normal,batch,idle", help="the sleepers' policies ('' for none)")
    parser.add_argument("--actors", default="", help="idle Ray actors beside the step, comma-separated counts")
    parser.add_argument("--in-actor", action="store_true", help="also the step in a Ray actor's thread")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    policies = [policy for policy in args.policies.split(",") if policy]
    counts = [int(count) for count in args.actors.split(",") if count]
    if counts or args.in_actor:
        start_ray()
    with tempfile.TemporaryDirectory(prefix="phyray-bench-wakeups-") as tmp:
        cfg, data, _ = random_step_inputs(args, args.model, Path(tmp), torch.device("cpu"))
        share = args.sleepers * args.busy_us / (args.tick_ms * 1e3) / (os.cpu_count() or 1)
        sleepers = (f"; {args.sleepers} sleepers waking every {args.tick_ms:g} ms for {args.busy_us:g} us "
                    f"({100 * share:.1f} % of the cores)") if policies else ""
        print(f"{args.model}, {args.frames}x{args.resolution}², micro-batch {args.micro_batch}, {args.threads} threads "
              f"of {os.cpu_count()} cores{sleepers}", flush=True)
        conditions = {f"beside sleepers, {policy}": (beside_sleepers, (args, cfg, data, policy)) for policy in policies}
        conditions |= {f"beside {count} idle actors": (beside_actors, (args, cfg, data, count)) for count in counts}
        if args.in_actor:
            conditions["in a Ray actor's thread"] = (in_actor, (args,))
        alone_label = "alone, beside an idle Ray" if counts or args.in_actor else "alone"
        results: dict[str, list[float]] = {"alone": [], **{name: [] for name in conditions}}
        for round_index in range(args.rounds):
            results["alone"].append(step_ms(args, cfg, data))
            for name, (measure, measure_args) in conditions.items():
                results[name].append(measure(*measure_args))
            print(f" round {round_index + 1}/{args.rounds}: " + ", ".join(
                f"{name} {times[-1]:.1f}" for name, times in results.items()) + " ms/step", flush=True)
    results_alone = results.pop("alone")
    alone = statistics.median(results_alone)
    print(f"  {alone_label:<26} {alone:6.1f} ms/step")
    for name, times in results.items():
        costs = ", ".join(f"{100 * (t / a - 1):+.1f}%" for t, a in zip(times, results_alone))
        print(f"  {name:<26} {statistics.median(times):6.1f} ms/step   "
              f"{100 * (statistics.median(times) / alone - 1):+.1f}% (rounds {costs})")


if __name__ == "__main__":
    main()
