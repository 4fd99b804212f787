"""Case-based generalisation probes on uniform motion (paper §5.1, 5.2): the speed a rollout
generates, against the speed it was conditioned on.

Both read each video's mean x velocity over the frames the headline metric counts (t ≥ c, fully
in view), in the ground truth and parsed from the rollout (`speed_records`):

Interpolation gaps (§5.1, Fig. 5). A gap model trains on speed bands of the ID range only
(`DataConfig.train_velocity`) and is evaluated over the whole range. Per video (`gap_records`):
- `true_velocity`, `generated_velocity`, `error` (the Euclidean error of the mean velocity: the
  study's headline, vel_err_mean_velocity);
- `in_gap`: the true speed lies outside every training band;
- `pull`: for a video in a gap, the generated-minus-true speed toward the nearest trained speed
  (positive: pulled toward the bands; the paper's finding), NaN outside the gaps.
`gap_summary` gives the mean error inside and outside the gaps, their ratio and the mean pull,
each with a 95 % bootstrap interval over videos, and the error over a fixed speed span (so
layouts with different gaps compare on the same videos).

The collision convex hull (§5.1, Fig. 6). A hull model trains on collisions with boxes of the
(v1, v2) or (r1, r2) plane left out (`DataConfig.train_exclude`). Each evaluation video falls in a
region of that plane (`hull_regions`): `trained` (in the training ranges, in no box), `inside`
(left out but inside the convex hull of what was trained: a hole surrounded by data) or
`outside` (beyond the hull). `hull_summary` gives the headline (post-collision) velocity error per
region with its interval; the paper's finding is that `inside` errs about as `trained` does and
`outside` far more.

Direction flips (§5.2, Fig. 7). Models trained on fast balls moving right (Set-1) or both ways
(Set-2, `DataConfig.train_direction: both`) are conditioned on slower right-moving balls. Per
video (`flip_records`): the true and generated x velocity and `reversed`: the generated ball moves
against its conditioned direction faster than `REVERSAL_SPEED`. `flip_summary` gives the
reversed fraction and the drift (generated minus true x velocity) with their intervals.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from phyray.config import DataConfig, ValueRange
from phyray.data.shards import decode_frames, iter_batches, iter_rows, read_manifest, row_states
from phyray.eval.physics import mean_velocities, parse_after_conditioning, valid_frames
from phyray.eval.stats import bootstrap_ci

# Bumped when the records or the summary change: reports made by another version are remade.
GAP_VERSION = 1
FLIP_VERSION = 1
HULL_VERSION = 1
HULL_REGIONS = ("trained", "inside", "outside")
# Points per side of the lattice whose kept points span the training hull.
HULL_LATTICE = 101
READ_BATCH = 64
# A generated ball "reverses" when it moves against its conditioned direction faster than this
# (world units/s; StudyEval.reversal_speed): ten times the velocity parser's floor at 32²
# (~0.02), so a ball that stops and jitters does not count.
REVERSAL_SPEED = 0.2


def nearest_trained(bands: Sequence[ValueRange], velocity: np.ndarray) -> np.ndarray:
    """The trained speed nearest each speed (itself inside a band)."""
    edges = np.array([[band.lo, band.hi] for band in bands])  # (B, 2)
    clipped = np.clip(velocity[:, None], edges[:, 0], edges[:, 1])  # (N, B): nearest point per band
    return clipped[np.arange(len(velocity)), np.abs(clipped - velocity[:, None]).argmin(axis=1)]


def speed_records(
    frames: Sequence[np.ndarray], rows: Sequence[dict[str, Any]], cfg: DataConfig, parser: str, cond_frames: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ball's mean (N, 2) generated and true velocity over the counted frames of N videos
    (T, H, W, 3) against their reference rows, and the (N,) Euclidean error (NaN: nothing counts)."""
    states = [row_states(row) for row in rows]
    gt_positions = np.stack([s[0] for s in states])  # (N, T, 1, 2)
    gt_velocities = np.stack([s[1] for s in states])
    gt_radii = np.stack([s[2] for s in states])  # (N, 1)
    world, frame_dt = cfg.physics.world_size, cfg.physics.frame_dt
    positions, _ = parse_after_conditioning(
        list(frames), gt_positions.shape[1], np.asarray(rows[0]["colors"]), parser, cond_frames, world,
    )
    valid = valid_frames(gt_positions, gt_velocities, gt_radii, cfg.scenario, cond_frames, None, world)
    generated, true, counted = mean_velocities(positions, gt_positions, valid, frame_dt)  # (N, 1, 2) each
    error = np.where(counted[:, 0], np.hypot(*(generated - true)[:, 0].T), np.nan)
    return generated[:, 0], true[:, 0], error


