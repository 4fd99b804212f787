"""The Ray Train worker: one DeepSpeed engine per worker, data from a Ray Data shard.

`train_loop_per_worker` reads top to bottom like DiT's train.py: set up the model and engine,
resume if there is a checkpoint, then step: accumulate micro-batches, update EMA, log, evaluate,
checkpoint. Every piece is a small named helper below it. Nothing here is specific to a cluster:
Ray has already made the process group (gloo on CPU, NCCL on GPU) and DeepSpeed reuses it. The
step itself (objectives, engine, EMA, precision) is `phyray.train.engine`, which needs no Ray.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn

from phyray import tracking
from phyray.config import TrainConfig
from phyray.models.info import estimate_mfu, peak_flops
from phyray.models.vae import frames_to_tensor
from phyray.train.engine import build_objective_and_ema, setup_engine, train_step, update_ema
from phyray.train.evaluate import evaluate_rollouts
from phyray.train.trainer import files_record

# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def _stream(shard, cfg: TrainConfig, device: torch.device, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
    """One epoch of this worker's Ray Data shard, in micro-batches (a local shuffle buffer)."""
    return shard.iter_torch_batches(
        batch_size=cfg.micro_batch,
        drop_last=True,
        local_shuffle_buffer_size=cfg.data.shuffle_buffer or None,
        local_shuffle_seed=cfg.seed + epoch if cfg.data.shuffle_buffer else None,
        device=device,
    )


def batches(cfg: TrainConfig, device: torch.device, rank: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """Endless micro-batches from this worker's Ray Data shard, reshuffled every epoch.

    The first epoch streams. Every later epoch would restart the streaming pipeline, which costs
    seconds (measured: 2-3.5 s to the first batch of a 256-video latent set on 2 cores, against
    30 ms for all 16 of its batches); on a small shard that dominates the step time. So a shard
    whose first epoch fits in `data.cache_mb` is kept in this worker's memory and later epochs
    replay it in a fresh seeded permutation; a larger one streams every epoch.
    """
    shard = ray.train.get_dataset_shard("train")
    budget, held = cfg.data.cache_mb * 2**20, 0
    kept: list[dict[str, torch.Tensor]] | None = []
    seen = 0
    for batch in _stream(shard, cfg, device, epoch=0):
        seen += 1
        if kept is not None:
            held += sum(t.numel() * t.element_size() for t in batch.values())
            if held <= budget:
                kept.append(batch)
            else:
                kept = None  # too big to keep: stream every epoch
        yield batch
    if not seen:
        raise RuntimeError(f"data.train: this worker's shard has fewer than micro_batch={cfg.micro_batch} videos")
    epoch = 1
    if kept is None:
        while True:
            yield from _stream(shard, cfg, device, epoch)
            epoch += 1
    cache = {key: torch.cat([b[key] for b in kept]) for key in kept[0]}
    n = next(iter(cache.values())).shape[0]
    while True:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + rank * 1009 + epoch))
        for start in range(0, n - cfg.micro_batch + 1, cfg.micro_batch):
            index = order[start : start + cfg.micro_batch].to(device)
            yield {key: value[index] for key, value in cache.items()}
        epoch += 1


