"""The combinatorial report: PHYRE rollouts scored like the paper's Table 2, without ball states.

    records = evaluate_scene_records("rollouts/eval_out_of_template", "data/eval_out_of_template")
    rows = summarize_scenes(records, fvd_rows)

Per video (generated frames t >= c only, pixel values in [0, 1], at the rollout's resolution;
a larger reference is area-averaged to it):

- psnr, ssim: `phyray.eval.video.pixel_metrics` (frame-averaged);
- lpips: AlexNet LPIPS (`phyray.eval.lpips`) when a backbone is given, else not computed;
- abnormal: 1 if the reference-free judge (`phyray.eval.abnormal`) finds any physics violation
  in the rollout, and `abnormal_<check>` per check. A rollout whose pixels are mostly no PHYRE
  colour cannot be parsed at all; it counts as abnormal (`abnormal_unreadable`). Below
  `TRUSTED_RESOLUTION` the rates come with a warning, and everywhere `gt_floor_abnormal` (the
  judge on the reference videos at the same side) shows how often it flags ground truth.

Beside each video, `frozen_<metric>` (psnr, ssim, lpips): the same scores of its reference with
nothing moving after the conditioning frames (`phyray.eval.video.frozen_video`), and
`psnr_over_frozen`, the rollout's PSNR minus that one, so its interval is paired. A model that
does not beat nothing moving has not continued the scene (the 2026-12-04 combinatorial mini
study's DiT-T scored below it). FVD and the judge are not run on it: no set of frozen videos
is kept, and nothing moving is what the judge's levitation rule flags.

Per evaluation set: FVD (`phyray.eval.fvd`, I3D Kinetics-400) of the rollouts against their
references, when the I3D weights are given; its protocol (videos, frames, side, weights hash)
travels with the row, since FVD depends on N. No interval: FVD is a set statistic.

Summary rows carry scenario, split, template ("all", or a template id), resolution, metric,
value, the 95 % bootstrap interval over videos and n, like the physics report's.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow.parquet as pq

from phyray.artifacts import Identity, atomic_write_bytes, digest, kept_json, sha256_file
from phyray.data.shards import (
    ShardError,
    dataset_id,
    decode_frames,
    iter_batches,
    iter_rows,
    read_shard,
    shard_paths,
)
from phyray.eval.abnormal import (
    CHECKS,
    TRUSTED_RESOLUTION,
    AbnormalConfig,
    UnknownPalette,
    find_violations,
    palette_labels,
)
from phyray.eval.report import reference_frames
from phyray.eval.stats import mean_with_interval
from phyray.eval.video import frozen_video, pixel_metrics

# Bump when the rules of phyray/eval/abnormal.py change (its thresholds enter scores' identity
# on their own): cached scores and trial reports made by other rules are then not reused.
# 2: the calibration of 2026-12-02; 3: same-colour trades, 2026-12-05; 4: landing on objects,
# one frame's centroid jitter, a fast object's place ahead changing hands; 5: overlaps resolved
# in PHYRE's first step, a support leaving a landed object, births and deaths a cluster
# explains, static objects' blends, cluster members the frame's edge hides; 6: an object another
# colour lies across for a while stays one object (phyray/eval/objects.py, docs/abnormal.md)
JUDGE_VERSION = 6
SCENE_COLUMNS = ["video_id", "scenario", "split", "template_id", "frames", "frames_encoding", "frame_shape"]
ALL_TEMPLATES = "all"
VAE_FLOOR_PREFIX = "vae_floor_"
FROZEN_PREFIX = "frozen_"
FLOOR_METRICS = ("psnr", "ssim", "lpips", "abnormal")
FROZEN_VERSION = 1  # bump when what the frozen reference scores changes: reports then re-make it
ROW_FIELDS = ("scenario", "split", "template", "resolution", "metric", "value", "ci_low", "ci_high", "n")
# MLflow group names of the combinatorial splits: eval/in_template/<metric>, eval/out_of_template/<metric>.
# A dev split's sets log under the same names (the study's `eval.split` param says which).
SPLIT_GROUPS = {"eval_in_template": "in_template", "eval_out_of_template": "out_of_template",
                "dev_in_template": "in_template", "dev_out_of_template": "out_of_template"}


def abnormal_flags(frames: np.ndarray) -> dict[str, float]:
    """The judge on one (T, H, W, 3) uint8 video: abnormal and each check as 0/1 floats."""
    try:
        verdict = find_violations(palette_labels(frames))
    except UnknownPalette:
        return {"abnormal": 1.0, "abnormal_unreadable": 1.0} | {f"abnormal_{c}": np.nan for c in CHECKS}
    flags = {f"abnormal_{c}": float(verdict.first[c] is not None) for c in CHECKS}
    return {"abnormal": float(verdict.abnormal), "abnormal_unreadable": 0.0} | flags


def score_scene_videos(
    rows: Sequence[dict[str, Any]], rollouts: Sequence[np.ndarray], cond_frames: int, ssim: bool = True,
    lpips_model=None, abnormal: bool = True, device: str = "cpu",
) -> list[dict[str, Any]]:
    """Per-video records of in-memory rollouts against their reference rows."""
    references = [reference_frames(row, video.shape) for row, video in zip(rows, rollouts)]
    pixels = pixel_metrics(rollouts, references, cond_frames, ssim=ssim, device=device)
    if lpips_model is not None:
        from phyray.eval.lpips import lpips_videos

        pixels["lpips"] = lpips_videos(rollouts, references, lpips_model, cond_frames=cond_frames, device=device)
    records = []
    for i, row in enumerate(rows):
        record = {
            "video_id": row["video_id"], "scenario": row["scenario"], "split": row["split"],
            "template_id": row.get("template_id"), "resolution": int(rollouts[i].shape[1]),
        }
        record |= {name: float(values[i]) for name, values in pixels.items()}
        if abnormal:
            record |= abnormal_flags(rollouts[i])
            record["gt_floor_abnormal"] = abnormal_flags(references[i])["abnormal"]
        records.append(record)
    return records


def scene_columns(reference_dir: str | Path) -> list[str]:
    """The columns scoring reads from a set: SCENE_COLUMNS, and the palette its frames need."""
    names = pq.read_schema(shard_paths(reference_dir)[0]).names
    return [c for c in (*SCENE_COLUMNS, "palette") if c in names]


def reference_rows(reference_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The reference set's rows (what scoring needs, frames included) by video_id."""
    return {row["video_id"]: row for row in iter_rows(reference_dir, scene_columns(reference_dir))}


