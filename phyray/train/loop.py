"""The Ray Train worker: one DeepSpeed engine per worker, data from a Ray Data shard.

`train_loop_per_worker` reads top to bottom like DiT's train.py: set up the model and engine,
resume if there is a checkpoint, then step: accumulate micro-batches, update EMA, log, evaluate,
checkpoint. Every piece is a small named helper below it. Nothing here is specific to a cluster:
Ray has already made the process group (gloo on CPU, NCCL on GPU) and DeepSpeed reuses it.

Precision: bf16 autocast on GPU with fp32 master weights and fp32 DeepSpeed engine; fp32 on CPU.
(DeepSpeed's own bf16 mode casts the weights themselves; autocast keeps norms, softmax and the
diffusion arithmetic in fp32, which is what the models are written for.)
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import tempfile
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
from phyray.models.diffusion import NoiseSchedule, condition_latent_frames, diffusion_loss
from phyray.models.dit import build_dit
from phyray.models.info import estimate_mfu, peak_flops
from phyray.models.vae import build_vae, frames_to_tensor, vae_loss
from phyray.presets import VAE_PRESETS
from phyray.train.evaluate import evaluate_rollouts

# ---------------------------------------------------------------------------------------------
# Losses as modules (DeepSpeed wraps one nn.Module whose forward returns the loss)
# ---------------------------------------------------------------------------------------------


class VAEObjective(nn.Module):
    """Reconstruction + beta * KL of a VideoVAE on uint8 frames (B, T, H, W, 3).

    With `clip_frames`, each micro-batch is cut to one random window of that many frames: for a
    frame-local VAE (each latent frame sees its own group of frames alone) the same maps at a
    fraction of the cost; for a causal one an approximation (see VideoVAE).
    """

    def __init__(
        self,
        vae: nn.Module,
        beta: float,
        clip_frames: int | None = None,
        recon: str = "l1",
        foreground_weight: float = 0.0,
    ):
        super().__init__()
        self.model, self.beta, self.clip_frames = vae, beta, clip_frames
        self.recon, self.foreground_weight = recon, foreground_weight

    def forward(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.clip_frames and self.clip_frames < frames.shape[1]:
            start = int(torch.randint(0, frames.shape[1] - self.clip_frames + 1, (1,), generator=generator, device=frames.device))
            frames = frames[:, start : start + self.clip_frames]  # (B, clip, H, W, 3)
        loss, _ = vae_loss(
            self.model,
            frames_to_tensor(frames),
            beta=self.beta,
            recon=self.recon,
            generator=generator,
            foreground_weight=self.foreground_weight,
        )
        return loss


class DiTObjective(nn.Module):
    """v-prediction loss of a DiT on cached latents and conditioning latents (B, C, T, h, w)."""

    def __init__(self, dit: nn.Module, cfg: TrainConfig, temporal_compression: int):
        super().__init__()
        self.model = dit
        self.schedule = NoiseSchedule(cfg.diffusion.timesteps, cfg.diffusion.beta_schedule)
        self.touched, self.known = condition_latent_frames(cfg.diffusion.cond_frames, temporal_compression)

    def forward(self, latent: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mask = torch.zeros_like(cond[:, :1])  # (B, 1, T, h, w)
        mask[:, :, : self.touched] = 1
        return diffusion_loss(self.model, self.schedule, latent, cond, mask, self.known, generator=generator)


def build_objective(cfg: TrainConfig) -> nn.Module:
    if cfg.task == "vae":
        vae = build_vae(cfg.model.vae)
        if cfg.vae_logvar_init is not None:
            vae.init_logvar(cfg.vae_logvar_init)
        return VAEObjective(vae, cfg.vae_beta, cfg.vae_clip_frames, cfg.vae_recon, cfg.vae_foreground_weight)
    vae_preset = VAE_PRESETS[cfg.model.vae]
    dit = build_dit(cfg.model.dit, latent_channels=vae_preset["latent_channels"], patch=cfg.model.patch)
    return DiTObjective(dit, cfg, vae_preset["temporal_compression"])


# ---------------------------------------------------------------------------------------------
# Engine, schedule, EMA
# ---------------------------------------------------------------------------------------------


def lr_lambda(cfg: TrainConfig):
    """Multiplier of the peak LR at optimiser step s: linear warm-up, then cosine or constant."""

    def factor(step: int) -> float:
        if step < cfg.optim.warmup_steps:
            return (step + 1) / cfg.optim.warmup_steps
        if cfg.optim.decay == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.optim.warmup_steps) / max(1, cfg.steps - cfg.optim.warmup_steps))
        floor = cfg.optim.min_lr_ratio
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def deepspeed_config(cfg: TrainConfig) -> dict[str, Any]:
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def setup_engine(cfg: TrainConfig, objective: nn.Module, device: torch.device):
    """DeepSpeed engine over Ray's process group, with a torch AdamW (no JIT-built ops)."""
    import deepspeed  # here, not at the top: DS_ACCELERATOR must be set first (trainer._worker_entry)

    objective.to(device)
    optimizer = torch.optim.AdamW(
        objective.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    engine, _, _, _ = deepspeed.initialize(
        model=objective,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=deepspeed_config(cfg),
        dist_init_required=False,
    )
    return engine


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for ema_p, p in zip(ema.parameters(), model.parameters()):
        ema_p.lerp_(p.detach().to(ema_p.dtype), 1 - decay)
    for ema_b, b in zip(ema.buffers(), model.buffers()):
        ema_b.copy_(b)


def autocast(cfg: TrainConfig, device: torch.device):
    if device.type == "cuda" and cfg.precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


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


def objective_inputs(cfg: TrainConfig, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return (batch["frames"],) if cfg.task == "vae" else (batch["latent"], batch["cond"])


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
            (Path(directory) / "state.json").write_text(json.dumps({"step": step}))
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

    objective = build_objective(cfg)
    ema = copy.deepcopy(objective.model).requires_grad_(False).eval()
    clock.mark("model_built")
    engine = setup_engine(cfg, objective, device)
    ema.to(device)
    clock.mark("engine_ready")
    step, consumed = maybe_resume(engine, ema, generator, rank, loop.get("resume_from"))
    if step and rank == 0:  # a restart after a failure, or --resume: where this attempt starts
        tracking.log_metrics(loop["tracking_uri"], loop["run_id"], {"train/resumed_at_step": step}, step)
    data = batches(cfg, device, rank)
    skip(data, consumed)
    last_frames = None

    window_start, window_steps, window_loss = time.perf_counter(), 0, 0.0
    while step < cfg.steps:
        for _ in range(cfg.grad_accum):
            batch = next(data)
            consumed += 1
            if clock is not None:
                clock.mark("first_batch")
            with autocast(cfg, device):
                loss = engine(*objective_inputs(cfg, batch), generator=generator)
            engine.backward(loss)
            engine.step()
            window_loss += loss.item() / cfg.grad_accum
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
            loss_mean = mean_across_workers(window_loss / window_steps)
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
            metrics = {"step": step, "loss": float(loss.item())}
            save_checkpoint(engine, ema, step, metrics, rank, worker_state(consumed, generator))
