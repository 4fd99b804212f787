"""Suites: named, versioned evaluation sets any video model can be scored on.

    suite = get_suite("uniform_motion", videos=100)
    references = reference_sets(suite, "runs/bench/data")      # {split: dataset dir}
    export_suite(suite, references, "suite-um")                 # PNG + MP4 conditioning frames

A suite fixes what a score means: the scenario, the evaluation splits and their sizes, the
seed, the resolution, the frame count and rate, the conditioning frames, and the metric
protocol. Its reference videos are phyray datasets, generated deterministically from those
settings (so they are regenerated, never downloaded), and kept under a data directory by their
identity. The version changes when anything that changes a score changes.

Sizes: the ball suites' defaults are the paper's evaluation sizes (1050 ID, 2400 OOD videos at
128², 32 frames, c = 3; docs/paper.md §3-§4); the combinatorial suite's are the paper's FVD
protocol (600 in-template: 10 trials of each of the 60 training templates; 500 out-of-template:
50 trials of each held-out template; 256², c = 1). `videos=` shrinks a suite (a test, a quick
look); the shrunk suite has its own key, so its scores are never mixed with the full one's.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property, partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from phyray.artifacts import Identity, atomic_write_json, digest
from phyray.benchmark.media import RESIZE_FILTER, encode_mp4, ffmpeg_version, write_pngs
from phyray.config import BALL_SCENARIOS, COMBINATORIAL, ConfigError
from phyray.data.shards import dataset_id, decode_frames, iter_rows

SUITE_FILE = "suite.json"
COND_DIR = "conditioning"
BALL_METRICS = ("vel_err_per_frame", "vel_err_mean_velocity", "paper_vel_err", "parse_fail_rate", "psnr", "ssim")
SCENE_METRICS = ("abnormal", "psnr", "ssim", "lpips")


@dataclass(frozen=True)
class Suite:
    """A named evaluation set and its protocol (see the module docstring)."""

    name: str
    version: int
    scenario: str
    resolution: int
    num_frames: int
    fps: float
    cond_frames: int
    splits: dict[str, int]  # split -> videos (ball suites) or trials per template (combinatorial)
    seed: int = 0
    templates: dict[str, list[int]] = field(default_factory=dict)  # combinatorial: split -> templates

    @cached_property
    def key(self) -> str:
        """Name, version and a digest of every setting and of the references' identities (so a
        changed data config, e.g. its OOD ranges, renames the suite): what names its scores."""
        references = {split: identity.id for split, (identity, _) in reference_plans(self).items()}
        return f"{self.name}-v{self.version}-{digest({'settings': asdict(self), 'references': references}, 8)}"

    def card(self) -> dict[str, Any]:
        return asdict(self) | {"key": self.key}


def _trials(videos: int, templates: list[int]) -> int:
    return max(1, math.ceil(videos / len(templates)))


def _suites() -> dict[str, Suite]:
    from phyray.sim.phyre import FRAMES, TEMPLATE_SETS

    balls = {
        scenario: Suite(scenario, 1, scenario, 128, 32, 10.0, 3, {"eval_id": 1050, "eval_ood": 2400})
        for scenario in BALL_SCENARIOS
    }
    # PHYRE records a frame every 20 Box2D steps at 60 Hz: 3 frames per second.
    templates = {"eval_in_template": TEMPLATE_SETS["60"], "eval_out_of_template": TEMPLATE_SETS["heldout"]}
    combinatorial = Suite(
        COMBINATORIAL, 1, COMBINATORIAL, 256, FRAMES, 3.0, 1,
        {"eval_in_template": 10, "eval_out_of_template": 50}, templates=templates,
    )
    return balls | {COMBINATORIAL: combinatorial}


SUITE_NAMES = (*BALL_SCENARIOS, COMBINATORIAL)


def get_suite(name: str, videos: int | None = None) -> Suite:
    """A registered suite; `videos` shrinks each split to about that many videos (combinatorial:
    whole trials per template, so at least one video per template)."""
    suites = _suites()
    if name not in suites:
        raise ConfigError(f"--suite: unknown {name!r}; choose from {', '.join(suites)}")
    suite = suites[name]
    if videos is None:
        return suite
    if videos < 1:
        raise ConfigError(f"--videos: must be >= 1, got {videos}")
    if suite.templates:
        return replace(suite, splits={s: min(n, _trials(videos, suite.templates[s])) for s, n in suite.splits.items()})
    return replace(suite, splits={s: min(n, videos) for s, n in suite.splits.items()})


def reference_plans(suite: Suite) -> dict[str, tuple[Identity, Callable[..., Any]]]:
    """Per split, the reference set's identity and the function that generates it
    (`make(directory, num_workers, log)`); nothing is simulated until it is called."""
    plans = {}
    for split, count in suite.splits.items():
        if suite.scenario == COMBINATORIAL:
            from phyray.data.combinatorial import dataset_identity, generate_combinatorial

            templates = suite.templates[split]
            plans[split] = (
                dataset_identity(templates, 1, count, split),
                partial(generate_combinatorial, templates, 1, count, split, progress=False),
            )
        else:
            from phyray.config import load_data_config
            from phyray.data.generate import dataset_identity, generate_dataset
            from phyray.data.plan import plan_dataset

            cfg = load_data_config(suite.scenario, [f"render.resolution={suite.resolution}"])
            if cfg.physics.num_frames != suite.num_frames or not math.isclose(1 / (cfg.physics.dt * cfg.physics.stride), suite.fps):
                raise ConfigError(f"configs/data/{suite.scenario}.yaml: frames or frame rate differ from suite {suite.name}")
            plan = plan_dataset(cfg, split, str(count), suite.seed)
            plans[split] = (
                dataset_identity(cfg, plan),
                partial(generate_dataset, cfg, split, str(count), seed=suite.seed, progress=False, plan=plan),
            )
    return plans


def reference_sets(suite: Suite, data_dir: str | Path, num_workers: int | None = None, log=print) -> dict[str, Path]:
    """The suite's reference datasets {split: directory}, generated under `data_dir` (named by
    their identity; an existing one is verified and reused)."""
    out = {}
    for split, (identity, make) in reference_plans(suite).items():
        out[split] = Path(data_dir) / suite.scenario / identity.name(split)
        make(out[split], num_workers=num_workers, log=log)
    return out


def suite_videos(references: dict[str, Path]) -> list[dict[str, Any]]:
    """Every reference video's id, split and OOD level (or template), in split then id order."""
    videos = []
    for split, directory in references.items():
        rows = iter_rows(directory, ["video_id", "ood_level", *(["template_id"] if _has(directory, "template_id") else [])])
        videos += sorted(
            ({"video_id": r["video_id"], "split": split, "ood_level": r.get("ood_level"), "template_id": r.get("template_id")}
             for r in rows),
            key=lambda v: v["video_id"],
        )
    return videos


