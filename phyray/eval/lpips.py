"""LPIPS (AlexNet, v0.1) of rollouts against their references, written in phyray.

torchvision from the package registry is a CUDA build that does not import beside the CPU torch
here, so neither torchmetrics' LPIPS nor the `lpips` package runs; this module is the same
network (the math of lpips 0.1.4, `lpips/lpips.py` and `lpips/pretrained_networks.py`) without
torchvision:

- inputs in [-1, 1] go through the fixed ScalingLayer, (x − shift) / scale;
- torchvision's AlexNet `features` trunk, tapped after relu1..relu5 (indices 1, 4, 7, 9, 11;
  its final MaxPool, index 12, is not used by LPIPS);
- each tap is normalised to unit length over channels, x / (sqrt(Σ_c x²) + 1e-10);
- squared difference of the two images' taps, a 1×1 linear head (no bias; the original's
  dropout is off at eval), mean over space, summed over the five layers.

Checked once against lpips 0.1.4's own code run with a stand-in torchvision (same random backbone,
the real heads): bit-identical distances at 32², 64², 128² and 256².

Weights, both local files read with `torch.load(weights_only=True)`, never downloaded at run time:

- the linear heads ship in the `lpips` wheel (`lpips/weights/v0.1/alex.pth`, keys
  `lin{k}.model.1.weight`) and are expected at `DEFAULT_HEADS` (`.weights/` in the repo root);
- the AlexNet backbone is an ImageNet torchvision state dict (`features.{0,3,6,8,10}.{weight,bias}`,
  e.g. torchvision's `alexnet-owt-7be5be79.pth`; `classifier.*` keys are ignored), given by the
  setting `eval.lpips_backbone`. Without one, `load_lpips` returns None and callers print
  `LPIPS_SKIPPED`: no score is ever a silent zero.

Resolution: LPIPS runs on frames as stored (the report brings a reference to its rollout's
resolution first, as for PSNR/SSIM), with no resize to AlexNet's 224². The trunk's stride 4 and
two 3/2 pools leave small maps: relu1..relu5 are 7, 3, 1, 1, 1 px wide at 32²; 15, 7, 3, 3, 3 at
64²; 63, 31, 15, 15, 15 at 256². 31 px is the smallest side whose relu3..relu5 maps are not empty,
so frames whose shorter side is below `min_side` (default 32) are first upsampled bilinearly to
it; at 32² the three deepest layers compare one global feature vector per frame. Scores are
therefore comparable only between videos of one resolution.

Cost (one CPU thread, CPU time, random weights): a 16-frame video with 15 scored frames takes
about 0.05 s at 64² and 0.9-1.0 s at 256² (0.09 s and 1.3-1.5 s with 31 scored frames), the
trunk run over rollout and reference frames together; wall time on a busy machine is higher.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from phyray.eval.physics import COND_FRAMES
from phyray.eval.video import frames_to_tensor

REPO_ROOT = Path(__file__).resolve().parents[2]
# `scripts/fetch_weights.sh` puts the weights in .weights/ at the repo root, or in
# $PHYRAY_WEIGHTS_DIR (a container image, whose code may be replaced by a Ray job's working dir).
WEIGHTS_DIR = Path(os.environ.get("PHYRAY_WEIGHTS_DIR") or REPO_ROOT / ".weights")
DEFAULT_HEADS = WEIGHTS_DIR / "lpips-v0.1-alex.pth"
HEADS_SOURCE = "lpips/weights/v0.1/alex.pth of the lpips 0.1.4 wheel"
BACKBONE_SETTING = "eval.lpips_backbone"
LPIPS_SKIPPED = (
    f"lpips: skipped, no AlexNet backbone; set {BACKBONE_SETTING} to a local torchvision AlexNet "
    "state dict (features.* keys, e.g. alexnet-owt-7be5be79.pth)"
)

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
TAPS = (1, 4, 7, 9, 11)  # indices in `features` of relu1..relu5
TAP_CHANNELS = (64, 192, 384, 256, 256)
NORM_EPS = 1e-10
SMALLEST_SIDE = 31  # below this relu3..relu5 are empty
MIN_SIDE = 32
# Frames of one video per forward pass; the trunk sees twice as many (rollout and reference).
BATCH_FRAMES = 16


class LpipsWeightsNotFound(FileNotFoundError):
    """A weights file that was asked for explicitly does not exist."""


def alexnet_features() -> nn.Sequential:
    """torchvision's AlexNet `features` up to relu5, same indices so its state dict keys match."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
    )


