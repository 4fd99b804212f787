"""A dataset mixed from others (phyray/data/mix.py): rows interleaved round-robin, ids kept apart,
named by its sources, the same bytes every time. No Ray: sources are written in this process."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from phyray.artifacts import Identity, write_product
from phyray.data.mix import mix_datasets, round_robin
from phyray.data.shards import iter_rows, read_manifest, shard_name, write_shard


def _source(directory, name: str, sizes: list[int], resolution: int = 32):
    """A dataset of rows {video_id: "<name><i>", value: i} in shards of `sizes` rows."""
    starts = np.concatenate([[0], np.cumsum(sizes)])

    def run(missing):
        for s in missing:
            rows = range(starts[s], starts[s + 1])
            table = pa.table({"video_id": [f"{name}{i}" for i in rows], "value": list(rows)})
            yield write_shard(table, directory / shard_name(s))

    write_product(directory, Identity("dataset", {"name": name, "sizes": sizes}), [shard_name(s) for s in range(len(sizes))],
                  sizes, run, resolution=resolution, num_frames=16, frames_encoding="zstd-planar-rgb")
    return directory


def test_round_robin_takes_row_k_of_every_source_before_row_k_plus_one():
    source, row = round_robin([3, 1, 2])
    assert source.tolist() == [0, 1, 2, 0, 2, 0] and row.tolist() == [0, 0, 0, 1, 1, 2]


def test_a_mix_interleaves_its_sources_rows_and_names_each_by_its_source(tmp_path):
    a = _source(tmp_path / "a", "a", [2, 2, 1])
    b = _source(tmp_path / "b", "b", [3])
    manifest = mix_datasets({"pair-a": a, "pair-b": b}, tmp_path / "mix", shard_size=3, log=lambda _: None)
    rows = list(iter_rows(tmp_path / "mix"))
    assert [r["video_id"] for r in rows] == ["pair-a/a0", "pair-b/b0", "pair-a/a1", "pair-b/b1", "pair-a/a2",
                                            "pair-b/b2", "pair-a/a3", "pair-a/a4"]
    assert [r["value"] for r in rows] == [0, 0, 1, 1, 2, 2, 3, 4]  # each row whole
    assert [e["num_videos"] for e in manifest["shards"]] == [3, 3, 2]
    assert manifest["counts"] == {"pair-a": 5, "pair-b": 3} and manifest["resolution"] == 32
    assert manifest["identity"]["inputs"] == {"pair-a": read_manifest(a)["identity"]["id"],
                                              "pair-b": read_manifest(b)["identity"]["id"]}


def test_a_mix_is_the_same_bytes_every_time_and_named_by_its_sources(tmp_path):
    a, b = _source(tmp_path / "a", "a", [4]), _source(tmp_path / "b", "b", [4])
    first = mix_datasets({"a": a, "b": b}, tmp_path / "one", shard_size=3, log=lambda _: None)
    again = mix_datasets({"a": a, "b": b}, tmp_path / "two", shard_size=3, log=lambda _: None)
    assert [e["sha256"] for e in first["shards"]] == [e["sha256"] for e in again["shards"]]
    assert mix_datasets({"a": a, "b": b}, tmp_path / "one", shard_size=3, log=lambda _: None) == first  # reused
    other = _source(tmp_path / "c", "c", [4])
    swapped = mix_datasets({"a": a, "b": other}, tmp_path / "three", shard_size=3, log=lambda _: None)
    order = mix_datasets({"b": b, "a": a}, tmp_path / "four", shard_size=3, log=lambda _: None)
    assert len({first["identity"]["id"], swapped["identity"]["id"], order["identity"]["id"]}) == 3
    assert json.loads((tmp_path / "one" / "manifest.json").read_text())["identity"]["id"] == first["identity"]["id"]


def test_sources_of_different_videos_are_refused_naming_the_source(tmp_path):
    a = _source(tmp_path / "a", "a", [2], resolution=32)
    b = _source(tmp_path / "b", "b", [2], resolution=64)
    with pytest.raises(ValueError, match=f"{tmp_path / 'b'}: resolution 64 differs"):
        mix_datasets({"a": a, "b": b}, tmp_path / "mix", log=lambda _: None)
    assert not (tmp_path / "mix").exists()
