"""Benchmark: what Ray Train + Ray Data + DeepSpeed cost per training step, and the GPU path.

Trains the same DiT on the same cached latents three ways and prints step time and samples/s:
1. a plain single-process PyTorch loop (tensors in memory, torch AdamW), the baseline;
2. the step a trial takes (`phyray.train.engine`: DeepSpeed engine, EMA) in this process, no Ray;
3. `phyray train` with 1 worker (TorchTrainer, DeepSpeed engine, Ray Data streaming).
Steady state only: the first logging window (start-up, warm-up) is dropped from each, and the
set is large enough (--videos) that the run stays within its first epoch: restarting a Ray Data
epoch costs seconds, which a real (30K+ video) epoch amortises but a 16-video one would not.
Target: Ray Train's overhead per step <= 5%.

All three run on --threads torch threads, by default 1: what a trial's worker runs with (its
`cpus_per_worker`, default 1, is its OMP_NUM_THREADS), leaving the machine's other cores to
Ray's own processes as a GPU host does. With every core (--threads 2 here) the step shares them
with Ray's processes and runs 15-17 % slower, for a cause not yet found: neither the count of
preemptions nor Ray's other processes at idle priority explains it (docs/performance.md,
2026-12-06 (6) and (7); `bench/step_beside_wakeups.py`, `bench/ray_idle_priority.sh`). Ray runs only
for `phyray train`: the latents' local Ray and each round's are stopped after, so the plain
loop and the engine never share the machine with an idle Ray.

    .venv/bin/python bench/train_step.py                      # DiT-M, 32², CPU, 1 thread
    .venv/bin/python bench/train_step.py --threads 2          # every core of this machine

With --gpu, per model (--models): the plain loop three ways (torch AdamW, fused AdamW, fused +
torch.compile) and the DeepSpeed engine step a trial runs (`phyray.train.engine.train_step`, in
this process over a one-rank process group), each with tokens/s, MFU against the device's dense
bf16 peak (FLOPs of `phyray model info`) and peak memory; plus `phyray train` unless --no-ray
(a GPU machine without Ray or MLflow). Latents are random there: the cost does not depend on them.

    python bench/train_step.py --gpu --no-ray --models DiT-S,DiT-B --resolution 128 \
        --vae vae-f8t4c4 --micro-batch 32                     # the paper's setting; target MFU >= 40%
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch


def make_latents(root: Path, resolution: int, frames: int, videos: int, vae: str) -> Path:
    """Tiny pixel set -> a randomly initialised VAE export -> cached latents (what the DiT reads).
    The local Ray that made them is stopped, so that the loops after run on a machine without it."""
    import ray

    from phyray.config import load_data_config
    from phyray.data.generate import generate_dataset
    from phyray.data.latents import encode_dataset
    from phyray.models.export import save_export
    from phyray.models.vae import build_vae

    cfg = load_data_config("uniform_motion", [f"render.resolution={resolution}", f"physics.num_frames={frames}"])
    generate_dataset(cfg, "train", str(videos), root / "pixels", progress=False)
    export = save_export(root / "vae", "vae", {"preset": vae}, build_vae(vae).state_dict())
    encode_dataset(root / "pixels", export, root / "latents", cond_frames=3, num_workers=1)
    ray.shutdown()
    return root / "latents"


def shard_latents(latents_dir: Path, device: torch.device) -> dict[str, torch.Tensor]:
    """The cached latent set in memory: {"latent", "cond"}, each (N, C, T, h, w)."""
    from phyray.data.latents import decode_latents
    from phyray.data.shards import read_shard, shard_paths

    table = read_shard(shard_paths(latents_dir)[0]).to_pydict()
    return {k: torch.from_numpy(v).to(device) for k, v in decode_latents(table).items() if k in ("latent", "cond")}


def random_latents(shape: list[int], videos: int, device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {key: torch.randn(videos, *shape, generator=generator).to(device) for key in ("latent", "cond")}


def random_step_inputs(args, model: str, root: Path, device: torch.device) -> tuple[Any, dict[str, torch.Tensor], dict]:
    """The step's config, random latents of its shape and the model's info, for the controls that
    time the plain loop without a latent set (`step_beside_wakeups.py`, `compile_step.py`)."""
    from phyray.models.info import model_info

    info = model_info(model, args.resolution, args.frames, vae=args.vae)
    cfg = train_config(args, model, root, None, gpu=device.type == "cuda")
    return cfg, random_latents(info["latent_shape"], args.videos, device), info


def micro_batches(data: dict[str, torch.Tensor], size: int, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    """Endless random micro-batches of the in-memory set, indices drawn on the device (no host sync)."""
    generator = torch.Generator(device=device).manual_seed(0)
    n = len(data["latent"])
    while True:
        index = torch.randint(0, n, (size,), device=device, generator=generator)
        yield {key: value[index] for key, value in data.items()}


def windows(step, steps: int, window: int, device: torch.device) -> list[float]:
    """Seconds per step of `step()` called `steps` times, one figure per window of `window` steps."""
    times, start = [], time.perf_counter()
    for i in range(1, steps + 1):
        step()
        if i % window == 0:
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - start) / window)
            start = time.perf_counter()
    return times


def plain_loop(cfg, data, device: torch.device, steps: int, window: int, fused: bool = False, compiled: str = "off") -> list[float]:
    """A single-process loop over in-memory latents: the objective, torch AdamW, clipping; with
    `compiled` a `compile` scope, the network compiled as a run's `compile` compiles it."""
    from phyray.train.engine import autocast, build_objective, compile_network

    objective = build_objective(cfg).to(device)
    if compiled != "off":
        compile_network(objective, compiled)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=cfg.optim.lr, fused=fused)
    generator = torch.Generator(device=device).manual_seed(0)
    batches = micro_batches(data, cfg.micro_batch, device)

    def step() -> None:
        batch = next(batches)
        with autocast(cfg, device):
            loss = objective(batch["latent"], batch["cond"], generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), cfg.grad_clip)
        optimizer.step()

    return windows(step, steps, window, device)


