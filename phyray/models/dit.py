"""Frame-conditioned video DiT (docs/paper.md §6 "DiT", "Frame conditioning").

Spacetime patches of the latent video form one token sequence with full self-attention over all
of them and 3-D RoPE on queries and keys. The input is the channel concatenation
[noisy latent, conditioning latent (zero after the conditioning frames), binary mask], so it has
2 * C_lat + 1 channels. The timestep enters through PixArt-alpha's adaLN-single: one shared MLP
maps it to 6 * d modulation values and each block adds its own learnable (6, d) table. Unlike
DiT's per-block adaLN MLPs this adds almost no parameters, which is what reproduces the paper's
Table 1 (DiT-S/B/L/XL = 22.5M/89.5M/310M/456M, ~12 * layers * d^2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from phyray.presets import DEFAULT_PATCH, DIT_PRESETS

# Patch size is not stated in the paper; (1, 2, 2) keeps every latent frame (9 for 32 frames)
# and gives DiT's usual 2x2 spatial patches: 128x128x32 -> 9 * 8 * 8 = 576 tokens.


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


class LayerNorm32(nn.LayerNorm):
    """Affine-free LayerNorm computed in fp32, so bf16 activations do not lose the statistics."""

    def __init__(self, dim: int):
        super().__init__(dim, elementwise_affine=False, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, eps=self.eps).to(x.dtype)


class TimestepEmbedder(nn.Module):
    """Scalar timesteps -> (B, d) via sinusoids (computed in fp32) and a 2-layer MLP, as in DiT."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
        )
        args = t.float()[:, None] * freqs[None]  # (B, dim / 2)
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


def rope_3d(
    grid: tuple[int, int, int], head_dim: int, theta: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (N, head_dim / 2), for tokens laid out t-major on a (T, H, W) grid.

    The head_dim / 2 rotation pairs are split across the axes: a third (rounded down) for time,
    the rest shared by height and width, which have more positions.
    """
    if head_dim % 2 or head_dim < 6:
        raise ValueError(f"3-D RoPE needs an even head dim >= 6, got {head_dim}")
    pairs = head_dim // 2
    pt = pairs // 3
    ph = (pairs - pt) // 2
    pw = pairs - pt - ph
    angles = []
    for axis, (size, n) in enumerate(zip(grid, (pt, ph, pw), strict=True)):
        inv_freq = theta ** (-torch.arange(n, dtype=torch.float32, device=device) / n)
        a = torch.arange(size, dtype=torch.float32, device=device)[:, None] * inv_freq  # (size, n)
        shape = [1, 1, 1, n]
        shape[axis] = size
        angles.append(a.reshape(shape).expand(*grid, n))  # (T, H, W, n)
    angles = torch.cat(angles, dim=-1).reshape(-1, pairs)  # (N, pairs)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs of x (B, heads, N, head_dim) by the angles; in fp32."""
    xf = x.float().reshape(*x.shape[:-1], -1, 2)  # (B, heads, N, head_dim / 2, 2)
    x1, x2 = xf.unbind(-1)
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.flatten(-2).to(x.dtype)  # (B, heads, N, head_dim)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        b, n, d = x.shape
        # (B, N, 3D) -> (3, B, heads, N, head_dim)
        qkv = (
            self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        )
        q, k, v = qkv.unbind(0)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, head_dim)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))  # (B, N, D)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    """Pre-norm transformer block modulated by the shared timestep vector plus its own table."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = LayerNorm32(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = LayerNorm32(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    def forward(
        self, x: torch.Tensor, t6: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        # (B, 6, D) -> six (B, 1, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + t6
        ).chunk(6, dim=1)
        x = x + gate_msa * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), rope)
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """Modulated norm and a linear map from tokens to patches (PixArt's T2IFinalLayer)."""

    def __init__(self, dim: int, patch_volume: int, out_channels: int):
        super().__init__()
        self.norm = LayerNorm32(dim)
        self.linear = nn.Linear(dim, patch_volume * out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.scale_shift_table[None] + temb[:, None]).chunk(
            2, dim=1
        )  # two (B, 1, D)
        return self.linear(modulate(self.norm(x), shift, scale))


# ---------------------------------------------------------------------------------------------
# DiT
# ---------------------------------------------------------------------------------------------


