"""The rollout stage: a trained DiT continues every video of a reference set from its first c frames.

    manifest = rollout_dataset("runs/train/dit-run", "data/um/eval_id", "rollouts/eval_id")
    rows = evaluate_physics("rollouts/eval_id", "data/um/eval_id")

The output is a dataset in its reference's schema: each row is its reference row (video_id,
states, params, ...; a PHYRE row's template_id, trial, palette and objects) with `frames`
replaced by the generated video, one rollout shard per reference shard
(same file name), written through `phyray.artifacts.write_product`, so `phyray eval physics`
joins them by video_id and a rerun after a kill only rolls out the missing shards. Each video's starting noise is seeded by its own
`seed` (and a PHYRE video's template and trial) and the rollout seed, so a video's rollout does not depend on the batch it lands in.
Plain torch: it runs wherever it is called (a study runs it as a Ray task on the trial's
resources).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from phyray.artifacts import Identity, ProductError, identity_of, write_product
from phyray.data.shards import (
    FRAME_COLUMNS,
    PLANAR_RGB,
    decode_frames,
    encode_frames,
    read_manifest,
    read_shard,
    shard_paths,
    write_shard,
)

# torch and the models are imported in `rollout_dataset`: naming and reading rollouts needs
# neither.


def video_noise_seed(row: dict[str, Any], rollout_seed: int) -> int:
    """A video's sampling seed (fits in int64): its dataset seed mixed with the rollout seed. A
    PHYRE video's task seed is shared by its template's other seeds' trials and by other
    templates, so its template and trial (red-ball placement) are mixed in too."""
    video_seed = int(row["seed"])
    if "trial" in row:
        video_seed = (video_seed * 100_003 + int(row["template_id"])) * 1_009 + int(row["trial"])
    return (video_seed * 1_000_003 + rollout_seed) % 2**63


def rollouts_identity(
    dit_id: str, reference_id: str, sample_steps: int, cond_frames: int, seed: int, resolution: int | None = None,
    precision: str = "fp32",
) -> Identity:
    """What makes a rollout set itself. The batch size does not enter: each video's noise is
    seeded on its own (`video_noise_seed`). `resolution`: the reference area-averaged to that
    side first (None: as stored, and not in the identity). `precision`: the networks' (fp32, the
    only one before it existed, is left out, so no earlier rollout set was renamed)."""
    settings = {"sample_steps": sample_steps, "cond_frames": cond_frames, "seed": seed}
    if resolution is not None:
        settings["resolution"] = resolution
    if precision != "fp32":
        settings["precision"] = precision
    return Identity("rollouts", settings, {"dit": dit_id, "reference": reference_id})


def dit_vae(meta: dict[str, Any], vae_path: str | Path | None) -> Path:
    """The VAE a DiT was trained on: `vae_path` if given (e.g. after `data_dir` moved), else the
    path its export recorded; either way it must be the VAE of the DiT's identity."""
    from phyray.models.export import export_id, export_path

    path = export_path(vae_path or meta["vae_checkpoint"])
    if meta.get("vae_id") and export_id(path) != meta["vae_id"]:
        raise ProductError(f"{path}: is VAE {export_id(path)}, but the DiT was trained on the latents of VAE {meta['vae_id']}")
    return path


