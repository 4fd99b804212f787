"""The interpolation-gap metric (paper §5.1, Fig. 5): is a speed never trained on generated as it
was conditioned, or pulled toward the speeds that were?

A gap model trains on speed bands of the ID range only (`DataConfig.train_velocity`) and is
evaluated over the whole range. Per evaluation video (`gap_records`):
- `true_velocity` and `generated_velocity`: the ball's mean x velocity over the frames the
  headline metric counts (t ≥ c, fully in view), in the ground truth and parsed from the rollout;
- `error`: the Euclidean error of the mean velocity (the study's headline, vel_err_mean_velocity);
- `in_gap`: the true speed lies outside every training band;
- `pull`: for a video in a gap, the generated-minus-true speed toward the nearest trained speed
  (positive: pulled toward the bands; the paper's finding), NaN outside the gaps.

`gap_summary` gives the mean error inside and outside the gaps, their ratio and the mean pull,
each with a 95 % bootstrap interval over videos, and the error over a fixed speed span (so
layouts with different gaps compare on the same videos).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from phyray.config import DataConfig, ValueRange
from phyray.data.shards import decode_frames, iter_rows, read_manifest, row_states
from phyray.eval.physics import mean_velocities, parse_after_conditioning, valid_frames
from phyray.eval.stats import bootstrap_ci

# Bumped when the records or the summary change: reports made by another version are remade.
GAP_VERSION = 1
READ_BATCH = 64


def nearest_trained(bands: Sequence[ValueRange], velocity: np.ndarray) -> np.ndarray:
    """The trained speed nearest each speed (itself inside a band)."""
    edges = np.array([[band.lo, band.hi] for band in bands])  # (B, 2)
    clipped = np.clip(velocity[:, None], edges[:, 0], edges[:, 1])  # (N, B): nearest point per band
    return clipped[np.arange(len(velocity)), np.abs(clipped - velocity[:, None]).argmin(axis=1)]


def gap_records(
    frames: Sequence[np.ndarray], rows: Sequence[dict[str, Any]], cfg: DataConfig, parser: str, cond_frames: int,
) -> list[dict[str, Any]]:
    """Per-video gap records of N generated videos (T, H, W, 3) against their reference rows."""
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
    speed = true[:, 0, 0]
    in_gap = ~cfg.in_training_bands(speed)
    toward = np.sign(nearest_trained(cfg.train_velocity, speed) - speed)
    pull = np.where(in_gap, (generated[:, 0, 0] - speed) * toward, np.nan)
    return [
        {"video_id": row["video_id"], "true_velocity": float(speed[i]), "generated_velocity": float(generated[i, 0, 0]),
         "error": float(error[i]), "in_gap": bool(in_gap[i]), "pull": float(pull[i])}
        for i, row in enumerate(rows)
    ]


def gap_config_of(reference_dir: str | Path) -> DataConfig:
    """The data config an evaluation set of a gap layout was generated with."""
    config = (read_manifest(reference_dir).get("identity") or {}).get("settings", {}).get("config") or {}
    if not config.get("train_velocity"):
        raise ValueError(f"{reference_dir}: not an interpolation-gap dataset (its config has no train_velocity)")
    return DataConfig.model_validate(config)


def between_outer_bands(cfg: DataConfig) -> ValueRange:
    """The speeds between the lowest band's top and the highest band's bottom: the span every
    layout with the same outer bands shares (the wide gap and its restored-band variants)."""
    return ValueRange(lo=cfg.train_velocity[0].hi, hi=cfg.train_velocity[-1].lo)


def score_gap_set(
    rollout_dir: str | Path, reference_dir: str | Path, parser: str, cond_frames: int,
) -> list[dict[str, Any]]:
    """Per-video gap records of a rollout set (or a VAE's reconstructions) of an evaluation set
    of a gap layout, joined to the reference rows by video_id."""
    cfg = gap_config_of(reference_dir)
    references = {row["video_id"]: row for row in iter_rows(reference_dir, ["video_id", "colors", "positions", "velocities", "radii"])}
    records: list[dict[str, Any]] = []
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        rows = [references[r["video_id"]] for r in batch]
        records.extend(gap_records([decode_frames(r) for r in batch], rows, cfg, parser, cond_frames))
        batch.clear()

    for row in iter_rows(rollout_dir, ["video_id", "frames", "frames_encoding", "frame_shape"]):
        batch.append(row)
        if len(batch) == READ_BATCH:
            flush()
    if batch:
        flush()
    return records


def _estimate(values: np.ndarray, resamples: int, seed: int) -> dict[str, Any]:
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
        "inside": _estimate(error[inside], resamples, seed),
        "outside": _estimate(error[~inside], resamples, seed),
        "pull": _estimate(pull[inside], resamples, seed),
        "span": _estimate(error[(speed >= span.lo) & (speed <= span.hi)], resamples, seed),
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


def gap_metrics(summary: dict[str, Any], prefix: str) -> dict[str, float]:
    """A summary as flat MLflow metrics: <prefix>/<inside|outside|span|pull|ratio> with
    _ci_low / _ci_high."""
    metrics = {f"{prefix}/num_videos": float(summary["num_videos"])}
    for name in ("inside", "outside", "span", "pull", "ratio"):
        entry = summary[name]
        if entry["mean"] is None:
            continue
        metrics[f"{prefix}/{name}"] = entry["mean"]
        if entry["ci"] is not None:
            metrics[f"{prefix}/{name}_ci_low"], metrics[f"{prefix}/{name}_ci_high"] = entry["ci"]
    return metrics
