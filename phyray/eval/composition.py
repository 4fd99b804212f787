"""Composition probes (paper §5.4, Fig. 11, A.5.3; docs/paper.md §6.5, 6.6): each object's motion
between the events of a video, and whether it survives, read from pixels.

A composition video (phyray/sim/compose.py) holds one or two objects, each of its own colour (a
red ball; a blue square or a blue ball), beside a dark wall no colour mask takes, so the ball
parser (`phyray.eval.physics.parse_states`) finds each object by its colour alone, whatever its
shape. Its row lists its events (a collision, a bounce off the wall) with the first frame after
each; they cut the frames from the first generated one (t ≥ c) to the end into segments, "start"
and then "after_<event>" (after_collision, after_bounce).

Per video and object (`composition_records`), named by its role (`object_role`: "red_ball",
"blue_square"):
- per segment: the mean generated and true x velocity over the intervals (t − 1, t] inside the
  segment (an interval holding an event belongs to neither side) whose two frames show the
  ground-truth object wholly in view and the generated one found; the error is their absolute
  difference (NaN where no interval counts: the object left the view, or was lost). An object
  the model loses is the survival numbers' business, not the velocity error's;
- `moving` per segment: the ground truth moves there (a ball at rest does not);
- survival: the fraction of frames t ≥ c with the ground-truth object wholly in view in which
  the generated object is found (1 − its parse-failure rate);
- vanished: it is lost for good — not found on the last `VANISH_FRAMES` of those frames (or all
  of them, if fewer), and never again after;
- bounced (an object with a bounce event): the generated object moves along the true direction,
  faster than `reversal_speed`, both before the bounce and after it (so it turned back as the
  truth did); False where it was lost, None where the truth has no interval on either side.

The same function scores a rollout, the ground truth itself (the parser's floor) and a VAE's
reconstruction (the VAE's floor). `composition_summary` pools videos: per role and segment the
error of moving objects, per role its error over all its moving segments (each video's mean),
survival, the vanished and bounced fractions, each with a 95 % bootstrap interval over videos.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from phyray.config import COLOR_NAMES
from phyray.data.shards import decode_frames, iter_batches, iter_rows, row_states
from phyray.eval.cases import READ_BATCH, REVERSAL_SPEED, case_config_of, mean_estimate
from phyray.eval.physics import in_view, parse_states

# Bumped when the records or the summary change: reports made by another version are remade.
COMPOSE_VERSION = 1
# Frames an object must be missing through the end of its judged frames to count as vanished: one
# missed frame is a parse glitch, three at 0.1 s each are an object gone.
VANISH_FRAMES = 3
# A ground-truth object moves in a segment when its mean x speed there exceeds this (world units/s).
MOVING_SPEED = 1e-6
REFERENCE_COLUMNS = ["video_id", "params", "colors", "shapes", "positions", "velocities", "radii"]


def object_role(color: Sequence[int], shape: str) -> str:
    """An object's name in the records: its colour and "ball" or "square" ("red_ball")."""
    name = COLOR_NAMES.get(tuple(int(c) for c in color), "#{:02x}{:02x}{:02x}".format(*color))
    return f"{name}_{'square' if shape == 'square' else 'ball'}"


def segment_names(events: Sequence[dict[str, Any]]) -> list[str]:
    """"start", then "after_<kind>" per event ("_2", "_3" for a repeated kind)."""
    names = ["start"]
    for event in events:
        name = f"after_{event['kind']}"
        repeats = sum(n == name or n.startswith(name + "_") for n in names)
        names.append(name if not repeats else f"{name}_{repeats + 1}")
    return names


def _segment_velocity(x: np.ndarray, counted: np.ndarray, frame_dt: float) -> float:
    """Mean x velocity over the counted intervals (t - 1, t] of (T,) positions; NaN if none."""
    if not counted.any():
        return float("nan")
    return float((np.diff(x)[counted] / frame_dt).mean())


def _trailing_misses(found: np.ndarray) -> int:
    """How many of the last entries of `found` are False, in a row."""
    hits = np.flatnonzero(found)
    return len(found) - (hits[-1] + 1) if hits.size else len(found)


