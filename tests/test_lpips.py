"""LPIPS written in phyray (phyray/eval/lpips.py), with a seeded random AlexNet backbone.

The real linear heads are used where `.weights/lpips-v0.1-alex.pth` is present, random ones
otherwise; no test needs the ImageNet backbone.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phyray.eval.lpips import (
    BACKBONE_SETTING,
    DEFAULT_HEADS,
    LPIPS,
    LPIPS_SKIPPED,
    LpipsWeightsNotFound,
    frames_to_lpips_input,
    load_heads,
    load_lpips,
    lpips_videos,
)


@pytest.fixture(scope="module")
def model() -> LPIPS:
    torch.manual_seed(0)
    net = LPIPS()
    return load_heads(net) if DEFAULT_HEADS.is_file() else net


def _images(side: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """(batch, 3, side, side) smooth random images in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 8, 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(
        coarse, size=(side, side), mode="bilinear", align_corners=False
    )


def _video(frames: int, side: int, seed: int) -> np.ndarray:
    """(frames, side, side, 3) uint8."""
    images = _images(side, frames, seed)  # (T, 3, H, W) in [-1, 1]
    return ((images + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _noisy(video: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, video.shape)
    return np.clip(video + noise, 0, 255).astype(np.uint8)


@torch.no_grad()
def test_identical_images_score_zero(model):
    x = _images(64)
    assert model(x, x).abs().max().item() < 1e-7


@pytest.mark.parametrize(("side", "relu5_side"), [(32, 1), (64, 3), (256, 15)])
@torch.no_grad()
def test_output_shape_and_tap_sizes(model, side, relu5_side):
    x, y = _images(side, seed=1), _images(side, seed=2)
    distance = model(x, y)
    assert distance.shape == (2,)
    assert torch.isfinite(distance).all() and (distance > 0).all()
    assert model.taps(x)[-1].shape == (2, 256, relu5_side, relu5_side)


def test_small_frames_upsampled_to_min_side(model):
    video = _video(4, 16, seed=3)
    assert frames_to_lpips_input(video).shape == (4, 3, 32, 32)
    assert frames_to_lpips_input(_video(4, 64, seed=3)).shape == (4, 3, 64, 64)
    scores = lpips_videos([video], [_noisy(video, 20, seed=4)], model, cond_frames=1)
    assert np.isfinite(scores).all() and scores[0] > 0
    with pytest.raises(ValueError, match="min_side"):
        frames_to_lpips_input(video, min_side=16)


def test_videos_monotone_in_noise_and_nan_without_scored_frames(model):
    video = _video(5, 64, seed=5)
    slight, heavy = _noisy(video, 4, seed=6), _noisy(video, 40, seed=7)
    scores = lpips_videos(
        [video, video, video, video[:2]], [video, slight, heavy, video[:2]], model, cond_frames=2
    )
    assert scores.shape == (4,) and scores.dtype == np.float64
    assert scores[0] < 1e-7
    assert 0 < scores[1] < scores[2]
    assert np.isnan(scores[3])
    with pytest.raises(ValueError, match="differ"):
        lpips_videos([video], [video[:, :32]], model)


def test_torchvision_state_dict_loads(tmp_path):
    torch.manual_seed(1)
    source = LPIPS()
    backbone = {f"features.{key}": value for key, value in source.features.state_dict().items()}
    backbone["classifier.1.weight"] = torch.zeros(8, 4)  # a full AlexNet's extra keys are ignored
    heads = {f"lin{k}.model.1.weight": head.weight for k, head in enumerate(source.heads)}
    torch.save(backbone, tmp_path / "alexnet.pth")
    torch.save(heads, tmp_path / "alex_heads.pth")

    loaded = load_lpips(tmp_path / "alexnet.pth", heads=tmp_path / "alex_heads.pth")
    x, y = _images(64, seed=8), _images(64, seed=9)
    with torch.no_grad():
        assert torch.equal(loaded(x, y), source(x, y))

    torch.save({"classifier.1.weight": torch.zeros(8, 4)}, tmp_path / "classifier_only.pth")
    with pytest.raises(ValueError, match="classifier_only.pth"):
        load_lpips(tmp_path / "classifier_only.pth", heads=tmp_path / "alex_heads.pth")


def test_missing_backbone_is_skipped_or_named(tmp_path):
    assert load_lpips(None) is None
    assert BACKBONE_SETTING in LPIPS_SKIPPED
    missing = tmp_path / "no_alexnet.pth"
    with pytest.raises(LpipsWeightsNotFound) as error:
        load_lpips(missing)
    assert isinstance(error.value, FileNotFoundError)
    assert str(missing) in str(error.value) and BACKBONE_SETTING in str(error.value)
