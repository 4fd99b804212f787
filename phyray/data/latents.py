"""Latent caching: encode a pixel shard set once with a trained VAE; DiT training reads these.

One latent shard per pixel shard (same file name), written through
`phyray.artifacts.write_product` by an actor pool (the VAE is loaded once per actor, one GPU per
actor when the cluster has GPUs). Each row holds the video's latent and its conditioning latent
(the first c frames zero-padded, see `phyray.models.diffusion.encode_condition`), so training
never touches the VAE. The latents' identity is c and the latent format plus the identities of
the dataset and the VAE (`phyray.models.export.export_id`); the manifest also records, for
people and for the DiT export, where the dataset and VAE were (`sources`), and the frame count
and resolution of the videos.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from phyray.artifacts import Identity, identity_of, write_product
from phyray.data.shards import (
    decode_frames,
    frame_columns,
    read_manifest,
    read_shard,
    shard_paths,
    write_shard,
)

# torch and the models are imported inside the encoder actor and the encode job: the training
# driver reads `decode_latents` from here without loading them.

LATENT_FORMAT_VERSION = 1
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

    def __init__(self, vae_path: str, cond_frames: int, batch_size: int = 8):
        import torch

        from phyray.models.export import load_vae

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.vae = load_vae(vae_path).to(self.device)
        self.cond_frames = cond_frames
        self.batch_size = batch_size

    def encode_shard(self, source: Path) -> pa.Table:
        import torch

        from phyray.models.diffusion import encode_condition
        from phyray.models.vae import frames_to_tensor

        rows = read_shard(source, ["video_id", *frame_columns(source)]).to_pylist()
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

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        entries, timings = [], []
        for task_json in batch["task"]:
            task = json.loads(task_json)
            tick = time.perf_counter()
            table = self.encode_shard(Path(task["source"]))
            entries.append(json.dumps(write_shard(table, Path(task["out"]) / Path(task["source"]).name)))
            timings.append(json.dumps({"encode": time.perf_counter() - tick}))
        return {"entry": entries, "timings": timings}


def latents_identity(dataset_id: str, vae_id: str, cond_frames: int) -> Identity:
    """What makes a latent set itself: c and the format, on a dataset, with a VAE."""
    return Identity(
        "latents", {"format_version": LATENT_FORMAT_VERSION, "cond_frames": cond_frames},
        {"dataset": dataset_id, "vae": vae_id},
    )


def encode_dataset(
    shards: str | Path, vae_path: str | Path, out: str | Path, cond_frames: int, num_workers: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Encode a pixel dataset into latent shards (resumable, verified); returns the manifest."""
    from phyray.data.generate import RayShards
    from phyray.models.export import export_id, export_path

    source_manifest = read_manifest(shards)
    sources = shard_paths(shards)
    vae_file = export_path(vae_path)
    identity = latents_identity(identity_of(source_manifest, shards)["id"], export_id(vae_file), cond_frames)
    sizes = [e["num_videos"] for e in source_manifest["shards"]]
    encoders = RayShards(
        lambda missing: [{"source": str(sources[i]), "out": str(out)} for i in missing], ShardEncoder, sizes,
        num_workers, progress=False, desc="latents",
        constructor_kwargs={"vae_path": str(vae_file), "cond_frames": cond_frames}, use_gpus=True,
    )
    return write_product(
        Path(out), identity, [p.name for p in sources], sizes, encoders, log=log,
        num_frames=source_manifest.get("num_frames"),
        resolution=source_manifest.get("resolution"),
        sources={"dataset": str(Path(shards).resolve()), "vae": str(vae_file.resolve())},
    )