def gap_records(
    frames: Sequence[np.ndarray], rows: Sequence[dict[str, Any]], cfg: DataConfig, parser: str, cond_frames: int,
) -> list[dict[str, Any]]:
    """Per-video gap records of N generated videos (T, H, W, 3) against their reference rows."""
    generated, true, error = speed_records(frames, rows, cfg, parser, cond_frames)
    speed = true[:, 0]
    in_gap = ~cfg.in_training_bands(speed)
    toward = np.sign(nearest_trained(cfg.train_velocity, speed) - speed)
    pull = np.where(in_gap, (generated[:, 0] - speed) * toward, np.nan)
    return [
        {"video_id": row["video_id"], "true_velocity": float(speed[i]), "generated_velocity": float(generated[i, 0]),
         "error": float(error[i]), "in_gap": bool(in_gap[i]), "pull": float(pull[i])}
        for i, row in enumerate(rows)
    ]


def flip_records(
    frames: Sequence[np.ndarray], rows: Sequence[dict[str, Any]], cfg: DataConfig, parser: str, cond_frames: int,
    reversal_speed: float = REVERSAL_SPEED,
) -> list[dict[str, Any]]:
    """Per-video direction records of N generated videos against their reference rows."""
    generated, true, error = speed_records(frames, rows, cfg, parser, cond_frames)
    along = generated[:, 0] * np.sign(true[:, 0])  # generated speed along the conditioned direction
    return [
        {"video_id": row["video_id"], "true_velocity": float(true[i, 0]), "generated_velocity": float(generated[i, 0]),
         "error": float(error[i]), "reversed": bool(along[i] < -reversal_speed) if np.isfinite(along[i]) else None}
        for i, row in enumerate(rows)
    ]


def case_config_of(reference_dir: str | Path) -> DataConfig:
    """The data config a ball evaluation set was generated with."""
    config = (read_manifest(reference_dir).get("identity") or {}).get("settings", {}).get("config") or {}
    if not config.get("scenario"):
        raise ValueError(f"{reference_dir}: not a ball dataset (its manifest records no data config)")
    return DataConfig.model_validate(config)


def between_outer_bands(cfg: DataConfig) -> ValueRange:
    """The speeds between the lowest band's top and the highest band's bottom: the span every
    layout with the same outer bands shares (the wide gap and its restored-band variants)."""
    return ValueRange(lo=cfg.train_velocity[0].hi, hi=cfg.train_velocity[-1].lo)


def score_case_set(
    rollout_dir: str | Path, reference_dir: str | Path, parser: str, cond_frames: int, records_of=gap_records,
    **options: Any,
) -> list[dict[str, Any]]:
    """Per-video records (`gap_records` or `flip_records`) of a rollout set (or a VAE's
    reconstructions) of an evaluation set, joined to the reference rows by video_id; `options`
    go to `records_of` (flip_records' reversal_speed)."""
    cfg = case_config_of(reference_dir)
    if cfg.scenario != "uniform_motion":
        raise ValueError(f"{reference_dir}: speed probes read one ball moving uniformly, not {cfg.scenario}")
    if records_of is gap_records and cfg.train_velocity is None:
        raise ValueError(f"{reference_dir}: not an interpolation-gap dataset (its config has no train_velocity)")
    references = {row["video_id"]: row for row in iter_rows(reference_dir, ["video_id", "colors", "positions", "velocities", "radii"])}
    records: list[dict[str, Any]] = []
    for batch in iter_batches(rollout_dir, ["video_id", "frames", "frames_encoding", "frame_shape"], READ_BATCH):
        rows = [references[r["video_id"]] for r in batch]
        records.extend(records_of([decode_frames(r) for r in batch], rows, cfg, parser, cond_frames, **options))
    return records


