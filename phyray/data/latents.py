"""Latent caching: encode a pixel shard set once with a trained VAE; DiT training reads these.

One latent shard per pixel shard (same index), written atomically by an actor pool (the VAE is
loaded once per actor, one GPU per actor when the cluster has GPUs). Each row holds the video's
latent and its conditioning latent (the first c frames zero-padded, see
`phyray.models.diffusion.encode_condition`), so training never touches the VAE. The manifest
records the VAE export (path and sha256) and c, and a rerun with another VAE or c is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from phyray.config import ConfigError
from phyray.data.shards import (
    MANIFEST,
    read_manifest,
    read_shard,
    sha256_file,
    shard_paths,
    shard_rows,
    write_manifest,
    write_shard,
)

LATENT_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("latent", pa.binary()),  # float32 (C, T_lat, h, w), C order
        ("cond", pa.binary()),  # float32, same shape: conditioning latent, zero after its frames
        ("latent_shape", pa.list_(pa.int32(), 4)),
    ]
)


def decode_latents(batch: dict[str, Any]) -> dict[str, np.ndarray]:
    """Ray Data batch of latent rows -> {"latent", "cond": (B, C, T, h, w) float32}."""
    shape = tuple(batch["latent_shape"][0])
    latent = np.stack([np.frombuffer(b, dtype=np.float32).reshape(shape) for b in batch["latent"]])
    cond = np.stack([np.frombuffer(b, dtype=np.float32).reshape(shape) for b in batch["cond"]])
    return {"latent": latent, "cond": cond}


class ShardEncoder:
    """Ray Data actor: encodes whole pixel shards into latent shards with one loaded VAE."""

    def __init__(self, vae_path: str, cond_frames: int, out: str, batch_size: int = 8):
        import torch

        from phyray.train.checkpoint import load_vae

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.vae = load_vae(vae_path).to(self.device)
        self.cond_frames = cond_frames
        self.out = Path(out)
        self.batch_size = batch_size

    def encode_shard(self, source: Path) -> pa.Table:
        import torch

        from phyray.data.shards import decode_frames
        from phyray.models.diffusion import encode_condition
        from phyray.models.vae import frames_to_tensor

        rows = read_shard(source, ["video_id", "frames", "frames_encoding", "frame_shape"]).to_pylist()
        columns: dict[str, list] = {name: [] for name in LATENT_SCHEMA.names}
        with torch.no_grad():
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                pixels = frames_to_tensor(np.stack([decode_frames(r) for r in chunk]), device=self.device)
                latent = self.vae.encode(pixels)  # (B, C, T_lat, h, w), posterior mean
                cond, _ = encode_condition(self.vae, pixels[:, :, : self.cond_frames], latent.shape[2])
                for row, z, zc in zip(chunk, latent.float().cpu().numpy(), cond.float().cpu().numpy()):
                    columns["video_id"].append(row["video_id"])
                    columns["latent"].append(np.ascontiguousarray(z).tobytes())
                    columns["cond"].append(np.ascontiguousarray(zc).tobytes())
                    columns["latent_shape"].append(list(z.shape))
        return pa.Table.from_pydict(columns, schema=LATENT_SCHEMA)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        entries = []
        for source in batch["source"]:
            table = self.encode_shard(Path(source))
            entries.append(json.dumps(write_shard(table, self.out / Path(source).name)))
        return {"entry": entries}


def encode_dataset(
    shards: str | Path, vae_path: str | Path, out: str | Path, cond_frames: int, num_workers: int | None = None
) -> dict[str, Any]:
    """Encode a pixel dataset into latent shards (resumable); returns the latent manifest."""
    import ray

    from phyray.runtime import cluster_cpus, init_ray, quiet_ray_data
    from phyray.train.checkpoint import export_path

    source_manifest = read_manifest(shards)
    sources = shard_paths(shards)
    vae_file = export_path(vae_path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = {
        "source": str(Path(shards).resolve()),
        "source_fingerprint": source_manifest.get("fingerprint"),
        "vae_checkpoint": str(vae_file.resolve()),
        "vae_sha256": sha256_file(vae_file),
        "cond_frames": cond_frames,
    }
    if (out / MANIFEST).is_file():
        stored = read_manifest(out)["fingerprint"]
        if stored != fingerprint:
            raise ConfigError(f"{out}: holds latents of another VAE, dataset or cond_frames; choose another directory")
    expected = {p.name: entry["num_videos"] for p, entry in zip(sources, source_manifest["shards"])}
    missing = [str(p) for p in sources if shard_rows(out / p.name) != expected[p.name]]
    if missing:
        init_ray(num_workers)
        quiet_ray_data()
        gpus = int(ray.cluster_resources().get("GPU", 0))
        actors = max(1, min(num_workers or (gpus or cluster_cpus()), len(missing)))
        encoder_args = {"vae_path": str(vae_file), "cond_frames": cond_frames, "out": str(out)}
        ds = ray.data.from_items([{"source": s} for s in missing], override_num_blocks=len(missing))
        ds = ds.map_batches(
            ShardEncoder,
            fn_constructor_kwargs=encoder_args,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=1 if gpus else 0,
            num_cpus=0 if gpus else 1,
        )
        for _ in ds.iter_rows():
            pass
    return write_manifest(out, {p.name: expected[p.name] for p in sources}, kind="latents", fingerprint=fingerprint)
