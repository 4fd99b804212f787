"""v-prediction diffusion with a zero-terminal-SNR schedule, a DDIM sampler and video rollout.

Objective (docs/paper.md §7 "Diffusion objective"): x_t = a_t * x0 + s_t * eps with
a_t = sqrt(alpha_bar_t), s_t = sqrt(1 - alpha_bar_t), and the model predicts
v = a_t * eps - s_t * x0 (Salimans & Ho). The paper's text writes the target with a_t and s_t
swapped; that target would be pure noise at the last step, so phyray uses the standard one.
The betas are rescaled so alpha_bar at the last step is exactly 0 (Lin et al. 2024), and the
sampler starts from that step ("trailing" spacing) as they recommend.

Frame conditioning. c pixel conditioning frames map to latent frames through the causal VAE:
- "touched" latent frames, 1 + ceil((c-1)/tc), contain some conditioning frame. The conditioning
  latent is the VAE encoding of the c frames zero-padded in time (the paper zero-pads them to the
  full length; with a causal encoder only the touched latent frames differ from the full-length
  encoding, so phyray encodes just those), zero elsewhere; the mask is 1 on touched frames.
- "known" latent frames, 1 + floor((c-1)/tc), are built from conditioning frames only, so by
  causality they equal the true video's latent frames. These are held clean: in training the
  noisy input's known frames are replaced by x0 and left out of the loss (their prediction is
  never used), and the sampler replaces them with the clean conditioning latent at every step.
  A touched but not known frame (c = 3, tc = 4: frames 1-4 of latent 1) is generated, guided by
  its partial encoding in the conditioning channels.
With tc = 1, or c = 1 + k*tc (c = 1 for PHYRE), touched = known.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from phyray.models.vae import LatentVAE, frames_to_tensor, tensor_to_frames
from phyray.presets import ROLLOUT_PRECISIONS

# ---------------------------------------------------------------------------------------------
# Noise schedule
# ---------------------------------------------------------------------------------------------

BETA_SCHEDULES = ("scaled_linear", "linear", "cosine")


def make_betas(schedule: str, num_timesteps: int) -> torch.Tensor:
    """Betas (float64, (num_timesteps,)) of a named schedule."""
    if schedule == "scaled_linear":  # Stable Diffusion's; the one Lin et al. rescale
        return torch.linspace(0.00085**0.5, 0.012**0.5, num_timesteps, dtype=torch.float64) ** 2
    if schedule == "linear":  # DDPM's
        return torch.linspace(1e-4, 0.02, num_timesteps, dtype=torch.float64)
    if schedule == "cosine":  # Nichol & Dhariwal
        steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
        alpha_bar = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    raise ValueError(
        f"beta schedule: unknown {schedule!r}; choose from {', '.join(BETA_SCHEDULES)}"
    )


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(alpha_bar): last value 0, first unchanged (Lin et al., Alg. 1)."""
    sqrt_ab = alphas_cumprod.sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    return sqrt_ab**2