def hull_plane(cfg: DataConfig) -> tuple[str, str]:
    """The two parameters the left-out boxes bound (v1, v2 or r1, r2), in grid order."""
    bounded = sorted({name for box in cfg.train_exclude or [] for name in box}, key=("r1", "r2", "v1", "v2").index)
    if cfg.scenario != "collision" or len(bounded) != 2:
        raise ValueError("train_exclude: a convex-hull probe leaves out boxes of one plane of collision, (v1, v2) or (r1, r2)")
    return bounded[0], bounded[1]


def hull_polygon(cfg: DataConfig) -> np.ndarray:
    """(V, 2) the convex hull of the trained part of the plane, its vertices counterclockwise: a
    lattice over the plane's ID ranges with the left-out boxes removed (independent of the set's
    size, so every size of a variant has the same hull)."""
    from scipy.spatial import ConvexHull

    plane = hull_plane(cfg)
    ranges = [getattr(cfg.id, "radius" if name.startswith("r") else "velocity")[0] for name in plane]
    axes = [np.linspace(r.lo, r.hi, HULL_LATTICE) for r in ranges]
    lattice = np.stack([m.ravel() for m in np.meshgrid(*axes, indexing="ij")], axis=1)  # (L², 2)
    kept = lattice[~cfg.excluded(lattice, plane)]
    return kept[ConvexHull(kept).vertices]


def hull_regions(cfg: DataConfig, points: np.ndarray) -> np.ndarray:
    """(N,) region of each (N, 2) point of the hull plane: trained, inside or outside."""
    plane = hull_plane(cfg)
    in_range = np.ones(len(points), dtype=bool)
    for column, name in enumerate(plane):
        bounds = getattr(cfg.id, "radius" if name.startswith("r") else "velocity")[0]
        in_range &= (points[:, column] >= bounds.lo) & (points[:, column] <= bounds.hi)
    trained = in_range & ~cfg.excluded(points, plane)
    from scipy.spatial import Delaunay

    inside = Delaunay(hull_polygon(cfg)).find_simplex(points) >= 0
    return np.where(trained, "trained", np.where(inside, "inside", "outside"))


def hull_records(
    records: Sequence[dict[str, Any]], reference_rows: dict[str, dict[str, Any]], cfg: DataConfig, metric: str,
) -> list[dict[str, Any]]:
    """Per-video hull records from a trial's physics records (with their `vae_floor_` scores):
    the point on the plane, its region, the headline error and the VAE's."""
    plane = hull_plane(cfg)
    params = [json.loads(reference_rows[r["video_id"]]["params"]) for r in records]
    points = np.array([[p[name] for name in plane] for p in params], dtype=np.float64).reshape(-1, 2)
    regions = hull_regions(cfg, points)
    return [
        {"video_id": r["video_id"], plane[0]: float(points[i, 0]), plane[1]: float(points[i, 1]),
         "region": str(regions[i]), "error": r[metric], "floor": r.get(f"vae_floor_{metric}", float("nan"))}
        for i, r in enumerate(records)
    ]