def first_in_background(data: Iterator[dict[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
    """`data`, its first batch already being drawn in a background thread.

    A run's first batch waits for Ray Data to start its pipeline (the split coordinator and the
    read tasks, fresh processes on a small machine): 1.4-4.0 s after the engine was ready
    (bench/trial_startup.py, 2026-12-06). Drawn from the start, that wait overlaps building the model and
    the DeepSpeed engine. The batches and their order are the same; only when the first is
    drawn changes.
    """
    drawn: dict[str, Any] = {}

    def draw() -> None:
        try:
            drawn["batch"] = next(data)
        except BaseException as err:  # re-raised where the batch is asked for
            drawn["error"] = err

    thread = threading.Thread(target=draw, name="first-batch", daemon=True)
    thread.start()

    def stream() -> Iterator[dict[str, torch.Tensor]]:
        thread.join()
        if "error" in drawn:
            raise drawn["error"]
        yield drawn["batch"]
        yield from data

    return stream()


def _marking_first(data: Iterator[dict[str, torch.Tensor]], clock: StartupClock) -> Iterator[dict[str, torch.Tensor]]:
    """`data`, marking the start-up milestone "first_batch" when its first batch is drawn."""
    first = next(data)
    clock.mark("first_batch")
    yield first
    yield from data


def skip(data: Iterator[dict[str, torch.Tensor]], count: int) -> None:
    """Consume `count` micro-batches without computing on them: a resumed run's data position.

    Exact because `batches` yields one fixed sequence per config and rank: Ray Data's
    order-preserving ingest deals the same blocks to each worker, the local shuffle and the
    cache's permutations are seeded. The cost is re-reading the skipped batches of the first
    epoch (which also refills the cache); later epochs of a cached shard are a seeded
    permutation of tensors in memory, so skipping them is cheap (a shard too large to cache
    re-streams every skipped epoch).
    """
    for _ in range(count):
        next(data)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------

ENGINE_TAG = "engine"


def worker_file(rank: int) -> str:
    return f"worker-{rank}.pt"


def worker_state(consumed: int, generator: torch.Generator) -> dict[str, Any]:
    """What this rank needs beyond the weights to continue bit for bit: data position and RNG.

    Every random draw of a step (timesteps, noise, VAE samples, clip windows) comes from
    `generator`; nothing draws from the global torch or numpy RNGs after the model is built, so
    they need no saving. The position is counted in micro-batches rather than derived from the
    step, so a resume with another `batch_size` (more accumulation) still continues in place.
    """
    return {"consumed": consumed, "generator": generator.get_state()}


def save_checkpoint(
    engine, ema: nn.Module, step: int, metrics: dict[str, Any], rank: int, worker: dict[str, Any]
) -> None:
    """Every rank writes its DeepSpeed shard and `worker_state`; rank 0 adds EMA weights and the
    step; all report, and Ray gathers every rank's files into one checkpoint directory."""
    with tempfile.TemporaryDirectory(prefix="phyray-ckpt-") as directory:
        engine.save_checkpoint(directory, tag=ENGINE_TAG)
        torch.save(worker, Path(directory) / worker_file(rank))
        if rank == 0:
            torch.save(ema.state_dict(), Path(directory) / "ema.pt")
            state = {"step": step, "world_size": dist.get_world_size()}
            (Path(directory) / "state.json").write_text(json.dumps(state))
        # Ray copies each rank's files into the run's storage one by one: a run killed during
        # the copy leaves a checkpoint with state.json and a truncated shard. The sizes let a
        # resume tell a complete checkpoint from that (trainer.latest_checkpoint).
        sizes = {str(f.relative_to(directory)): f.stat().st_size for f in Path(directory).rglob("*") if f.is_file()}
        (Path(directory) / files_record(rank)).write_text(json.dumps(sizes))
        dist.barrier()
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def maybe_resume(
    engine, ema: nn.Module, generator: torch.Generator, rank: int, resume_from: str | None
) -> tuple[int, int]:
    """Restore from Ray's latest checkpoint (after a failure) or `resume_from`.

    Restores the engine, EMA and this rank's generator in place; returns (step, micro-batches this
    rank had consumed), both 0 for a fresh run.
    """
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and resume_from:
        checkpoint = ray.train.Checkpoint.from_directory(resume_from)
    if checkpoint is None:
        return 0, 0
    with checkpoint.as_directory() as directory:
        engine.load_checkpoint(directory, tag=ENGINE_TAG)
        ema.load_state_dict(torch.load(Path(directory) / "ema.pt", map_location="cpu", weights_only=True))
        worker = torch.load(Path(directory) / worker_file(rank), weights_only=True)
        generator.set_state(worker["generator"])
        return json.loads((Path(directory) / "state.json").read_text())["step"], worker["consumed"]


# ---------------------------------------------------------------------------------------------
# Logging and evaluation (rank 0)
# ---------------------------------------------------------------------------------------------


def mean_across_workers(value: float) -> float:
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.item() / dist.get_world_size()


def throughput_metrics(cfg: TrainConfig, loop: dict[str, Any], steps: int, seconds: float, device: torch.device) -> dict[str, float | None]:
    samples_per_s = cfg.batch_size * steps / seconds
    tokens = loop.get("tokens_per_video")
    flops = loop.get("train_flops_per_video")
    peak = peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    return {
        "train/samples_per_s": samples_per_s,
        "train/tokens_per_s": samples_per_s * tokens if tokens else None,
        "train/mfu": estimate_mfu(flops, samples_per_s / cfg.workers, peak) if flops else None,
    }


def calibrate_latent_scale(vae: nn.Module, frames: torch.Tensor) -> None:
    """Set the VAE's latent scaling so encoded training latents have unit variance."""
    with torch.no_grad():
        vae.scaling_factor.fill_(1.0)
        vae.shift_factor.fill_(0.0)
        z = vae.encode(frames_to_tensor(frames).to(vae.scaling_factor.device))
        vae.shift_factor.fill_(z.mean().item())
        vae.scaling_factor.fill_(1.0 / max(z.std().item(), 1e-6))


class StartupClock:
    """Seconds from the driver's `train()` call to each start-up milestone of this worker, logged by
    rank 0 after its first step as `startup/<milestone>_s`: where a trial's first minute goes
    (bench/trial_startup.py). Wall clock across processes: exact on one host, as good as the
    nodes' clock sync on a cluster. A milestone keeps the first time it is marked; after a
    restart the same milestones count from the same call (their step says which attempt)."""

    def __init__(self, started_at: float | None, worker_entered_at: float | None):
        now = time.time()
        self.origin = started_at or now
        self.marks: dict[str, float] = {}
        self.mark("worker_entered", worker_entered_at or now)  # Ray Train's worker group is up
        self.mark("imports_done", now)

    def mark(self, milestone: str, at: float | None = None) -> None:
        self.marks.setdefault(f"startup/{milestone}_s", (at or time.time()) - self.origin)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def train_loop_per_worker(loop: dict[str, Any]) -> None:
    """Ray Train entry point. `loop` holds the config dict and run-level facts from the driver."""
    clock: StartupClock | None = StartupClock(loop.get("started_at"), loop.get("worker_entered_at"))
    cfg = TrainConfig.model_validate(loop["config"])
    context = ray.train.get_context()
    rank = context.get_world_rank()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)
    generator = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + rank)
    data = first_in_background(batches(cfg, device, rank))

    objective, ema = build_objective_and_ema(cfg)
    clock.mark("model_built")
    engine = setup_engine(cfg, objective, device)
    ema.to(device)
    clock.mark("engine_ready")
    step, consumed = maybe_resume(engine, ema, generator, rank, loop.get("resume_from"))
    if step and rank == 0:  # a restart after a failure, or --resume: where this attempt starts
        tracking.log_metrics(loop["tracking_uri"], loop["run_id"], {"train/resumed_at_step": step}, step)
    skip(data, consumed)
    data = _marking_first(data, clock)
    last_frames = None

    # window_loss stays a device tensor: read once per logging window, not once per micro-batch.
    window_start, window_steps, window_loss = time.perf_counter(), 0, 0.0
    while step < cfg.steps:
        loss, batch = train_step(engine, cfg, data, generator, device)
        consumed += cfg.grad_accum
        window_loss = window_loss + loss
        step += 1
        window_steps += 1
        update_ema(ema, objective.model, cfg.ema_decay)
        if clock is not None:
            clock.mark("first_step")
            if rank == 0:
                tracking.log_metrics(loop["tracking_uri"], loop["run_id"], clock.marks, step)
            clock = None
        if cfg.task == "vae":
            last_frames = batch["frames"]

        if cfg.fail_once_at_step == step and rank == min(1, context.get_world_size() - 1):
            marker = Path(loop["run_dir"]) / "injected-failure"
            if not marker.exists():
                marker.write_text(str(step))
                raise RuntimeError(f"injected failure at step {step} (fail_once_at_step)")

        final = step == cfg.steps
        if step % cfg.log_every == 0 or final:
            loss_mean = mean_across_workers(float(window_loss) / window_steps)
            if rank == 0:
                metrics = {"train/loss": loss_mean, "train/lr": engine.get_lr()[0]}
                metrics |= throughput_metrics(cfg, loop, window_steps, time.perf_counter() - window_start, device)
                tracking.log_metrics(loop["tracking_uri"], loop["run_id"], metrics, step)
            window_start, window_steps, window_loss = time.perf_counter(), 0, 0.0

        if final and cfg.task == "vae" and rank == 0:
            calibrate_latent_scale(ema, last_frames)
        if rank == 0 and cfg.data.eval and ((cfg.eval_every and step % cfg.eval_every == 0) or final):
            evaluate_rollouts(cfg, ema, loop, step, device)

        if step % cfg.checkpoint_every == 0 or final:
            metrics = {"step": step, "loss": float(loss)}
            save_checkpoint(engine, ema, step, metrics, rank, worker_state(consumed, generator))
