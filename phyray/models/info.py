"""Model sizes, latent shapes, FLOPs and MFU: the numbers behind `phyray model info`.

FLOPs follow nanoGPT's `estimate_mfu` (PaLM appendix B) with video tokens in place of text:
forward = 2 * (per-token parameters) * tokens + 4 * layers * tokens^2 * d (QK^T and AV), and
training = 3 * forward (the backward pass costs about twice the forward).
"""

from __future__ import annotations

import math

import torch

from phyray.models.dit import DEFAULT_PATCH, DIT_PRESETS, build_dit, count_params
from phyray.models.vae import DEFAULT_VAE, VAE_PRESETS, latent_frames

# Dense bf16 tensor-core peaks (no sparsity) from NVIDIA data sheets, matched in order against
# torch.cuda.get_device_name(); longer names first ("A100" before "A10", "L40S" before "L4").
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM
    ("H200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A10G", 70e12),  # AWS' figure for its A10 variant
    ("A10", 125e12),
    ("L40S", 362e12),
    ("L4", 121e12),
)


def peak_flops(device_name: str | None) -> float | None:
    """bf16 dense peak FLOP/s of a GPU named like "NVIDIA A100-SXM4-80GB"; None if unknown."""
    if not device_name:
        return None
    name = device_name.upper()
    return next((peak for key, peak in PEAK_BF16_FLOPS if key.upper() in name), None)


def estimate_mfu(flops_per_video: float, videos_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved / peak FLOP/s; None without a known peak."""
    return flops_per_video * videos_per_s / peak if peak else None


def model_info(
    model: str,
    resolution: int,
    frames: int,
    vae: str = DEFAULT_VAE,
    patch: tuple[int, int, int] | None = None,
) -> dict:
    """Size, latent shape, tokens and training FLOPs of a DiT preset on square videos.

    Args:
        model: a DIT_PRESETS name, e.g. "DiT-B".
        resolution: frame side in pixels.
        frames: frames per video.
        vae: a VAE_PRESETS name (sets compression and latent channels).
        patch: spacetime patch (pt, ph, pw); default DEFAULT_PATCH.

    Returns:
        A flat dict of plain numbers and lists (JSON-ready).
    """
    if model not in DIT_PRESETS:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(DIT_PRESETS)}")
    if vae not in VAE_PRESETS:
        raise ValueError(f"unknown VAE {vae!r}; choose from {', '.join(VAE_PRESETS)}")
    spec = VAE_PRESETS[vae]
    s, tc, c = spec["spatial_compression"], spec["temporal_compression"], spec["latent_channels"]
    patch = tuple(patch or DEFAULT_PATCH)
    if resolution % s:
        raise ValueError(
            f"resolution {resolution} is not divisible by the VAE's spatial compression {s}"
        )
    latent = (c, latent_frames(frames, tc), resolution // s, resolution // s)
    if any(n % p for n, p in zip(latent[1:], patch, strict=True)):
        raise ValueError(f"latent (T, H, W) = {latent[1:]} is not divisible by the patch {patch}")
    tokens = math.prod(latent[1:]) // math.prod(patch)
    with torch.device("meta"):  # parameter shapes only: no memory, no init cost
        dit = build_dit(model, latent_channels=c, patch=patch)
    params = count_params(dit)
    # The timestep MLPs run once per video, everything else once per token.
    per_token = params - count_params(dit.t_embedder) - count_params(dit.t_block)
    forward = 2 * per_token * tokens + 4 * dit.depth * tokens**2 * dit.hidden_size
    return {
        "model": model,
        "layers": dit.depth,
        "hidden_size": dit.hidden_size,
        "heads": dit.num_heads,
        "params": params,
        "vae": vae,
        "resolution": resolution,
        "frames": frames,
        "latent_shape": list(latent),
        "patch": list(patch),
        "tokens_per_video": tokens,
        "forward_flops_per_video": forward,
        "train_flops_per_video": 3 * forward,
    }