def hull_summary(records: Sequence[dict[str, Any]], resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Per region the mean error and the VAE floor's, with 95 % bootstrap intervals."""
    summary: dict[str, Any] = {"num_videos": len(records)}
    for region in HULL_REGIONS:
        members = [r for r in records if r["region"] == region]
        summary[region] = mean_estimate(np.array([r["error"] for r in members], dtype=np.float64), resamples, seed)
        summary[f"{region}_floor"] = mean_estimate(np.array([r["floor"] for r in members], dtype=np.float64), resamples, seed)
    return summary


def mean_estimate(values: np.ndarray, resamples: int, seed: int) -> dict[str, Any]:
    """The mean of the finite values with its 95 % bootstrap interval and their count."""
    values = values[np.isfinite(values)]
    return {"mean": float(values.mean()) if values.size else None, "ci": bootstrap_ci(values, resamples, seed),
            "n": int(values.size)}


def gap_summary(
    records: Sequence[dict[str, Any]], span: ValueRange, resamples: int = 1000, seed: int = 0,
) -> dict[str, Any]:
    """Inside- and outside-gap error, their ratio, the pull and the error over `span` (a fixed
    speed range, e.g. the widest gap of a study), each with its 95 % bootstrap interval; the
    ratio's interval resamples both groups together (paired by the same resample of videos)."""
    error = np.array([r["error"] for r in records], dtype=np.float64)
    inside = np.array([r["in_gap"] for r in records], dtype=bool)
    speed = np.array([r["true_velocity"] for r in records], dtype=np.float64)
    pull = np.array([r["pull"] for r in records], dtype=np.float64)
    summary = {
        "num_videos": len(records),
        "inside": mean_estimate(error[inside], resamples, seed),
        "outside": mean_estimate(error[~inside], resamples, seed),
        "pull": mean_estimate(pull[inside], resamples, seed),
        "span": mean_estimate(error[(speed >= span.lo) & (speed <= span.hi)], resamples, seed),
        "span_range": [span.lo, span.hi],
    }
    summary["ratio"] = {"mean": None, "ci": None}
    finite = np.isfinite(error)
    if (inside & finite).any() and (~inside & finite).any():
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, len(error), size=(resamples, len(error)))  # (R, N) resampled videos
        kept = finite[picks]
        inner = np.where(kept & inside[picks], error[picks], 0).sum(1) / np.maximum((kept & inside[picks]).sum(1), 1)
        outer = np.where(kept & ~inside[picks], error[picks], 0).sum(1) / np.maximum((kept & ~inside[picks]).sum(1), 1)
        ratios = inner / np.where(outer > 0, outer, np.nan)
        ratios = ratios[np.isfinite(ratios)]
        summary["ratio"] = {
            "mean": summary["inside"]["mean"] / summary["outside"]["mean"] if summary["outside"]["mean"] else None,
            "ci": (float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))) if ratios.size else None,
        }
    return summary


def flip_summary(records: Sequence[dict[str, Any]], resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The reversed fraction (of videos whose direction could be read) and the drift, generated
    minus true x velocity, each with its 95 % bootstrap interval."""
    reversed_ = np.array([r["reversed"] for r in records if r["reversed"] is not None], dtype=np.float64)
    drift = np.array([r["generated_velocity"] - r["true_velocity"] for r in records], dtype=np.float64)
    return {"num_videos": len(records), "reversed": mean_estimate(reversed_, resamples, seed),
            "drift": mean_estimate(drift, resamples, seed)}


def case_metrics(summary: dict[str, Any], prefix: str) -> dict[str, float]:
    """A gap, flip or hull summary as flat MLflow metrics: <prefix>/<quantity> (inside, outside,
    span, pull, ratio; reversed, drift; or trained, inside, outside and their _floor) with
    _ci_low / _ci_high."""
    metrics = {f"{prefix}/num_videos": float(summary["num_videos"])}
    for name in ("inside", "outside", "span", "pull", "ratio", "reversed", "drift", "trained",
                 "trained_floor", "inside_floor", "outside_floor"):
        if name not in summary:
            continue
        entry = summary[name]
        if entry["mean"] is None:
            continue
        metrics[f"{prefix}/{name}"] = entry["mean"]
        if entry["ci"] is not None:
            metrics[f"{prefix}/{name}_ci_low"], metrics[f"{prefix}/{name}_ci_high"] = entry["ci"]
    return metrics
