"""Video VAE: a causal 3-D convolutional autoencoder with a KL bottleneck, plus pretrained loaders.

The paper's (2+1)D-VAE (docs/paper.md §5 "VAE") is not released and its compression is not
stated, so phyray trains its own from scratch (`VideoVAE`, presets at the bottom) and can wrap a
pretrained diffusers VAE from a local directory (`load_diffusers_vae`) behind the same interface.

Conventions shared by every VAE here:
- pixels are float in [-1, 1], shape (B, 3, T, H, W); `frames_to_tensor` / `tensor_to_frames`
  convert from / to uint8 (B, T, H, W, 3);
- time is causal (MAGVIT-v2): frame 0 is encoded on its own and latent frame j >= 1 summarises
  pixel frames (j-1)*tc+1 .. j*tc, where tc is the temporal compression. T frames therefore give
  1 + ceil((T-1)/tc) latent frames; a last partial group is padded by repeating the last frame.
  With tc = 4, 32 frames -> 9 latent frames (frame 0, then 8 groups of 4; the last group holds
  frames 29-31 and one repeat of frame 31), and `decode(z, num_frames=32)` drops the repeat;
- `encode` returns latents already scaled for diffusion ((z - shift) * scale), `decode` undoes it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from phyray.presets import DEFAULT_VAE, VAE_PRESETS, latent_frames

# ---------------------------------------------------------------------------------------------
# Pixel conversion and frame bookkeeping
# ---------------------------------------------------------------------------------------------


def frames_to_tensor(
    frames: np.ndarray | torch.Tensor, device: torch.device | str | None = None
) -> torch.Tensor:
    """uint8 frames to model input.

    Args:
        frames: uint8 array or tensor, shape (B, T, H, W, 3).
        device: where the result lives (default: where `frames` is, CPU for numpy).

    Returns:
        float32 tensor in [-1, 1], shape (B, 3, T, H, W).
    """
    x = torch.as_tensor(frames, device=device)
    if x.dtype != torch.uint8 or x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 frames of shape (B, T, H, W, 3), got {x.dtype} {tuple(x.shape)}"
        )
    # (B, T, H, W, 3) -> (B, 3, T, H, W)
    return x.permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)


def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
    """Model output to uint8 frames (the inverse of `frames_to_tensor`, rounding to nearest).

    Args:
        x: float tensor, shape (B, 3, T, H, W), nominally in [-1, 1] (clamped).

    Returns:
        uint8 numpy array, shape (B, T, H, W, 3).
    """
    x = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    # (B, 3, T, H, W) -> (B, T, H, W, 3)
    return x.permute(0, 2, 3, 4, 1).cpu().numpy()


class LatentVAE(nn.Module):
    """The interface the diffusion code relies on; subclasses implement `_encode` / `_decode`.

    Args:
        spatial_compression: pixels per latent pixel along H and W.
        temporal_compression: pixel frames per latent frame after frame 0.
        latent_channels: channels of the latent.
        scaling_factor, shift_factor: latents for diffusion are (z - shift) * scale, so that they
            have roughly unit variance. A freshly trained VideoVAE starts at (1, 0); set them from
            the latent statistics of the training data (they are buffers, saved with the weights).
    """

    def __init__(
        self,
        spatial_compression: int,
        temporal_compression: int,
        latent_channels: int,
        scaling_factor: float = 1.0,
        shift_factor: float = 0.0,
    ):
        super().__init__()
        self.spatial_compression = spatial_compression
        self.temporal_compression = temporal_compression
        self.latent_channels = latent_channels
        self.register_buffer("scaling_factor", torch.tensor(float(scaling_factor)))
        self.register_buffer("shift_factor", torch.tensor(float(shift_factor)))

    def latent_frames(self, num_frames: int) -> int:
        return latent_frames(num_frames, self.temporal_compression)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T_lat, H_lat, W_lat) of the latent of a (3, num_frames, height, width) video."""
        s = self.spatial_compression
        if height % s or width % s:
            raise ValueError(
                f"frame size {height}x{width} is not divisible by the spatial compression {s}"
            )
        return self.latent_channels, self.latent_frames(num_frames), height // s, width // s

    def pad_frames(self, x: torch.Tensor) -> torch.Tensor:
        """Repeat the last frame up to 1 + tc * (T_lat - 1) frames.

        (B, C, T, H, W) -> (B, C, T', H, W)
        """
        extra = 1 + self.temporal_compression * (self.latent_frames(x.shape[2]) - 1) - x.shape[2]
        if extra == 0:
            return x
        return torch.cat([x, x[:, :, -1:].expand(-1, -1, extra, -1, -1)], dim=2)

    def encode(
        self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Pixels to scaled latents.

        Args:
            x: (B, 3, T, H, W) in [-1, 1].
            sample: draw from the posterior instead of taking its mean (the default, deterministic).
            generator: RNG for `sample=True`, on x's device.

        Returns:
            (B, C, T_lat, H / s, W / s) latents, scaled for diffusion.
        """
        z = self._encode(self.pad_frames(x), sample, generator)
        return (z - self.shift_factor) * self.scaling_factor

    def decode(self, z: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Scaled latents to pixels.

        Args:
            z: (B, C, T_lat, h, w) latents as returned by `encode`.
            num_frames: keep the first `num_frames` frames, i.e. the T given to `encode` (T_lat
                latent frames stand for any T in (1 + tc*(T_lat-2), 1 + tc*(T_lat-1)]). Default:
                all 1 + tc * (T_lat - 1) frames.

        Returns:
            (B, 3, T, H, W) pixels, nominally in [-1, 1].
        """
        full = 1 + self.temporal_compression * (z.shape[2] - 1)
        if num_frames is not None and not full - self.temporal_compression < num_frames <= full:
            raise ValueError(f"{z.shape[2]} latent frames cannot decode to {num_frames} frames")
        x = self._decode(z / self.scaling_factor + self.shift_factor)
        return x[:, :, : num_frames or full]

    def _encode(
        self, x: torch.Tensor, sample: bool, generator: torch.Generator | None
    ) -> torch.Tensor:
        raise NotImplementedError

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# Causal 3-D building blocks
# ---------------------------------------------------------------------------------------------


class CausalConv3d(nn.Module):
    """3-D conv whose output frame t sees input frames <= t only (MAGVIT-v2 causal padding).

    Time is padded with kt - 1 copies of frame 0 at the start and nothing at the end; repeating
    frame 0 (rather than zeros) makes a single image look like a static video to every layer.
    With kt = 3 and temporal stride 2, 1 + 2m frames give 1 + m: frame 0 alone, then pairs.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int = 3,
        stride: tuple[int, int, int] = (1, 1, 1),
        temporal_kernel: int | None = None,
    ):
        super().__init__()
        kt = kernel if temporal_kernel is None else temporal_kernel
        self.time_pad = kt - 1
        self.conv = nn.Conv3d(
            in_channels, out_channels, (kt, kernel, kernel), stride=stride, padding=(0, kernel // 2, kernel // 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_pad:
            # (B, C, T, H, W) -> (B, C, kt - 1 + T, H, W)
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1), x], dim=2)
        return self.conv(x)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm with per-frame statistics: pooling over time would leak future into past."""

    def __init__(self, channels: int):
        super().__init__(math.gcd(32, channels), channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = super().forward(x.transpose(1, 2).reshape(b * t, c, h, w))  # (B*T, C, H, W)
        return y.reshape(b, t, c, h, w).transpose(1, 2)  # (B, C, T, H, W)


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kt: int = 3):
        super().__init__()
        self.norm1 = FrameGroupNorm(in_channels)
        self.conv1 = CausalConv3d(in_channels, out_channels, temporal_kernel=kt)
        self.norm2 = FrameGroupNorm(out_channels)
        self.conv2 = CausalConv3d(out_channels, out_channels, temporal_kernel=kt)
        self.skip = (
            nn.Conv3d(in_channels, out_channels, 1)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Strided causal conv: halves H, W (spatial) and/or maps 1 + 2m frames to 1 + m (temporal)."""

    def __init__(self, channels: int, spatial: bool, temporal: bool, kt: int = 3):
        super().__init__()
        self.conv = CausalConv3d(
            channels,
            channels,
            stride=(2 if temporal else 1, 2 if spatial else 1, 2 if spatial else 1),
            # A frame-local VAE (kt = 1) still merges each pair of frames here: (f0, f0), (f1, f2), ...
            temporal_kernel=2 if temporal and kt == 1 else kt,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest x2 in space; in time a causal conv to 2C channels moved into time (1+m -> 1+2m)."""

    def __init__(self, channels: int, spatial: bool, temporal: bool, kt: int = 3):
        super().__init__()
        self.spatial = spatial
        self.time_conv = CausalConv3d(channels, 2 * channels, temporal_kernel=kt) if temporal else None
        self.conv = CausalConv3d(channels, channels, temporal_kernel=kt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial:
            x = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")  # (B, C, T, 2H, 2W)
        if self.time_conv is not None:
            b, c, t, h, w = x.shape
            x = self.time_conv(x).reshape(b, 2, c, t, h, w)  # (B, 2, C, T, H, W)
            x = x.permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)  # (B, C, 2T, H, W)
            # Latent frame 0 stands for pixel frame 0 alone: keep one of its two frames.
            x = x[:, :, 1:]  # (B, C, 2T - 1, H, W)
        return self.conv(x)


def _stage_plan(
    num_stages: int, spatial_compression: int, temporal_compression: int
) -> list[tuple[bool, bool]]:
    """(spatial, temporal) downsampling per encoder stage. As in the paper's inflated VAE, time is
    compressed in the last stages (the decoder mirrors it: time is expanded in its first stages)."""
    s_levels, t_levels = int(math.log2(spatial_compression)), int(math.log2(temporal_compression))
    if 2**s_levels != spatial_compression or 2**t_levels != temporal_compression:
        raise ValueError("spatial and temporal compression must be powers of 2")
    if max(s_levels, t_levels) > num_stages:
        raise ValueError(
            f"{num_stages} downsampling stages cannot compress "
            f"{spatial_compression}x / {temporal_compression}x"
        )
    return [(i < s_levels, i >= num_stages - t_levels) for i in range(num_stages)]


# ---------------------------------------------------------------------------------------------
# VideoVAE
# ---------------------------------------------------------------------------------------------


class Encoder(nn.Module):
    def __init__(
        self,
        channels: tuple[int, ...],
        num_res_blocks: int,
        plan: list[tuple[bool, bool]],
        latent_channels: int,
        kt: int = 3,
    ):
        super().__init__()
        self.conv_in = CausalConv3d(3, channels[0], temporal_kernel=kt)
        layers: list[nn.Module] = []
        prev = channels[0]
        for i, ch in enumerate(channels):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(prev, ch, kt))
                prev = ch
            if i < len(plan):
                layers.append(Downsample(ch, *plan[i], kt=kt))
        layers += [ResBlock(prev, prev, kt), ResBlock(prev, prev, kt)]
        self.layers = nn.Sequential(*layers)
        self.norm_out = FrameGroupNorm(prev)
        self.conv_out = CausalConv3d(prev, 2 * latent_channels, temporal_kernel=kt)  # mean and log-variance

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layers(self.conv_in(x))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(
        self,
        channels: tuple[int, ...],
        num_res_blocks: int,
        plan: list[tuple[bool, bool]],
        latent_channels: int,
        kt: int = 3,
    ):
        super().__init__()
        prev = channels[-1]
        self.conv_in = CausalConv3d(latent_channels, prev, temporal_kernel=kt)
        layers: list[nn.Module] = [ResBlock(prev, prev, kt), ResBlock(prev, prev, kt)]
        for j, ch in enumerate(reversed(channels)):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(prev, ch, kt))
                prev = ch
            if j < len(plan):
                layers.append(
                    Upsample(ch, *plan[len(plan) - 1 - j], kt=kt)
                )  # undoes encoder stage len-1-j
        self.layers = nn.Sequential(*layers)
        self.norm_out = FrameGroupNorm(prev)
        self.conv_out = CausalConv3d(prev, 3, temporal_kernel=kt)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.layers(self.conv_in(z))
        return self.conv_out(F.silu(self.norm_out(h)))