def evaluate_scene_records(
    rollouts_dir: str | Path, reference_dir: str | Path, cond_frames: int = 1, ssim: bool = True,
    lpips_model=None, abnormal: bool = True, device: str = "cpu", chunk: int = 16,
    reference: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Per-video records of a rollout (or reconstruction) dataset against its reference set,
    joined by video_id (`reference`: its rows, if already read); a rollout without a reference
    is a ShardError naming it."""
    reference = reference if reference is not None else reference_rows(reference_dir)
    records: list[dict[str, Any]] = []
    for path in shard_paths(rollouts_dir):
        table = read_shard(path, ["video_id", "frames", "frames_encoding", "frame_shape"])
        for start in range(0, table.num_rows, chunk):
            rollout_rows = table.slice(start, chunk).to_pylist()
            missing = [r["video_id"] for r in rollout_rows if r["video_id"] not in reference]
            if missing:
                raise ShardError(f"{path}: rollout video {missing[0]!r} is not in the reference set {reference_dir}")
            rows = [reference[r["video_id"]] for r in rollout_rows]
            videos = [decode_frames(r) for r in rollout_rows]
            records += score_scene_videos(rows, videos, cond_frames, ssim, lpips_model, abnormal, device)
    if abnormal and records and records[0]["resolution"] < TRUSTED_RESOLUTION:
        warnings.warn(
            f"{rollouts_dir}: abnormal rates at {records[0]['resolution']}² are below the judge's calibrated "
            f"{TRUSTED_RESOLUTION}² (see gt_floor_abnormal for how often it flags ground truth there)",
            stacklevel=2,
        )
    return records


def fvd_row(
    rollouts_dir: str | Path, reference_dir: str | Path, model, cond_frames: int, max_videos: int | None = None,
    device: str = "cpu", reference: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """FVD of a rollout set against its reference set (the first `max_videos` videos of each, in
    rollout order; the paper uses 600 in-template and 500 out-of-template), with its protocol:
    the first 16 frames of each video (all of a shorter one, down to I3D's 9), conditioning
    frame included. The reference set's features are kept beside it (`i3d-features/`, named by
    the set, the videos and the weights) since every cell and the VAE floor compare with them."""
    from phyray.eval.fvd import CLIP_FRAMES, RESOLUTION, frechet_distance, i3d_features

    reference = reference if reference is not None else reference_rows(reference_dir)
    rollouts = list(iter_rows(rollouts_dir, ["video_id", "frames", "frames_encoding", "frame_shape"]))[:max_videos]
    generated = np.stack([decode_frames(r) for r in rollouts])  # (N, T, H, W, 3)
    clip = min(CLIP_FRAMES, generated.shape[1])
    features = i3d_features(generated, model, device=device, clip_frames=clip)
    key = digest({"reference": dataset_id(reference_dir), "clip_frames": clip,
                  "resolution": generated.shape[2], "videos": [r["video_id"] for r in rollouts],
                  "weights": model.weights_sha256})
    cache = Path(reference_dir).parent / "i3d-features" / f"{key}.npy"
    if cache.is_file():
        truth = np.load(cache)
    else:
        videos = np.stack([reference_frames(reference[r["video_id"]], generated.shape[1:]) for r in rollouts])
        truth = i3d_features(videos, model, device=device, clip_frames=clip)
        cache.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, truth)
        atomic_write_bytes(cache, buffer.getvalue())
    first = reference[rollouts[0]["video_id"]]
    protocol = {"videos": len(rollouts), "frames": clip, "resolution": int(generated.shape[2]), "resized_to": RESOLUTION,
                "cond_frames_included": cond_frames, "features": "i3d-kinetics-400 logits", "weights_sha256": model.weights_sha256}
    return {
        "scenario": first["scenario"], "split": first["split"], "template": ALL_TEMPLATES,
        "resolution": int(generated.shape[2]), "metric": "fvd", "value": frechet_distance(features, truth),
        "ci_low": None, "ci_high": None, "n": len(rollouts), "protocol": protocol,
    }


def add_scene_floor(
    records: Sequence[dict[str, Any]], floor_records: Sequence[dict[str, Any]], prefix: str = VAE_FLOOR_PREFIX,
    what: str = "VAE reconstruction",
) -> list[dict[str, Any]]:
    """Each record with its video's scores in `floor_records` (`what` they are, for the error)
    as `<prefix><metric>` (psnr, ssim, lpips, abnormal where scored): by default the VAE's
    reconstructions, the floor any DiT working in that VAE's latents stands on."""
    floors = {r["video_id"]: r for r in floor_records}
    out = []
    for record in records:
        floor = floors.get(record["video_id"])
        if floor is None:
            raise ShardError(f"video {record['video_id']!r} has no {what} to give its floor")
        out.append(record | {f"{prefix}{m}": floor[m] for m in FLOOR_METRICS if m in floor})
    return out


def add_frozen(records: Sequence[dict[str, Any]], frozen_records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each record with its video's nothing-moving scores (`score_frozen_set`) as `frozen_<metric>`,
    and `psnr_over_frozen`, its PSNR minus that one (paired per video)."""
    return [record | {"psnr_over_frozen": record["psnr"] - record[f"{FROZEN_PREFIX}psnr"]}
            for record in add_scene_floor(records, frozen_records, FROZEN_PREFIX, "nothing-moving score")]


def score_frozen_set(
    reference_dir: str | Path, scoring: SceneScoring, device: str = "cpu", cache_dir: str | Path | None = None,
    chunk: int = 16,
) -> list[dict[str, Any]]:
    """Per-video records of the reference set with nothing moving after its conditioning frames,
    scored as rollouts are (PSNR, SSIM, LPIPS; see the module docstring). With `cache_dir`, kept
    there as JSON named by the reference set and the settings that change these scores."""
    settings = {"version": FROZEN_VERSION, "cond_frames": scoring.cond_frames, "ssim": scoring.ssim,
                "lpips_backbone": weights_id(scoring.lpips_backbone)}
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"{Identity('frozen_scores', settings, {'reference': dataset_id(reference_dir)}).id}.json"

    def score() -> list[dict[str, Any]]:
        lpips_model = _lpips_model(scoring.lpips_backbone) if scoring.lpips_backbone else None
        records = []
        for rows in iter_batches(reference_dir, scene_columns(reference_dir), chunk):  # a chunk of decoded videos at a time
            videos = [frozen_video(decode_frames(row), scoring.cond_frames) for row in rows]
            records += score_scene_videos(rows, videos, scoring.cond_frames, scoring.ssim, lpips_model, abnormal=False, device=device)
        return records

    return kept_json(cache, score)


def floor_fvd_row(row: dict[str, Any]) -> dict[str, Any]:
    """The FVD row of a VAE's reconstructions, renamed as the floor of a trial's FVD."""
    return row | {"metric": VAE_FLOOR_PREFIX + row["metric"]}


def write_scene_report(rows: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]], out: str | Path) -> list[Path]:
    """The report rows as JSON at `out` and CSV beside it (same stem), and the per-video records
    as `videos.csv` beside them, each atomically. Returns the three paths."""
    out = Path(out)
    if out.suffix == ".csv":
        raise ValueError(f"--out {out}: name the JSON report; the CSVs are written beside it")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, (json.dumps(list(rows), indent=1) + "\n").encode())
    paths = [out]
    for path, table, fields in ((out.with_suffix(".csv"), rows, ROW_FIELDS), (out.parent / "videos.csv", records, None)):
        buffer = io.StringIO()
        names = fields or list(dict.fromkeys(k for r in table for k in r))
        writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table)
        atomic_write_bytes(path, buffer.getvalue().encode())
        paths.append(path)
    return paths


def summarize_scenes(
    records: Sequence[dict[str, Any]], resamples: int = 1000, seed: int = 0, per_template: bool = True,
) -> list[dict[str, Any]]:
    """Report rows: every per-video metric's mean with its bootstrap interval, per (scenario,
    split, resolution) over all templates and, with `per_template`, per template."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        base = (record["scenario"], record["split"])
        groups[base + (ALL_TEMPLATES, record["resolution"])].append(record)
        if per_template and record.get("template_id") is not None:
            groups[base + (str(record["template_id"]), record["resolution"])].append(record)
    metrics = [k for k in records[0] if k not in ("video_id", "scenario", "split", "template_id", "resolution")] if records else []
    rows = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[3], k[2] != ALL_TEMPLATES, k[2])):
        for metric in metrics:
            cell = mean_with_interval([m.get(metric, np.nan) for m in groups[key]], resamples, seed)
            rows.append(dict(zip(ROW_FIELDS, (*key, metric, *(cell[f] for f in ("value", "ci_low", "ci_high", "n"))))))
    return rows


