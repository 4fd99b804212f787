"""Benchmark: rollout sampling speed (VAE encode -> DDIM over the DiT -> VAE decode) per preset.

Rolls out videos with the presets' models (random weights: the cost does not depend on them)
at their resolution, frame count, sampling steps and batch size, through
`phyray.models.diffusion.rollout`, the function every study's rollout stage calls, and prints
videos/s per CPU core (or per GPU), split into encode, sampling and decode. The baseline, from
the same run: the DiT's forward pass alone on the same batch, times the sampling steps (the
floor of any DDIM sampler over this model).

    .venv/bin/python bench/rollout.py                      # the mini and paper presets on CPU
    .venv/bin/python bench/rollout.py --presets paper --gpu
"""

from __future__ import annotations

import argparse
import time

import torch

# preset: DiT, VAE, resolution, frames, conditioning frames, DDIM steps, batch, evaluation videos
# per trial (configs/studies/mini.yaml: 100 ID + 150 OOD; paper.yaml: uniform motion's eval sizes)
PRESETS = {
    "mini": ("DiT-W", "vae-f4t2c4-slim", 32, 16, 3, 10, 25, 250),
    "paper": ("DiT-S", "vae-f8t4c4", 128, 32, 3, 50, 64, 3450),
}


def timed(fn, device: torch.device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


@torch.no_grad()
def measure(preset: str, batch: int | None, device: torch.device) -> dict[str, float]:
    from phyray.models.diffusion import (
        NoiseSchedule,
        condition_latent_frames,
        encode_condition,
        rollout,
        sample,
    )
    from phyray.models.dit import build_dit
    from phyray.models.vae import build_vae, frames_to_tensor, tensor_to_frames
    from phyray.presets import VAE_PRESETS

    dit_name, vae_name, resolution, frames, c, steps, preset_batch, _ = PRESETS[preset]
    batch = batch or preset_batch
    torch.manual_seed(0)
    vae = build_vae(vae_name).eval().to(device)
    dit = build_dit(dit_name, latent_channels=VAE_PRESETS[vae_name]["latent_channels"]).eval().to(device)
    schedule = NoiseSchedule(1000, "scaled_linear")
    video = torch.randint(0, 256, (batch, frames, resolution, resolution, 3), dtype=torch.uint8).numpy()
    seeds = list(range(batch))

    rollout(vae, dit, schedule, video[:, :c], frames, 1, seeds)  # warm-up: allocator, kernels
    whole, _ = timed(lambda: rollout(vae, dit, schedule, video[:, :c], frames, steps, seeds), device)
    # The same work in its three parts, and the DiT's forward alone (the floor).
    pixels = frames_to_tensor(video[:, :c], device=device)
    encode_s, (cond, mask) = timed(lambda: encode_condition(vae, pixels, vae.latent_frames(frames)), device)
    _, known = condition_latent_frames(c, vae.temporal_compression)
    sample_s, z = timed(lambda: sample(dit, schedule, cond, mask, known, steps=steps,
                                       generator=torch.Generator(device).manual_seed(0)), device)
    decode_s, _ = timed(lambda: tensor_to_frames(vae.decode(z, num_frames=frames)), device)
    t = torch.full((batch,), 999, device=device, dtype=torch.long)
    forward_s, _ = timed(lambda: dit(z, t, cond, mask), device)
    return {"batch": batch, "steps": steps, "whole": whole, "encode": encode_s, "sample": sample_s,
            "decode": decode_s, "floor": forward_s * steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="mini,paper")
    parser.add_argument("--batch", type=int, help="videos per batch (default: the preset's eval batch_size)")
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args()

    device = torch.device("cuda" if args.gpu else "cpu")
    units = 1 if args.gpu else torch.get_num_threads()
    unit = "GPU" if args.gpu else "core"
    print(f"rollouts on {device} ({units} {unit}{'s' if units > 1 else ''}), random weights")
    for preset in args.presets.split(","):
        dit, vae, resolution, frames, c, _, _, eval_videos = PRESETS[preset]
        r = measure(preset, args.batch, device)
        per_unit = r["batch"] / r["whole"] / units
        print(f"  {preset}: {dit} on {vae}, {frames}x{resolution}², c={c}, {r['steps']} DDIM steps, batch {r['batch']}")
        print(f"    rollout {r['whole']:.2f} s = {per_unit:.3f} videos/s per {unit}; "
              f"encode {r['encode']:.2f} s, sampling {r['sample']:.2f} s, decode {r['decode']:.2f} s")
        print(f"    baseline, the DiT's forward x {r['steps']} steps alone: {r['floor']:.2f} s "
              f"(sampling = {r['sample'] / r['floor']:.2f}x its floor)")
        if eval_videos:
            print(f"    a trial's {eval_videos} evaluation videos: {eval_videos / per_unit / units:.0f} s of rollouts")


if __name__ == "__main__":
    main()