class VideoVAE(LatentVAE):
    """Causal 3-D conv VAE (SD-VAE layout with every conv made causal 3-D, no attention).

    Args:
        channels: width of each resolution stage; len(channels) - 1 downsampling stages.
        num_res_blocks: ResBlocks per stage.
        spatial_compression, temporal_compression: powers of 2, at most 2**(len(channels) - 1).
        latent_channels: channels of the latent.
        temporal_kernel: frames every conv sees (3). 1 makes a frame-local autoencoder: its
            convs are per frame except the temporal down/upsampling, which merge and split each
            group of tc frames, so a latent frame depends on its own group only and short clips
            (1 + k * tc frames) teach it exactly what whole videos would. A causal 3-D VAE
            trained on clips learns an approximation: each clip starts at a padded boundary,
            as only frame 0 of a whole video does, and its receptive field spans tens of
            frames. Clips of about half the video length still transfer: the mini study's
            vae-f4t2c4-slim, trained on 9-frame clips of 16-frame videos, reconstructs whole ID
            videos at vel_err_mean_velocity 0.075 (PSNR 31).
    """

    def __init__(
        self,
        channels: tuple[int, ...] = (64, 128, 256, 256),
        num_res_blocks: int = 2,
        spatial_compression: int = 8,
        temporal_compression: int = 4,
        latent_channels: int = 4,
        temporal_kernel: int = 3,
    ):
        super().__init__(spatial_compression, temporal_compression, latent_channels)
        plan = _stage_plan(len(channels) - 1, spatial_compression, temporal_compression)
        self.encoder = Encoder(tuple(channels), num_res_blocks, plan, latent_channels, temporal_kernel)
        self.decoder = Decoder(tuple(channels), num_res_blocks, plan, latent_channels, temporal_kernel)

    def init_logvar(self, value: float) -> None:
        """Start the posterior's log-variance at about `value` for any input: the bias of the
        log-variance half of the encoder's output conv (its weights stay as drawn, so the start
        is `value` plus a small input-dependent term)."""
        with torch.no_grad():
            self.encoder.conv_out.conv.bias[self.latent_channels :].fill_(value)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unscaled posterior (mean, logvar), each (B, C, T_lat, h, w) of pixels (B, 3, T, H, W)."""
        mean, logvar = self.encoder(self.pad_frames(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)  # the SD-VAE clamp keeps exp() finite in bf16

    def _encode(
        self, x: torch.Tensor, sample: bool, generator: torch.Generator | None
    ) -> torch.Tensor:
        mean, logvar = self.posterior(x)
        if not sample:
            return mean
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * noise

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


class SpaceToDepthAE(LatentVAE):
    """A lossless, parameter-free "VAE": each latent voxel is the stack of the pixels it covers.

    Latent frame 0 is pixel frame 0 (repeated tc times to fill the channels, as a causal VAE
    encodes frame 0 alone); latent frame j >= 1 stacks frames (j-1)*tc+1 .. j*tc, each an s x s
    pixel block: (B, 3, 1 + tc*m, H, W) -> (B, 3*tc*s*s, 1 + m, H/s, W/s). Its reconstruction is
    exact, so the physics error of a model on these latents is the DiT's alone (the paper's VAE
    reconstruction sits at the parse floor, Table 3). For CPU studies, where a conv VAE good
    enough to keep sub-pixel ball positions costs more CPU-hours than the DiTs; only its latent
    scaling is fitted to data (`calibrate`).
    """

    def __init__(self, spatial_compression: int = 4, temporal_compression: int = 2):
        s, tc = spatial_compression, temporal_compression
        super().__init__(s, tc, latent_channels=3 * tc * s * s)

    def _encode(
        self, x: torch.Tensor, sample: bool, generator: torch.Generator | None
    ) -> torch.Tensor:
        s, tc = self.spatial_compression, self.temporal_compression
        x = torch.cat([x[:, :, :1].expand(-1, -1, tc, -1, -1), x[:, :, 1:]], dim=2)
        b, c, t, h, w = x.shape  # t = tc * T_lat
        x = x.reshape(b, c, t // tc, tc, h // s, s, w // s, s)  # (B, 3, T', tc, h, s, w, s)
        x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)  # (B, 3, tc, s, s, T', h, w)
        return x.reshape(b, c * tc * s * s, t // tc, h // s, w // s)  # (B, C, T', h, w)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        s, tc = self.spatial_compression, self.temporal_compression
        b, _, t, h, w = z.shape
        x = z.reshape(b, 3, tc, s, s, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)  # (B, 3, T', tc, h, s, w, s)
        x = x.reshape(b, 3, t * tc, h * s, w * s)
        return x[:, :, tc - 1 :]  # latent frame 0 holds frame 0 alone: keep one copy

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        """Fit shift and scale so the latents of pixels x (B, 3, T, H, W) have mean 0, std 1."""
        self.shift_factor.fill_(0.0)
        self.scaling_factor.fill_(1.0)
        z = self.encode(x)
        self.shift_factor.fill_(z.mean().item())
        self.scaling_factor.fill_(1.0 / max(z.std().item(), 1e-6))


def vae_loss(
    vae: VideoVAE,
    x: torch.Tensor,
    beta: float = 1e-4,
    recon: str = "l1",
    generator: torch.Generator | None = None,
    foreground_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Reconstruction + beta * KL for training a VideoVAE (no perceptual or GAN terms).

    Both terms are means per element; with `foreground_weight` the reconstruction term is a
    weighted mean. A pixel's weight is 1 + foreground_weight * d, where d in [0, 1] is how far the
    pixel is from the clip's temporal median at that place (max over channels, / 2): about 1 where
    an object is and 0 on a static background. Why: a ball covers ~4 % of a 32² frame, so the
    all-white frame scores L1 0.054 against such a set, and a small VAE sits at that minimum for
    hundreds of steps and then learns the ball's position before its colour or shape (measured on
    the colour-shape probe set, docs/experiments.md). The weights are normalised to mean 1 so the
    loss keeps its scale. A static object (PHYRE's walls) counts as background, as it is easy.

    beta = 1e-4 on means is close to SD-VAE's 1e-6 on sums (the ratio of pixel to latent elements
    is 3 * 8 * 8 * 4 / 4 = 192 for vae-f8t4c4): a nearly deterministic autoencoder whose latents
    stay near unit scale.

    Args:
        vae: the VideoVAE being trained.
        x: (B, 3, T, H, W) pixels in [-1, 1].
        beta: weight of the KL term.
        recon: "l1" (sharper edges, as taming/SD use) or "mse".
        generator: RNG for the reparameterised sample.
        foreground_weight: extra weight on pixels that differ from the clip's median frame.

    Returns:
        (loss, {"recon": ..., "kl": ...}) with scalar tensors.
    """
    mean, logvar = vae.posterior(x)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(
        mean.shape, generator=generator, device=mean.device, dtype=mean.dtype
    )
    x_hat = vae.decoder(z)[:, :, : x.shape[2]]  # drop the repeated frames of a padded last group
    if recon == "l1":
        error = (x_hat - x).abs()
    elif recon == "mse":
        error = (x_hat - x).pow(2)
    else:
        raise ValueError(f"recon: unknown {recon!r}; choose l1 or mse")
    if foreground_weight:
        # (B, 3, T, H, W) -> (B, 1, T, H, W): distance from the median frame, in [0, 1]
        moved = (x - x.median(dim=2, keepdim=True).values).abs().amax(dim=1, keepdim=True) / 2
        weight = 1 + foreground_weight * moved
        rec = (weight * error).mean() / weight.mean()
    else:
        rec = error.mean()
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
    return rec + beta * kl, {"recon": rec.detach(), "kl": kl.detach()}


