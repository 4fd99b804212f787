"""Score a model's continuations of a suite's videos, beside the floors that bound them.

    summary = score_suite(suite, references, submission_source(Submission(Path("my-videos"), ids)),
                          "report", cache_dir="runs/bench/scores")

A *source* gives each reference video's submitted frames (T, H, W, 3) uint8 at the suite's side,
or raises `Unscorable` with its status and reason: a directory of files (`Submission`), the
ground truth re-encoded (the floors) or a baseline (`phyray.benchmark.baselines`). Every video
is scored with phyray's own evaluators (ball suites: `phyray.eval.report.evaluate_videos`;
combinatorial: `phyray.eval.scenes.score_scene_videos`), in chunks, so memory does not grow with
the suite. The report directory gets:

- `videos.csv`: per video its status (scored, missing, malformed, wrong_frames,
  conditioning_mismatch), the reason, and every metric;
- `summary.json`: the suite card, the protocol, per group (ID, each OOD level, OOD pooled; or
  in/out-of-template) each metric's mean with its bootstrap interval, the parse floor and the
  compression floors;
- `results.md`: the same as a leaderboard table, with the protocol card above it.

Floors. The *parse floor* is the ground truth itself scored by the same parser (every record's
`gt_floor_*`). The *compression floor* is the ground truth encoded as H.264 at a bitrate and
decoded, scored like a submission: a lossy MP4 submission is read against the floor at its own
bitrate, not against lossless truth. Floors are kept as JSON under `cache_dir`, named by the
suite's references, the bitrate, the ffmpeg build and the scoring settings.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import tempfile
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow.parquet as pq

from phyray.artifacts import (
    MANIFEST,
    Identity,
    ProductError,
    atomic_write_bytes,
    atomic_write_json,
    kept_json,
)
from phyray.benchmark.media import (
    MP4,
    NPY,
    NPZ,
    MediaError,
    decode_mp4,
    encode_mp4,
    ffmpeg_version,
    read_video,
    resize_video,
)
from phyray.benchmark.suites import (
    BALL_METRICS,
    SCENE_METRICS,
    Suite,
    metric_protocol,
)
from phyray.config import COMBINATORIAL, load_data_config
from phyray.data.shards import dataset_id, decode_frames, iter_batches, read_shard, shard_paths
from phyray.eval.stats import mean_with_interval

SCORED, MISSING, MALFORMED, WRONG_FRAMES, COND_MISMATCH = (
    "scored", "missing", "malformed", "wrong_frames", "conditioning_mismatch",
)
# Bitrates (bits/s) of the compression floor. x264 does not go much below ~9 kb/s on a 3.2 s
# 128² ball clip (its smallest frames), and by ~160 kb/s the floor has flattened out.
FLOOR_BITRATES = (10_000, 40_000, 160_000)
# A submission's conditioning frames must match the suite's to this PSNR (dB, over all c frames
# together): above what another video's frames reach (at most 30.1 dB), below what a whole video
# encoded as H.264 at the floors' lowest bitrate keeps of them (at least 32.5 dB); measured by
# bench/cond_check.py (docs/benchmark.md).
COND_PSNR_MIN = 31.0
POOLED = "ood"
# Per-video I3D features of a generated video and of its reference (combinatorial, with
# --fvd-weights): carried on the records until `summarize` turns each group's into an FVD.
FEATURES, TRUTH_FEATURES = "_i3d", "_i3d_truth"
_TRUTH_FEATURES: dict[tuple[str, str], np.ndarray] = {}
CHUNK = 32  # videos decoded and scored together
SCORES_FORMAT = 1  # bump when a metric or the grouping changes: kept floors are then remade


class Unscorable(Exception):
    """A video that is not scored: its status and the reason, one line."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


Source = Callable[[dict[str, Any], np.ndarray], np.ndarray]


# ---------------------------------------------------------------------------------------------
# Submissions: a directory of videos
# ---------------------------------------------------------------------------------------------