class LPIPS(nn.Module):
    """AlexNet LPIPS v0.1: `model(x, y)` with x, y (B, 3, H, W) in [-1, 1] -> (B,) distances.

    Weights start random (torch's default init); fill them with `load_backbone` and `load_heads`,
    or build a ready one with `load_lpips`. Frozen and in eval mode from construction.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.features = alexnet_features()
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in TAP_CHANNELS)
        self.requires_grad_(False)
        self.eval()

    def taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) in [-1, 1] -> relu1..relu5, each (B, C_k, h_k, w_k)."""
        h = (images - self.shift) / self.scale
        taps = []
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in TAPS:
                taps.append(h)
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        distance = x.new_zeros(b)
        for head, tap in zip(self.heads, self.taps(torch.cat([x, y]))):
            unit = tap / (tap.square().sum(dim=1, keepdim=True).sqrt() + NORM_EPS)  # (2B, C, h, w)
            squared = (unit[:b] - unit[b:]).square()  # (B, C, h, w)
            distance += head(squared).mean(dim=(1, 2, 3))  # (B, 1, h, w) -> (B,)
        return distance


def _read_state(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise LpipsWeightsNotFound(f"{what}: {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{what}: {path} holds a {type(state).__name__}, not a state dict")
    return state


def load_backbone(model: LPIPS, path: str | Path) -> LPIPS:
    """Fill `model.features` from a torchvision AlexNet state dict file (`features.*` keys)."""
    path = Path(path)
    state = _read_state(path, BACKBONE_SETTING)
    trunk = {
        key.removeprefix("features."): value
        for key, value in state.items()
        if key.startswith("features.")
    }
    missing = sorted(set(model.features.state_dict()) - set(trunk))
    if missing:
        raise ValueError(
            f"{BACKBONE_SETTING}: {path} is not a torchvision AlexNet state dict, no features.{missing[0]}"
        )
    model.features.load_state_dict(trunk)
    return model


def load_heads(model: LPIPS, path: str | Path = DEFAULT_HEADS) -> LPIPS:
    """Fill `model.heads` from HEADS_SOURCE (keys `lin{k}.model.1.weight`)."""
    path = Path(path)
    state = _read_state(path, f"lpips heads ({HEADS_SOURCE})")
    sources = {f"{k}.weight": f"lin{k}.model.1.weight" for k in range(len(model.heads))}
    absent = [key for key in sources.values() if key not in state]
    if absent:
        raise ValueError(f"lpips heads: {path} has no {absent[0]}; expected {HEADS_SOURCE}")
    model.heads.load_state_dict({key: state[source] for key, source in sources.items()})
    return model


def load_lpips(backbone: str | Path | None, heads: str | Path = DEFAULT_HEADS) -> LPIPS | None:
    """The LPIPS network with its weights, or None where no backbone is given (print LPIPS_SKIPPED).

    A backbone or heads path that is given but missing raises LpipsWeightsNotFound naming it.
    """
    if not backbone:
        return None
    return load_heads(load_backbone(LPIPS(), backbone), heads)


def frames_to_lpips_input(
    frames: np.ndarray, device: str | torch.device = "cpu", min_side: int = MIN_SIDE
) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, H', W') float32 in [-1, 1] on `device`.

    H', W' = H, W unless the shorter side is below `min_side`; then both are scaled bilinearly
    so that it equals `min_side`.
    """
    if min_side < SMALLEST_SIDE:
        raise ValueError(
            f"lpips: min_side {min_side} < {SMALLEST_SIDE}, AlexNet's deepest maps would be empty"
        )
    images = frames_to_tensor(frames, device).mul_(2).sub_(1)  # (T, 3, H, W)
    h, w = images.shape[-2:]
    if min(h, w) < min_side:
        factor = min_side / min(h, w)
        size = (round(h * factor), round(w * factor))
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    return images


@torch.no_grad()
def lpips_videos(
    rollouts: np.ndarray | Sequence[np.ndarray],
    references: np.ndarray | Sequence[np.ndarray],
    model: LPIPS,
    cond_frames: int = COND_FRAMES,
    device: str | torch.device = "cpu",
    batch_frames: int = BATCH_FRAMES,
    min_side: int = MIN_SIDE,
) -> np.ndarray:
    """Frame-averaged LPIPS over the generated frames of each video.

    Args:
        rollouts, references: N videos each, (T, H, W, 3) uint8 of equal shape per pair.
        model: from `load_lpips`; moved to `device` in place.
        cond_frames: c; frames t < c are given to the model and not scored.
        device: torch device for the computation.
        batch_frames: frames of one video per forward pass.
        min_side: frames with a shorter side are upsampled to it (see the module docstring).

    Returns:
        (N,) float64; NaN for a video with no frame after c.
    """
    model.to(device)
    sums = np.zeros(len(rollouts))
    for i, (rollout, reference) in enumerate(zip(rollouts, references)):
        if rollout.shape != reference.shape:
            raise ValueError(
                f"lpips_videos: rollout {rollout.shape} and reference {reference.shape} differ"
            )
        for start in range(cond_frames, len(rollout), batch_frames):
            x = frames_to_lpips_input(rollout[start : start + batch_frames], device, min_side)
            y = frames_to_lpips_input(reference[start : start + batch_frames], device, min_side)
            sums[i] += model(x, y).sum().item()
    frames = np.array([max(len(r) - cond_frames, 0) for r in rollouts])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(frames > 0, sums / np.maximum(frames, 1), np.nan)