class NoiseSchedule:
    """alpha_bar over discrete timesteps 0..num_timesteps-1 (0 = least noise).

    Args:
        num_timesteps: training timesteps.
        beta_schedule: one of BETA_SCHEDULES (default "scaled_linear", the one Lin et al. rescale).
        zero_terminal_snr: rescale so alpha_bar[-1] = 0: the last step is pure noise.
    """

    def __init__(
        self,
        num_timesteps: int = 1000,
        beta_schedule: str = "scaled_linear",
        zero_terminal_snr: bool = True,
    ):
        self.num_timesteps = num_timesteps
        alphas_cumprod = torch.cumprod(1 - make_betas(beta_schedule, num_timesteps), dim=0)
        if zero_terminal_snr:
            alphas_cumprod = rescale_zero_terminal_snr(alphas_cumprod)
        self.alphas_cumprod = alphas_cumprod  # float64, CPU
        # (a, s) per timestep with (1, 0) appended, so t = -1 indexes "no noise" (the sampler's
        # target after its last step); copied once per device, so lookups never sync with a GPU.
        ab = torch.cat([alphas_cumprod, torch.ones(1, dtype=torch.float64)])
        self._table = torch.stack([ab.sqrt(), (1 - ab).sqrt()], dim=1).float()  # (T + 1, 2)
        self._tables: dict[torch.device, torch.Tensor] = {}

    def coefficients(
        self, t: torch.Tensor, like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(a_t, s_t) for timesteps t (B,) in [-1, T), shaped (B, 1, ..., 1) like `like`."""
        if like.device not in self._tables:
            self._tables[like.device] = self._table.to(like.device)
        a, s = self._tables[like.device][t.to(like.device)].unbind(-1)  # each (B,)
        shape = (-1,) + (1,) * (like.ndim - 1)
        return a.reshape(shape), s.reshape(shape)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = self.coefficients(t, x0)
        return a * x0 + s * noise

    def v_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = self.coefficients(t, x0)
        return a * noise - s * x0

    def predict_x0_eps(
        self, x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Invert v-prediction: x0 = a x_t - s v, eps = s x_t + a v."""
        a, s = self.coefficients(t, x_t)
        return a * x_t - s * v, s * x_t + a * v


# ---------------------------------------------------------------------------------------------
# Conditioning
# ---------------------------------------------------------------------------------------------


def condition_latent_frames(num_cond_frames: int, temporal_compression: int) -> tuple[int, int]:
    """(touched, known) latent frames for c pixel conditioning frames (see the module docstring)."""
    if num_cond_frames < 1:
        raise ValueError(f"need at least one conditioning frame, got {num_cond_frames}")
    c, tc = num_cond_frames, temporal_compression
    return 1 + math.ceil((c - 1) / tc), 1 + (c - 1) // tc


@torch.no_grad()
def encode_condition(
    vae: LatentVAE, cond_pixels: torch.Tensor, num_latent_frames: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditioning latent and mask for the DiT from the c conditioning frames.

    Args:
        vae: the (frozen) VAE.
        cond_pixels: (B, 3, c, H, W) in [-1, 1].
        num_latent_frames: T_lat of the videos to generate.

    Returns:
        cond (B, C, T_lat, h, w), zero after the touched frames, and mask (B, 1, T_lat, h, w).
    """
    b, _, c, _, _ = cond_pixels.shape
    tc = vae.temporal_compression
    touched, _ = condition_latent_frames(c, tc)
    # Zero-pad to the end of the last touched group:
    # (B, 3, c, H, W) -> (B, 3, 1 + tc * (touched - 1), H, W)
    x = F.pad(cond_pixels, (0, 0, 0, 0, 0, 1 + tc * (touched - 1) - c))
    z = vae.encode(x)  # (B, C, touched, h, w)
    cond = F.pad(z, (0, 0, 0, 0, 0, num_latent_frames - touched))  # (B, C, T_lat, h, w)
    mask = torch.zeros(b, 1, *cond.shape[2:], device=cond.device, dtype=cond.dtype)
    mask[:, :, :touched] = 1
    return cond, mask


# ---------------------------------------------------------------------------------------------
# Training loss and sampler
# ---------------------------------------------------------------------------------------------


def diffusion_loss(
    dit: torch.nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    cond: torch.Tensor,
    mask: torch.Tensor,
    num_known: int,
    generator: torch.Generator | None = None,
    t: torch.Tensor | None = None,
) -> torch.Tensor:
    """MSE on v over the latent frames to generate.

    Args:
        dit: the DiT.
        schedule: the noise schedule.
        x0: clean latent video (B, C, T, H, W).
        cond, mask: from `encode_condition` (or built the same way from stored latents).
        num_known: leading latent frames held clean and left out of the loss.
        generator: RNG for timesteps and noise, on x0's device.
        t: timesteps (B,) to use instead of uniform random ones.

    Returns:
        Scalar loss.
    """
    b, _, T, _, _ = x0.shape
    if not 0 <= num_known < T:
        raise ValueError(f"num_known must be in [0, {T}), got {num_known}")
    if t is None:
        t = torch.randint(0, schedule.num_timesteps, (b,), generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = schedule.add_noise(x0, noise, t)
    x_t = torch.cat([x0[:, :, :num_known], x_t[:, :, num_known:]], dim=2)  # known frames stay clean
    v = dit(x_t, t, cond, mask)
    target = schedule.v_target(x0, noise, t)
    return F.mse_loss(v[:, :, num_known:].float(), target[:, :, num_known:].float())


def sampling_timesteps(schedule: NoiseSchedule, steps: int) -> list[int]:
    """Trailing spacing (Lin et al. §3.3): starts at the pure-noise last step: 999, 979, ..., 19."""
    if not 1 <= steps <= schedule.num_timesteps:
        raise ValueError(f"steps must be in [1, {schedule.num_timesteps}], got {steps}")
    n = schedule.num_timesteps
    return [round(n - i * n / steps) - 1 for i in range(steps)]


@torch.no_grad()
def sample(
    dit: torch.nn.Module,
    schedule: NoiseSchedule,
    cond: torch.Tensor,
    mask: torch.Tensor,
    num_known: int,
    steps: int = 50,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) sampling of a latent video with known frames held fixed.

    50 steps is the common DDIM default; the paper does not state its sampler.

    Args:
        dit: the DiT.
        schedule: the noise schedule it was trained with.
        cond, mask: (B, C, T, H, W) and (B, 1, T, H, W) from `encode_condition`.
        num_known: leading latent frames replaced by cond's (clean) frames at every step.
        steps: sampling steps.
        noise: starting noise (B, C, T, H, W); drawn from `generator` if None.
        generator: RNG for the starting noise, on cond's device.

    Returns:
        Latent video (B, C, T, H, W).
    """
    if noise is None:
        noise = torch.randn(cond.shape, generator=generator, device=cond.device, dtype=cond.dtype)
    known = cond[:, :, :num_known]
    x = noise
    timesteps = sampling_timesteps(schedule, steps)
    for i, step in enumerate(timesteps):
        x = torch.cat([known, x[:, :, num_known:]], dim=2)
        t = torch.full((x.shape[0],), step, device=x.device, dtype=torch.long)
        x0, eps = schedule.predict_x0_eps(x, dit(x, t, cond, mask).float(), t)
        prev = torch.full_like(t, timesteps[i + 1] if i + 1 < steps else -1)
        a_prev, s_prev = schedule.coefficients(prev, x)
        x = a_prev * x0 + s_prev * eps
    return torch.cat([known, x[:, :, num_known:]], dim=2)


# ---------------------------------------------------------------------------------------------
# Rollout
# ---------------------------------------------------------------------------------------------

def check_precision(precision: str) -> str:
    if precision not in ROLLOUT_PRECISIONS:
        raise ValueError(f"rollout precision {precision!r}: expected one of {', '.join(ROLLOUT_PRECISIONS)}")
    return precision


def network_precision(precision: str, device: torch.device):
    """The autocast context the networks of a rollout run in (a no-op for "fp32")."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=check_precision(precision) == "bf16")


@torch.no_grad()
def rollout(
    vae: LatentVAE,
    dit: torch.nn.Module,
    schedule: NoiseSchedule,
    cond_frames: np.ndarray | torch.Tensor,
    num_frames: int = 32,
    steps: int = 50,
    seed: int | Sequence[int] = 0,
    keep_cond_frames: bool = True,
    precision: str = "fp32",
) -> np.ndarray:
    """Generate videos continuing the conditioning frames: encode -> sample -> decode.

    Args:
        vae: the VAE the DiT was trained on, on the DiT's device.
        dit: the DiT.
        schedule: its noise schedule.
        cond_frames: uint8 (B, c, H, W, 3).
        num_frames: frames of the output video (T).
        steps: sampling steps.
        seed: seed of the starting noise, drawn on the CPU: the same noise on every device. A
            sequence gives each video its own seed, so a video's noise does not depend on which
            batch it is rolled out in.
        keep_cond_frames: paste the given frames over the output's first c frames (default), so
            evaluation and side-by-side panels see the true conditioning. If False they are the
            decoder's output: the VAE reconstruction of the conditioning frames if c = 1 + k*tc.
        precision: what the VAE and the DiT compute in, one of phyray.presets.ROLLOUT_PRECISIONS.

    Returns:
        uint8 (B, T, H, W, 3).
    """
    device = next(dit.parameters()).device
    cond_pixels = frames_to_tensor(cond_frames, device=device)  # (B, 3, c, H, W)
    c = cond_pixels.shape[2]
    if c > num_frames:
        raise ValueError(f"{c} conditioning frames exceed num_frames={num_frames}")
    with network_precision(precision, device):
        cond, mask = encode_condition(vae, cond_pixels, vae.latent_frames(num_frames))
    cond, mask = cond.float(), mask.float()  # the sampler's state stays fp32 (no copy in fp32)
    _, known = condition_latent_frames(c, vae.temporal_compression)
    if isinstance(seed, int):
        noise = torch.randn(cond.shape, generator=torch.Generator().manual_seed(seed))
    else:
        if len(seed) != cond.shape[0]:
            raise ValueError(f"{len(seed)} seeds for {cond.shape[0]} videos")
        noise = torch.cat(
            [torch.randn(1, *cond.shape[1:], generator=torch.Generator().manual_seed(s)) for s in seed]
        )
    noise = noise.to(device, cond.dtype)
    with network_precision(precision, device):
        z = sample(dit, schedule, cond, mask, known, steps=steps, noise=noise)
        decoded = vae.decode(z, num_frames=num_frames)
    frames = tensor_to_frames(decoded)  # (B, T, H, W, 3)
    if keep_cond_frames:
        frames[:, :c] = np.asarray(torch.as_tensor(cond_frames).cpu())
    return frames
