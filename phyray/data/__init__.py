"""Shards: the on-disk format of every video set, and the Ray Data jobs that write them."""

from phyray.data.shards import (
    ShardError,
    decode_frames,
    iter_rows,
    open_shards,
    read_manifest,
    read_shard,
    row_states,
    verify_dataset,
)

__all__ = [
    "ShardError",
    "decode_frames",
    "iter_rows",
    "open_shards",
    "read_manifest",
    "read_shard",
    "row_states",
    "verify_dataset",
]
