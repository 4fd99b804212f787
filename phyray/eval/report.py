"""The physics report: rollouts joined to their reference videos, scored, aggregated, written.

Rollouts are shards in the dataset schema whose `frames` are generated videos; each is joined to
the reference row with the same `video_id`, whose ground truth (states, radii, colours, params)
and frames are used. Every rollout must have a reference (else ShardError naming it); reference
videos without a rollout are simply not evaluated.

Per video (`evaluate_videos`): the physics metrics of the rollout (phyray/eval/physics.py), the
same metrics of the reference frames as `gt_floor_*` (the parser's floor), and PSNR/SSIM
(phyray/eval/video.py). `add_vae_floor` adds the scores of the VAE's reconstruction of the same
video as `vae_floor_*` (the floor of any DiT working in that VAE's latents). Both floors are the
same for every rollout set of a reference, so a study keeps them, named by what made them
(`floor_cache`, `cached_physics_records`): each trial then parses only its own rollouts. A
rollout may have another resolution than its reference; it is parsed at
its own resolution, and the reference is area-averaged to the rollout's resolution
(`area_downsample`, which needs the rollout side to divide the reference side) for both the
floor and the pixel metrics, so the floor is the floor at the resolution the model works at.

The report (`summarize`) is a long table, one row per (scenario, split, resolution, ood_level,
metric) with `value` (mean over videos), `median`, `n` (videos counted) and `n_excluded` (videos
with nothing to count for that metric, e.g. no valid interval). `ood_level` is "id" for videos
without an OOD level (ID and training splits, as in the dataset manifests' counts), the level's
name for OOD videos, and "pooled" for all OOD videos of a split together ("all" would collide
with collision's level of that name).
"""

from __future__ import annotations

import csv
import io
import json
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from phyray.artifacts import Identity, atomic_write_bytes, digest, kept_json
from phyray.config import PhysicsConfig
from phyray.data.shards import (
    ShardError,
    area_downsample,
    dataset_id,
    decode_frames,
    read_manifest,
    read_shard,
    row_states,
    shard_paths,
)
from phyray.eval.physics import (
    COND_FRAMES,
    FRAME_DT,
    PARSERS,
    PHYSICS_METRICS,
    WORLD_SIZE,
    impact_frame_of,
    physics_metrics,
)
from phyray.eval.stats import mean_with_interval
from phyray.eval.video import PIXEL_METRICS, pixel_metrics

ID_LEVEL = "id"
POOLED_LEVEL = "pooled"
FLOOR_PREFIX = "gt_floor_"
VAE_FLOOR_PREFIX = "vae_floor_"
METRICS = (
    *PHYSICS_METRICS, *(FLOOR_PREFIX + m for m in PHYSICS_METRICS),
    *(VAE_FLOOR_PREFIX + m for m in (*PHYSICS_METRICS, *PIXEL_METRICS)), *PIXEL_METRICS,
)
ROW_FIELDS = (
    "scenario", "split", "resolution", "ood_level", "metric", "value", "ci_low", "ci_high", "median", "n",
    "n_excluded", "parser", "cond_frames",
)
ROLLOUT_COLUMNS = ["video_id", "frames", "frames_encoding", "frame_shape"]
STATE_COLUMNS = ["positions", "velocities", "radii", "colors"]
REFERENCE_COLUMNS = [
    "video_id", "scenario", "split", "ood_level", "params", "frames", "frames_encoding", "frame_shape", *STATE_COLUMNS,
]
# The version of the per-video scores kept by `floor_cache` and `cached_physics_records`: bump it
# when the parser or a metric changes, so that no kept score outlives the code that made it.
SCORES_FORMAT = 1
# Decoded rollout + reference frames scored together: large enough to amortise numpy's per-call
# overhead over many small videos, small enough to stay in memory at 256² (~5 videos).
CHUNK_BYTES = 64 * 2**20


# ---------------------------------------------------------------------------------------------
# Scoring videos in memory
# ---------------------------------------------------------------------------------------------


def _check_ball_states(columns, what: str) -> None:
    """ValueError naming the first ball-state column a reference lacks (a PHYRE scene has none:
    its videos are scored by `phyray.eval.scenes`, `phyray eval video`)."""
    missing = [name for name in STATE_COLUMNS if name not in columns]
    if missing:
        raise ValueError(
            f"{what}: no {missing[0]!r} column; the physics report needs ball states "
            "(score PHYRE scenes with `phyray eval video`)"
        )