def engine_loop(cfg, data, device: torch.device, steps: int, window: int) -> list[float]:
    """The step a trial's worker takes (`phyray.train.engine`: DeepSpeed engine, EMA), in this
    process over a one-rank process group instead of Ray's. The group is destroyed after: gloo's
    two transport threads wake every 10 ms, and the next loops should not run beside them."""
    import deepspeed.comm
    import torch.distributed as dist

    from phyray.train.engine import build_objective_and_ema, setup_engine, train_step, update_ema

    with socket.socket() as probe:  # a free port for the one-rank rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    try:
        objective, ema = build_objective_and_ema(cfg)
        engine = setup_engine(cfg, objective, device)
        ema.to(device)
        generator = torch.Generator(device=device).manual_seed(0)
        batches = micro_batches(data, cfg.micro_batch, device)

        def step() -> None:
            train_step(engine, cfg, batches, generator, device)
            update_ema(ema, objective.model, cfg.ema_decay)

        return windows(step, steps, window, device)
    finally:
        # DeepSpeed's teardown also forgets the groups it cached, which the next round's engine
        # would otherwise look up in the destroyed group.
        if deepspeed.comm.is_initialized():
            deepspeed.comm.destroy_process_group()
        else:
            dist.destroy_process_group()


def train_config(args, model: str, root: Path, latents: Path | None, gpu: bool):
    from phyray.config import TrainConfig, validate

    return validate(TrainConfig, {
        "task": "dit", "name": "bench", "output_dir": str(root / "runs"),
        "data": {"train": str(latents or root / "latents"), "shuffle_buffer": 0},
        "model": {"vae": args.vae, "dit": model},
        "steps": args.steps, "batch_size": args.micro_batch, "micro_batch": args.micro_batch,
        "log_every": args.window, "checkpoint_every": args.steps, "workers": 1, "use_gpu": gpu,
        # Ray caps a worker's torch threads at its CPUs (OMP_NUM_THREADS); the plain loop runs
        # with as many (--threads).
        "cpus_per_worker": torch.get_num_threads(),
        "zero_stage": args.zero_stage,
    })


