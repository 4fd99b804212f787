"""Video models: DiT presets, causal VAE, diffusion and sampler, rollout, loaders, model info."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from phyray.cli import main
from phyray.models import (
    DIT_PRESETS,
    VAE_PRESETS,
    NoiseSchedule,
    build_dit,
    build_vae,
    condition_latent_frames,
    count_params,
    diffusion_loss,
    encode_condition,
    estimate_mfu,
    frames_to_tensor,
    load_diffusers_vae,
    peak_flops,
    rollout,
    sample,
    tensor_to_frames,
    vae_loss,
)
from phyray.models.diffusion import sampling_timesteps
from phyray.presets import is_trainable


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _randomise_output(dit: nn.Module) -> None:
    """Give a fresh DiT a non-zero output layer, so its predictions depend on its input."""
    nn.init.normal_(dit.final_layer.linear.weight, std=0.02)


# ---- DiT -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, paper", [("DiT-S", 22.5e6), ("DiT-B", 89.5e6), ("DiT-L", 310e6), ("DiT-XL", 456e6)]
)
def test_dit_presets_match_paper_table1(name, paper):
    with torch.device("meta"):
        dit = build_dit(name)
    assert abs(count_params(dit) / paper - 1) < 0.05


def test_build_dit_unknown_name_lists_presets():
    with pytest.raises(ValueError, match="DiT-S, DiT-B, DiT-L, DiT-XL"):
        build_dit("DiT-Q")


@pytest.mark.parametrize("patch", [(1, 2, 2), (2, 2, 2), (1, 1, 1)])
def test_dit_shapes(patch):
    dit = build_dit("DiT-T", latent_channels=4, patch=patch)
    x = torch.randn(2, 4, 4, 4, 6)
    out = dit(x, torch.tensor([0, 999]), torch.randn_like(x), torch.ones(2, 1, 4, 4, 6))
    assert out.shape == x.shape
    assert torch.all(out == 0)  # zero-initialised output layer


def test_dit_rejects_indivisible_latent():
    dit = build_dit("DiT-T", patch=(2, 2, 2))
    x = torch.randn(1, 4, 5, 4, 4)
    with pytest.raises(ValueError, match="not divisible by the patch"):
        dit(x, torch.tensor([1]), x, torch.ones(1, 1, 5, 4, 4))


def test_dit_bf16_autocast_close_to_fp32():
    dit = build_dit("DiT-T")
    _randomise_output(dit)
    x = torch.randn(2, 4, 3, 4, 4)
    args = (x, torch.tensor([10, 900]), torch.randn_like(x), torch.ones(2, 1, 3, 4, 4))
    ref = dit(*args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dit(*args).float()
    assert torch.isfinite(out).all()
    assert (out - ref).norm() / ref.norm() < 0.05


# ---- VAE -------------------------------------------------------------------------------------


def test_frames_round_trip():
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 3, 4, 5, 3), dtype=np.uint8)
    x = frames_to_tensor(frames)
    assert x.shape == (2, 3, 3, 4, 5) and x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(tensor_to_frames(x), frames)


@pytest.mark.parametrize(
    "name, size, latent", [("vae-f8t4c4", 8, (4, 9, 1, 1)), ("vae-f4t2c4-tiny", 16, (4, 17, 4, 4))]
)
def test_vae_shapes_32_frames(name, size, latent):
    vae = build_vae(name).eval()
    x = torch.rand(1, 3, 32, size, size) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x)
        assert tuple(z.shape[1:]) == latent == vae.latent_shape(32, size, size)
        assert vae.decode(z, num_frames=32).shape == x.shape
        # Without num_frames: every frame the latents stand for, 1 + tc * (T_lat - 1).
        assert vae.decode(z).shape[2] == 1 + vae.temporal_compression * (latent[1] - 1)
    with pytest.raises(ValueError, match="cannot decode"):
        vae.decode(z, num_frames=20)


@pytest.mark.parametrize(
    "name, size",
    [
        ("vae-f8t4c4", 8),
        ("vae-f4t2c4-tiny", 8),
        ("vae-f4t2c4-slim", 8),
        ("vae-f4t2c4-local", 8),
        ("s2d-f4t2", 8),
    ],
)
def test_vae_is_causal(name, size):
    vae = build_vae(name).eval()
    tc = vae.temporal_compression
    x = torch.rand(1, 3, 1 + 3 * tc, size, size) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x)
        for p in range(1, x.shape[2]):
            x2 = x.clone()
            x2[:, :, p:] = torch.rand_like(x2[:, :, p:]) * 2 - 1
            z2 = vae.encode(x2)
            unchanged = 1 + (p - 1) // tc  # latent j holds frames (j-1)*tc+1 .. j*tc
            torch.testing.assert_close(
                z2[:, :, :unchanged], z[:, :, :unchanged], atol=1e-5, rtol=1e-5
            )
            assert not torch.allclose(z2[:, :, unchanged], z[:, :, unchanged])
        # The decoder is causal too: frames before latent j's group ignore latents >= j.
        y = vae.decode(z)
        for j in range(1, z.shape[2]):
            z2 = z.clone()
            z2[:, :, j:] = torch.randn_like(z2[:, :, j:])
            keep = 1 + tc * (j - 1)
            torch.testing.assert_close(
                vae.decode(z2)[:, :, :keep], y[:, :, :keep], atol=1e-5, rtol=1e-5
            )


def test_vae_loss_trains():
    vae = build_vae("vae-f4t2c4-tiny")
    x = torch.rand(2, 3, 5, 8, 8) * 2 - 1
    loss, parts = vae_loss(vae, x, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert set(parts) == {"recon", "kl"} and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in vae.parameters() if p.grad is not None)
    with pytest.raises(ValueError, match="recon"):
        vae_loss(vae, x, recon="l3")


class _Echo(torch.nn.Module):
    """A 'VAE' whose decoder returns a fixed reconstruction: vae_loss's terms in isolation."""

    def __init__(self, x_hat: torch.Tensor):
        super().__init__()
        self.x_hat = x_hat

    def posterior(self, x):
        zero = torch.zeros(x.shape[0], 1, 1, 1, 1)
        return zero, zero

    def decoder(self, z):
        return self.x_hat


