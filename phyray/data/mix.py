"""A dataset made of other datasets, their rows interleaved: one training set from several
scenarios (a VAE shared by a study's scenarios learns from an equal share of each:
`StudyVAE.scope`).

Rows are taken round-robin (row 0 of each source, then row 1, ...; a shorter source drops out
when it runs out), so every shard, and every batch a shuffle buffer draws from it, holds every
source; a training loop that streams shards in order then never spends a stretch of steps on
one scenario. Each row's `video_id` gets its source's label as a prefix ("probe-color_shape/..."),
as sources of one kind number their videos alike. The product is named by its sources'
identities and its shard size: the same sources give the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from phyray.artifacts import Identity, write_product
from phyray.data.shards import (
    dataset_id,
    read_manifest,
    read_shard,
    shard_name,
    shard_paths,
    write_shard,
)


def mix_identity(sources: dict[str, str | Path], shard_size: int) -> Identity:
    """What a mix is: its sources' identities (by label, in order) and its shard size."""
    return Identity("dataset", {"mix": "round_robin", "labels": list(sources), "shard_size": shard_size},
                    {label: dataset_id(path) for label, path in sources.items()})


def round_robin(counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(source, row) of each mixed row, row 0 of every source first: two (sum(counts),) arrays."""
    source = np.concatenate([np.full(n, s) for s, n in enumerate(counts)]) if counts else np.zeros(0, int)
    row = np.concatenate([np.arange(n) for n in counts]) if counts else np.zeros(0, int)
    order = np.lexsort((source, row))  # by row, then by source
    return source[order], row[order]


def _rows(paths: list[Path], sizes: list[int], lo: int, hi: int) -> pa.Table:
    """Rows [lo, hi) of a dataset whose shards hold `sizes` rows each."""
    starts = np.concatenate([[0], np.cumsum(sizes)])
    parts = []
    for path, start, stop in zip(paths, starts[:-1], starts[1:]):
        if stop > lo and start < hi:
            parts.append(read_shard(path).slice(max(lo - start, 0), min(hi, stop) - max(lo, start)))
    return pa.concat_tables(parts)


def mix_datasets(
    sources: dict[str, str | Path], out: str | Path, shard_size: int = 1000, log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Make (or reuse, or finish) the round-robin mix of `sources` ({label: dataset}) in `out`;
    returns its manifest. The sources must share one schema (one kind of row)."""
    if not sources:
        raise ValueError("mix_datasets: no sources")
    out = Path(out)
    manifests = {label: read_manifest(path) for label, path in sources.items()}
    paths = {label: shard_paths(path) for label, path in sources.items()}
    sizes = {label: [entry["num_videos"] for entry in manifests[label]["shards"]] for label in sources}
    labels = list(sources)
    first = manifests[labels[0]]
    for label in labels[1:]:
        for key in ("resolution", "num_frames", "frames_encoding"):
            if manifests[label].get(key) != first.get(key):
                raise ValueError(f"{sources[label]}: {key} {manifests[label].get(key)} differs from "
                                 f"{sources[labels[0]]}'s {first.get(key)}; a mix holds one kind of video")
    source, row = round_robin([sum(sizes[label]) for label in labels])
    bounds = list(range(0, len(source), shard_size)) + [len(source)]
    shard_sizes = [b - a for a, b in zip(bounds[:-1], bounds[1:])]

    def run_shards(missing: list[int]) -> Iterator[dict[str, Any]]:
        for index in missing:
            shard_source, shard_row = source[bounds[index]:bounds[index + 1]], row[bounds[index]:bounds[index + 1]]
            # Each source's rows in this shard are a contiguous range: read them grouped by source,
            # then take them back into round-robin order (a row's place in its source's piece,
            # after the pieces before it).
            first, offset = np.zeros(len(labels), np.int64), np.zeros(len(labels), np.int64)
            pieces = []
            for s in np.unique(shard_source):
                rows = shard_row[shard_source == s]
                first[s], offset[s] = rows[0], sum(len(piece) for piece in pieces)
                table = _rows(paths[labels[s]], sizes[labels[s]], int(rows[0]), int(rows[-1]) + 1)
                ids = pc.binary_join_element_wise(labels[s], table["video_id"], "/")
                pieces.append(table.set_column(table.schema.get_field_index("video_id"), "video_id", ids))
            within = offset[shard_source] + shard_row - first[shard_source]
            yield write_shard(pa.concat_tables(pieces).take(pa.array(within)), out / shard_name(index))

    return write_product(
        out, mix_identity(sources, shard_size), [shard_name(i) for i in range(len(shard_sizes))], shard_sizes,
        run_shards, log=log,
        scenario="mix",
        resolution=first.get("resolution"),
        num_frames=first.get("num_frames"),
        frames_encoding=first.get("frames_encoding"),
        counts={label: sum(sizes[label]) for label in labels},
    )
