"""The attribute-probe metric (paper §5.3, Figs. 8, 9): which attribute a rollout keeps.

A probe evaluation video is conditioned on a swapped combination (a, b) of the two probed
attributes A and B: a pairing never seen in training, where A's value a was always seen with B's
other value 1-b, and b with 1-a. After the conditioning frames the rollout's object is read from
its pixels (`phyray.eval.attributes`) and each attribute assigned to a value set:
- colour and shape: the most frequent reading over the generated frames (a reading that is
  neither of the pair's values counts as neither set);
- size: the median reading; velocity: the least-squares slope of x over the generated frames;
  each to the nearer of the two ranges.
The outcome is then
- `a_wins`: A kept, B flipped to what A was trained with (a, 1-b);
- `b_wins`: B kept, A flipped (1-a, b);
- `composed`: both kept (a, b), the model composed a pairing it never saw;
- `neither`: both flipped, or a value outside the pair;
- `unreadable`: fewer than two generated frames with the object wholly in view.
For a continuous attribute the drift (generated minus conditioned value) is reported too, and
its component toward the value the training pairing gives ("toward": positive when the model
pulls the value toward what it saw with the other attribute).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from phyray.config import SHAPES, DataConfig, ProbeConfig
from phyray.data.shards import decode_frames, iter_batches, iter_rows, read_manifest
from phyray.eval.attributes import Readout, read_attributes
from phyray.eval.stats import bootstrap_ci

OUTCOMES = ("a_wins", "b_wins", "composed", "neither", "unreadable")
CONTINUOUS = ("size", "velocity")
# Bumped when the readout or the outcome rules change: reports made by another version are remade.
PROBE_VERSION = 2  # 2: background tolerance 0.1 -> 0.2 (phyray/eval/attributes.py)
# Videos read together: (N, T, H, W) float planes of a batch stay small at probe resolutions.
READ_BATCH = 64


def nearest_set(probe: ProbeConfig, attribute: str, value: float) -> int:
    """The range of a continuous attribute nearer to a value (0 inside it); -1 for NaN."""
    if not np.isfinite(value):
        return -1
    distances = [max(r.lo - value, value - r.hi, 0.0) for r in getattr(probe, attribute)]
    return int(np.argmin(distances))


def _mode(values: np.ndarray) -> int:
    counts = Counter(values.tolist())
    return max(counts, key=lambda v: (counts[v], -v))  # ties: the lower index, deterministic


def generated_values(readout: Readout, index: int, cond_frames: int, frame_dt: float) -> dict[str, float] | None:
    """One rollout's generated colour index, shape code, size and x velocity; None if unreadable."""
    frames = np.flatnonzero(readout.readable[index, cond_frames:]) + cond_frames
    if len(frames) < 2:
        return None
    x = readout.position[index, frames, 0]
    slope = np.polyfit(frames * frame_dt, x, 1)[0]
    return {
        "color": _mode(readout.color[index, frames]), "shape": _mode(readout.shape[index, frames]),
        "size": float(np.median(readout.size[index, frames])), "velocity": float(slope),
    }


def generated_sets(probe: ProbeConfig, values: dict[str, float]) -> dict[str, int]:
    """The value set each generated attribute falls in (-1: neither of the pair's)."""
    shape = SHAPES[values["shape"]] if values["shape"] >= 0 else None
    return {
        "color": int(values["color"]) if values["color"] >= 0 else -1,
        "shape": probe.shape.index(shape) if shape in probe.shape else -1,
        "size": nearest_set(probe, "size", values["size"]),
        "velocity": nearest_set(probe, "velocity", values["velocity"]),
    }


def outcome(conditioned: tuple[int, int], generated: tuple[int, int]) -> str:
    """The outcome of one rollout from its (A, B) sets, conditioned and generated."""
    (a, b), (ga, gb) = conditioned, generated
    if (ga, gb) == (a, b):
        return "composed"
    if ga == a and gb == 1 - b:
        return "a_wins"
    if gb == b and ga == 1 - a:
        return "b_wins"
    return "neither"


def _center(value_range) -> float:
    return 0.5 * (value_range.lo + value_range.hi)


def probe_records(
    probe: ProbeConfig, readout: Readout, rows: Sequence[dict[str, Any]], cond_frames: int, frame_dt: float
) -> list[dict[str, Any]]:
    """Per-video outcome records of rollouts of probe videos.

    Args:
        probe: the dataset's probe.
        readout: `read_attributes` of the N rollouts.
        rows: the N reference rows they were conditioned on (params, radii, velocities).
        cond_frames: conditioning frames c, not read.
        frame_dt: seconds between frames.
    """
    records = []
    for index, row in enumerate(rows):
        params = json.loads(row["params"])
        truth = {"size": float(row["radii"][0]), "velocity": float(params["velocity"])}
        conditioned = probe.combo_of(truth["size"], truth["velocity"], int(params.get("color", 0)), int(params.get("shape", 0)))
        record: dict[str, Any] = {"video_id": row["video_id"], "combo": probe.combo_label(conditioned),
                                  "trained": conditioned in probe.train}
        values = generated_values(readout, index, cond_frames, frame_dt)
        if values is None:
            records.append(record | {"outcome": "unreadable"})
            continue
        generated = generated_sets(probe, values)
        record["outcome"] = outcome(conditioned, tuple(generated[a] for a in probe.attributes))
        record["generated"] = {a: generated[a] for a in probe.attributes}
        for position, attribute in enumerate(probe.attributes):
            if attribute not in CONTINUOUS:
                continue
            drift = values[attribute] - truth[attribute]
            # Toward the value this attribute took beside the other one in training: the other
            # set of this attribute (the one `b_wins` / `a_wins` would flip it to).
            ranges = getattr(probe, attribute)
            own = conditioned[position]
            direction = np.sign(_center(ranges[1 - own]) - _center(ranges[own]))
            record[f"{attribute}_conditioned"] = truth[attribute]
            record[f"{attribute}_generated"] = values[attribute]
            record[f"{attribute}_drift"] = drift
            record[f"{attribute}_drift_toward"] = float(drift * direction)
        records.append(record)
    return records