def test_vae_loss_foreground_weight_weighs_moving_pixels():
    # White clip (B=1, 3, T=5, 8, 8) with a red pixel moving along row 2; one pixel of the
    # reconstruction is wrong by 0.5 in one channel, either on the object or on the background.
    x = torch.ones(1, 3, 5, 8, 8)
    for t in range(5):
        x[0, 1:, t, 2, t] = -1
    on_object, on_background = x.clone(), x.clone()
    on_object[0, 0, 3, 2, 3] -= 0.5
    on_background[0, 0, 3, 6, 6] -= 0.5

    def rec(x_hat, weight):
        return vae_loss(_Echo(x_hat), x, beta=0.0, foreground_weight=weight)[0].item()

    # Unweighted, the two errors cost the same; weighted, the object's costs 1 + w times more.
    assert rec(on_object, 0.0) == pytest.approx(rec(on_background, 0.0))
    assert rec(on_object, 9.0) / rec(on_background, 9.0) == pytest.approx(10.0)
    # Normalised to mean weight 1: a uniform error costs the same weighted or not.
    uniform = x - 0.1
    assert rec(uniform, 9.0) == pytest.approx(rec(uniform, 0.0))



def test_vae_init_logvar_starts_the_posterior_nearly_deterministic():
    vae = build_vae("vae-f4t2c4-tiny")
    x = torch.rand(2, 3, 5, 8, 8) * 2 - 1
    mean_before, logvar_before = vae.posterior(x)
    bias_before = vae.encoder.conv_out.conv.bias[vae.latent_channels :].detach().clone()
    vae.init_logvar(-8.0)
    mean_after, logvar_after = vae.posterior(x)
    # The mean half is untouched; each log-variance channel moves by its bias change, everywhere.
    assert torch.equal(mean_after, mean_before)
    expected_shift = (-8.0 - bias_before).view(1, -1, 1, 1, 1).expand_as(logvar_before)
    assert torch.allclose(logvar_after - logvar_before, expected_shift, atol=1e-5)
    assert abs(logvar_after.mean().item() + 8.0) < 1.0