class DiT(nn.Module):
    """Video DiT predicting v for the noisy latent, given conditioning latent frames and a mask.

    Args:
        latent_channels: C_lat of the VAE.
        patch: spacetime patch (pt, ph, pw); latent T, H, W must be divisible by it.
        depth, hidden_size, num_heads: transformer size (see DIT_PRESETS).
        mlp_ratio: MLP width / hidden size.
        rope_theta: RoPE base period.
    """

    def __init__(
        self,
        latent_channels: int = 4,
        patch: tuple[int, int, int] = DEFAULT_PATCH,
        depth: int = 12,
        hidden_size: int = 384,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        rope_theta: float = 10000.0,
    ):
        super().__init__()
        self.latent_channels = latent_channels
        self.patch = tuple(patch)
        self.depth, self.hidden_size, self.num_heads = depth, hidden_size, num_heads
        self.rope_theta = rope_theta
        # Strided conv = linear map of each flattened patch of [noisy, cond, mask] channels.
        self.x_embedder = nn.Conv3d(
            2 * latent_channels + 1, hidden_size, kernel_size=self.patch, stride=self.patch
        )
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))
        self.blocks = nn.ModuleList(
            DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)
        )
        self.final_layer = FinalLayer(hidden_size, math.prod(self.patch), latent_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        # Patch embedding like nn.Linear (DiT), timestep MLPs N(0, 0.02) (DiT, PixArt).
        nn.init.xavier_uniform_(self.x_embedder.weight.view(self.hidden_size, -1))
        nn.init.zeros_(self.x_embedder.bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        nn.init.normal_(self.t_block[1].weight, std=0.02)
        # Zero output layer: the untrained model predicts v = 0 (DiT's choice, stable start).
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Predict v.

        Args:
            x: noisy latent (B, C, T, H, W).
            t: timesteps (B,), integer or float.
            cond: conditioning latent (B, C, T, H, W), zero on frames without conditioning.
            mask: (B, 1, T, H, W), 1 on latent frames that carry conditioning.

        Returns:
            v prediction (B, C, T, H, W).
        """
        b, _, T, H, W = x.shape
        pt, ph, pw = self.patch
        if T % pt or H % ph or W % pw:
            raise ValueError(
                f"latent (T, H, W) = {(T, H, W)} is not divisible by the patch {self.patch}"
            )
        h = self.x_embedder(
            torch.cat([x, cond, mask.to(x.dtype)], dim=1)
        )  # (B, D, T/pt, H/ph, W/pw)
        grid = tuple(h.shape[2:])
        # (B, N, D), tokens t-major. Contiguous, not the transposed view: the same values and, in
        # eager, the same bits; but a block compiled on its own (`compile: blocks`) and fed the
        # view got input gradients wrong by 2-8 % (torch 2.13 inductor, CPU; docs/performance.md
        # "2026-12-07 (4)").
        h = h.flatten(2).transpose(1, 2).contiguous()
        rope = rope_3d(grid, self.hidden_size // self.num_heads, self.rope_theta, x.device)
        temb = self.t_embedder(t)  # (B, D)
        t6 = self.t_block(temb).reshape(b, 6, self.hidden_size)  # (B, 6, D)
        for block in self.blocks:
            h = block(h, t6, rope)
        h = self.final_layer(h, temb)  # (B, N, pt*ph*pw*C)
        return self.unpatchify(h, grid)

    def unpatchify(self, h: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        b, c = h.shape[0], self.latent_channels
        (gt, gh, gw), (pt, ph, pw) = grid, self.patch
        h = h.reshape(b, gt, gh, gw, pt, ph, pw, c)  # (B, T', H', W', pt, ph, pw, C)
        h = h.permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, C, T', pt, H', ph, W', pw)
        return h.reshape(b, c, gt * pt, gh * ph, gw * pw)  # (B, C, T, H, W)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (works on the meta device)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def build_dit(
    name: str, latent_channels: int = 4, patch: tuple[int, int, int] = DEFAULT_PATCH, **kwargs
) -> DiT:
    """A DiT from DIT_PRESETS.

    Args:
        name: preset name, e.g. "DiT-B".
        latent_channels: C_lat of the VAE.
        patch: spacetime patch (pt, ph, pw).
        **kwargs: overrides of DiT arguments (mlp_ratio, rope_theta, ...).

    Returns:
        The randomly initialised model (build under `torch.device("meta")` to only count).
    """
    if name not in DIT_PRESETS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(DIT_PRESETS)}")
    return DiT(latent_channels=latent_channels, patch=patch, **{**DIT_PRESETS[name], **kwargs})