# ---------------------------------------------------------------------------------------------
# Pretrained diffusers VAEs (local directories only)
# ---------------------------------------------------------------------------------------------

# Per-frame image VAEs (tc = 1) and causal video VAEs (CogVideoX: tc = 4, 1 + 4k frames).
DIFFUSERS_VAE_CLASSES = ("AutoencoderKL", "AutoencoderKLCogVideoX")


class DiffusersVAE(LatentVAE):
    """A frozen diffusers VAE behind the LatentVAE interface.

    AutoencoderKL is applied frame by frame (tc = 1). AutoencoderKLCogVideoX is causal in time
    with frame 0 alone, the same convention as VideoVAE, so padding to 1 + tc*k frames matches.
    """

    def __init__(self, model: nn.Module):
        cfg = model.config
        per_frame = type(model).__name__ == "AutoencoderKL"
        super().__init__(
            spatial_compression=2 ** (len(cfg.block_out_channels) - 1),
            temporal_compression=1 if per_frame else int(cfg.temporal_compression_ratio),
            latent_channels=cfg.latent_channels,
            scaling_factor=cfg.scaling_factor,
            shift_factor=getattr(cfg, "shift_factor", None) or 0.0,
        )
        self.per_frame = per_frame
        self.model = model.eval().requires_grad_(False)

    def _encode(
        self, x: torch.Tensor, sample: bool, generator: torch.Generator | None
    ) -> torch.Tensor:
        b, _, t, h, w = x.shape
        if self.per_frame:
            x = x.transpose(1, 2).reshape(b * t, 3, h, w)  # (B, 3, T, H, W) -> (B*T, 3, H, W)
        dist = self.model.encode(x).latent_dist
        z = dist.sample(generator) if sample else dist.mode()
        if self.per_frame:
            z = z.reshape(b, t, *z.shape[1:]).transpose(1, 2)  # (B*T, C, h, w) -> (B, C, T, h, w)
        return z

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = z.shape
        if self.per_frame:
            z = z.transpose(1, 2).reshape(b * t, -1, h, w)  # (B, C, T, h, w) -> (B*T, C, h, w)
        x = self.model.decode(z).sample
        if self.per_frame:
            x = x.reshape(b, t, *x.shape[1:]).transpose(1, 2)  # (B*T, 3, H, W) -> (B, 3, T, H, W)
        return x