# ---- diffusion -------------------------------------------------------------------------------


def test_zero_terminal_snr_schedule():
    sched, plain = NoiseSchedule(), NoiseSchedule(zero_terminal_snr=False)
    ab = sched.alphas_cumprod
    assert ab[-1] == 0 and plain.alphas_cumprod[-1] > 0
    torch.testing.assert_close(ab[0], plain.alphas_cumprod[0])
    assert torch.all(ab[1:] < ab[:-1])
    # v-prediction inverts exactly: (x_t, v) -> (x0, eps).
    x0, eps, t = torch.randn(3, 2, 1, 1, 1), torch.randn(3, 2, 1, 1, 1), torch.tensor([0, 500, 999])
    rec_x0, rec_eps = sched.predict_x0_eps(
        sched.add_noise(x0, eps, t), sched.v_target(x0, eps, t), t
    )
    torch.testing.assert_close(rec_x0, x0)
    torch.testing.assert_close(rec_eps, eps)
    assert (
        sampling_timesteps(sched, 50)[:2] == [999, 979] and sampling_timesteps(sched, 50)[-1] == 19
    )


def test_condition_latent_frames():
    assert condition_latent_frames(3, 1) == (3, 3)
    assert condition_latent_frames(3, 4) == (2, 1)  # latent 1 (frames 1-4) only partly known
    assert condition_latent_frames(1, 4) == (1, 1)
    assert condition_latent_frames(5, 4) == (2, 2)


class _Recorder(nn.Module):
    """Predicts v = 0 and remembers its noisy input."""

    def forward(self, x, t, cond, mask):
        self.x = x
        return torch.zeros_like(x)


def test_loss_holds_known_frames_clean_and_ignores_them():
    sched, model = NoiseSchedule(), _Recorder()
    x0 = torch.randn(2, 4, 5, 2, 2)
    t = torch.tensor([999, 999])  # pure noise: target v = -x0
    loss = diffusion_loss(model, sched, x0, x0, torch.ones(2, 1, 5, 2, 2), num_known=2, t=t)
    torch.testing.assert_close(model.x[:, :, :2], x0[:, :, :2])
    torch.testing.assert_close(loss, x0[:, :, 2:].pow(2).mean())


