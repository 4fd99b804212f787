"""Combinatorial PHYRE datasets: (template, seed, trial) videos from the Python 3.9 sidecar.

The same shard/manifest machinery as the ball scenes (`phyray.artifacts.write_product` driven
by `RayShards`): one Ray Data task per shard, which simulates its videos through its worker
process's long-lived PHYRE sidecar (`SharedSidecar`) and writes the whole shard.

Splits (docs/paper.md §12 "Data volume and splits"):

- train: the chosen training templates, trials 0..M-1 of seeds 0..N-1 (trials < 990);
- eval_in_template: the same templates, trials 990..990+M-1 (never in train);
- eval_out_of_template: the held-out templates 10060-10069, trials 0..M-1;
- dev_in_template, dev_out_of_template: a study's dev sets (`eval.split: dev`), for choosing
  settings without looking at the test sets: the same templates and seeds, trials from 995 and
  from 500. A study's test sets take one trial per seed (990, and 0), so they never meet.

Frames are stored as PHYRE colour indices (1 byte per pixel, "zstd-palette8") with the palette
in the row; `phyray.data.decode_frames(row, resolution)` gives RGB at 256, 128, 64 or 32.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from phyray.artifacts import Identity, write_product
from phyray.config import ConfigError
from phyray.data.generate import RayShards, write_built_shard
from phyray.data.shards import (
    FORMAT_VERSION,
    PALETTE8,
    encode_palette_frames,
    per_frame_column,
    shard_name,
)
from phyray.sim.phyre import (
    PHYRE_PALETTE,
    SCENE_SIZE,
    TEMPLATE_SETS,
    PhyreSidecar,
    find_phyre_python,
)

FIRST_EVAL_TRIAL = 990  # trials 990-999 of each seed are the in-template evaluation set
TRIALS_PER_SEED = 1000
# Each split's trials: [first, end) of every seed.
SPLIT_TRIALS = {
    "train": (0, FIRST_EVAL_TRIAL),
    "eval_in_template": (FIRST_EVAL_TRIAL, TRIALS_PER_SEED),
    "eval_out_of_template": (0, TRIALS_PER_SEED),
    "dev_in_template": (995, TRIALS_PER_SEED),
    "dev_out_of_template": (500, TRIALS_PER_SEED),
}
COMBINATORIAL_SPLITS = tuple(SPLIT_TRIALS)
OUT_OF_TEMPLATE_SPLITS = ("eval_out_of_template", "dev_out_of_template")

_VEC3 = pa.list_(pa.uint8(), 3)
COMBINATORIAL_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("scenario", pa.string()),
        ("split", pa.string()),
        ("ood_level", pa.string()),  # "out_of_template" for held-out templates, else null
        ("seed", pa.int64()),  # the task seed (object parameters)
        ("template_id", pa.int32()),
        ("trial", pa.int32()),  # the red-ball placement
        ("params", pa.string()),  # JSON: action, object types, placement
        ("frames", pa.binary()),
        ("frames_encoding", pa.string()),
        ("frame_shape", pa.list_(pa.int32(), 4)),  # [T, H, W, 3]
        ("palette", pa.list_(_VEC3)),  # [P][3] RGB of each colour index
        ("objects", pa.list_(pa.list_(pa.list_(pa.float32())))),  # [T][N][15] PHYRE features + dynamic
    ]
)


def plan_items(templates: list[int], seeds: int, trials: int, split: str) -> list[tuple[int, int, int]]:
    """(template_id, seed, trial) of every video, in shard order; validates the split rules."""
    if split not in COMBINATORIAL_SPLITS:
        raise ConfigError(f"split: {split!r} is not a combinatorial split; choose from {', '.join(COMBINATORIAL_SPLITS)}")
    if seeds < 1 or trials < 1:
        raise ConfigError("--seeds and --trials: must be >= 1")
    held_out = set(TEMPLATE_SETS["heldout"])
    if split in OUT_OF_TEMPLATE_SPLITS:
        if not set(templates) <= held_out:
            raise ConfigError(f"--templates: {split} takes held-out templates only ({min(held_out)}-{max(held_out)})")
    elif set(templates) & held_out:
        raise ConfigError(f"--templates: held-out templates {sorted(set(templates) & held_out)} never appear in {split}")
    first_trial, end = SPLIT_TRIALS[split]
    if split == "train" and trials > end:
        raise ConfigError(f"--trials: train uses trials 0-{end - 1}; {trials} would reach the evaluation trials")
    if trials > end - first_trial:
        raise ConfigError(f"--trials: {split} has {end - first_trial} trials per seed ({first_trial}-{end - 1})")
    return [
        (template, seed, first_trial + trial)
        for template in templates
        for seed in range(seeds)
        for trial in range(trials)
    ]


def video_id(split: str, template: int, seed: int, trial: int) -> str:
    return f"combinatorial-{split}-t{template}-s{seed:03d}-r{trial:03d}"


# Videos per sidecar request: the exchange's fixed cost is shared by 16 videos, and a reply stays
# at ~0.2 MB of encoded frames (32 MB where the sidecar sends raw indices).
SIDECAR_BATCH = 16
# How long a worker process keeps its sidecar once no shard task uses it. A study makes its
# datasets back to back (train, then every evaluation and dev set), and Ray runs their shard
# tasks in the same worker processes, so each after the first finds the sidecar started.
SIDECAR_IDLE_S = 120.0


class SharedSidecar:
    """One PHYRE sidecar for every shard task this process runs, closed after `idle_s` unused.

    Ray reuses its worker processes across tasks and datasets, so a sidecar held here serves a
    study's datasets one after another. (An actor pool's died with its dataset: each dataset's
    actors waited ~1 s for fresh worker processes, then ~0.4 s for PHYRE to import, before its
    first shard; docs/performance.md, "2026-12-06 (4)".) The sidecar also exits with its
    process, when its stdin closes.
    """

    def __init__(self, idle_s: float = SIDECAR_IDLE_S):
        self.idle_s = idle_s
        self._sidecar: PhyreSidecar | None = None
        self._last_used = 0.0
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    @contextmanager
    def use(self) -> Iterator[PhyreSidecar]:
        """The started sidecar, this caller's alone until the block ends."""
        with self._lock:
            if self._sidecar is None:
                self._sidecar = PhyreSidecar()
            try:
                yield self._sidecar.start()
            finally:
                self._last_used = time.monotonic()
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = threading.Timer(self.idle_s, self._close_if_idle)
                self._timer.daemon = True
                self._timer.start()

    def _close_if_idle(self) -> None:
        with self._lock:
            if self._sidecar is not None and time.monotonic() - self._last_used >= self.idle_s:
                self._sidecar.close()
                self._sidecar = None


