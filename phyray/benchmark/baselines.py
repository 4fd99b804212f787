"""Reference entries that bracket a suite's range: what a model's number is read against.

- `ground_truth`: the reference videos themselves (lossless): scores the parse floor exactly.
- `frozen`: every generated frame a copy of the last conditioning frame (nothing moves).
- `constant_velocity`: each ball continues in a straight line at the velocity its last two
  conditioning frames show (its true positions there, differenced), rendered by the suite's
  own renderer: a perfect inertia prior. Exact for uniform motion (its error is the parse
  floor), wrong after a collision and under gravity. It needs two conditioning frames: the
  combinatorial suite has one (objects start at rest), where it would equal `frozen`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from phyray.benchmark.score import Source
from phyray.benchmark.suites import Suite
from phyray.config import COMBINATORIAL, ConfigError, load_data_config
from phyray.data.shards import row_states
from phyray.eval.video import frozen_video
from phyray.render import render_videos

BASELINES = ("ground_truth", "frozen", "constant_velocity")


def constant_velocity_positions(positions: np.ndarray, cond_frames: int) -> np.ndarray:
    """(T, K, 2) positions: the first `cond_frames` as given, then straight on at the last
    conditioning step's displacement per frame."""
    step = positions[cond_frames - 1] - positions[cond_frames - 2]  # (K, 2) per frame
    ahead = np.arange(1, len(positions) - cond_frames + 1, dtype=np.float64)[:, None, None]  # (T - c, 1, 1)
    out = positions.astype(np.float64).copy()
    out[cond_frames:] = positions[cond_frames - 1] + ahead * step
    return out


def baseline_source(suite: Suite, kind: str) -> Source:
    if kind not in BASELINES:
        raise ConfigError(f"--baseline: unknown {kind!r}; choose from {', '.join(BASELINES)}")
    if kind == "ground_truth":
        return lambda row, truth: truth
    if kind == "frozen":
        return lambda row, truth: frozen_video(truth, suite.cond_frames)
    if suite.scenario == COMBINATORIAL or suite.cond_frames < 2:
        raise ConfigError(f"--baseline constant_velocity: suite {suite.name} has {suite.cond_frames} conditioning frame(s); "
                          "a velocity needs two (with objects at rest it is the frozen baseline)")
    cfg = load_data_config(suite.scenario, [f"render.resolution={suite.resolution}"])

    def source(row: dict[str, Any], truth: np.ndarray) -> np.ndarray:
        positions, _, radii = row_states(row)
        moved = constant_velocity_positions(positions, suite.cond_frames)
        video = render_videos(moved[None], radii[None], np.asarray(row["colors"], dtype=np.uint8), suite.resolution,
                              cfg.physics.world_size, cfg.render.edge_px)[0]
        video = np.ascontiguousarray(video)
        video[: suite.cond_frames] = truth[: suite.cond_frames]  # the conditioning frames as given
        return video

    return source