def one_rank_stage(cfg) -> int:
    """The ZeRO stage the engine runs at with one rank, whatever --zero-stage asked."""
    from phyray.train.engine import deepspeed_config

    return deepspeed_config(cfg, world_size=1)["zero_optimization"]["stage"]


def ray_train_step(cfg) -> float:
    """Median seconds per step of `phyray train` (1 worker), first logging window dropped.

    Starts a local Ray for the run and stops it after: an idle Ray's dozen processes take 3-6 %
    of this machine's two cores, and the plain loop is the step of a machine without Ray."""
    import ray
    from mlflow.tracking import MlflowClient

    from phyray.runtime import init_ray
    from phyray.train.trainer import train

    init_ray()
    try:
        run = train(cfg)
    finally:
        ray.shutdown()
    history = MlflowClient(run.tracking_uri).get_metric_history(run.run_id, "train/samples_per_s")
    return statistics.median(cfg.micro_batch / m.value for m in sorted(history, key=lambda m: m.step)[1:])


def print_line(name: str, step_s: float, micro_batch: int, info: dict, peak: float | None, memory: float | None) -> None:
    from phyray.models.info import estimate_mfu

    samples = micro_batch / step_s
    line = (f"  {name:<34} {1e3 * step_s:8.1f} ms/step {samples:8.1f} samples/s "
            f"{samples * info['tokens_per_video']:10.0f} tokens/s")
    if peak:
        line += f"  MFU {100 * estimate_mfu(info['train_flops_per_video'], samples, peak):5.1f}%"
    if memory is not None:
        line += f"  peak mem {memory:6.2f} GiB"
    print(line, flush=True)


def cpu_main(args) -> None:
    from phyray.models.info import model_info

    device = torch.device("cpu")
    torch.set_num_threads(args.threads)
    model = args.models.split(",")[0]
    with tempfile.TemporaryDirectory(prefix="phyray-bench-train-") as tmp:
        root = Path(tmp)
        latents = make_latents(root, args.resolution, args.frames, args.videos, args.vae)
        cfg = train_config(args, model, root, latents, gpu=False)
        info = model_info(model, args.resolution, args.frames, vae=args.vae)
        print(f"{model} on {args.vae} latents of {args.frames}x{args.resolution}², micro-batch {args.micro_batch}, "
              f"{info['tokens_per_video']} tokens/video, device cpu ({args.threads} of {os.cpu_count()} cores), "
              f"ZeRO stage {one_rank_stage(cfg)} (one rank)")
        # This machine's step time drifts by several percent within minutes, so the two loops
        # alternate, round by round, and the overhead is the median of the rounds' ratios.
        # The engine's line (the trial's step in this process, no Ray) splits the overhead into
        # DeepSpeed + EMA and what Ray (worker thread, Ray Data, Ray's processes) adds.
        overheads, engine_shares = [], []
        for round_index in range(args.rounds):
            data = shard_latents(latents, device)
            plain = statistics.median(plain_loop(cfg, data, device, args.steps, args.window)[1:])
            engine = statistics.median(engine_loop(cfg, data, device, args.steps, args.window)[1:])
            cfg = cfg.model_copy(update={"name": f"bench-{round_index}"})
            ray_step = ray_train_step(cfg)
            time.sleep(args.settle)  # let Ray's processes exit
            print(f" round {round_index + 1}/{args.rounds}")
            for name, step_s in (("plain loop", plain), ("DeepSpeed engine + EMA, no Ray", engine),
                                 ("phyray train (1 worker)", ray_step)):
                print_line(name, step_s, args.micro_batch, info, None, None)
            overheads.append(ray_step / plain - 1)
            engine_shares.append(engine / plain - 1)
    rounds = ", ".join(f"{100 * o:+.1f}%" for o in overheads)
    print(f"Ray Train overhead per step: {100 * statistics.median(overheads):+.1f}% (median of {args.rounds} rounds: "
          f"{rounds}; target <= 5%); of which the engine alone: {100 * statistics.median(engine_shares):+.1f}%")