PROCESS_SIDECAR = SharedSidecar()


def build_shard(sidecar: PhyreSidecar, task: dict[str, Any]) -> tuple[pa.Table, dict[str, float]]:
    """Simulate one shard's videos through `sidecar` and tabulate them; returns the table and
    the seconds spent per stage (simulate: the sidecar's answers; encode: this process)."""
    columns: dict[str, list] = {name: [] for name in COMBINATORIAL_SCHEMA.names if name != "objects"}
    objects: list[np.ndarray] = []  # (T, N, 15) per video
    timings = {"simulate": 0.0, "encode": 0.0}
    palette = PHYRE_PALETTE.tolist()
    items = task["items"]
    # The sidecar encodes the frames itself where it can (known once it has started): its 13 KB
    # leave the pipe instead of 2 MB of indices, and this process neither copies nor compresses
    # them. The bytes are the same either way (tests/test_phyre.py).
    codec = PALETTE8 if PALETTE8 in sidecar.frame_codecs else None
    for start in range(0, len(items), SIDECAR_BATCH):
        chunk = items[start : start + SIDECAR_BATCH]
        tick = time.perf_counter()
        videos = sidecar.simulate_batch([tuple(item) for item in chunk], frames_codec=codec)
        tock = time.perf_counter()
        for (template, seed, trial), video in zip(chunk, videos):
            frames = video["frames"]  # (T, 256, 256) uint8 colour indices, or their zstd bytes
            columns["video_id"].append(video_id(task["split"], template, seed, trial))
            columns["scenario"].append("combinatorial")
            columns["split"].append(task["split"])
            columns["ood_level"].append("out_of_template" if task["split"] in OUT_OF_TEMPLATE_SPLITS else None)
            columns["seed"].append(seed)
            columns["template_id"].append(template)
            columns["trial"].append(trial)
            columns["params"].append(
                json.dumps(
                    {
                        "action": np.asarray(video["action"]).tolist(),
                        "object_types": list(video["object_types"]),
                        "placement": video["placement"],
                        "attempts": int(video["attempts"]),
                    },
                    sort_keys=True,
                )
            )
            columns["frames"].append(frames.tobytes() if codec else encode_palette_frames(frames))
            columns["frames_encoding"].append(PALETTE8)
            columns["frame_shape"].append([*(video["frames_shape"] if codec else frames.shape), 3])
            columns["palette"].append(palette)
            objects.append(np.asarray(video["objects"], dtype=np.float32))
        timings["simulate"] += tock - tick
        timings["encode"] += time.perf_counter() - tock
    tick = time.perf_counter()
    table = pa.Table.from_pydict(columns | {"objects": per_frame_column(objects, fixed=False)},
                                 schema=COMBINATORIAL_SCHEMA)
    timings["encode"] += time.perf_counter() - tick
    return table, timings


