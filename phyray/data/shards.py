"""The one shard format for everything that is a video: generated data, latents' sources, rollouts.

A dataset directory holds Parquet shards `shard-00000.parquet`, ... and `manifest.json`
(config, counts, per-shard sha256, phyray version). One row per video; see `SCHEMA` and the
README's "Data format" section. Frames are stored losslessly as a zstd-compressed uint8 array
whose layout `frames_encoding` names, so pyarrow + numpy alone can decode them:

- "zstd-planar-rgb": zstd of the (T, 3, H, W) uint8 array (planar compresses ~1.5x better
  than interleaved RGB on these mostly-white frames); `frame_shape` is [T, H, W, 3].
- "zstd-palette8": zstd of (T, H, W) uint8 colour indices; the `palette` column holds the
  (P, 3) uint8 colours (PHYRE scenes).

Writes are atomic: a shard is written to a temporary name and renamed, so a shard file is
either complete or absent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from phyray.artifacts import (
    MANIFEST,
    ProductError,
    identity_of,
    read_json,
    shard_entry,
    temp_path,
    verify_shard,
)

FORMAT_VERSION = 1
PLANAR_RGB = "zstd-planar-rgb"
PALETTE8 = "zstd-palette8"
_CODEC = pa.Codec("zstd", compression_level=1)
FRAME_COLUMNS = ["frames", "frames_encoding", "frame_shape"]

_VEC2 = pa.list_(pa.float32(), 2)
SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("scenario", pa.string()),
        ("split", pa.string()),
        ("ood_level", pa.string()),
        ("seed", pa.int64()),
        ("params", pa.string()),  # JSON: sampled parameters and initial placement
        ("frames", pa.binary()),
        ("frames_encoding", pa.string()),
        ("frame_shape", pa.list_(pa.int32(), 4)),  # [T, H, W, 3]
        ("positions", pa.list_(pa.list_(_VEC2))),  # [T][K][2] world units, y up
        ("velocities", pa.list_(pa.list_(_VEC2))),  # [T][K][2] world units / s
        ("radii", pa.list_(pa.float32())),  # [K]
        ("colors", pa.list_(pa.list_(pa.uint8(), 3))),  # [K][3]
    ]
)
# Attribute probes add each object's shape (a name in `phyray.config.SHAPES`); `radii` is then
# a disc's or ring's radius, a square's half-side. Ball datasets keep SCHEMA, byte for byte.
PROBE_SCHEMA = SCHEMA.append(pa.field("shapes", pa.list_(pa.string())))


class ShardError(ProductError):
    """A missing, corrupt or mismatched shard or dataset; the message names the file."""


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def ragged(values: pa.Array, lengths) -> pa.ListArray:
    """A list array whose i-th list holds the next `lengths[i]` items of `values`."""
    return pa.ListArray.from_arrays(pa.array(np.cumsum(np.r_[0, lengths], dtype=np.int32)), values)


def per_frame_column(videos: list[np.ndarray], fixed: bool) -> pa.Array:
    """A column of one [T][K][F] float32 list per video from each video's (T, K, F) array (K may
    differ between videos), each object's F values a fixed-size list (`fixed`: positions and
    velocities, F = 2) or a list (PHYRE's objects, F = 15). Built as offsets over one flat
    buffer: through Python lists, positions and velocities cost 0.25 ms a two-ball video and
    PHYRE's objects 1-2 ms, against 0.003 ms (docs/performance.md, "2026-12-06 (5)")."""
    values = pa.array(np.concatenate([video.reshape(-1) for video in videos]).astype(np.float32))
    features = videos[0].shape[2]
    per_object = (pa.FixedSizeListArray.from_arrays(values, features) if fixed
                  else ragged(values, np.full(len(values) // features, features)))
    per_frame = ragged(per_object, np.concatenate([np.full(len(video), video.shape[1]) for video in videos]))
    return ragged(per_frame, [len(video) for video in videos])


# ---------------------------------------------------------------------------------------------
# Frame codecs
# ---------------------------------------------------------------------------------------------


def encode_frames(frames: np.ndarray) -> bytes:
    """(T, H, W, 3) uint8 -> "zstd-planar-rgb" bytes (free of copies for planar-backed views)."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    planar = np.ascontiguousarray(frames.transpose(0, 3, 1, 2))  # (T, 3, H, W)
    return _CODEC.compress(planar, asbytes=True)


def encode_palette_frames(indices: np.ndarray) -> bytes:
    """(T, H, W) uint8 colour indices -> "zstd-palette8" bytes."""
    if indices.dtype != np.uint8 or indices.ndim != 3:
        raise ValueError(f"indices must be (T, H, W) uint8, got {indices.shape} {indices.dtype}")
    return _CODEC.compress(np.ascontiguousarray(indices), asbytes=True)


def area_downsample(frames: np.ndarray, resolution: int) -> np.ndarray:
    """Area-average (T, H, W, C) uint8 frames to (T, r, r, C); H must be a multiple of r."""
    t, h, w, c = frames.shape
    if h % resolution or w % resolution:
        raise ValueError(f"cannot area-downsample {h}x{w} to {resolution}: not a divisor")
    fh, fw = h // resolution, w // resolution
    blocks = frames.reshape(t, resolution, fh, resolution, fw, c).astype(np.float32)
    return np.rint(blocks.mean(axis=(2, 4))).astype(np.uint8)  # (T, r, r, C)


def decode_frames(row: dict[str, Any], resolution: int | None = None) -> np.ndarray:
    """A row's frames as a (T, H, W, 3) uint8 array, optionally area-averaged to `resolution`.

    Planar frames come back as a read-only view of the Arrow buffer they are decompressed into:
    Arrow's memory pool reuses freed pages, whereas copying into a fresh multi-MB bytes object
    page-faults it in every time (1.6 vs 5-13 ms per 256² video when several are alive).
    """
    t, h, w, c = row["frame_shape"]
    encoding = row["frames_encoding"]
    if encoding == PLANAR_RGB:
        raw = _CODEC.decompress(row["frames"], decompressed_size=t * h * w * c, asbytes=False)
        frames = np.frombuffer(raw, dtype=np.uint8).reshape(t, c, h, w).transpose(0, 2, 3, 1)
    elif encoding == PALETTE8:
        raw = _CODEC.decompress(row["frames"], decompressed_size=t * h * w, asbytes=False)
        # (P, 3); a Ray Data batch hands each palette over as an object array of rows
        palette = np.asarray([np.asarray(colour, dtype=np.uint8) for colour in row["palette"]])
        frames = palette[np.frombuffer(raw, dtype=np.uint8).reshape(t, h, w)]
    else:
        raise ShardError(f"video {row.get('video_id')}: unknown frames_encoding {encoding!r}")
    if resolution is not None and resolution != h:
        frames = area_downsample(frames, resolution)
    return frames


def row_states(row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A row's ground truth as arrays: positions, velocities (T, K, 2) and radii (K,)."""
    return (
        np.asarray(row["positions"], dtype=np.float32),
        np.asarray(row["velocities"], dtype=np.float32),
        np.asarray(row["radii"], dtype=np.float32),
    )


# ---------------------------------------------------------------------------------------------
# Writing and reading shards
# ---------------------------------------------------------------------------------------------


def write_shard(table: pa.Table, path: Path) -> dict[str, Any]:
    """Write a shard atomically; returns its manifest entry (file, num_videos, sha256, bytes).

    The output depends only on the table (no timestamps), so the same rows
    give the same bytes.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        pq.write_table(table, tmp, compression="zstd", use_dictionary=False, write_statistics=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return shard_entry(path, table.num_rows)


def read_shard(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read one shard, turning a missing or corrupt file into a ShardError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"{path}: shard not found")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise ShardError(f"{path}: corrupt shard ({err})") from None


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """A finished product's manifest, or a ShardError naming the directory."""
    directory = Path(directory)
    if not (directory / MANIFEST).is_file():
        raise ShardError(f"{directory}: no {MANIFEST}; not a phyray dataset, or its generation has not finished")
    try:
        return read_json(directory / MANIFEST)
    except ProductError as err:
        raise ShardError(str(err)) from None


def dataset_id(directory: str | Path) -> str:
    """A finished product's identity id (what a product made from it names as an input)."""
    return identity_of(read_manifest(directory), directory)["id"]


def shard_paths(directory: str | Path) -> list[Path]:
    """The product's shard files in manifest order, each checked against its manifest checksum
    (once per process and file version; see `phyray.artifacts.verify_shard`)."""
    directory = Path(directory)
    paths = []
    for entry in read_manifest(directory)["shards"]:
        path = directory / entry["file"]
        try:
            verify_shard(path, entry["sha256"])
        except ProductError as err:
            raise ShardError(str(err)) from None
        paths.append(path)
    return paths


def verify_dataset(directory: str | Path) -> None:
    """Check every shard against its manifest checksum (ShardError naming the first bad one)."""
    shard_paths(directory)


def frame_columns(path: str | Path) -> list[str]:
    """The columns `decode_frames` needs from this shard: the frames, their encoding and shape,
    and the palette where the shard has one (PHYRE's "zstd-palette8" frames cannot be decoded
    without it)."""
    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError) as err:
        raise ShardError(f"{path}: corrupt shard ({err})") from None
    return [*FRAME_COLUMNS, *(["palette"] if "palette" in names else [])]


def iter_rows(directory: str | Path, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Rows of a dataset as Python dicts, shard by shard (no Ray needed)."""
    for path in shard_paths(directory):
        yield from read_shard(path, columns).to_pylist()


def iter_batches(directory: str | Path, columns: list[str] | None, size: int) -> Iterator[list[dict[str, Any]]]:
    """Rows of a dataset in lists of `size` (the last may be shorter), shard by shard."""
    batch: list[dict[str, Any]] = []
    for row in iter_rows(directory, columns):
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def open_shards(directory: str | Path, columns: list[str] | None = None):
    """The dataset as a Ray Dataset (streaming; nothing is materialised)."""
    import ray.data

    ds = ray.data.read_parquet([str(p) for p in shard_paths(directory)])
    return ds.select_columns(columns) if columns else ds