class Submission:
    """A directory of submitted videos, one per suite video id: `<id>.mp4`, `<id>/` (PNG
    frames), `<id>.npy`, `<id>.npz`, or rows of phyray datasets (any subdirectory, or the
    directory itself, with a manifest.json). `notes` lists what is not a video of the suite."""

    def __init__(self, directory: Path, video_ids: set[str]):
        if not directory.is_dir():
            raise MediaError(f"--videos {directory}: not a directory")
        self.directory = directory
        self.files: dict[str, list[Path]] = defaultdict(list)
        self.rows: dict[str, tuple[Path, int]] = {}
        self.notes: list[tuple[str, str]] = []
        self.bitrates: dict[str, float] = {}
        self._tables: OrderedDict[Path, Any] = OrderedDict()
        products = [directory] if (directory / MANIFEST).is_file() else []
        for path in sorted(directory.iterdir()) if not products else []:
            if path.is_dir() and (path / MANIFEST).is_file():
                products.append(path)
            elif path.is_dir() or path.suffix in (MP4, NPY, NPZ):
                self.files[path.stem if path.is_file() else path.name].append(path)
            else:
                self.notes.append((path.name, "not a video (use .mp4, a directory of .png, .npy or .npz); ignored"))
        for product in products:
            try:
                shards = shard_paths(product)  # each checked against its manifest
            except ProductError as err:  # its videos are then reported missing, each on its line
                self.notes.append((product.name, f"unreadable dataset ({err}); its videos are not read"))
                continue
            for shard in shards:
                for row, video_id in enumerate(read_shard(shard, ["video_id"]).column("video_id").to_pylist()):
                    if video_id in self.rows or video_id in self.files:
                        self.files[video_id].append(shard)  # given twice: reported as malformed
                    else:
                        self.rows[video_id] = (shard, row)
        self.notes += [(v, "not a video of this suite; ignored") for v in sorted({*self.files, *self.rows} - video_ids)]

    def _row_frames(self, shard: Path, row: int) -> np.ndarray:
        if shard not in self._tables:
            palette = ["palette"] if "palette" in pq.read_schema(shard).names else []
            self._tables[shard] = read_shard(shard, ["video_id", "frames", "frames_encoding", "frame_shape", *palette])
            while len(self._tables) > 2:
                self._tables.popitem(last=False)
        return decode_frames(self._tables[shard].slice(row, 1).to_pylist()[0])

    def frames(self, video_id: str, fps: float) -> np.ndarray:
        paths = self.files.get(video_id, [])
        if len(paths) + (video_id in self.rows) > 1:
            given = ", ".join(str(p.relative_to(self.directory)) for p in paths)
            raise Unscorable(MALFORMED, f"given more than once ({given}{', a dataset row' if video_id in self.rows else ''})")
        if video_id in self.rows:
            try:
                return self._row_frames(*self.rows[video_id])
            except (ProductError, ValueError) as err:  # undecodable frames
                raise Unscorable(MALFORMED, f"{self.rows[video_id][0]}: {err}") from None
        if not paths:
            raise Unscorable(MISSING, "no video with this id in the submission")
        try:
            frames = read_video(paths[0])
        except MediaError as err:
            raise Unscorable(MALFORMED, str(err)) from None
        if paths[0].suffix == MP4:
            self.bitrates[video_id] = paths[0].stat().st_size * 8 / (len(frames) / fps)
        return frames


def submission_source(submission: Submission, suite: Suite) -> Source:
    return lambda row, truth: submission.frames(row["video_id"], suite.fps)