def scene_metrics(rows: Sequence[dict[str, Any]], prefix: str = "eval") -> dict[str, float]:
    """Report rows over all templates -> MLflow metrics `<prefix>/<in_template|out_of_template>/<metric>`
    with `_ci_low` / `_ci_high` where there is an interval."""
    metrics = {}
    for row in rows:
        if row["template"] != ALL_TEMPLATES or row["value"] is None:
            continue
        name = f"{prefix}/{SPLIT_GROUPS.get(row['split'], row['split'])}/{row['metric']}"
        metrics[name] = row["value"]
        if row["ci_low"] is not None:
            metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = row["ci_low"], row["ci_high"]
    return metrics


@dataclass(frozen=True)
class SceneScoring:
    """How a set of PHYRE rollouts is scored: everything that changes a score (not the device).

    `lpips_backbone` None skips LPIPS (`LPIPS_SKIPPED` says how to supply it); `fvd_weights`
    None skips FVD. `fvd_videos` caps the videos FVD compares (the first, in rollout order;
    None: all); the paper's are 600 in-template and 500 out-of-template.
    """

    cond_frames: int = 1
    ssim: bool = True
    abnormal: bool = True
    lpips_backbone: str | None = None
    fvd_weights: str | None = None
    fvd_videos: int | None = None

    def record(self) -> dict[str, Any]:
        """The settings with each weights file named by its content (sha256), not its path, and
        the judge's rules and thresholds (`JUDGE_VERSION`, `AbnormalConfig`) when it runs."""
        record = asdict(self)
        if self.abnormal:
            record["abnormal"] = {"version": JUDGE_VERSION, "config": asdict(AbnormalConfig())}
        for name in ("lpips_backbone", "fvd_weights"):
            record[name] = weights_id(record[name])
        return record


