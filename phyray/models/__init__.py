"""Video models: causal video VAE, frame-conditioned DiT, v-prediction diffusion and rollout."""

from phyray.models.diffusion import (
    NoiseSchedule,
    condition_latent_frames,
    diffusion_loss,
    encode_condition,
    rollout,
    sample,
)
from phyray.models.dit import DEFAULT_PATCH, DIT_PRESETS, DiT, build_dit, count_params
from phyray.models.info import estimate_mfu, model_info, peak_flops
from phyray.models.vae import (
    DEFAULT_VAE,
    VAE_PRESETS,
    DiffusersVAE,
    LatentVAE,
    SpaceToDepthAE,
    VideoVAE,
    build_vae,
    frames_to_tensor,
    latent_frames,
    load_diffusers_vae,
    tensor_to_frames,
    vae_loss,
)

__all__ = [
    "DEFAULT_PATCH",
    "DEFAULT_VAE",
    "DIT_PRESETS",
    "VAE_PRESETS",
    "DiT",
    "DiffusersVAE",
    "LatentVAE",
    "NoiseSchedule",
    "SpaceToDepthAE",
    "VideoVAE",
    "build_dit",
    "build_vae",
    "condition_latent_frames",
    "count_params",
    "diffusion_loss",
    "encode_condition",
    "estimate_mfu",
    "frames_to_tensor",
    "latent_frames",
    "load_diffusers_vae",
    "model_info",
    "peak_flops",
    "rollout",
    "sample",
    "tensor_to_frames",
    "vae_loss",
]
