"""The training step without the cluster: objectives, the DeepSpeed engine, EMA, precision.

Everything a Ray Train worker (`phyray.train.loop`) runs per step lives here, free of Ray, so a
plain process can build the same engine and take the same steps: the GPU benchmark
(bench/train_step.py --gpu) measures exactly what a trial runs, on a machine without Ray.

Precision: bf16 autocast on GPU with fp32 master weights and fp32 DeepSpeed engine; fp32 on CPU.
(DeepSpeed's own bf16 mode casts the weights themselves; autocast keeps norms, softmax and the
diffusion arithmetic in fp32, which is what the models are written for.)
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from phyray.config import TrainConfig
from phyray.models.diffusion import NoiseSchedule, condition_latent_frames, diffusion_loss
from phyray.models.dit import build_dit
from phyray.models.vae import build_vae, frames_to_tensor, vae_loss
from phyray.presets import VAE_PRESETS

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


def compiled_modules(objective: nn.Module, scope: str) -> list[nn.Module]:
    """The modules `compile: scope` compiles. The VAE objective calls its encoder and decoder, not
    the VAE itself, so those two, in either scope (the config says "network"): their blocks
    differ in channels and size, so compiling them one by one would share no graph. For the DiT,
    "network" is the DiT whole; "blocks" its transformer blocks, which have one shape and one
    code, so dynamo traces and inductor compiles the first and every other block reuses that
    graph (its weights are inputs, not constants). The embedders and the final layer stay eager:
    a few small ops."""
    model = objective.model
    if isinstance(objective, VAEObjective):
        return [model.encoder, model.decoder]
    return list(model.blocks) if scope == "blocks" else [model]


def compile_network(objective: nn.Module, scope: str) -> None:
    """`torch.compile` what `compile: scope` names (`compiled_modules`), in place
    (`nn.Module.compile`), before the engine wraps it. In place, the state-dict keys stay those of
    the eager module, so checkpoints and exports load into eager modules."""
    for module in compiled_modules(objective, scope):
        module.compile()


def use_inductor_cache(directory: Path) -> None:
    """Inductor's kernels and C++ headers built in this process go under `directory`, not under
    torch's default in the temp directory (where importing torch still makes an empty one).

    TORCHINDUCTOR_CACHE_DIR is set, not defaulted: torch writes its default there the first time
    any module is compiled in a process, and Ray's workers may inherit that from their driver.
    It does not move the C++ precompiled headers (~150 MB on CPU): torch 2.13 fixes their
    directory when `torch._inductor.codecache` is imported, from the default
    (`codecache._HEADER_DIR`), so they are pointed here too; tests/test_train.py's compiled run
    finds its header here, so a torch that moved it again fails that test.
    """
    from torch._inductor import codecache

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory)
    codecache._HEADER_DIR = str(directory / "precompiled_headers")
    codecache._HEADER_LOCK_DIR = str(directory / "precompiled_headers" / "locks")


def build_objective_and_ema(cfg: TrainConfig) -> tuple[nn.Module, nn.Module]:
    """The objective to train and its network's EMA copy (frozen, eval mode). The copy is taken
    before `compile` compiles the network, so the EMA, its rollouts and the export stay eager.
    Inductor's kernels and headers are cached under the run's `output_dir` (a study's trials
    share it and reuse each other's kernels)."""
    objective = build_objective(cfg)
    ema = copy.deepcopy(objective.model).requires_grad_(False).eval()
    if cfg.compile != "off":
        use_inductor_cache(Path(cfg.output_dir).resolve() / "inductor-cache")
        compile_network(objective, cfg.compile)
    return objective, ema


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


def deepspeed_config(cfg: TrainConfig, world_size: int) -> dict[str, Any]:
    """The engine's config. ZeRO shards optimiser state across data-parallel ranks; with one
    rank there is nothing to shard, yet DeepSpeed's stage-1/2 path still copies every gradient
    into flat buckets and back (DiT-M, 32², CPU, engine alone: 101.7 ms/step at stage 1, 95.6 at
    stage 0, 91.6 for a plain loop; docs/performance.md), so one rank runs stage 0: the same
    updates bit for bit (checked on CPU over 6 steps with clipping)."""
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage if world_size > 1 else 0},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def setup_engine(cfg: TrainConfig, objective: nn.Module, device: torch.device):
    """DeepSpeed engine over the existing process group (Ray's in a trial), with a torch AdamW
    (no JIT-built ops), fused into one kernel on CUDA."""
    import deepspeed  # here, not at the top: DS_ACCELERATOR must be set first (trainer._worker_entry)

    objective.to(device)
    optimizer = torch.optim.AdamW(
        objective.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay,
        fused=device.type == "cuda",
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    world_size = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    engine, _, _, _ = deepspeed.initialize(
        model=objective,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=deepspeed_config(cfg, world_size),
        dist_init_required=False,
    )
    # One rank has no gradients to average, yet after every backward DeepSpeed copies them all
    # into flat buffers, all-reduces those over the one-rank group and copies them back: 1-2 %
    # of a DiT-M step on one CPU thread, with weights and EMA bit-identical after 60 steps
    # without it (docs/performance.md, 2026-12-06 (3)).
    engine.enable_backward_allreduce = world_size > 1
    return engine


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    # One multi-tensor kernel per dtype instead of one launch per parameter (hundreds per step).
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1 - decay)
    for ema_b, b in zip(ema.buffers(), model.buffers()):  # few or none
        ema_b.copy_(b)


def autocast(cfg: TrainConfig, device: torch.device):
    if device.type == "cuda" and cfg.precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def objective_inputs(cfg: TrainConfig, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return (batch["frames"],) if cfg.task == "vae" else (batch["latent"], batch["cond"])


def train_step(
    engine, cfg: TrainConfig, data: Iterator[dict[str, torch.Tensor]], generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimiser step: `cfg.grad_accum` micro-batches through the engine.

    Returns the step's mean loss as a 0-d tensor left on the device (reading it is a host sync;
    the caller reads it once per logging window, not per micro-batch) and the last micro-batch.
    """
    total = torch.zeros((), device=device)
    for _ in range(cfg.grad_accum):
        batch = next(data)
        with autocast(cfg, device):
            loss = engine(*objective_inputs(cfg, batch), generator=generator)
        engine.backward(loss)
        engine.step()
        total += loss.detach() / cfg.grad_accum
    return total, batch