def weights_id(path: str | None) -> str | None:
    """A weights file named by its content (None stays None)."""
    if path is None:
        return None
    stat = Path(path).stat()
    return _content_id(Path(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=8)
def _content_id(path: Path, size: int, mtime_ns: int) -> str:
    """sha256 of a weights file, read once per process and file version (plans name every
    trial's scoring; the I3D file is 51 MB)."""
    return sha256_file(path)


@lru_cache(maxsize=4)
def _lpips_model(backbone: str):
    from phyray.eval.lpips import load_lpips

    return load_lpips(backbone)


@lru_cache(maxsize=2)
def _i3d_model(weights: str):
    from phyray.eval.fvd import load_i3d

    return load_i3d(weights)


def score_scene_set(
    rollouts_dir: str | Path, reference_dir: str | Path, scoring: SceneScoring = SceneScoring(),
    device: str = "cpu", cache_dir: str | Path | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """{"records": per-video records, "fvd": the FVD row (if any)} of a rollout set against its
    reference set. With `cache_dir`, kept there as JSON named by the identity of the two sets and
    the scoring, and read back on the next call (a VAE's reconstructions, scored once for every
    trial that shows its floor)."""
    cache = None
    if cache_dir is not None:
        inputs = {"rollouts": dataset_id(rollouts_dir), "reference": dataset_id(reference_dir)}
        cache = Path(cache_dir) / f"{Identity('scene_scores', {'format_version': 1, **scoring.record()}, inputs).id}.json"
    return kept_json(cache, lambda: _scene_scores(rollouts_dir, reference_dir, scoring, device))


def _scene_scores(
    rollouts_dir: str | Path, reference_dir: str | Path, scoring: SceneScoring, device: str,
) -> dict[str, list[dict[str, Any]]]:
    lpips_model = _lpips_model(scoring.lpips_backbone) if scoring.lpips_backbone else None
    reference = reference_rows(reference_dir)  # read once for the per-video scores and FVD
    scores = {
        "records": evaluate_scene_records(
            rollouts_dir, reference_dir, scoring.cond_frames, scoring.ssim, lpips_model, scoring.abnormal, device,
            reference=reference,
        ),
        "fvd": [],
    }
    if scoring.fvd_weights:
        model = _i3d_model(scoring.fvd_weights)
        scores["fvd"].append(fvd_row(
            rollouts_dir, reference_dir, model, scoring.cond_frames, scoring.fvd_videos, device, reference=reference,
        ))
    return scores