def video_record(
    frames: np.ndarray, row: dict[str, Any], parser: str, cond_frames: int, world_size: float, frame_dt: float,
    reversal_speed: float = REVERSAL_SPEED,
) -> dict[str, Any]:
    """The per-object record of one generated (T, H, W, 3) video against its reference row."""
    gt_positions, _, gt_radii = row_states(row)  # (T, K, 2), (K,)
    params = json.loads(row["params"])
    events = params.get("events", [])
    t = gt_positions.shape[0]
    if frames.shape[0] != t:
        raise ValueError(f"video {row['video_id']}: {frames.shape[0]} frames, its ground truth {t}")
    parsed = parse_states([frames], row["colors"], parser, world_size)
    found = parsed.found[0]  # (T, K)
    judged = in_view(gt_positions[None], gt_radii[None], world_size)[0] & (np.arange(t) >= cond_frames)[:, None]
    bounds = [cond_frames, *[max(int(e["frame"]), cond_frames) for e in events], t]
    names = segment_names(events)
    objects = []
    for k, (color, shape) in enumerate(zip(row["colors"], row["shapes"])):
        seen, visible = found[:, k], judged[:, k]
        gt_x = gt_positions[:, k, 0].astype(np.float64)
        generated_x = parsed.positions[0, :, k, 0]
        segments = {}
        for name, start, stop in zip(names, bounds[:-1], bounds[1:]):
            inside = np.zeros(t - 1, dtype=bool)  # interval (i, i + 1] is entry i
            inside[start : max(stop - 1, start)] = True
            both_visible = inside & visible[1:] & visible[:-1]
            counted = both_visible & seen[1:] & seen[:-1]
            true, generated = _segment_velocity(gt_x, counted, frame_dt), _segment_velocity(generated_x, counted, frame_dt)
            # The truth's own direction, over every interval it shows (found or not).
            shown = _segment_velocity(gt_x, both_visible, frame_dt)
            direction = float(np.sign(shown)) if abs(shown) > MOVING_SPEED else 0.0
            segments[name] = {
                "true": true, "generated": generated, "error": abs(generated - true), "intervals": int(counted.sum()),
                "moving": direction != 0, "direction": direction,
            }
        judged_found = seen[visible]
        record = {
            "role": object_role(color, shape),
            "segments": segments,
            "survival": float(judged_found.mean()) if judged_found.size else float("nan"),
            "vanished": bool(judged_found.size and _trailing_misses(judged_found) >= min(VANISH_FRAMES, judged_found.size)),
        }
        for index, event in enumerate(events):
            if event["kind"] == "bounce" and k in event["objects"]:
                sides = (segments[names[index]], segments[names[index + 1]])
                if not all(side["moving"] for side in sides):
                    record["bounced"] = None  # the truth shows no motion on a side: nothing to judge
                else:
                    along = [side["generated"] * side["direction"] for side in sides]  # NaN: lost there
                    record["bounced"] = bool(all(np.isfinite(a) and a > reversal_speed for a in along))
        objects.append(record)
    return {"video_id": row["video_id"], "kind": params.get("kind"), "events": [e["kind"] for e in events],
            "objects": objects}


def composition_records(
    frames: Sequence[np.ndarray], rows: Sequence[dict[str, Any]], parser: str, cond_frames: int,
    world_size: float = 10.0, frame_dt: float = 0.1, reversal_speed: float = REVERSAL_SPEED,
) -> list[dict[str, Any]]:
    """Per-video records (`video_record`) of N generated videos against their reference rows."""
    return [video_record(video, row, parser, cond_frames, world_size, frame_dt, reversal_speed)
            for video, row in zip(frames, rows)]


def score_composition_set(
    rollout_dir: str | Path, reference_dir: str | Path, parser: str, cond_frames: int,
    reversal_speed: float = REVERSAL_SPEED,
) -> list[dict[str, Any]]:
    """Per-video records of a rollout set (or a VAE's reconstructions, or the reference set itself)
    of a composition evaluation set, joined to the reference rows by video_id."""
    cfg = case_config_of(reference_dir)
    if cfg.compose is None:
        raise ValueError(f"{reference_dir}: not a composition dataset (its config has no compose section)")
    references = {row["video_id"]: row for row in iter_rows(reference_dir, REFERENCE_COLUMNS)}
    records: list[dict[str, Any]] = []
    for batch in iter_batches(rollout_dir, ["video_id", "frames", "frames_encoding", "frame_shape"], READ_BATCH):
        records.extend(composition_records(
            [decode_frames(r) for r in batch], [references[r["video_id"]] for r in batch], parser, cond_frames,
            cfg.physics.world_size, cfg.physics.frame_dt, reversal_speed,
        ))
    return records


def composition_summary(records: Sequence[dict[str, Any]], resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Per role: "<role>/<segment>" (moving objects' error there), "<role>/moving_error" (each
    video's mean over the role's moving segments), "<role>/survival", "<role>/vanished" and
    "<role>/bounced" (fractions), each {mean, ci, n}; and num_videos."""
    values: dict[str, list[float]] = {}
    for record in records:
        for obj in record["objects"]:
            role = obj["role"]
            moving = [s["error"] for s in obj["segments"].values() if s["moving"]]
            for name, segment in obj["segments"].items():
                if segment["moving"]:
                    values.setdefault(f"{role}/{name}", []).append(segment["error"])
            if moving:
                finite = [e for e in moving if np.isfinite(e)]
                values.setdefault(f"{role}/moving_error", []).append(float(np.mean(finite)) if finite else float("nan"))
            values.setdefault(f"{role}/survival", []).append(obj["survival"])
            values.setdefault(f"{role}/vanished", []).append(float(obj["vanished"]))
            if obj.get("bounced") is not None:
                values.setdefault(f"{role}/bounced", []).append(float(obj["bounced"]))
    summary: dict[str, Any] = {"num_videos": len(records)}
    for name, entries in sorted(values.items()):
        summary[name] = mean_estimate(np.array(entries, dtype=np.float64), resamples, seed)
    return summary


def composition_metrics(summary: dict[str, Any], prefix: str) -> dict[str, float]:
    """A composition summary as flat MLflow metrics <prefix>/<role>/<quantity>, with _ci_low and
    _ci_high, and <prefix>/num_videos."""
    metrics = {f"{prefix}/num_videos": float(summary["num_videos"])}
    for name, entry in summary.items():
        if name == "num_videos" or entry["mean"] is None:
            continue
        metrics[f"{prefix}/{name}"] = entry["mean"]
        if entry["ci"] is not None:
            metrics[f"{prefix}/{name}_ci_low"], metrics[f"{prefix}/{name}_ci_high"] = entry["ci"]
    return metrics