def test_tiny_dit_overfits_one_video_and_samples_it():
    """DiT-T memorises one latent video; its sample with frame 0 held fixed reproduces the rest."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 4, 4, 4, 4, generator=g)  # (B, C, T, H, W)
    known = 1
    cond = torch.cat([x0[:, :, :known], torch.zeros_like(x0[:, :, known:])], dim=2)
    mask = torch.zeros(1, 1, 4, 4, 4)
    mask[:, :, :known] = 1
    dit, sched = build_dit("DiT-T"), NoiseSchedule()

    def eval_loss():  # fixed timesteps and noise
        with torch.no_grad():
            batch = [a.expand(16, -1, -1, -1, -1) for a in (x0, cond, mask)]
            t = torch.linspace(0, 999, 16).long()
            return diffusion_loss(
                dit, sched, *batch, known, generator=torch.Generator().manual_seed(1), t=t
            ).item()

    before, steps = eval_loss(), 300
    opt = torch.optim.AdamW(dit.parameters(), lr=4e-3, weight_decay=0.0)
    lr = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    batch = [a.expand(8, -1, -1, -1, -1) for a in (x0, cond, mask)]
    for _ in range(steps):
        loss = diffusion_loss(dit, sched, *batch, known, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        lr.step()
    assert eval_loss() < before / 10

    z = sample(dit, sched, cond, mask, known, steps=20, generator=torch.Generator().manual_seed(2))
    assert torch.equal(z[:, :, :known], x0[:, :, :known])
    # x0 has unit variance: an unrelated sample would be ~2 away, the memorised one ~0.01.
    assert (z - x0)[:, :, known:].pow(2).mean() < 0.1


# ---- rollout ---------------------------------------------------------------------------------


def _ball_frames(n: int, size: int = 16) -> np.ndarray:
    """uint8 (1, n, size, size, 3): a red square moving right on white."""
    frames = np.full((1, n, size, size, 3), 255, dtype=np.uint8)
    for k in range(n):
        frames[0, k, 6:10, 2 + k : 6 + k] = (255, 0, 0)
    return frames


def test_rollout_keeps_conditioning_and_is_deterministic():
    vae, dit, sched = build_vae("vae-f4t2c4-tiny").eval(), build_dit("DiT-T"), NoiseSchedule()
    _randomise_output(dit)
    cond = _ball_frames(3)
    out = rollout(vae, dit, sched, cond, num_frames=9, steps=4, seed=0)
    assert out.shape == (1, 9, 16, 16, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :3], cond)
    np.testing.assert_array_equal(
        rollout(vae, dit, sched, cond, num_frames=9, steps=4, seed=0), out
    )
    assert not np.array_equal(rollout(vae, dit, sched, cond, num_frames=9, steps=4, seed=1), out)

    # Without pasting, the first c frames are the VAE reconstruction of the conditioning frames
    # (c = 3, tc = 2: latent frames 0-1 are known and held fixed; the decoder is causal).
    decoded = rollout(vae, dit, sched, cond, num_frames=9, steps=4, seed=0, keep_cond_frames=False)
    with torch.no_grad():
        recon = tensor_to_frames(vae.decode(vae.encode(frames_to_tensor(cond)), num_frames=3))
    assert np.abs(decoded[:, :3].astype(int) - recon.astype(int)).max() <= 1


def test_a_bf16_rollout_runs_the_networks_in_bf16_and_stays_near_fp32():
    vae, dit, sched = build_vae("vae-f4t2c4-tiny").eval(), build_dit("DiT-T"), NoiseSchedule()
    _randomise_output(dit)
    cond = _ball_frames(3)
    fp32 = rollout(vae, dit, sched, cond, num_frames=9, steps=4, seed=0)
    np.testing.assert_array_equal(rollout(vae, dit, sched, cond, num_frames=9, steps=4, seed=0, precision="fp32"), fp32)

    seen: dict[str, set] = {"dit": set(), "vae": set(), "sampler": set()}
    hooks = [dit.register_forward_hook(lambda m, args, out: seen["dit"].add(out.dtype) or seen["sampler"].add(args[0].dtype))]
    hooks += [module.register_forward_hook(lambda m, args, out: seen["vae"].add(out.dtype)) for module in (vae.encoder, vae.decoder)]
    bf16 = rollout(vae, dit, sched, cond, num_frames=9, steps=4, seed=0, precision="bf16")
    for hook in hooks:
        hook.remove()
    assert seen["dit"] == seen["vae"] == {torch.bfloat16}
    assert seen["sampler"] == {torch.float32}  # the DDIM state the DiT is given stays fp32
    np.testing.assert_array_equal(rollout(vae, dit, sched, cond, num_frames=9, steps=4, seed=0, precision="bf16"), bf16)
    np.testing.assert_array_equal(bf16[:, :3], cond)
    difference = np.abs(bf16.astype(int) - fp32.astype(int))
    assert difference.any() and difference.mean() < 2  # other pixels, within 2 of 255 levels on average

    with pytest.raises(ValueError, match="rollout precision 'fp16'"):
        rollout(vae, dit, sched, cond, num_frames=9, steps=4, seed=0, precision="fp16")


def test_rollout_noise_is_per_video_whatever_the_batch():
    vae, dit, sched = build_vae("vae-f4t2c4-tiny").eval(), build_dit("DiT-T"), NoiseSchedule()
    _randomise_output(dit)
    cond = np.concatenate([_ball_frames(3), _ball_frames(3)[:, :, ::-1]])  # two different videos
    pair = rollout(vae, dit, sched, cond, num_frames=9, steps=3, seed=[11, 22])
    alone = rollout(vae, dit, sched, cond[1:], num_frames=9, steps=3, seed=[22])
    assert np.abs(pair[1:].astype(int) - alone.astype(int)).max() <= 1  # float reassociation only
    with pytest.raises(ValueError, match="1 seeds for 2 videos"):
        rollout(vae, dit, sched, cond, num_frames=9, steps=3, seed=[11])


def test_frame_local_vae_latents_see_only_their_group():
    vae = build_vae("vae-f4t2c4-local").eval()
    tc = vae.temporal_compression
    x = torch.rand(1, 3, 1 + 4 * tc, 16, 16) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x)
        for f in range(x.shape[2]):
            x2 = x.clone()
            x2[:, :, f] = -x2[:, :, f]
            changed = (vae.encode(x2) - z).abs().amax(dim=(0, 1, 3, 4)) > 0  # per latent frame
            group = 0 if f == 0 else 1 + (f - 1) // tc  # frame 0 alone, then groups of tc
            assert changed.tolist() == [j == group for j in range(z.shape[2])]
        y = vae.decode(z, num_frames=x.shape[2])
        for j in range(z.shape[2]):
            z2 = z.clone()
            z2[:, :, j] = torch.randn_like(z2[:, :, j])
            changed = (vae.decode(z2, num_frames=x.shape[2]) - y).abs().amax(dim=(0, 1, 3, 4)) > 0
            frames = {0} if j == 0 else set(range(1 + (j - 1) * tc, 1 + j * tc))
            assert changed.tolist() == [f in frames for f in range(x.shape[2])]


def test_space_to_depth_ae_is_lossless_and_calibrates():
    ae = build_vae("s2d-f4t2")
    assert not is_trainable("s2d-f4t2") and is_trainable("vae-f4t2c4-tiny")
    frames = np.random.default_rng(0).integers(0, 256, (2, 9, 16, 16, 3), dtype=np.uint8)
    x = frames_to_tensor(frames)
    ae.calibrate(x)
    z = ae.encode(x)
    assert z.shape == (2, 96, 5, 4, 4)
    assert abs(z.mean().item()) < 1e-5 and z.std().item() == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_array_equal(tensor_to_frames(ae.decode(z, num_frames=9)), frames)
    # Latent frame 0 is frame 0 alone; latent frame 1 is frames 1-2, pixel block by pixel block.
    raw = (z / ae.scaling_factor + ae.shift_factor).reshape(2, 3, 2, 4, 4, 5, 4, 4)  # (B, 3, tc, s, s, T', h, w)
    torch.testing.assert_close(raw[0, :, 1, 2, 3, 1, 0, 1], x[0, :, 2, 2, 4 + 3])


def test_encode_condition_zero_pads_partial_group():
    vae = build_vae("vae-f8t4c4").eval()  # tc = 4: c = 3 touches latent frames 0 and 1
    x = torch.rand(1, 3, 3, 8, 8) * 2 - 1
    cond, mask = encode_condition(vae, x, num_latent_frames=9)
    assert cond.shape == (1, 4, 9, 1, 1) and mask[0, 0, :, 0, 0].tolist() == [1, 1] + [0] * 7
    full = torch.cat(
        [x, torch.zeros(1, 3, 29, 8, 8)], dim=2
    )  # the paper's zero padding to 32 frames
    with torch.no_grad():
        torch.testing.assert_close(cond[:, :, :2], vae.encode(full)[:, :, :2], atol=1e-5, rtol=1e-5)
    assert torch.all(cond[:, :, 2:] == 0)


# ---- pretrained diffusers VAEs ---------------------------------------------------------------


def test_diffusers_vae_round_trip(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    kl = diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    )
    cog = diffusers.AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_height=16,
        sample_width=16,
    )
    x = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    for name, model, latent in [("kl", kl, (4, 9, 8, 8)), ("cog", cog, (4, 3, 2, 2))]:
        model.save_pretrained(tmp_path / name)
        vae = load_diffusers_vae(tmp_path / name)
        with torch.no_grad():
            z = vae.encode(x)
            assert tuple(z.shape[1:]) == latent == vae.latent_shape(9, 16, 16)
            assert vae.decode(z, num_frames=9).shape == x.shape
            assert vae.decode(vae.encode(x[:, :, :8]), num_frames=8).shape == (1, 3, 8, 16, 16)
        loaded = vae.model.state_dict()
        assert all(torch.equal(v, loaded[k]) for k, v in model.state_dict().items())
    with torch.no_grad():  # same numbers as the model itself, scaled
        expected = cog.encode(x).latent_dist.mode() * cog.config.scaling_factor
        torch.testing.assert_close(vae.encode(x), expected)

    with pytest.raises(FileNotFoundError):
        load_diffusers_vae(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(ValueError, match="unsupported"):
        load_diffusers_vae(tmp_path / "other")


# ---- model info and CLI ----------------------------------------------------------------------


def test_model_info_cli_json(capsys):
    assert (
        main(
            ["model", "info", "--model", "DiT-B", "--resolution", "128", "--frames", "32", "--json"]
        )
        == 0
    )
    info = json.loads(capsys.readouterr().out)
    c, t, h, w = info["latent_shape"]
    assert (c, t, h, w) == (4, 9, 16, 16)  # vae-f8t4c4: frame 0 + 8 groups of 4
    assert info["tokens_per_video"] == t * h * w // (1 * 2 * 2) == 576
    assert abs(info["params"] / 89.5e6 - 1) < 0.05
    assert info["train_flops_per_video"] == 3 * info["forward_flops_per_video"]
    # ~6 * params * tokens plus attention: between 6 N T and twice that at this length.
    assert (
        6 * info["params"] * 576 * 0.9 < info["train_flops_per_video"] < 12 * info["params"] * 576
    )

    assert (
        main(
            [
                "model",
                "info",
                "--model",
                "DiT-S",
                "--vae",
                "vae-f4t2c4-tiny",
                "--patch",
                "1",
                "4",
                "4",
                "--json",
            ]
        )
        == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert info["latent_shape"] == [4, 17, 32, 32] and info["tokens_per_video"] == 17 * 8 * 8


def test_model_info_cli_table_and_errors(capsys):
    assert main(["model", "info", "--model", "DiT-S"]) == 0
    out = capsys.readouterr().out
    assert "tokens per video" in out and "576" in out and "22.5M" in out
    assert main(["model", "info", "--model", "DiT-Q"]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in DIT_PRESETS)
    assert main(["model", "info", "--model", "DiT-S", "--vae", "nope"]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in VAE_PRESETS)


def test_peak_flops_and_mfu():
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA L40S") == 362e12 and peak_flops("NVIDIA L4") == 121e12
    assert peak_flops("NVIDIA A10G") == 70e12
    assert peak_flops("cpu") is None and peak_flops(None) is None
    assert estimate_mfu(1e12, 100.0, 312e12) == pytest.approx(1e14 / 312e12)
    assert estimate_mfu(1e12, 100.0, None) is None