def generate_phyre_shard(row: dict[str, Any]) -> dict[str, Any]:
    """Ray Data map function: simulate, build and atomically write one shard through this
    process's sidecar; returns its manifest entry."""
    task = json.loads(row["task"])
    with PROCESS_SIDECAR.use() as sidecar:
        table, timings = build_shard(sidecar, task)
    return write_built_shard(task, table, timings)


def dataset_identity(templates: list[int], seeds: int, trials: int, split: str, shard_size: int = 1000) -> Identity:
    """What makes a combinatorial dataset: its (template, seed, trial) plan and shard size."""
    return Identity("dataset", {
        "format_version": FORMAT_VERSION,
        "scenario": "combinatorial",
        "split": split,
        "templates": templates,
        "seeds": seeds,
        "trials": trials,
        "shard_size": shard_size,
    })


def generate_combinatorial(
    templates: list[int],
    seeds: int,
    trials: int,
    split: str,
    out: str | Path,
    shard_size: int = 1000,
    num_workers: int | None = None,
    progress: bool = True,
    log=print,
) -> dict[str, Any]:
    """Generate (or finish, or verify and repair) a combinatorial dataset; returns its manifest."""
    items = plan_items(templates, seeds, trials, split)
    find_phyre_python()  # fail now, in one line, if there is no PHYRE environment
    out = Path(out)
    shards = [items[i : i + shard_size] for i in range(0, len(items), shard_size)]
    sizes = [len(s) for s in shards]
    identity = dataset_identity(templates, seeds, trials, split, shard_size)
    runner = RayShards(
        lambda missing: [{"shard": i, "out": str(out), "split": split, "items": shards[i]} for i in missing],
        generate_phyre_shard, sizes, num_workers, progress, f"combinatorial/{split}",
    )
    manifest = write_product(
        out, identity, [shard_name(i) for i in range(len(shards))], sizes, runner, log=log,
        scenario="combinatorial",
        resolution=SCENE_SIZE,
        frames_encoding=PALETTE8,
        counts={str(t): sum(1 for item in items if item[0] == t) for t in templates},
    )
    return manifest | {"timings": runner.timings}
