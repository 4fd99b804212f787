"""In-training evaluation (rank 0): roll out a few held-out videos, score their physics, log a GIF.

PHYRE scenes have no ball states to parse: their rollouts are scored by PSNR and SSIM alone.

VAE runs "roll out" by reconstruction (the VAE's share of the physics error, paper Table 3);
DiT runs generate from the first c frames with the EMA weights. Both are scored by the same
physics evaluator as the study, and the first video is logged as a side-by-side GIF
[ground truth | rollout].
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlflow.tracking import MlflowClient

from phyray import tracking
from phyray.config import TrainConfig
from phyray.data.shards import decode_frames, iter_rows
from phyray.eval import report_metrics, score_rollouts
from phyray.eval.video import pixel_metrics, side_by_side_gif
from phyray.models.diffusion import NoiseSchedule, rollout
from phyray.models.export import load_vae
from phyray.models.vae import frames_to_tensor, tensor_to_frames


def eval_rows(cfg: TrainConfig) -> list[dict[str, Any]]:
    rows = []
    for row in iter_rows(cfg.data.eval):
        rows.append(row)
        if len(rows) == cfg.data.eval_videos:
            break
    return rows


@torch.no_grad()
def reconstruct(vae: torch.nn.Module, frames: np.ndarray, device: torch.device) -> np.ndarray:
    x = frames_to_tensor(frames, device=device)
    return tensor_to_frames(vae.decode(vae.encode(x), num_frames=x.shape[2]))


@torch.no_grad()
def generate(cfg: TrainConfig, dit: torch.nn.Module, vae_checkpoint: str, frames: np.ndarray, device: torch.device) -> np.ndarray:
    vae = load_vae(vae_checkpoint).to(device)
    schedule = NoiseSchedule(cfg.diffusion.timesteps, cfg.diffusion.beta_schedule)
    c = cfg.diffusion.cond_frames
    return rollout(vae, dit, schedule, frames[:, :c], num_frames=frames.shape[1], steps=cfg.diffusion.sample_steps, seed=cfg.seed)


def evaluate_rollouts(cfg: TrainConfig, model: torch.nn.Module, loop: dict[str, Any], step: int, device: torch.device) -> dict[str, float]:
    """Roll out, score and log `data.eval_videos` held-out videos; returns the logged metrics."""
    rows = eval_rows(cfg)
    reference = np.stack([decode_frames(r) for r in rows])  # (N, T, H, W, 3)
    model.eval()
    if cfg.task == "vae":
        frames = reconstruct(model, reference, device)
    else:
        frames = generate(cfg, model, loop["vae_checkpoint"], reference, device)
    if "positions" in rows[0]:
        metrics = report_metrics(score_rollouts(rows, frames, cond_frames=cfg.diffusion.cond_frames))
    else:  # a PHYRE scene has no ball states to parse: pixel metrics only
        pixels = pixel_metrics(list(frames), list(reference), cond_frames=cfg.diffusion.cond_frames)
        metrics = {f"eval/{rows[0]['split']}/{name}": float(np.nanmean(values)) for name, values in pixels.items()}
    tracking.log_metrics(loop["tracking_uri"], loop["run_id"], metrics, step)
    with tempfile.TemporaryDirectory() as tmp:
        gif = side_by_side_gif(reference[0], frames[0], Path(tmp) / f"rollout_step{step:07d}.gif")
        MlflowClient(loop["tracking_uri"]).log_artifact(loop["run_id"], str(gif), artifact_path="rollouts")
    return metrics
