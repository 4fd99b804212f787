"""Model presets: the DiT size table and the VAE table, as plain data (no torch).

Config validation and planning read these without importing torch; `phyray.models` builds the
modules from them (DiT's one preset dict, as in its models.py).
"""

from __future__ import annotations

import math

DEFAULT_PATCH = (1, 2, 2)

DIT_PRESETS: dict[str, dict] = {
    # Paper Table 1 (MLP ratio 4): 22.5M / 89.5M / 310M / 456M parameters.
    "DiT-S": dict(depth=12, hidden_size=384, num_heads=6),
    "DiT-B": dict(depth=12, hidden_size=768, num_heads=12),
    "DiT-L": dict(depth=24, hidden_size=1024, num_heads=16),
    "DiT-XL": dict(depth=28, hidden_size=1152, num_heads=16),
    # CPU sizes for smoke runs, tests and the mini study: T(iny) ~0.25M, W(ide: DiT-T at 1.5x the
    # width, as DiT-B is DiT-S at 2x) ~0.54M, M(ini) ~1.3M parameters.
    "DiT-T": dict(depth=4, hidden_size=64, num_heads=4),
    "DiT-W": dict(depth=4, hidden_size=96, num_heads=4),
    "DiT-M": dict(depth=6, hidden_size=128, num_heads=4),
}


# "vae-f{spatial}t{temporal}c{latent channels}". The paper does not state its VAE's compression;
# 8x spatial / 4 channels is its SD1.5 base, 4x temporal the common video choice (docs/paper.md §5).
VAE_PRESETS: dict[str, dict] = {
    # Default: 128x128x32 -> 4 x 9 x 16 x 16 latents.
    "vae-f8t4c4": dict(
        channels=(64, 128, 256, 256),
        num_res_blocks=2,
        spatial_compression=8,
        temporal_compression=4,
        latent_channels=4,
    ),
    # Lossless and parameter-free (SpaceToDepthAE): 32x32x32 -> 96 x 17 x 8 x 8. CPU studies.
    "s2d-f4t2": dict(kind="space_to_depth", spatial_compression=4, temporal_compression=2, latent_channels=96),
    # CPU smoke study (configs/studies/smoke.yaml): frame-local (temporal_kernel 1, see
    # VideoVAE), ~0.2M parameters, trainable on 5-frame clips; 32x32x16 -> 4 x 9 x 8 x 8 latents.
    "vae-f4t2c4-local": dict(
        channels=(16, 32, 32),
        num_res_blocks=1,
        spatial_compression=4,
        temporal_compression=2,
        latent_channels=4,
        temporal_kernel=1,
    ),
    # CPU mini study (configs/studies/mini.yaml): causal, half the full-resolution width of
    # vae-f4t2c4-tiny, ~0.5M parameters, as cheap per frame on CPU as the frame-local preset and
    # trained on clips (see VideoVAE); 32x32x16 -> 4 x 9 x 8 x 8 latents.
    "vae-f4t2c4-slim": dict(
        channels=(8, 16, 32),
        num_res_blocks=1,
        spatial_compression=4,
        temporal_compression=2,
        latent_channels=4,
    ),
    # vae-f4t2c4-slim with 8 latent channels: 32x32x16 -> 8 x 9 x 8 x 8 latents. Twice the
    # latent numbers per 4x4 patch for where the ball is, at the same token count for the DiT.
    "vae-f4t2c8-slim": dict(
        channels=(8, 16, 32),
        num_res_blocks=1,
        spatial_compression=4,
        temporal_compression=2,
        latent_channels=8,
    ),
    # CPU smoke runs and tests: ~0.6M parameters, 32x32x32 -> 4 x 17 x 8 x 8 latents.
    "vae-f4t2c4-tiny": dict(
        channels=(16, 32, 32),
        num_res_blocks=1,
        spatial_compression=4,
        temporal_compression=2,
        latent_channels=4,
    ),
}
DEFAULT_VAE = "vae-f8t4c4"

# What the networks of a rollout compute in. "fp32" is what every number phyray has reported was
# measured with. "bf16" runs the VAE and the DiT under bf16 autocast on the rollout's device while
# the starting noise, the conditioning latent and the DDIM state stay fp32: the GPU's training
# precision, and 1.5-2.3x faster than fp32 on a CPU with bf16 matrix units (docs/performance.md,
# "2026-12-07 (3): rollouts in bf16"). The pixels it samples differ, so a rollout's precision is
# part of its identity (phyray.eval.rollouts.rollouts_identity). The paper states none.
ROLLOUT_PRECISIONS = ("fp32", "bf16")


def is_trainable(name: str) -> bool:
    """Whether a VAE preset has weights to train (SpaceToDepthAE presets have none)."""
    return VAE_PRESETS[name].get("kind", "conv") == "conv"


def latent_frames(num_frames: int, temporal_compression: int) -> int:
    """Latent frames for `num_frames` pixel frames: frame 0 alone, then groups of tc."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return 1 + math.ceil((num_frames - 1) / temporal_compression)
