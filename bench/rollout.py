"""Benchmark: rollout sampling speed (VAE encode -> DDIM over the DiT -> VAE decode) per preset.

Rolls out videos with a study preset's smallest model and its VAE (configs/studies/<preset>.yaml;
random weights: the cost does not depend on them) at its resolution, frame count, conditioning
frames, sampling steps and rollout batch size, through
`phyray.models.diffusion.rollout`, the function every study's rollout stage calls, and prints
videos/s per CPU core (or per GPU), split into encode, sampling and decode. The baseline, from
the same run: the DiT's forward pass alone on the same batch, times the sampling steps (the
floor of any DDIM sampler over this model).

    .venv/bin/python bench/rollout.py                      # the mini and paper presets on CPU
    .venv/bin/python bench/rollout.py --bf16               # also with eval.precision: bf16
    .venv/bin/python bench/rollout.py --presets paper --gpu
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from phyray.config import TrainDiffusion

STUDIES = Path(__file__).resolve().parent.parent / "configs" / "studies"


@dataclass
class Preset:
    dit: str
    vae: str
    resolution: int
    frames: int
    diffusion: TrainDiffusion  # its cond_frames and noise schedule
    steps: int
    batch: int
    eval_videos: int  # a trial's evaluation videos (ID + OOD)


def load_preset(name: str) -> Preset:
    """A study preset's rollout settings, read from configs/studies/<name>.yaml: its first
    scenario and smallest model, its VAE, frames, conditioning frames, sampling steps and batch."""
    from phyray.config import load_scenario_config
    from phyray.study.settings import load_study_config

    study = load_study_config(STUDIES / f"{name}.yaml")
    overrides = [f"render.resolution={study.data.resolution}", *study.data.overrides]
    data = load_scenario_config(study.scenarios[0], overrides)
    sizes = data.eval_sizes
    return Preset(
        dit=study.models[0], vae=study.vae.preset, resolution=study.data.resolution,
        frames=data.physics.num_frames,
        diffusion=TrainDiffusion.model_validate(study.dit.get("diffusion", {})),
        steps=study.eval.sample_steps, batch=study.eval.batch_size,
        eval_videos=(study.data.eval_id or sizes["eval_id"]) + (study.data.eval_ood or sizes["eval_ood"]),
    )


def timed(fn, device: torch.device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


@torch.no_grad()
def measure(preset: Preset, device: torch.device, precision: str = "fp32", compiled: bool = False) -> dict[str, float]:
    """Seconds of a whole rollout batch and of its parts, its networks in `precision` (the
    library's `network_precision`: bf16 autocast around the VAE and DiT, the sampler's state in
    fp32), optionally with the DiT compiled."""
    from phyray.models.diffusion import (
        NoiseSchedule,
        condition_latent_frames,
        encode_condition,
        network_precision,
        rollout,
        sample,
    )
    from phyray.models.dit import build_dit
    from phyray.models.vae import build_vae, frames_to_tensor, tensor_to_frames
    from phyray.presets import VAE_PRESETS

    batch, frames, c, steps = preset.batch, preset.frames, preset.diffusion.cond_frames, preset.steps
    torch.manual_seed(0)
    vae = build_vae(preset.vae).eval().to(device)
    dit = build_dit(preset.dit, latent_channels=VAE_PRESETS[preset.vae]["latent_channels"]).eval().to(device)
    if compiled:
        dit.compile()
    schedule = NoiseSchedule(preset.diffusion.timesteps, preset.diffusion.beta_schedule)
    video = torch.randint(0, 256, (batch, frames, preset.resolution, preset.resolution, 3), dtype=torch.uint8).numpy()
    seeds = list(range(batch))

    rollout(vae, dit, schedule, video[:, :c], frames, 1, seeds, precision=precision)  # warm-up: allocator, kernels
    whole, _ = timed(lambda: rollout(vae, dit, schedule, video[:, :c], frames, steps, seeds, precision=precision), device)
    # The same work in its three parts, and the DiT's forward alone (the floor).
    pixels = frames_to_tensor(video[:, :c], device=device)
    with network_precision(precision, device):
        encode_s, (cond, mask) = timed(lambda: encode_condition(vae, pixels, vae.latent_frames(frames)), device)
        cond, mask = cond.float(), mask.float()
        _, known = condition_latent_frames(c, vae.temporal_compression)
        sample_s, z = timed(lambda: sample(dit, schedule, cond, mask, known, steps=steps,
                                           generator=torch.Generator(device).manual_seed(0)), device)
        decode_s, _ = timed(lambda: tensor_to_frames(vae.decode(z, num_frames=frames)), device)
        t = torch.full((batch,), 999, device=device, dtype=torch.long)
        forward_s, _ = timed(lambda: dit(z, t, cond, mask), device)
    return {"whole": whole, "encode": encode_s, "sample": sample_s,
            "decode": decode_s, "floor": forward_s * steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="mini,paper", help="study configs in configs/studies/")
    parser.add_argument("--batch", type=int, help="videos per batch (default: the preset's eval batch_size)")
    parser.add_argument("--bf16", action="store_true", help="also with the networks in bf16 (eval.precision: bf16)")
    parser.add_argument("--gpu", action="store_true", help="on CUDA: also bf16 and a compiled DiT, with MFU and memory")
    args = parser.parse_args()

    from phyray.models.info import estimate_mfu, model_info, peak_flops

    device = torch.device("cuda" if args.gpu else "cpu")
    units = 1 if args.gpu else torch.get_num_threads()
    unit = "GPU" if args.gpu else "core"
    peak = peak_flops(torch.cuda.get_device_name()) if args.gpu else None
    print(f"rollouts on {torch.cuda.get_device_name() if args.gpu else device} ({units} {unit}{'s' if units > 1 else ''}), "
          "random weights", flush=True)
    variants = {"fp32": {}}
    if args.bf16 or args.gpu:
        variants["bf16"] = {"precision": "bf16"}
    if args.gpu:
        variants["bf16, compiled DiT"] = {"precision": "bf16", "compiled": True}
    for name in args.presets.split(","):
        preset = load_preset(name)
        preset.batch = args.batch or preset.batch
        info = model_info(preset.dit, preset.resolution, preset.frames, vae=preset.vae)
        print(f"  {name}: {preset.dit} on {preset.vae}, {preset.frames}x{preset.resolution}², "
              f"c={preset.diffusion.cond_frames}, {preset.steps} DDIM steps, batch {preset.batch}", flush=True)
        for variant, options in variants.items():
            if args.gpu:
                torch.cuda.reset_peak_memory_stats()
            r = measure(preset, device, **options)
            per_unit = preset.batch / r["whole"] / units
            print(f"    [{variant}] rollout {r['whole']:.2f} s = {per_unit:.3f} videos/s per {unit}; "
                  f"encode {r['encode']:.2f} s, sampling {r['sample']:.2f} s, decode {r['decode']:.2f} s", flush=True)
            print(f"      baseline, the DiT's forward x {preset.steps} steps alone: {r['floor']:.2f} s "
                  f"(sampling = {r['sample'] / r['floor']:.2f}x its floor)", flush=True)
            if args.gpu:
                mfu = estimate_mfu(info["forward_flops_per_video"] * preset.steps, preset.batch / r["sample"], peak)
                print(f"      sampling MFU {100 * mfu:.1f}%, peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB",
                      flush=True)
            rollout_s = preset.eval_videos / per_unit / units
            print(f"      a trial's {preset.eval_videos} evaluation videos: {rollout_s:.0f} s of rollouts", flush=True)


if __name__ == "__main__":
    main()