def rollout_dataset(
    dit_path: str | Path,
    reference_dir: str | Path,
    out: str | Path,
    sample_steps: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    device: str | None = None,
    vae_path: str | Path | None = None,
    resolution: int | None = None,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Roll out every video of `reference_dir` with a trained DiT; returns the rollout manifest.

    Args:
        dit_path: a DiT run directory or its export/model.pt (it names its VAE and schedule).
        reference_dir: the dataset to continue (pixel shards with ground truth).
        out: the rollout dataset directory (a rerun finishes it; another product's is refused).
        sample_steps: DDIM steps; None = the DiT run's `diffusion.sample_steps`.
        batch_size: videos sampled together.
        seed: rollout seed, mixed with each video's own seed.
        device: torch device; None = CUDA if available, else CPU.
        vae_path: the DiT's VAE; None = where the DiT's export says it was.
        resolution: the DiT's side, when the reference is stored larger (e.g. a 128² benchmark
            suite for a DiT trained at 32²): its frames are area-averaged to it first.
        precision: what the VAE and DiT compute in (phyray.presets.ROLLOUT_PRECISIONS).

    Returns:
        The manifest (identity naming the model, reference and sampler).
    """
    import torch

    from phyray.models.diffusion import NoiseSchedule, check_precision, rollout
    from phyray.models.export import export_id, export_path, load_dit, load_vae

    check_precision(precision)  # before any work
    dit_file = export_path(dit_path)
    dit, meta = load_dit(dit_file)
    diffusion = meta["diffusion"]
    steps = sample_steps or diffusion["sample_steps"]
    c = diffusion["cond_frames"]
    reference = read_manifest(reference_dir)
    sources = shard_paths(reference_dir)
    identity = rollouts_identity(
        export_id(dit_file), identity_of(reference, reference_dir)["id"], steps, c, seed, resolution, precision,
    )

    def roll_out(missing: list[int]):
        torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = dit.to(torch_device)
        vae = load_vae(dit_vae(meta, vae_path)).to(torch_device)
        schedule = NoiseSchedule(diffusion["timesteps"], diffusion["beta_schedule"])
        for index in missing:
            table = read_shard(sources[index])
            rows = table.to_pylist()
            generated: list[np.ndarray] = []
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                frames = np.stack([decode_frames(r, resolution) for r in chunk])  # (B, T, H, W, 3)
                seeds = [video_noise_seed(r, seed) for r in chunk]
                generated += list(rollout(vae, model, schedule, frames[:, :c], frames.shape[1], steps, seeds,
                                          precision=precision))
            yield write_shard(_rollout_table(table.schema, rows, generated), Path(out) / sources[index].name)

    return write_product(
        Path(out), identity, [p.name for p in sources], [e["num_videos"] for e in reference["shards"]], roll_out,
        resolution=resolution or reference.get("resolution"), num_frames=reference.get("num_frames"), counts=reference.get("counts"),
        sources={"dit": str(dit_file.resolve()), "reference": str(Path(reference_dir).resolve())},
    )


def reconstructions_identity(vae_id: str, reference_id: str) -> Identity:
    """What makes a VAE's reconstructions of a reference set: the two inputs alone (the VAE
    encodes to its posterior mean, so there is no seed)."""
    return Identity("reconstructions", {"format_version": 1}, {"vae": vae_id, "reference": reference_id})


def reconstruct_dataset(
    vae_path: str | Path, reference_dir: str | Path, out: str | Path, batch_size: int = 16, device: str | None = None
) -> dict[str, Any]:
    """The VAE's reconstruction decode(encode(x)) of every video of `reference_dir`, as a
    rollout-like dataset (same rows, `frames` replaced): scored like rollouts, it is the floor
    the VAE sets under any DiT trained on its latents (`vae_floor_*` in the physics report).
    Returns the manifest."""
    import torch

    from phyray.models.export import export_id, export_path, load_vae
    from phyray.models.vae import frames_to_tensor, tensor_to_frames

    vae_file = export_path(vae_path)
    reference = read_manifest(reference_dir)
    sources = shard_paths(reference_dir)
    identity = reconstructions_identity(export_id(vae_file), identity_of(reference, reference_dir)["id"])

    def reconstruct(missing: list[int]):
        torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        vae = load_vae(vae_file).to(torch_device).eval()
        for index in missing:
            table = read_shard(sources[index])
            rows = table.to_pylist()
            decoded: list[np.ndarray] = []
            with torch.no_grad():
                for start in range(0, len(rows), batch_size):
                    frames = np.stack([decode_frames(r) for r in rows[start : start + batch_size]])  # (B, T, H, W, 3)
                    pixels = frames_to_tensor(frames, torch_device)
                    decoded += list(tensor_to_frames(vae.decode(vae.encode(pixels), frames.shape[1])))
            yield write_shard(_rollout_table(table.schema, rows, decoded), Path(out) / sources[index].name)

    return write_product(
        Path(out), identity, [p.name for p in sources], [e["num_videos"] for e in reference["shards"]], reconstruct,
        resolution=reference.get("resolution"), num_frames=reference.get("num_frames"), counts=reference.get("counts"),
        sources={"vae": str(vae_file.resolve()), "reference": str(Path(reference_dir).resolve())},
    )


def _rollout_table(schema, rows: list[dict[str, Any]], generated: list[np.ndarray]):
    """Reference rows with their frames replaced by the generated videos, in the reference's schema."""
    import pyarrow as pa

    columns: dict[str, list] = {name: [row[name] for row in rows] for name in schema.names if name not in FRAME_COLUMNS}
    columns["frames"] = [encode_frames(video) for video in generated]
    columns["frames_encoding"] = [PLANAR_RGB] * len(rows)
    columns["frame_shape"] = [list(video.shape) for video in generated]
    return pa.Table.from_pydict(columns, schema=schema.remove_metadata())