def summarize_outcomes(
    records: Sequence[dict[str, Any]], resamples: int = 1000, seed: int = 0, swapped_only: bool = True
) -> dict[str, Any]:
    """Counts and fractions of each outcome with bootstrap 95% intervals over videos, and the
    mean drift toward the training pairing of each continuous attribute.

    swapped_only: summarise the swapped combinations (the probe); trained ones are the control.
    """
    kept = [r for r in records if not (swapped_only and r["trained"])]
    summary: dict[str, Any] = {"num_videos": len(kept), "outcomes": {}}
    for name in OUTCOMES:
        hits = np.array([r["outcome"] == name for r in kept], dtype=np.float64)
        interval = bootstrap_ci(hits, resamples, seed) if len(hits) else None
        summary["outcomes"][name] = {
            "count": int(hits.sum()), "fraction": float(hits.mean()) if len(hits) else float("nan"),
            "ci": list(interval) if interval else None,
        }
    # A's margin over B: per video +1 (A won), -1 (B won) or 0, so its mean is the difference of
    # the two fractions and its bootstrap interval that of the difference.
    signed = np.array([{"a_wins": 1.0, "b_wins": -1.0}.get(r["outcome"], 0.0) for r in kept])
    interval = bootstrap_ci(signed, resamples, seed) if len(signed) else None
    summary["margin"] = {"mean": float(signed.mean()) if len(signed) else float("nan"),
                         "ci": list(interval) if interval else None}
    for attribute in CONTINUOUS:
        key = f"{attribute}_drift_toward"
        values = np.array([r[key] for r in kept if key in r], dtype=np.float64)
        if values.size:
            interval = bootstrap_ci(values, resamples, seed)
            summary[key] = {"mean": float(values.mean()), "ci": list(interval), "num_videos": int(values.size)}
    return summary


def priority(summary: dict[str, Any]) -> str:
    """Which attribute won the pair: "a", "b", or "tie" when the margin's interval holds 0."""
    interval = summary["margin"]["ci"]
    if interval is None:
        return "tie"
    return "a" if interval[0] > 0 else "b" if interval[1] < 0 else "tie"


def probe_config_of(reference_dir: str | Path) -> DataConfig | None:
    """The data config a reference set was generated with, if it is a probe set (else None)."""
    settings = (read_manifest(reference_dir).get("identity") or {}).get("settings", {})
    config = settings.get("config") or {}
    return DataConfig.model_validate(config) if config.get("probe") else None


def score_probe_set(rollout_dir: str | Path, reference_dir: str | Path, cond_frames: int) -> list[dict[str, Any]]:
    """Per-video probe records of a rollout set (or of a VAE's reconstructions) of a probe set,
    joined to the reference rows by video_id."""
    cfg = probe_config_of(reference_dir)
    if cfg is None:
        raise ValueError(f"{reference_dir}: not an attribute-probe dataset (its config has no probe)")
    references = {row["video_id"]: row for row in iter_rows(reference_dir, ["video_id", "params", "radii"])}
    colors = np.array(cfg.probe.color, dtype=np.uint8)
    records: list[dict[str, Any]] = []
    for batch in iter_batches(rollout_dir, ["video_id", "frames", "frames_encoding", "frame_shape"], READ_BATCH):
        readout = read_attributes(np.stack([decode_frames(r) for r in batch]), colors, cfg.physics.world_size,
                                  cfg.probe.ring_inner)
        rows = [references[r["video_id"]] for r in batch]
        records.extend(probe_records(cfg.probe, readout, rows, cond_frames, cfg.physics.frame_dt))
    return records


def probe_metrics(summary: dict[str, Any], prefix: str) -> dict[str, float]:
    """A summary as flat MLflow metrics: <prefix>/<outcome> fractions, the margin and the
    drifts, each with _ci_low / _ci_high."""
    metrics: dict[str, float] = {f"{prefix}/num_videos": float(summary["num_videos"])}
    entries = {name: (o["fraction"], o["ci"]) for name, o in summary["outcomes"].items()}
    entries["margin"] = (summary["margin"]["mean"], summary["margin"]["ci"])
    for attribute in CONTINUOUS:
        if f"{attribute}_drift_toward" in summary:
            drift = summary[f"{attribute}_drift_toward"]
            entries[f"{attribute}_drift_toward"] = (drift["mean"], drift["ci"])
    for name, (value, interval) in entries.items():
        metrics[f"{prefix}/{name}"] = value
        if interval is not None:
            metrics[f"{prefix}/{name}_ci_low"], metrics[f"{prefix}/{name}_ci_high"] = interval
    return metrics