def _has(directory: Path, column: str) -> bool:
    import pyarrow.parquet as pq

    from phyray.data.shards import shard_paths

    return column in pq.read_schema(shard_paths(directory)[0]).names


def frame_columns(suite: Suite) -> list[str]:
    """The reference columns that hold a video's frames (a PHYRE row's palette too)."""
    return ["video_id", "frames", "frames_encoding", "frame_shape", *(["palette"] if suite.scenario == COMBINATORIAL else [])]


def suite_frames(suite: Suite, references: dict[str, Path], columns: list[str] | None = None):
    """(row, frames at the suite's side) of every reference video, split by split."""
    for directory in references.values():
        for row in iter_rows(directory, columns):
            yield row, decode_frames(row, suite.resolution)


def export_suite(suite: Suite, references: dict[str, Path], out: str | Path) -> dict[str, Any]:
    """Write the suite for a model to continue: per video its conditioning frames as PNGs
    (`conditioning/<video_id>/000.png`...) and as an MP4 (`conditioning/<video_id>.mp4`), and
    `suite.json` (the protocol and the video list). Same suite, same bytes."""
    out = Path(out)
    (out / COND_DIR).mkdir(parents=True, exist_ok=True)
    for row, frames in suite_frames(suite, references, frame_columns(suite)):
        conditioning = np.ascontiguousarray(frames[: suite.cond_frames])
        write_pngs(conditioning, out / COND_DIR / row["video_id"])
        encode_mp4(conditioning, out / COND_DIR / f"{row['video_id']}.mp4", suite.fps)
    card = suite_card(suite, references)
    atomic_write_json(out / SUITE_FILE, card)
    return card


def suite_card(suite: Suite, references: dict[str, Path]) -> dict[str, Any]:
    """What suite.json holds: the suite, its videos and the references they come from."""
    return {
        "suite": suite.card(),
        "task": (f"continue each video from its first {suite.cond_frames} frame(s) to {suite.num_frames} frames "
                 f"at {suite.resolution}x{suite.resolution}, {suite.fps:g} fps; submit all {suite.num_frames} frames"),
        "references": {split: dataset_id(d) for split, d in references.items()},
        "encoder": {"ffmpeg": f"imageio-ffmpeg {ffmpeg_version()}", "codec": "libx264 yuv420p"},
        "protocol": metric_protocol(suite),
        "videos": suite_videos(references),
    }


def metric_protocol(suite: Suite) -> dict[str, Any]:
    """How every number of a suite is measured (printed beside each score)."""
    scored = f"frames {suite.cond_frames}-{suite.num_frames - 1} (the conditioning frames are not scored)"
    common = {
        "frames_scored": scored,
        "interval": "95% percentile bootstrap of the mean over videos, 1000 resamples, seed 0",
        "resize": RESIZE_FILTER,
    }
    if suite.scenario == COMBINATORIAL:
        from phyray.eval.scenes import JUDGE_VERSION

        return common | {
            "headline": "abnormal",
            "metrics": list(SCENE_METRICS),
            "abnormal_judge": f"phyray.eval.abnormal, rules version {JUDGE_VERSION} (pixels only)",
            "pixels": "PSNR, SSIM (unless --no-ssim) in [0, 1]; LPIPS AlexNet v0.1 when its weights are given",
            "fvd": "per split, I3D Kinetics-400 logits of the first 16 frames (conditioning frame included) at 224², "
                   "when its weights are given (no interval: a distance between sets)",
        }
    return common | {
        "headline": "vel_err_per_frame",
        "metrics": list(BALL_METRICS),
        "parser": "subpixel (phyray.eval.physics): ball centres from colour-weighted moments",
        "velocity": "per-frame finite differences of parsed centres, Euclidean error in world units per second",
        "pixels": "PSNR in [0, 1] (SSIM with --ssim)",
    }


def read_suite_card(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / SUITE_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: not found; export the suite with `phyray bench export`")
    return json.loads(path.read_text())
