"""Interpolation gaps (paper §5.1, Fig. 5): speed bands in the data config, the plans they make,
the gap metric on hand-made rollouts, and the report's checks."""

from __future__ import annotations

import numpy as np
import pytest

from phyray.config import GAP_LAYOUTS, ConfigError, ValueRange, load_data_config, load_gap_config
from phyray.data.plan import plan_dataset
from phyray.eval.interpolation import gap_records, gap_summary, nearest_trained
from phyray.render import render_videos
from phyray.study.interpolation import gap_checks
from phyray.study.verdict import Estimate

RED = np.array([[255, 0, 0]], np.uint8)


@pytest.mark.parametrize("layout", GAP_LAYOUTS)
def test_training_speeds_lie_in_the_bands_and_evaluation_spans_the_whole_range(layout):
    cfg = load_gap_config(layout)
    train = plan_dataset(cfg, "train", "2K", 0)
    assert train.num_videos == 2000 and cfg.in_training_bands(train.params[:, 1]).all()
    # Every band is trained on, each in proportion to its width.
    widths = np.array([band.width for band in cfg.train_velocity])
    counts = np.array([((train.params[:, 1] >= b.lo) & (train.params[:, 1] <= b.hi)).sum() for b in cfg.train_velocity])
    np.testing.assert_allclose(counts / counts.sum(), widths / widths.sum(), atol=0.03)
    # Evaluation draws the whole ID range, the same videos for every layout.
    evaluation = plan_dataset(cfg, "eval_id", 400, 0)
    speeds = evaluation.params[:, 1]
    assert speeds.min() < 1.2 and speeds.max() > 3.8 and (~cfg.in_training_bands(speeds)).any()
    np.testing.assert_array_equal(evaluation.params, plan_dataset(load_gap_config("wide"), "eval_id", 400, 0).params)


def test_a_plain_uniform_config_trains_on_the_whole_range_as_before():
    cfg = load_data_config("uniform_motion")
    assert cfg.train_velocity is None and "train_velocity" not in cfg.identity_fields()
    assert cfg.in_training_bands([1.0, 2.5, 4.0]).all()


@pytest.mark.parametrize(("override", "message"), [
    ("train_velocity=[[0.5, 1.25]]", "not a band inside the ID range"),
    ("train_velocity=[[3.75, 4.0], [1.0, 1.25]]", "increasing order"),
    ("train_velocity=[[1.0, 2.0], [1.5, 4.0]]", "increasing order"),
])
def test_bad_bands_name_the_field(override, message):
    with pytest.raises(ConfigError, match=f"train_velocity.*{message}"):
        load_gap_config("wide", [override])


def test_bands_are_for_uniform_motion_only():
    with pytest.raises(ConfigError, match="train_velocity: speed bands are for uniform_motion"):
        load_data_config("parabola", ["train_velocity=[[1.0, 1.25]]"])


def test_the_nearest_trained_speed_is_the_nearest_band_edge_or_the_speed_itself():
    bands = load_gap_config("3bands").train_velocity
    np.testing.assert_allclose(nearest_trained(bands, np.array([1.1, 1.5, 2.2, 3.0, 3.9])), [1.1, 1.25, 2.375, 2.625, 3.9])


def _video(v_before: float, v_after: float, frames: int = 16, cond: int = 3, x0: float = 1.5, radius: float = 1.0):
    """A row and a 64² rendering of a ball conditioned at v_before that moves at v_after after
    the conditioning frames."""
    t = np.arange(frames) * 0.1
    true_x = x0 + v_before * t
    generated_x = np.where(np.arange(frames) < cond, true_x, true_x[cond - 1] + v_after * (t - t[cond - 1]))
    positions = np.stack([true_x, np.full(frames, 5.0)], axis=-1)[:, None]  # (T, 1, 2)
    row = {"video_id": f"v{v_before}-{v_after}", "colors": RED.tolist(), "positions": positions,
           "velocities": np.tile([[v_before, 0.0]], (frames, 1, 1)), "radii": np.array([radius])}
    generated = np.stack([generated_x, np.full(frames, 5.0)], axis=-1)[None, :, None]  # (1, T, 1, 2)
    return row, render_videos(generated, np.array([[radius]]), RED, 64)[0]


def test_the_gap_metric_reads_speeds_and_the_pull_toward_the_bands_from_pixels():
    cfg = load_gap_config("wide")
    cases = [(1.1, 1.1), (2.0, 2.0), (1.6, 1.25), (3.4, 3.75), (2.2, 2.6)]
    rows, frames = zip(*(_video(*case) for case in cases))
    records = gap_records(frames, rows, cfg, "subpixel", 3)
    truth = np.array([case[0] for case in cases])
    np.testing.assert_allclose([r["true_velocity"] for r in records], truth, atol=1e-6)
    np.testing.assert_allclose([r["generated_velocity"] for r in records], [c[1] for c in cases], atol=0.03)
    assert [r["in_gap"] for r in records] == [False, True, True, True, True]
    assert np.isnan(records[0]["pull"])
    # Pulled down to the low band, up to the high band: both toward the bands; a video pushed the
    # other way (2.2 -> 2.6, whose nearest trained speed is 1.25) pulls negatively.
    np.testing.assert_allclose([r["pull"] for r in records[1:]], [0.0, 0.35, 0.35, -0.4], atol=0.03)
    np.testing.assert_allclose([r["error"] for r in records], [0.0, 0.0, 0.35, 0.35, 0.4], atol=0.03)

    summary = gap_summary(records, ValueRange(lo=1.25, hi=3.75), resamples=200, seed=0)
    assert summary["inside"]["n"] == 4 and summary["outside"]["n"] == 1
    assert summary["inside"]["mean"] == pytest.approx(np.mean([r["error"] for r in records[1:]]))
    assert summary["span"]["n"] == 4
    low, high = summary["pull"]["ci"]
    assert low <= summary["pull"]["mean"] <= high


def _layout(layout, inside, outside, pull, span):
    estimate = lambda v, half: Estimate(v, v - half, v + half)  # noqa: E731
    return {"layout": layout, "model": "DiT-T", "data_size": "3K", "inside": estimate(*inside),
            "outside": estimate(*outside), "pull": estimate(*pull), "span": estimate(*span)}


def test_the_checks_state_the_papers_findings_with_undecided_where_intervals_overlap():
    results = [
        _layout("wide", (0.5, 0.05), (0.1, 0.02), (0.3, 0.1), (0.5, 0.05)),
        _layout("narrow", (0.2, 0.05), (0.15, 0.1), (0.05, 0.1), (0.2, 0.05)),
        _layout("3bands", (0.3, 0.05), (0.1, 0.02), (-0.3, 0.1), (0.25, 0.05)),
    ]
    answers = {c["check"]: c["answer"] for c in gap_checks(results)}
    assert answers["wide: error inside the gap above outside"] == "yes"
    assert answers["narrow: error inside the gap above outside"] == "undecided"
    assert answers["wide: speeds in the gap pulled toward the trained bands"] == "yes"
    assert answers["narrow: speeds in the gap pulled toward the trained bands"] == "undecided"
    assert answers["3bands: speeds in the gap pulled toward the trained bands"] == "no"
    assert answers["error in the gap grows with its size (wide vs narrow)"] == "yes"
    assert answers["3bands: a restored band lowers the error over the wide gap's span"] == "yes"
