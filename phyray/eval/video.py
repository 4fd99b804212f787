"""Pixel metrics of rollouts against their references: PSNR and SSIM from torchmetrics.

Both are computed per frame over the generated frames (t ≥ c) with pixel values in [0, 1]
(data range 1), then averaged over those frames; SSIM uses torchmetrics' defaults (Gaussian
window 11, σ = 1.5, k1 = 0.01, k2 = 0.03). No network weights are involved.

- A frame identical to its reference has infinite PSNR; each frame's PSNR is capped at
  PSNR_CAP_DB so the mean stays finite (a rollout equal to its reference scores exactly the cap).
- Rollout and reference must have the same resolution here; the report brings a reference to
  its rollout's resolution first (area averaging, `phyray.data.shards.area_downsample`), the
  resolution the model works at.
- Cost: SSIM's 11×11 depthwise convolution runs at well under 1 GFLOP/s in PyTorch on CPU,
  0.2-0.35 s per 128² video and 0.6-0.75 s per 256² video on one core (bench/evaluate.py), far
  more than everything else together; give `device="cuda"` where a GPU is free, or skip SSIM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from phyray.eval.physics import COND_FRAMES

PSNR_CAP_DB = 100.0
PIXEL_METRICS = ("psnr", "ssim")
# Frames per torchmetrics call: ~1 MiB of float32 per tensor keeps the temporaries in cache and
# clear of fresh-page faults, which cost more than the arithmetic (3x faster at 128² than
# passing a whole video).
BATCH_ELEMENTS = 2**18


def frames_to_tensor(frames: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, H, W) float32 in [0, 1] on `device`.

    Decoded shard frames are views of planar (T, 3, H, W) memory, so the transpose here is free
    and the conversion is one pass.
    """
    planar = frames.transpose(0, 3, 1, 2)  # (T, 3, H, W)
    out = np.empty(planar.shape, dtype=np.float32)
    np.multiply(planar, np.float32(1 / 255), out=out)
    return torch.from_numpy(out).to(device)


def frozen_video(truth: np.ndarray, cond_frames: int) -> np.ndarray:
    """(T, H, W, 3) `truth` with nothing moving after its conditioning frames: frame c-1 held over
    frames c..T-1. The level a model must beat to have continued a scene at all."""
    video = truth.copy()
    video[cond_frames:] = truth[cond_frames - 1]
    return video


@torch.no_grad()
def pixel_metrics(
    rollouts: np.ndarray | Sequence[np.ndarray],
    references: np.ndarray | Sequence[np.ndarray],
    cond_frames: int = COND_FRAMES,
    psnr: bool = True,
    ssim: bool = True,
    device: str | torch.device = "cpu",
) -> dict[str, np.ndarray]:
    """Frame-averaged PSNR and SSIM over the generated frames of each video.

    Args:
        rollouts, references: N videos each, (T, H, W, 3) uint8 of equal shape per pair.
        cond_frames: c; frames t < c are given to the model and not scored.
        psnr, ssim: which metrics to compute.
        device: torch device for the computation.

    Returns:
        {"psnr": (N,), "ssim": (N,)} float64 for the metrics computed; NaN for a video with no
        frame after c.
    """
    n = len(rollouts)
    wanted = [name for name, on in zip(PIXEL_METRICS, (psnr, ssim)) if on]
    if not wanted:
        return {}
    sums = {name: np.zeros(n) for name in wanted}
    for i, (rollout, reference) in enumerate(zip(rollouts, references)):
        if rollout.shape != reference.shape:
            raise ValueError(f"pixel_metrics: rollout {rollout.shape} and reference {reference.shape} differ")
        t, h, w, c = rollout.shape
        batch = max(1, BATCH_ELEMENTS // (h * w * c))
        for start in range(cond_frames, t, batch):
            x = frames_to_tensor(rollout[start : start + batch], device)
            y = frames_to_tensor(reference[start : start + batch], device)
            if psnr:
                per_frame = peak_signal_noise_ratio(x, y, data_range=1.0, reduction="none", dim=(1, 2, 3))  # (B,)
                sums["psnr"][i] += per_frame.clamp(max=PSNR_CAP_DB).sum().item()
            if ssim:
                sums["ssim"][i] += structural_similarity_index_measure(x, y, data_range=1.0, reduction="sum").item()
    frames = np.array([max(len(r) - cond_frames, 0) for r in rollouts])
    with np.errstate(invalid="ignore", divide="ignore"):
        return {name: np.where(frames > 0, sums[name] / np.maximum(frames, 1), np.nan) for name in wanted}


def side_by_side_gif(reference: np.ndarray, rollout: np.ndarray, path: Path, fps: int = 5) -> Path:
    """[ground truth | rollout] panels of one video, (T, H, W, 3) each, upscaled to >= 128 px."""
    import imageio.v3 as iio

    scale = max(1, 128 // reference.shape[1])
    gap = np.full((reference.shape[0], reference.shape[1], 2, 3), 128, dtype=np.uint8)
    panel = np.concatenate([reference, gap, rollout], axis=2)  # (T, H, 2W + 2, 3)
    panel = panel.repeat(scale, axis=1).repeat(scale, axis=2)
    iio.imwrite(path, panel, extension=".gif", duration=1000 / fps, loop=0)
    return path
