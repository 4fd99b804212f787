"""A dataset at another resolution: every stage after it reads plain RGB at the study's side.

PHYRE scenes are simulated once at 256² as palette indices (`phyray.data.combinatorial`); a
study trains at 64² or 32². `resample_dataset` writes the same rows with their frames decoded
at `resolution` (`decode_frames(row, resolution)`: area averaging, as the ball scenes'
evaluation brings a reference to a rollout's side) and stored "zstd-planar-rgb". Every other
column is kept as it is (template_id, seed, trial, the palette, the ground-truth `objects`), so
the VAE, the latents, the rollouts and the reports need no resizing of their own, and a
rollout of a resampled set is compared with its reference at the side the model works at.

The product's identity is the source dataset's plus the resolution: another resolution makes
another product beside it; the same one is reused. One Ray task per shard; the bytes depend
only on the source rows, whatever the worker count.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from phyray.artifacts import Identity, identity_of, write_product
from phyray.data.shards import (
    PLANAR_RGB,
    decode_frames,
    encode_frames,
    read_manifest,
    read_shard,
    shard_paths,
    write_shard,
)

RESAMPLE_FORMAT_VERSION = 1
# Columns with one entry per frame, cut with the frames when `num_frames` shortens the videos.
PER_FRAME_COLUMNS = ("objects", "positions", "velocities")


def resample_identity(dataset_id: str, resolution: int, num_frames: int | None) -> Identity:
    settings = {"format_version": RESAMPLE_FORMAT_VERSION, "resolution": resolution, "num_frames": num_frames}
    return Identity("resampled", settings, {"dataset": dataset_id})


def resample_table(table: pa.Table, resolution: int, num_frames: int | None = None) -> pa.Table:
    """The rows of a shard with planar RGB frames at `resolution` (and only the first
    `num_frames` frames, if given); other columns unchanged."""
    rows = table.to_pylist()
    frames = [decode_frames(row, resolution)[:num_frames] for row in rows]  # each (T, r, r, 3) uint8
    columns = {name: table.column(name) for name in table.column_names}
    for name in PER_FRAME_COLUMNS:
        if num_frames is not None and name in columns:
            columns[name] = pa.array([row[name][:num_frames] for row in rows], table.schema.field(name).type)
    columns["frames"] = pa.array([encode_frames(f) for f in frames], pa.binary())
    columns["frames_encoding"] = pa.array([PLANAR_RGB] * len(rows), pa.string())
    columns["frame_shape"] = pa.array([list(f.shape) for f in frames], table.schema.field("frame_shape").type)
    return pa.table(columns, schema=table.schema.remove_metadata())


def resample_shard(row: dict[str, Any]) -> dict[str, Any]:
    """Ray task: one source shard -> one resampled shard (same file name)."""
    task = json.loads(row["task"])
    tick = time.perf_counter()
    table = resample_table(read_shard(Path(task["source"])), task["resolution"], task["num_frames"])
    entry = write_shard(table, Path(task["out"]) / Path(task["source"]).name)
    return {"entry": json.dumps(entry), "timings": json.dumps({"resample": time.perf_counter() - tick})}


def resample_dataset(
    source: str | Path, resolution: int, out: str | Path, num_frames: int | None = None,
    num_workers: int | None = None, log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write (or finish, or verify) `source` at `resolution`, keeping the first `num_frames`
    frames of each video (None: all); returns the manifest. The side must divide the source's
    (area averaging)."""
    from phyray.data.generate import RayShards

    manifest = read_manifest(source)
    if manifest.get("resolution") and manifest["resolution"] % resolution:
        raise ValueError(f"resolution: {resolution} does not divide {source}'s {manifest['resolution']} (area averaging)")
    sources = shard_paths(source)
    source_frames = read_shard(sources[0], ["frame_shape"]).column(0)[0].as_py()[0]
    if num_frames is not None and not 1 <= num_frames <= source_frames:
        raise ValueError(f"num_frames: {num_frames} is not in 1-{source_frames}, the frames of {source}'s videos")
    sizes = [e["num_videos"] for e in manifest["shards"]]
    identity = resample_identity(identity_of(manifest, source)["id"], resolution, num_frames)
    runner = RayShards(
        lambda missing: [
            {"source": str(sources[i]), "out": str(out), "resolution": resolution, "num_frames": num_frames}
            for i in missing
        ],
        resample_shard, sizes, num_workers, progress=False, desc="resample",
    )
    kept = {k: manifest[k] for k in ("scenario", "counts") if k in manifest}
    return write_product(
        Path(out), identity, [p.name for p in sources], sizes, runner, log=log, **kept,
        resolution=resolution, num_frames=num_frames or source_frames, frames_encoding=PLANAR_RGB,
        sources={"dataset": str(Path(source).resolve())},
    )
