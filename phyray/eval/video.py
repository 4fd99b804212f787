"""Pixel metrics of rollouts against their references: PSNR and SSIM.

Both are computed per frame over the generated frames (t ≥ c) with pixel values in [0, 1]
(data range 1), then averaged over those frames; SSIM uses torchmetrics' defaults (Gaussian
window 11, σ = 1.5, k1 = 0.01, k2 = 0.03). No network weights are involved.

Both are written here with torchmetrics' 1.9 operations in torchmetrics' order, so their values
are its values bit for bit (tests/test_eval.py checks it): importing torchmetrics costs 1.6 s
per process (it pulls in scipy.signal and matplotlib), and every Ray worker that scores videos
is a fresh process.

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
import torch.nn.functional as F

from phyray.eval.physics import COND_FRAMES

PSNR_CAP_DB = 100.0
PIXEL_METRICS = ("psnr", "ssim")
SSIM_SIGMA, SSIM_K1, SSIM_K2 = 1.5, 0.01, 0.03
# Frames per metric call: ~1 MiB of float32 per tensor keeps the temporaries in cache and
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


def frame_psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) x2 in [0, 1] -> (B,) PSNR in dB per frame (data range 1), uncapped."""
    # torchmetrics' operations as they are (the log of the data range, 0 here, included): the
    # same operations in the same order give the same float32 bits.
    diff = x - y
    sum_squared_error = torch.sum(diff * diff, dim=(1, 2, 3))
    num_obs = torch.tensor(y.size(), device=y.device)[[1, 2, 3]].prod().expand_as(sum_squared_error)
    psnr_base_e = 2 * torch.log(torch.tensor(1.0)) - torch.log(sum_squared_error / num_obs)
    return psnr_base_e * (10 / torch.log(torch.tensor(10.0)))


def _gaussian_window(channels: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(C, 1, K, K) normalised Gaussian window, K = 2 int(3.5 σ + 0.5) + 1 (11 for σ = 1.5)."""
    size = int(3.5 * sigma + 0.5) * 2 + 1
    dist = torch.arange(start=(1 - size) / 2, end=(1 + size) / 2, step=1, dtype=dtype, device=device)
    gauss = torch.exp(-torch.pow(dist / sigma, 2) / 2)
    row = (gauss / gauss.sum()).unsqueeze(dim=0)  # (1, K)
    return torch.matmul(row.t(), row).expand(channels, 1, size, size)


def frame_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) x2 in [0, 1] -> (B,) SSIM per frame (data range 1), the mean of the SSIM map
    over channels and pixels, the borders reflect-padded."""
    channels = x.size(1)
    window = _gaussian_window(channels, SSIM_SIGMA, x.dtype, x.device)
    pad = (window.size(-1) - 1) // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    y = F.pad(y, (pad, pad, pad, pad), mode="reflect")
    stacked = torch.cat((x, y, x * x, y * y, x * y))  # (5B, C, H + 2 pad, W + 2 pad)
    mu_x, mu_y, e_xx, e_yy, e_xy = F.conv2d(stacked, window, groups=channels).split(x.shape[0])  # (B, C, H, W) each
    mu_xx, mu_yy, mu_xy = mu_x.pow(2), mu_y.pow(2), mu_x * mu_y
    var_x = torch.clamp(e_xx - mu_xx, min=0.0)
    var_y = torch.clamp(e_yy - mu_yy, min=0.0)
    cov_xy = e_xy - mu_xy
    c1, c2 = pow(SSIM_K1, 2), pow(SSIM_K2, 2)
    upper = 2 * cov_xy + c2
    lower = (var_x + var_y) + c2
    ssim_map = ((2 * mu_xy + c1) * upper) / ((mu_xx + mu_yy + c1) * lower)
    return ssim_map.reshape(ssim_map.shape[0], -1).mean(-1)


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
                sums["psnr"][i] += frame_psnr(x, y).clamp(max=PSNR_CAP_DB).sum().item()
            if ssim:
                sums["ssim"][i] += frame_ssim(x, y).sum().item()
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