def _check_options(parser: str, cond_frames: int) -> None:
    if parser not in PARSERS:
        raise ValueError(f"parser: unknown {parser!r}; choose from {', '.join(PARSERS)}")
    if cond_frames < 0:
        raise ValueError(f"cond_frames: must be >= 0, got {cond_frames}")


def reference_frames(row: dict[str, Any], shape: tuple[int, ...]) -> np.ndarray:
    """A reference row's frames at a rollout's (T, H, W, 3) shape (area-averaged if larger)."""
    _check_shapes(row, shape)
    frames = decode_frames(row)
    return frames if shape[1] == row["frame_shape"][1] else area_downsample(frames, shape[1])


def _check_shapes(row: dict[str, Any], shape: tuple[int, ...]) -> None:
    """ValueError unless a rollout of `shape` can be compared with the reference row's frames."""
    t, h, w, _ = row["frame_shape"]
    if t != shape[0] or h % shape[1] or w % shape[2] or h // shape[1] != w // shape[2]:
        raise ValueError(
            f"video {row['video_id']}: rollout of shape {tuple(shape)} cannot be compared with its "
            f"reference of shape {(t, h, w, 3)} (same frame count; the rollout side must divide the reference's)"
        )


def _score_group(
    rows: list[dict[str, Any]], rollouts: list[np.ndarray], parser: str, cond_frames: int,
    psnr: bool, ssim: bool, device: str, frame_dt: float, world_size: float, paper_filter: bool,
    floors: dict[str, dict[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """Score videos of one scenario, colours and shapes (so they batch into single arrays).
    `floors` (video_id -> its gt_floor_* scores) spares parsing the references again."""
    for row in rows:
        _check_shapes(row, rollouts[0].shape)
    # The reference frames: for the pixel metrics, and for the floor unless it is given.
    decode = psnr or ssim or floors is None
    references = [reference_frames(row, rollouts[0].shape) for row in rows] if decode else []
    states = [row_states(row) for row in rows]
    truth = {
        "gt_positions": np.stack([s[0] for s in states]),  # (N, T, K, 2)
        "gt_velocities": np.stack([s[1] for s in states]),  # (N, T, K, 2)
        "gt_radii": np.stack([s[2] for s in states]),  # (N, K)
        "colors": np.asarray(rows[0]["colors"]),
        "scenario": rows[0]["scenario"],
        "impact_frames": [impact_frame_of(row) for row in rows],
    }
    options = {"parser": parser, "cond_frames": cond_frames, "frame_dt": frame_dt, "world_size": world_size,
               "paper_filter": paper_filter}
    scored = physics_metrics(rollouts, **truth, **options)
    if floors is None:
        floor = physics_metrics(references, **truth, **options)
        floors = {row["video_id"]: {FLOOR_PREFIX + m: float(floor[m][i]) for m in PHYSICS_METRICS}
                  for i, row in enumerate(rows)}
    pixels = pixel_metrics(rollouts, references, cond_frames, psnr=psnr, ssim=ssim, device=device)
    records = []
    for i, row in enumerate(rows):
        record = {
            "video_id": row["video_id"],
            "scenario": row["scenario"],
            "split": row["split"],
            "ood_level": row["ood_level"],
            "resolution": int(rollouts[i].shape[1]),
        }
        record |= {m: float(scored[m][i]) for m in PHYSICS_METRICS}
        record |= floors[row["video_id"]]
        record |= {m: float(values[i]) for m, values in pixels.items()}
        records.append(record)
    return records


def evaluate_videos(
    reference_rows: Sequence[dict[str, Any]],
    rollout_frames: np.ndarray | Sequence[np.ndarray],
    parser: str = "subpixel",
    cond_frames: int = COND_FRAMES,
    psnr: bool = True,
    ssim: bool = True,
    device: str = "cpu",
    frame_dt: float = FRAME_DT,
    world_size: float = WORLD_SIZE,
    paper_filter: bool = False,
    floors: dict[str, dict[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """Per-video metrics of in-memory rollouts against their reference rows (no shards needed).

    Args:
        reference_rows: N dataset rows (dicts with the SCHEMA columns, e.g. from `iter_rows`).
        rollout_frames: (N, T, H, W, 3) uint8, or N (T, H, W, 3) videos; video i is the rollout
            of reference_rows[i].
        parser: "subpixel" or "threshold".
        cond_frames: c, the conditioning frames (not scored).
        psnr, ssim: compute these pixel metrics (SSIM is slow on CPU; see phyray/eval/video.py).
        device: torch device for PSNR/SSIM.
        frame_dt, world_size: seconds between frames and world side (the data config's physics).
        paper_filter: the released evaluator's radius filter and collision window on every
            velocity metric (`paper_vel_err` always has them; phyray/eval/physics.py).
        floors: each video's `gt_floor_*` scores, already known (the same reference parsed
            with the same settings at the rollouts' resolution); else they are computed.

    Returns:
        One record per video: video_id, scenario, split, ood_level, resolution and every metric
        (PHYSICS_METRICS, their gt_floor_ versions, psnr, ssim), NaN where nothing counts.
    """
    _check_options(parser, cond_frames)
    if len(reference_rows) != len(rollout_frames):
        raise ValueError(f"{len(reference_rows)} reference rows but {len(rollout_frames)} rollouts")
    for row in reference_rows[:1]:
        _check_ball_states(row.keys(), f"video {row.get('video_id')!r}")
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, (row, frames) in enumerate(zip(reference_rows, rollout_frames)):
        key = (row["scenario"], frames.shape, tuple(row["frame_shape"]), json.dumps(row["colors"]))
        groups[key].append(i)
    records: list[dict[str, Any] | None] = [None] * len(reference_rows)
    for indices in groups.values():
        scored = _score_group(
            [reference_rows[i] for i in indices], [rollout_frames[i] for i in indices],
            parser, cond_frames, psnr, ssim, device, frame_dt, world_size, paper_filter, floors,
        )
        for i, record in zip(indices, scored):
            records[i] = record
    return records


def add_vae_floor(records: list[dict[str, Any]], floor_records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each record with the scores of its video's VAE reconstruction (`evaluate_physics_records`
    of `phyray.eval.rollouts.reconstruct_dataset`'s output) as `vae_floor_<metric>`."""
    floors = {r["video_id"]: r for r in floor_records}
    metrics = [m for m in (*PHYSICS_METRICS, *PIXEL_METRICS) if floor_records and m in floor_records[0]]
    out = []
    for record in records:
        floor = floors.get(record["video_id"])
        if floor is None:
            raise ShardError(f"video {record['video_id']!r} has no VAE reconstruction to give its floor")
        out.append(record | {VAE_FLOOR_PREFIX + m: floor[m] for m in metrics})
    return out


# ---------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------


def _level_order(level: str) -> tuple[int, str]:
    return (0 if level == ID_LEVEL else 2 if level == POOLED_LEVEL else 1, level)


def summarize(
    records: Sequence[dict[str, Any]], parser: str = "subpixel", cond_frames: int = COND_FRAMES,
    resamples: int = 1000, seed: int = 0,
) -> list[dict[str, Any]]:
    """The long-format report of per-video records (see the module docstring).

    Pooled rows cover every OOD video of a (scenario, split, resolution), so each level's n sums
    to the pooled n and the pooled value is the n-weighted mean of the levels' values. Each
    value carries its 95% percentile-bootstrap interval over videos (`ci_low`, `ci_high`;
    `resamples` resamples, seeded by `seed`).
    """
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        base = (record["scenario"], record["split"], record["resolution"])
        level = record["ood_level"]
        groups[base + (ID_LEVEL if level is None else level,)].append(record)
        if level is not None:
            groups[base + (POOLED_LEVEL,)].append(record)
    rows = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], _level_order(k[3]))):
        members = groups[key]
        for metric in METRICS:
            if metric not in members[0]:
                continue  # not computed (e.g. SSIM switched off)
            cell = mean_with_interval([m[metric] for m in members], resamples, seed)
            rows.append(
                dict(
                    zip(ROW_FIELDS[:5], (*key[:3], key[3], metric)), **cell, parser=parser, cond_frames=cond_frames,
                )
            )
    return rows


def score_rollouts(
    reference_rows: Sequence[dict[str, Any]],
    rollout_frames: np.ndarray | Sequence[np.ndarray],
    parser: str = "subpixel",
    cond_frames: int = COND_FRAMES,
    **options: Any,
) -> list[dict[str, Any]]:
    """The report rows of in-memory rollouts (e.g. inside training): `evaluate_videos` + `summarize`.

    `options` are passed to `evaluate_videos` (psnr, ssim, device, frame_dt, world_size).
    """
    records = evaluate_videos(reference_rows, rollout_frames, parser, cond_frames, **options)
    return summarize(records, parser, cond_frames)


def report_metrics(report: list[dict[str, Any]]) -> dict[str, float]:
    """Physics report rows -> MLflow metrics: eval/id/<metric>, eval/ood/<metric> (pooled over
    levels) and eval/ood_<level>/<metric>, each with its bootstrap interval as
    <metric>_ci_low and <metric>_ci_high."""
    metrics = {}
    for row in report:
        if row["value"] is None:
            continue
        level = row["ood_level"]
        if level == "id":
            group = "id" if row["split"] in ("eval_id", "dev_id", "eval_in_template") else row["split"]
        elif level == "pooled":
            group = "ood"
        else:
            group = f"ood_{level}"
        name = f"eval/{group}/{row['metric']}"
        metrics[name] = row["value"]
        metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = row["ci_low"], row["ci_high"]
    return metrics


# ---------------------------------------------------------------------------------------------
# Shards on disk
# ---------------------------------------------------------------------------------------------


def _physics_of(reference_dir: Path) -> PhysicsConfig:
    """The physics the reference set was generated with (frame interval, world size)."""
    settings = (read_manifest(reference_dir).get("identity") or {}).get("settings", {})
    physics = settings.get("config", {}).get("physics")
    return PhysicsConfig.model_validate(physics) if physics else PhysicsConfig()


def _video_ids(path: Path) -> list[str]:
    return read_shard(path, ["video_id"]).column("video_id").to_pylist()


def _check_rollouts(
    rollout_paths: list[Path], index: dict[str, tuple[Path, int]], reference_dir: Path,
) -> tuple[list[str], set[tuple[int, ...]]]:
    """The rollouts' video ids, in order, and their frame shapes, read in one pass; a ShardError
    naming a video without a reference or one that appears twice."""
    seen: dict[str, Path] = {}
    shapes: set[tuple[int, ...]] = set()
    for path in rollout_paths:
        table = read_shard(path, ["video_id", "frame_shape"])
        ids = table.column("video_id").to_pylist()
        shapes.update(tuple(s) for s in table.column("frame_shape").to_pylist())
        missing = [v for v in ids if v not in index]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ShardError(
                f"{path}: rollout video {missing[0]!r}{more} is not in the reference set {reference_dir}"
            )
        for video_id in ids:
            if video_id in seen:
                raise ShardError(f"{path}: rollout video {video_id!r} appears twice (also in {seen[video_id]})")
            seen[video_id] = path
    return list(seen), shapes


class _ReferenceRows:
    """Reference rows by video_id, reading each reference shard when needed (last two kept)."""

    def __init__(self, index: dict[str, tuple[Path, int]], columns: list[str], keep: int = 2):
        self.index, self.columns, self.keep = index, columns, keep
        self.tables: OrderedDict[Path, pa.Table] = OrderedDict()

    def _table(self, path: Path) -> pa.Table:
        if path not in self.tables:
            self.tables[path] = read_shard(path, self.columns)
            while len(self.tables) > self.keep:
                self.tables.popitem(last=False)
        self.tables.move_to_end(path)
        return self.tables[path]

    def rows(self, video_ids: list[str]) -> list[dict[str, Any]]:
        by_shard: dict[Path, list[tuple[int, int]]] = defaultdict(list)
        for position, video_id in enumerate(video_ids):
            path, row = self.index[video_id]
            by_shard[path].append((position, row))
        out: list[dict[str, Any] | None] = [None] * len(video_ids)
        for path, items in by_shard.items():
            taken = self._table(path).take([row for _, row in items]).to_pylist()
            for (position, _), row in zip(items, taken):
                out[position] = row
        return out


def evaluate_physics(
    rollouts_dir: str | Path,
    reference_dir: str | Path,
    parser: str = "subpixel",
    cond_frames: int = COND_FRAMES,
    **options: Any,
) -> list[dict[str, Any]]:
    """Score a rollout dataset against its reference dataset; returns the report rows.

    The per-video records of `evaluate_physics_records` (same arguments; `options` are its psnr,
    ssim, device, progress, paper_filter, floor_cache) aggregated by `summarize`.
    """
    records = evaluate_physics_records(rollouts_dir, reference_dir, parser, cond_frames, **options)
    return summarize(records, parser, cond_frames)


def evaluate_physics_records(
    rollouts_dir: str | Path,
    reference_dir: str | Path,
    parser: str = "subpixel",
    cond_frames: int = COND_FRAMES,
    psnr: bool = True,
    ssim: bool = True,
    device: str = "cpu",
    progress: bool = False,
    paper_filter: bool = False,
    floor_cache: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Per-video metrics of a rollout dataset against its reference dataset (`evaluate_videos`).

    Args:
        rollouts_dir: dataset directory of rollouts (shards + manifest, `frames` generated).
        reference_dir: the dataset the rollouts were conditioned on (ground truth + frames).
        parser: "subpixel" (default) or "threshold" (the paper's).
        cond_frames: c, the conditioning frames (3; PHYRE 1).
        psnr, ssim: compute these pixel metrics (SSIM is the slow part on CPU).
        device: torch device for PSNR/SSIM.
        progress: show a progress bar of videos scored.
        paper_filter: see `evaluate_videos`.
        floor_cache: a directory where the reference's own scores (the `gt_floor_*` columns)
            are kept, named by the reference set's identity, these videos, their shape and the
            parser's settings: every rollout set of that reference (each trial of a study)
            shares them, so the reference is parsed once, and not decoded at all without pixel
            metrics.

    Returns:
        One record per rollout video, in rollout order (see `evaluate_videos`).
    """
    from tqdm import tqdm

    _check_options(parser, cond_frames)
    rollouts_dir, reference_dir = Path(rollouts_dir), Path(reference_dir)
    physics = _physics_of(reference_dir)
    reference_paths = shard_paths(reference_dir)
    _check_ball_states(pq.read_schema(reference_paths[0]).names, str(reference_paths[0]))
    index = {vid: (path, i) for path in reference_paths for i, vid in enumerate(_video_ids(path))}
    rollout_paths = shard_paths(rollouts_dir)
    video_ids, shapes = _check_rollouts(rollout_paths, index, reference_dir)
    kept = _floor_path(floor_cache, shapes, video_ids, reference_dir, parser, cond_frames, paper_filter)
    floors = json.loads(kept.read_text()) if kept is not None and kept.is_file() else None
    # Without pixel metrics or a floor to compute, the reference's frames are not read at all.
    columns = REFERENCE_COLUMNS if psnr or ssim or floors is None else [c for c in REFERENCE_COLUMNS if c != "frames"]
    references = _ReferenceRows(index, columns)
    options = {"parser": parser, "cond_frames": cond_frames, "psnr": psnr, "ssim": ssim, "device": device,
               "frame_dt": physics.frame_dt, "world_size": physics.world_size, "paper_filter": paper_filter,
               "floors": floors}
    total = read_manifest(rollouts_dir).get("num_videos")
    records: list[dict[str, Any]] = []
    with tqdm(total=total, unit="video", disable=not progress, desc="eval physics") as bar:
        for path in rollout_paths:
            table = read_shard(path, ROLLOUT_COLUMNS)
            if not table.num_rows:
                continue
            t, h, w, c = table.column("frame_shape")[0].as_py()
            chunk = max(1, CHUNK_BYTES // (2 * t * h * w * c))
            for start in range(0, table.num_rows, chunk):
                rollout_rows = table.slice(start, chunk).to_pylist()
                reference_rows = references.rows([r["video_id"] for r in rollout_rows])
                frames = [decode_frames(r) for r in rollout_rows]
                records += evaluate_videos(reference_rows, frames, **options)
                bar.update(len(rollout_rows))
    if kept is not None and floors is None:  # kept for the next rollout set of this reference
        kept_json(kept, lambda: {r["video_id"]: {m: r[m] for m in r if m.startswith(FLOOR_PREFIX)} for r in records})
    return records


def _floor_path(
    floor_cache: str | Path | None, shapes: set[tuple[int, ...]], video_ids: list[str], reference_dir: Path,
    parser: str, cond_frames: int, paper_filter: bool,
) -> Path | None:
    """Where the reference's floor scores for these rollouts are kept (None: not kept, or the
    rollouts have more than one shape)."""
    if floor_cache is None or len(shapes) != 1:
        return None
    settings = {"format_version": SCORES_FORMAT, "parser": parser, "cond_frames": cond_frames,
                "paper_filter": paper_filter, "shape": list(next(iter(shapes))), "videos": digest(sorted(video_ids))}
    return Path(floor_cache) / f"{Identity('reference_floor', settings, {'reference': dataset_id(reference_dir)}).id}.json"


def cached_physics_records(
    cache_dir: str | Path, rollouts_dir: str | Path, reference_dir: str | Path, parser: str = "subpixel",
    cond_frames: int = COND_FRAMES, psnr: bool = True, ssim: bool = True, paper_filter: bool = False,
    device: str = "cpu", floor_cache: str | Path | None = None,
) -> list[dict[str, Any]]:
    """`evaluate_physics_records` of two sets, kept in `cache_dir` as JSON named by both sets'
    identities and the scoring settings, and read back on the next call: a VAE's
    reconstructions, scored once for every trial that shows its floor. The reference's own
    floor is kept in `floor_cache` (by default `cache_dir` too)."""
    settings = {"format_version": SCORES_FORMAT, "parser": parser, "cond_frames": cond_frames,
                "psnr": psnr, "ssim": ssim, "paper_filter": paper_filter}
    inputs = {"rollouts": dataset_id(rollouts_dir), "reference": dataset_id(reference_dir)}
    kept = Path(cache_dir) / f"{Identity('physics_scores', settings, inputs).id}.json"
    return kept_json(kept, lambda: evaluate_physics_records(
        rollouts_dir, reference_dir, parser, cond_frames, psnr=psnr, ssim=ssim, device=device,
        paper_filter=paper_filter, floor_cache=cache_dir if floor_cache is None else floor_cache,
    ))


def write_report(rows: list[dict[str, Any]], out: str | Path) -> tuple[Path, Path]:
    """Write the rows as JSON to `out` and as CSV beside it (same stem), each atomically.

    Returns:
        (json path, csv path).
    """
    out = Path(out)
    if out.suffix == ".csv":
        raise ValueError(f"--out {out}: name the JSON report; the CSV is written beside it")
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_path = out.with_suffix(".csv")
    atomic_write_bytes(out, (json.dumps(rows, indent=1) + "\n").encode())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ROW_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(csv_path, buffer.getvalue().encode())
    return out, csv_path


def format_summary(rows: list[dict[str, Any]]) -> str:
    """A one-screen table of the report: per group, the velocity errors beside their floors."""
    groups: dict[tuple, dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        groups[(row["scenario"], row["split"], row["resolution"], row["ood_level"])][row["metric"]] = row

    def cell(metrics: dict[str, dict[str, Any]], name: str, digits: int = 4) -> str:
        value = metrics.get(name, {}).get("value")
        return "-" if value is None else f"{value:.{digits}f}"

    header = (f"{'scenario':<15} {'split':<9} {'res':>4} {'ood_level':<9} {'n':>5} {'vel/frame':>9} "
              f"{'(floor)':>8} {'vel/mean':>9} {'(floor)':>8} {'fail':>6} {'psnr':>6} {'ssim':>6}")
    lines = [header]
    for (scenario, split, resolution, level), metrics in groups.items():
        lines.append(
            f"{scenario:<15} {split:<9} {resolution:>4} {level:<9} {metrics['vel_err_per_frame']['n']:>5} "
            f"{cell(metrics, 'vel_err_per_frame'):>9} {cell(metrics, 'gt_floor_vel_err_per_frame'):>8} "
            f"{cell(metrics, 'vel_err_mean_velocity'):>9} {cell(metrics, 'gt_floor_vel_err_mean_velocity'):>8} "
            f"{cell(metrics, 'parse_fail_rate', 3):>6} {cell(metrics, 'psnr', 2):>6} {cell(metrics, 'ssim', 3):>6}"
        )
    return "\n".join(lines)