def gpu_main(args) -> None:
    from phyray.models.info import model_info, peak_flops

    device = torch.device("cuda")
    peak = peak_flops(torch.cuda.get_device_name())
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, dense bf16 peak "
          f"{peak / 1e12 if peak else float('nan'):.0f} TFLOP/s; bf16 autocast, fp32 master weights", flush=True)
    for model in args.models.split(","):
        info = model_info(model, args.resolution, args.frames, vae=args.vae)
        print(f"{model} ({info['params'] / 1e6:.0f}M) on {args.vae} latents {info['latent_shape']} of "
              f"{args.frames}x{args.resolution}², {info['tokens_per_video']} tokens/video, micro-batch {args.micro_batch}", flush=True)
        with tempfile.TemporaryDirectory(prefix="phyray-bench-train-") as tmp:
            root = Path(tmp)
            cfg = train_config(args, model, root, None, gpu=True)
            data = random_latents(info["latent_shape"], args.videos, device)
            variants = {
                "foreach": ("plain, torch AdamW (foreach)", lambda: plain_loop(cfg, data, device, args.steps, args.window)),
                "fused": ("plain, fused AdamW", lambda: plain_loop(cfg, data, device, args.steps, args.window, fused=True)),
                "compiled": ("plain, fused AdamW, compile: blocks", lambda: plain_loop(
                    cfg, data, device, args.steps, args.window, fused=True, compiled="blocks")),
                "compiled-network": ("plain, fused AdamW, compile: network", lambda: plain_loop(
                    cfg, data, device, args.steps, args.window, fused=True, compiled="network")),
                "engine": (f"DeepSpeed engine, ZeRO {one_rank_stage(cfg)} + EMA (trial step)", lambda: engine_loop(
                    cfg, data, device, args.steps, args.window)),
                "engine-compiled": (f"DeepSpeed engine, ZeRO {one_rank_stage(cfg)} + EMA, compile: blocks", lambda: engine_loop(
                    cfg.model_copy(update={"compile": "blocks"}), data, device, args.steps, args.window)),
            }
            for name, run in (variants[key] for key in args.variants.split(",")):
                torch._dynamo.utils.counters.clear()  # graph breaks per variant, not summed over them
                torch.cuda.reset_peak_memory_stats()
                times = run()
                memory = torch.cuda.max_memory_allocated() / 2**30
                print_line(name, statistics.median(times[1:]), args.micro_batch, info, peak, memory)
                if "compile" in name:
                    breaks = sum(torch._dynamo.utils.counters["graph_break"].values())
                    print(f"    first window (compilation included): {times[0]:.1f} s/step; graph breaks: {breaks}", flush=True)
                gc.collect()
                torch.cuda.empty_cache()
            if not args.no_ray:
                latents = make_latents(root, args.resolution, args.frames, args.videos, args.vae)
                print_line("phyray train (1 worker, Ray)", ray_train_step(train_config(args, model, root, latents, True)),
                           args.micro_batch, info, peak, None)


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """The step's shape and the loops' length, shared with `bench/step_beside_wakeups.py` so that
    its control runs the same step as this bench."""
    parser.add_argument("--vae", default="vae-f4t2c4-tiny")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--videos", type=int, default=512, help="videos in the latent set")
    parser.add_argument("--zero-stage", type=int, default=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="DiT-M", help="DiT presets, comma-separated (CPU: the first)")
    add_step_arguments(parser)
    parser.add_argument("--rounds", type=int, default=3, help="CPU: alternating rounds of the plain loop and `phyray train`")
    parser.add_argument("--settle", type=float, default=10.0, help="CPU: seconds between a round's `phyray train` (Ray stopped) and the next plain loop")
    parser.add_argument("--threads", type=int, default=1, help="CPU: torch threads of both loops (a trial's worker: cpus_per_worker, default 1)")
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--no-ray", action="store_true", help="--gpu on a machine without Ray: skip `phyray train`")
    parser.add_argument("--variants", default="foreach,fused,compiled,engine", help="--gpu: which plain loops and the engine")
    args = parser.parse_args()
    gpu_main(args) if args.gpu else cpu_main(args)


if __name__ == "__main__":
    main()
