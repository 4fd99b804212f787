"""The rollout stage: a trained DiT continues every video of a reference set from its first c frames.

    manifest = rollout_dataset("runs/train/dit-run", "data/um/eval_id", "rollouts/eval_id")
    rows = evaluate_physics("rollouts/eval_id", "data/um/eval_id")

The output is a dataset in the shard schema: each row is its reference row (video_id, states,
params, ...) with `frames` replaced by the generated video, one rollout shard per reference shard
(same file name), written atomically, so `phyray eval physics` joins them by video_id and a rerun
after a kill only rolls out the missing shards. Each video's starting noise is seeded by its own
`seed` and the rollout seed, so a video's rollout does not depend on the batch it lands in.
Plain torch: it runs wherever it is called (a study runs it as a Ray task on the trial's
resources).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from phyray.config import ConfigError
from phyray.data.shards import (
    MANIFEST,
    PLANAR_RGB,
    SCHEMA,
    decode_frames,
    encode_frames,
    read_manifest,
    read_shard,
    sha256_file,
    shard_paths,
    shard_rows,
    write_manifest,
    write_shard,
)

# Reference columns copied into every rollout row (all but the frames).
STATE_COLUMNS = [name for name in SCHEMA.names if name not in ("frames", "frames_encoding", "frame_shape")]


def video_noise_seed(video_seed: int, rollout_seed: int) -> int:
    """A video's sampling seed: its dataset seed mixed with the rollout seed (fits in int64)."""
    return (int(video_seed) * 1_000_003 + rollout_seed) % 2**63


def rollout_dataset(
    dit_path: str | Path,
    reference_dir: str | Path,
    out: str | Path,
    sample_steps: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    device: str | None = None,
) -> dict[str, Any]:
    """Roll out every video of `reference_dir` with a trained DiT; returns the rollout manifest.

    Args:
        dit_path: a DiT run directory or its export/model.pt (it names its VAE and schedule).
        reference_dir: the dataset to continue (pixel shards with ground truth).
        out: the rollout dataset directory (a rerun finishes it; another model's is refused).
        sample_steps: DDIM steps; None = the DiT run's `diffusion.sample_steps`.
        batch_size: videos sampled together.
        seed: rollout seed, mixed with each video's own seed.
        device: torch device; None = CUDA if available, else CPU.

    Returns:
        The manifest (kind "rollouts", fingerprint naming the model, reference and sampler).
    """
    import torch

    from phyray.models.diffusion import NoiseSchedule, rollout
    from phyray.train.checkpoint import export_path, load_dit, load_vae

    dit_file = export_path(dit_path)
    dit, meta = load_dit(dit_file)
    diffusion = meta["diffusion"]
    steps = sample_steps or diffusion["sample_steps"]
    reference = read_manifest(reference_dir)
    sources = shard_paths(reference_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = {
        "dit_checkpoint": str(dit_file.resolve()),
        "dit_sha256": sha256_file(dit_file),
        "reference": str(Path(reference_dir).resolve()),
        "reference_fingerprint": reference.get("fingerprint"),
        "sample_steps": steps,
        "cond_frames": diffusion["cond_frames"],
        "seed": seed,
    }
    if (out / MANIFEST).is_file() and read_manifest(out).get("fingerprint") != fingerprint:
        raise ConfigError(f"{out}: holds rollouts of another model, reference set or sampler; choose another directory")

    expected = {entry["file"]: entry["num_videos"] for entry in reference["shards"]}
    missing = [p for p in sources if shard_rows(out / p.name) != expected[p.name]]
    if missing:
        torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dit = dit.to(torch_device)
        vae = load_vae(meta["vae_checkpoint"]).to(torch_device)
        schedule = NoiseSchedule(diffusion["timesteps"], diffusion["beta_schedule"])
        c = diffusion["cond_frames"]
        for source in missing:
            rows = read_shard(source).to_pylist()
            generated: list[np.ndarray] = []
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                frames = np.stack([decode_frames(r) for r in chunk])  # (B, T, H, W, 3)
                seeds = [video_noise_seed(r["seed"], seed) for r in chunk]
                generated += list(rollout(vae, dit, schedule, frames[:, :c], frames.shape[1], steps, seeds))
            write_shard(_rollout_table(rows, generated), out / source.name)

    return write_manifest(
        out, {p.name: expected[p.name] for p in sources}, kind="rollouts", fingerprint=fingerprint,
        resolution=reference.get("resolution"), counts=reference.get("counts"),
    )


def _rollout_table(rows: list[dict[str, Any]], generated: list[np.ndarray]):
    """Reference rows with their frames replaced by the rollouts, in the shard schema."""
    import pyarrow as pa

    columns: dict[str, list] = {name: [row[name] for row in rows] for name in STATE_COLUMNS}
    columns["frames"] = [encode_frames(video) for video in generated]
    columns["frames_encoding"] = [PLANAR_RGB] * len(rows)
    columns["frame_shape"] = [list(video.shape) for video in generated]
    return pa.Table.from_pydict(columns, schema=SCHEMA)