def reencoded_source(suite: Suite, bitrate: int, workdir: Path) -> Source:
    """The ground truth as H.264 at `bitrate` bits/s, decoded: the compression floor."""

    def source(row: dict[str, Any], truth: np.ndarray) -> np.ndarray:
        path = workdir / f"{row['video_id']}.mp4"
        encode_mp4(truth, path, suite.fps, bitrate=bitrate)
        frames = decode_mp4(path)
        path.unlink()
        return frames

    return source


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def checked_frames(suite: Suite, frames: np.ndarray, truth: np.ndarray, cond_psnr_min: float | None) -> np.ndarray:
    """A submitted video at the suite's side, or Unscorable: the frame format, the frame count
    and (unless `cond_psnr_min` is None) the conditioning frames against the suite's, PSNR over
    all of them >= cond_psnr_min dB, compared at the smaller of the two sides (a model working at 32² is
    checked against the suite's frames area-averaged to 32², not against detail it never had)."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise Unscorable(MALFORMED, f"frames of shape {frames.shape}; expected (T, H, W, 3)")
    if len(frames) != suite.num_frames:
        raise Unscorable(WRONG_FRAMES, f"{len(frames)} frames; the suite's videos have {suite.num_frames} "
                                       f"({suite.cond_frames} conditioning + {suite.num_frames - suite.cond_frames} generated)")
    try:
        resized = resize_video(frames, suite.resolution)
        given, expected = (frames, resize_video(truth[: suite.cond_frames], frames.shape[1])) if frames.shape[1] < suite.resolution else (resized, truth)
    except MediaError as err:
        raise Unscorable(MALFORMED, str(err)) from None
    if cond_psnr_min is not None:
        psnr = _psnr(given[: suite.cond_frames], expected[: suite.cond_frames])
        if psnr < cond_psnr_min:
            raise Unscorable(COND_MISMATCH, f"conditioning frames differ from the suite's (PSNR {psnr:.1f} dB over the "
                                            f"{suite.cond_frames} < {cond_psnr_min:g}): not a continuation of this video")
    return resized


@dataclass(frozen=True)
class Scoring:
    """Settings that change a score (they name the kept floors)."""

    ssim: bool | None = None  # None: the suite's default (`resolved`)
    lpips_backbone: str | None = None  # combinatorial: LPIPS when the AlexNet weights are given
    fvd_weights: str | None = None  # combinatorial: FVD per split when the I3D weights are given
    cond_psnr_min: float = COND_PSNR_MIN

    def resolved(self, suite: Suite) -> Scoring:
        """SSIM by default on the combinatorial suite (the paper's Table 2 reports it) and off on
        the ball suites (the paper reports none there; ~0.3 CPU-s per 128² video)."""
        return self if self.ssim is not None else replace(self, ssim=suite.scenario == COMBINATORIAL)

    def record(self) -> dict[str, Any]:
        """The settings, with the evaluators' versions and the LPIPS weights by content."""
        from phyray.eval.report import SCORES_FORMAT as PHYSICS_SCORES
        from phyray.eval.scenes import SceneScoring

        scene = SceneScoring(ssim=self.ssim, lpips_backbone=self.lpips_backbone, fvd_weights=self.fvd_weights).record()
        return {"ssim": self.ssim, "cond_psnr_min": self.cond_psnr_min, "physics_scores": PHYSICS_SCORES,
                "abnormal": scene["abnormal"], "lpips_backbone": scene["lpips_backbone"], "fvd_weights": scene["fvd_weights"]}


class _Scorer:
    """The suite's evaluator on in-memory videos (models loaded once)."""

    def __init__(self, suite: Suite, scoring: Scoring):
        self.suite, self.scoring = suite, scoring
        if suite.scenario == COMBINATORIAL:
            from phyray.eval.lpips import load_lpips

            self.lpips = load_lpips(scoring.lpips_backbone) if scoring.lpips_backbone else None
            self.i3d = _i3d(scoring.fvd_weights) if scoring.fvd_weights else None
        else:
            self.i3d = None
            self.physics = load_data_config(suite.scenario).physics

    def __call__(self, rows: list[dict[str, Any]], videos: list[np.ndarray], truths: list[np.ndarray]) -> list[dict[str, Any]]:
        s = self.suite
        if s.scenario == COMBINATORIAL:
            from phyray.eval.scenes import score_scene_videos

            records = score_scene_videos(rows, videos, s.cond_frames, self.scoring.ssim, self.lpips)
            if self.i3d is not None:  # per-video features; FVD is a distance between the sets
                generated = self._features(videos)
                truth = self._truth_features(rows, truths)
                for record, g, t in zip(records, generated, truth):
                    record |= {FEATURES: g, TRUTH_FEATURES: t}
            return records
        from phyray.eval.report import evaluate_videos

        return evaluate_videos(rows, videos, "subpixel", s.cond_frames, ssim=self.scoring.ssim,
                               frame_dt=self.physics.frame_dt, world_size=self.physics.world_size)

    def _features(self, videos: list[np.ndarray]) -> np.ndarray:
        from phyray.eval.fvd import CLIP_FRAMES, i3d_features

        clip = min(CLIP_FRAMES, self.suite.num_frames)
        return i3d_features(np.stack([v[:clip] for v in videos]), self.i3d, clip_frames=clip)

    def _truth_features(self, rows: list[dict[str, Any]], truths: list[np.ndarray]) -> np.ndarray:
        """The references' features, computed once per process (a submission and its floors)."""
        key = self.i3d.weights_sha256
        todo = [i for i, row in enumerate(rows) if (key, row["video_id"]) not in _TRUTH_FEATURES]
        if todo:
            for i, feature in zip(todo, self._features([truths[i] for i in todo])):
                _TRUTH_FEATURES[(key, rows[i]["video_id"])] = feature
        return np.stack([_TRUTH_FEATURES[(key, row["video_id"])] for row in rows])


@lru_cache(maxsize=2)
def _i3d(weights: str):
    from phyray.eval.fvd import load_i3d

    return load_i3d(weights)


def _reference_batches(suite: Suite, references: dict[str, Path]) -> Iterator[list[dict[str, Any]]]:
    if suite.scenario == COMBINATORIAL:
        from phyray.eval.scenes import SCENE_COLUMNS

        columns = [*SCENE_COLUMNS, "palette", "ood_level"]
    else:
        from phyray.eval.report import REFERENCE_COLUMNS as columns
    for directory in references.values():
        yield from iter_batches(directory, columns, CHUNK)


def score_videos(
    suite: Suite, references: dict[str, Path], source: Source, scoring: Scoring = Scoring(),
    log: Callable[[str], None] | None = None, check_conditioning: bool = True,
) -> list[dict[str, Any]]:
    """One record per suite video: its id, split, group, status, reason and (if scored) every
    metric. `log` gets a line per unscorable video. A floor (the ground truth itself, re-encoded)
    skips the conditioning check: it is the suite's video by construction."""
    scoring = scoring.resolved(suite)
    scorer = _Scorer(suite, scoring)
    records: list[dict[str, Any]] = []
    for batch in _reference_batches(suite, references):
        scored_rows, videos, truths = [], [], []
        for row in batch:
            truth = decode_frames(row, suite.resolution)
            record = {"video_id": row["video_id"], "split": row["split"], "ood_level": row.get("ood_level"),
                      "template_id": row.get("template_id")}
            try:
                cond_psnr_min = scoring.cond_psnr_min if check_conditioning else None
                videos.append(checked_frames(suite, source(row, truth), truth, cond_psnr_min))
                scored_rows.append(row)
                truths.append(truth)
                record |= {"status": SCORED, "reason": ""}
            except Unscorable as err:
                record |= {"status": err.status, "reason": err.reason}
                if log:
                    log(f"{row['video_id']}: {err.status}: {err.reason}")
            records.append(record)
        metrics = iter(scorer(scored_rows, videos, truths) if scored_rows else [])
        for record in records[len(records) - len(batch):]:
            if record["status"] == SCORED:
                scores = next(metrics)
                record |= {k: v for k, v in scores.items() if k not in ("video_id", "scenario", "split", "ood_level", "template_id")}
    return records


def groups_of(record: dict[str, Any]) -> list[str]:
    """The report groups a video counts in: "id"; its OOD level and "ood" (pooled); or
    "in_template" / "out_of_template"."""
    split = record["split"]
    if split == "eval_id":
        return ["id"]
    if split == "eval_ood":
        return [record["ood_level"], POOLED]
    return [split.removeprefix("eval_")]


def _group_order(group: str) -> tuple[int, str]:
    return (0 if group in ("id", "in_template") else 2 if group in (POOLED, "out_of_template") else 1, group)


def summarize(records: list[dict[str, Any]], metrics: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per group and metric: mean over scored videos, 95% bootstrap interval, n counted, n
    excluded (scored videos where the metric is undefined, e.g. nothing parsed)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record["status"] == SCORED:
            for group in groups_of(record):
                groups[group].append(record)
    rows = []
    for group in sorted(groups, key=_group_order):
        for metric in metrics:
            if metric not in groups[group][0]:
                continue
            cell = mean_with_interval([r[metric] for r in groups[group]])
            rows.append({"group": group, "metric": metric} | {f: cell[f] for f in ("value", "ci_low", "ci_high", "n", "n_excluded")})
        if FEATURES in groups[group][0]:
            from phyray.eval.fvd import frechet_distance

            members = groups[group]
            fvd = frechet_distance(np.stack([r[FEATURES] for r in members]), np.stack([r[TRUTH_FEATURES] for r in members]))
            rows.append({"group": group, "metric": "fvd", "value": fvd, "ci_low": None, "ci_high": None,
                         "n": len(members), "n_excluded": 0})
    return rows


def suite_metrics(suite: Suite) -> tuple[str, ...]:
    """Every reported metric: the suite's, then their parse floors."""
    base = SCENE_METRICS if suite.scenario == COMBINATORIAL else BALL_METRICS
    floors = ("gt_floor_abnormal",) if suite.scenario == COMBINATORIAL else tuple(
        f"gt_floor_{m}" for m in base if m not in ("psnr", "ssim"))
    return (*base, *floors)


def compression_floor(
    suite: Suite, references: dict[str, Path], bitrate: int, scoring: Scoring, cache_dir: Path | None,
) -> list[dict[str, Any]]:
    """The summary rows of the ground truth through H.264 at `bitrate` bits/s (kept in `cache_dir`)."""
    scoring = scoring.resolved(suite)
    identity = Identity(
        "compression_floor",
        {"format_version": SCORES_FORMAT, "bitrate": int(bitrate), "ffmpeg": ffmpeg_version(), "suite": suite.key,
         **{k: v for k, v in scoring.record().items() if k != "cond_psnr_min"}},  # floors are not checked
        {split: dataset_id(d) for split, d in references.items()},
    )

    def make() -> list[dict[str, Any]]:
        with tempfile.TemporaryDirectory(prefix="phyray-floor-") as workdir:
            source = reencoded_source(suite, int(bitrate), Path(workdir))
            records = score_videos(suite, references, source, scoring, check_conditioning=False)
        return summarize(records, suite_metrics(suite))

    return kept_json(None if cache_dir is None else cache_dir / f"{identity.id}.json", make)


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def score_suite(
    suite: Suite, card: dict[str, Any], references: dict[str, Path], source: Source, out: str | Path, entry: str,
    scoring: Scoring = Scoring(), bitrates: tuple[int, ...] = FLOOR_BITRATES, cache_dir: str | Path | None = None,
    allow_partial: bool = False, bitrates_of: Callable[[], dict[str, float]] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Score `source` on the suite and write videos.csv, summary.json and results.md into `out`.

    The scores are reported only if every suite video was scored, or with `allow_partial`;
    `bitrates_of` gives the MP4 bitrates read (the compression floor is added at their median).
    Returns the summary (what summary.json holds)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = None if cache_dir is None else Path(cache_dir)
    scoring = scoring.resolved(suite)
    records = score_videos(suite, references, source, scoring, log=log)
    counts = {status: sum(r["status"] == status for r in records)
              for status in (SCORED, MISSING, MALFORMED, WRONG_FRAMES, COND_MISMATCH)}
    complete = counts[SCORED] == len(records)
    reported = complete or allow_partial
    submitted = sorted((bitrates_of or dict)().values())
    floor_rates = sorted({*bitrates, *([int(round(statistics.median(submitted)))] if submitted else [])})
    metrics = suite_metrics(suite)
    summary = {
        "entry": entry,
        "suite": card["suite"],
        "protocol": metric_protocol(suite) | {"conditioning_check": f"PSNR over the conditioning frames >= {scoring.cond_psnr_min:g} dB",
                                              "ssim": scoring.ssim},
        "references": card["references"],
        "counts": counts | {"suite": len(records)},
        "complete": complete,
        "reported": reported,
        "submission_bitrate": statistics.median(submitted) if submitted else None,
        "scores": summarize(records, metrics) if reported else [],
        "compression_floors": {str(rate): compression_floor(suite, references, rate, scoring, cache) for rate in floor_rates},
    }
    _write_records(records, metrics, out / "videos.csv")
    atomic_write_json(out / "summary.json", summary)
    atomic_write_bytes(out / "results.md", results_markdown(summary).encode())
    return summary


def _write_records(records: list[dict[str, Any]], metrics: tuple[str, ...], path: Path) -> None:
    fields = ["video_id", "split", "ood_level", "template_id", "status", "reason", *metrics]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    atomic_write_bytes(path, buffer.getvalue().encode())


def _cell(rows: list[dict[str, Any]], group: str, metric: str) -> str:
    for row in rows:
        if row["group"] == group and row["metric"] == metric and row["value"] is not None:
            interval = "" if row["ci_low"] is None else f" [{row['ci_low']:.4g}, {row['ci_high']:.4g}]"
            return f"{row['value']:.4g}{interval}"
    return "-"


def _protocol_line(summary: dict[str, Any]) -> str:
    suite, protocol, counts = summary["suite"], summary["protocol"], summary["counts"]
    return (f"**Protocol.** {counts[SCORED]} of {counts['suite']} videos scored; {suite['resolution']}x{suite['resolution']}, "
            f"{suite['num_frames']} frames ({suite['cond_frames']} conditioning), {suite['fps']:g} fps, suite seed {suite['seed']}; "
            + "; ".join(f"{k}: {v}" for k, v in protocol.items() if k != "metrics") + ".")


def leaderboard_markdown(summaries: list[dict[str, Any]], metric: str | None = None) -> str:
    """Entries of one suite side by side: per group the metric (default the suite's headline)
    of each reported entry, best first by its first group, then the parse floor and every
    compression floor; an incomplete entry is listed as not scored. The protocol card of each
    entry above the table (they may differ, e.g. in SSIM)."""
    keys = {s["suite"]["key"] for s in summaries}
    if len(keys) != 1:
        raise ValueError(f"reports of different suites ({', '.join(sorted(keys))}): a leaderboard compares one suite")
    first = summaries[0]
    metric = metric or first["protocol"]["headline"]
    scored = [s for s in summaries if s["reported"]]
    floors: dict[str, list[dict[str, Any]]] = {}
    for summary in summaries:
        floors |= summary["compression_floors"]
    groups = sorted({r["group"] for rows in (*(s["scores"] for s in scored), *floors.values()) for r in rows}, key=_group_order)

    def sort_key(summary: dict[str, Any]) -> float:
        value = next((r["value"] for r in summary["scores"] if r["group"] == groups[0] and r["metric"] == metric), None)
        return math.inf if value is None else value

    lines = [f"# {first['suite']['key']}: {metric} (mean [95% CI])", ""]
    lines += [f"- {s['entry']}: {_protocol_line(s)}" for s in summaries] + [""]
    lines += ["| entry | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
    rows = [(s["entry"], s["scores"], metric) for s in sorted(scored, key=sort_key)]
    if scored:
        rows.append(("floor: the ground truth itself, lossless (parser / judge)", scored[0]["scores"], f"gt_floor_{metric}"))
    bitrates = {round(s["submission_bitrate"]): s["entry"] for s in summaries if s["submission_bitrate"]}
    for rate in sorted(floors, key=int):
        note = f" (the bitrate of {bitrates[int(rate)]})" if int(rate) in bitrates else ""
        rows.append((f"compression floor: ground truth as H.264 at {int(rate) / 1000:g} kb/s{note}", floors[rate], metric))
    lines += [f"| {name} | " + " | ".join(_cell(values, g, m) for g in groups) + " |" for name, values, m in rows]
    lines += [f"| {s['entry']} | " + " | ".join("not scored (incomplete)" for _ in groups) + " |" for s in summaries if not s["reported"]]
    return "\n".join(lines) + "\n"


def results_markdown(summary: dict[str, Any]) -> str:
    """One entry's report: the leaderboard of it beside its floors, then every metric of it."""
    text = leaderboard_markdown([summary])
    if not summary["reported"]:
        counts = summary["counts"]
        problems = ", ".join(f"{k} {v}" for k, v in counts.items() if k not in (SCORED, "suite") and v)
        return text + (f"\n**Not scored: the submission is incomplete** ({problems}); see videos.csv, "
                       "or score the rest with --allow-partial.\n")
    groups = sorted({r["group"] for r in summary["scores"]}, key=_group_order)
    metrics = list(dict.fromkeys(r["metric"] for r in summary["scores"]))
    lines = ["", f"## Every metric of {summary['entry']}", "", "| metric | " + " | ".join(groups) + " |",
             "|---|" + "---|" * len(groups)]
    lines += [f"| {m} | " + " | ".join(_cell(summary["scores"], g, m) for g in groups) + " |" for m in metrics]
    return text + "\n".join(lines) + "\n"


def log_to_mlflow(summary: dict[str, Any], report_dir: Path, uri: str, artifact_root: str | None = None) -> str:
    """One MLflow run of a scored entry in experiment "phyray-bench": the suite and protocol as
    params, `<group>/<metric>` (and its `_ci_low`, `_ci_high`) as metrics, each compression floor
    as `floor_<bits/s>/<group>/<metric>`, and the report's files as artifacts. Returns the run id."""
    from mlflow.tracking import MlflowClient

    from phyray.tracking import end_run, log_metrics, start_run

    suite = summary["suite"]
    params = {f"suite.{k}": v for k, v in suite.items()} | {f"protocol.{k}": v for k, v in summary["protocol"].items()}
    tags = {"phyray.role": "bench", "phyray.suite": suite["key"], "phyray.complete": str(summary["complete"]).lower()}
    run_id = start_run(uri, "phyray-bench", summary["entry"], params, tags, artifact_root)
    metrics: dict[str, float | None] = {}
    for prefix, rows in [("", summary["scores"]), *((f"floor_{rate}/", rows) for rate, rows in summary["compression_floors"].items())]:
        for row in rows:
            name = f"{prefix}{row['group']}/{row['metric']}"
            metrics |= {name: row["value"], f"{name}_ci_low": row["ci_low"], f"{name}_ci_high": row["ci_high"]}
    log_metrics(uri, run_id, metrics, step=0)
    client = MlflowClient(uri)
    for name in ("results.md", "summary.json", "videos.csv"):
        client.log_artifact(run_id, str(report_dir / name))
    end_run(uri, run_id, "FINISHED")
    return run_id