def load_diffusers_vae(path: str | Path, dtype: torch.dtype = torch.float32) -> DiffusersVAE:
    """Load a pretrained diffusers VAE saved with `save_pretrained` in a local directory.

    Never downloads: the directory must hold config.json and the weights.

    Args:
        path: directory with config.json naming one of DIFFUSERS_VAE_CLASSES.
        dtype: parameter dtype.

    Returns:
        The frozen model wrapped as a DiffusersVAE.
    """
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{path}: no config.json; expected a diffusers VAE saved with save_pretrained"
        )
    class_name = json.loads(config_file.read_text()).get("_class_name")
    if class_name not in DIFFUSERS_VAE_CLASSES:
        raise ValueError(
            f"{path}: unsupported VAE class {class_name!r}; "
            f"supported: {', '.join(DIFFUSERS_VAE_CLASSES)}"
        )
    try:
        import diffusers
    except ImportError as err:
        raise ImportError(
            "loading a pretrained VAE needs diffusers: pip install 'phyray[train]'"
        ) from err
    model = getattr(diffusers, class_name).from_pretrained(
        path, local_files_only=True, torch_dtype=dtype
    )
    return DiffusersVAE(model)


def build_vae(name: str = DEFAULT_VAE) -> LatentVAE:
    """A randomly initialised VAE from VAE_PRESETS; ValueError naming them if unknown."""
    if name not in VAE_PRESETS:
        raise ValueError(f"unknown VAE {name!r}; choose from {', '.join(VAE_PRESETS)}")
    spec = dict(VAE_PRESETS[name])
    if spec.pop("kind", "conv") == "space_to_depth":
        return SpaceToDepthAE(spec["spatial_compression"], spec["temporal_compression"])
    return VideoVAE(**spec)
