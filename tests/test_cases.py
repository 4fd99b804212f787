"""Case-based probes: interpolation gaps (paper §5.1, Fig. 5), the collision convex hull (§5.1,
Fig. 6) and direction flips (§5.2, Fig. 7). Speed bands, left-out boxes and mirrored training
videos in the data config, the plans they make, the metrics on hand-made rollouts, and the
reports' checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from phyray.config import (
    GAP_LAYOUTS,
    REPO_ROOT,
    ConfigError,
    ValueRange,
    load_data_config,
    load_flip_config,
    load_gap_config,
    load_hull_config,
    to_flat_dict,
)
from phyray.data.generate import simulate_video
from phyray.data.plan import plan_dataset
from phyray.eval.cases import (
    flip_records,
    flip_summary,
    gap_records,
    gap_summary,
    hull_plane,
    hull_polygon,
    hull_records,
    hull_regions,
    hull_summary,
    nearest_trained,
    speed_records,
)
from phyray.render import render_videos
from phyray.study.cases import (
    composition_markdown,
    flip_checks,
    flips_markdown,
    gap_checks,
    gaps_markdown,
    hull_checks,
    hulls_markdown,
)
from phyray.study.priority import priority_markdown
from phyray.study.settings import load_study_config
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


# ---------------------------------------------------------------------------------------------
# Direction flips
# ---------------------------------------------------------------------------------------------


def test_set_two_mirrors_every_second_training_video_and_evaluates_moving_right():
    cfg = load_flip_config("both")
    train = plan_dataset(cfg, "train", "1K", 0)
    assert train.names == ("radius", "velocity", "direction")
    assert 0.45 < (train.params[:, 2] < 0).mean() < 0.55 and (train.params[:, 1] >= 2.5).all()
    slow = plan_dataset(cfg, "eval_ood", None, 0)
    assert slow.names == ("radius", "velocity") and (slow.params[:, 1] <= 2.5).all()
    right = load_flip_config("right")
    assert plan_dataset(right, "train", "1K", 0).names == ("radius", "velocity")
    assert "train_direction" not in right.identity_fields() and cfg.identity_fields()["train_direction"] == "both"
    with pytest.raises(ConfigError, match="train_direction: mirrored training videos are for uniform_motion"):
        load_data_config("collision", ["train_direction=both"])


def _render(scene, trajectory, resolution=64):
    return render_videos(trajectory.positions[None], scene.radii[None], RED, resolution)[0]


def test_a_mirrored_video_is_the_flipped_frames_with_velocities_negated():
    cfg = load_flip_config("both", ["physics.num_frames=16", "min_frames_in_view=16"])
    point = {"radius": 1.0, "velocity": 3.0}
    scene, right, _ = simulate_video(cfg, point, 7)
    _, left, placement = simulate_video(cfg, point | {"direction": -1.0}, 7)
    np.testing.assert_allclose(left.velocities[..., 0], -right.velocities[..., 0])
    np.testing.assert_allclose(left.positions[..., 0], 10.0 - right.positions[..., 0])
    np.testing.assert_array_equal(_render(scene, left), _render(scene, right)[:, :, ::-1])
    assert placement["x0"][0] == pytest.approx(10.0 - right.positions[0, 0, 0])


def test_left_moving_balls_parse_with_the_floor_of_right_moving_ones():
    cfg = load_flip_config("both", ["physics.num_frames=16", "min_frames_in_view=16"])
    rng = np.random.default_rng(0)
    errors = {}
    for direction in (1.0, -1.0):
        rows, frames = [], []
        for i in range(12):
            point = {"radius": rng.uniform(0.7, 1.4), "velocity": rng.uniform(2.5, 4.0), "direction": direction}
            scene, trajectory, _ = simulate_video(cfg, point, i)
            rows.append({"video_id": str(i), "colors": RED.tolist(), "positions": trajectory.positions,
                         "velocities": trajectory.velocities, "radii": scene.radii})
            frames.append(_render(scene, trajectory))
        generated, true, error = speed_records(frames, rows, cfg, "subpixel", 3)
        assert (np.sign(generated[:, 0]) == direction).all() and (np.sign(true[:, 0]) == direction).all()
        errors[direction] = error
    assert errors[1.0].max() < 0.03 and errors[-1.0].max() < 0.03
    assert errors[-1.0].mean() == pytest.approx(errors[1.0].mean(), abs=0.005)


def test_a_rollout_that_turns_back_is_reversed_and_one_that_stops_is_not():
    cfg = load_flip_config("right")
    cases = [(2.0, 2.0), (2.0, -1.0), (1.5, 0.0), (1.2, 3.0)]
    rows, frames = zip(*(_video(before, after, x0=3.0) for before, after in cases))
    records = flip_records(frames, rows, cfg, "subpixel", 3)
    assert [r["reversed"] for r in records] == [False, True, False, False]
    summary = flip_summary(records, resamples=200, seed=0)
    assert summary["reversed"]["mean"] == pytest.approx(0.25)
    assert summary["drift"]["mean"] == pytest.approx(np.mean([a - b for b, a in cases]), abs=0.03)


def test_the_flip_checks_state_the_papers_findings():
    estimate = lambda v, half: Estimate(v, max(v - half, 0), v + half)  # noqa: E731
    results = [
        {"set": "right", "model": "DiT-T", "data_size": "3K", "ood_reversed": estimate(0.0, 0.01), "ood_drift": estimate(0.4, 0.1)},
        {"set": "both", "model": "DiT-T", "data_size": "3K", "ood_reversed": estimate(0.2, 0.05), "ood_drift": estimate(0.1, 0.2)},
    ]
    answers = {c["check"]: c["answer"] for c in flip_checks(results)}
    assert answers == {
        "Set-1 (right only) never reverses a slow ball (reversed under 5 %)": "yes",
        "Set-1 speeds slow balls up toward its trained speeds (drift > 0)": "yes",
        "Set-2 (both directions) reverses more slow balls than Set-1": "yes",
    }


def test_a_shared_vae_names_a_ball_scenario():
    from phyray.config import REPO_ROOT
    from phyray.study.settings import load_study_config

    smoke = REPO_ROOT / "configs" / "studies" / "interpolation-gaps-smoke.yaml"
    assert load_study_config(smoke).vae.train_on == "uniform_motion"
    with pytest.raises(ConfigError, match="vae.train_on: 'combinatorial' is not a ball scenario"):
        load_study_config(smoke, ["vae.train_on=combinatorial"])


# ---------------------------------------------------------------------------------------------
# The collision convex hull
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["square", "three_squares", "lshape", "mass"])
def test_left_out_boxes_are_absent_from_training_and_present_in_evaluation(variant):
    cfg = load_hull_config(variant)
    train = plan_dataset(cfg, "train", "2K", 0)
    assert train.num_videos == 2000 and not cfg.excluded(train.params, train.names).any()
    evaluation = plan_dataset(cfg, "eval_id", 600, 0)
    assert 0.05 < cfg.excluded(evaluation.params, evaluation.names).mean() < 0.95


def test_hull_regions_tell_holes_inside_the_training_hull_from_points_beyond_it():
    square = load_hull_config("square")
    np.testing.assert_array_equal(hull_regions(square, np.array([[2.5, 2.5], [1.5, 3.5], [4.3, 2.0], [0.5, 1.5]])),
                                  ["inside", "trained", "outside", "outside"])
    # The L-shape's hull cuts its hole along the line from (1.25, 4) to (4, 1.25).
    lshape = load_hull_config("lshape")
    np.testing.assert_array_equal(hull_regions(lshape, np.array([[1.1, 3.0], [2.0, 2.0], [3.5, 3.5], [2.0, 3.5]])),
                                  ["trained", "inside", "outside", "outside"])
    polygon = hull_polygon(lshape)
    assert {tuple(v) for v in polygon.round(2)} == {(1.0, 1.0), (4.0, 1.0), (4.0, 1.24), (1.24, 4.0), (1.0, 4.0)}
    mass = load_hull_config("mass")
    assert hull_plane(mass) == ("r1", "r2")
    np.testing.assert_array_equal(hull_regions(mass, np.array([[1.0, 1.0], [1.8, 1.0], [0.6, 1.4]])),
                                  ["inside", "outside", "trained"])


def test_hull_records_place_each_video_and_summarise_per_region():
    cfg = load_hull_config("square")
    rows = {f"v{i}": {"params": json.dumps({"v1": v1, "v2": v2})} for i, (v1, v2) in enumerate([(2.5, 2.5), (1.5, 1.5), (4.3, 2.0)])}
    records = [{"video_id": f"v{i}", "vel_err_mean_velocity": e, "vae_floor_vel_err_mean_velocity": 0.01}
               for i, e in enumerate([0.2, 0.1, 0.9])]
    hull = hull_records(records, rows, cfg, "vel_err_mean_velocity")
    assert [r["region"] for r in hull] == ["inside", "trained", "outside"] and hull[2]["v1"] == 4.3
    summary = hull_summary(hull, resamples=100, seed=0)
    assert summary["outside"]["mean"] == 0.9 and summary["trained_floor"]["mean"] == 0.01 and summary["inside"]["n"] == 1


def test_bad_boxes_name_the_field():
    with pytest.raises(ConfigError, match=r"train_exclude\[0\]: bounds a non-empty subset"):
        load_hull_config("square", ["train_exclude=[{v3: [1, 2]}]"])


def test_the_hull_checks_state_the_papers_findings():
    estimate = lambda v, half: Estimate(v, v - half, v + half)  # noqa: E731
    results = [{"variant": "square", "model": "DiT-T", "data_size": "3K", "trained": estimate(0.2, 0.02),
                "inside": estimate(0.22, 0.03), "outside": estimate(0.9, 0.1)},
               {"variant": "lshape", "model": "DiT-T", "data_size": "3K", "trained": estimate(0.2, 0.02),
                "inside": estimate(0.6, 0.05), "outside": estimate(0.7, 0.2)}]
    answers = {c["check"]: c["answer"] for c in hull_checks(results)}
    assert answers["square: outside the hull errs more than inside it"] == "yes"
    assert answers["square: holes inside the hull err like trained points (under 1.5x)"] == "yes"
    assert answers["lshape: outside the hull errs more than inside it"] == "undecided"
    assert answers["lshape: holes inside the hull err like trained points (under 1.5x)"] == "no"


def test_the_hull_report_says_where_the_vae_floor_is_most_of_the_error():
    estimate = lambda v: Estimate(v, v * 0.9, v * 1.1)  # noqa: E731
    result = {"variant": "square", "model": "DiT-T", "data_size": "3K", "boxes": [],
              "trained": estimate(0.2), "inside": estimate(0.25), "outside": estimate(0.9),
              "trained_floor": estimate(0.05), "inside_floor": estimate(0.1), "outside_floor": estimate(0.85)}
    result |= {f"{region}_n": 10 for region in ("trained", "inside", "outside")}
    study = {"name": "s", "id": "i", "run_id": "r"}
    text = hulls_markdown([result], hull_checks([result]), study, [], {})
    # inside: 0.1 > 0.25 / 3 and outside: 0.85 > 0.9 / 3 are floored; trained: 0.05 < 0.2 / 3 is not.
    assert "The VAE's own error is over a third of the model's in square (DiT-T, 3K): inside, outside:" in text
    clean = result | {"inside_floor": estimate(0.05), "outside_floor": estimate(0.1)}
    assert "over a third" not in hulls_markdown([clean], hull_checks([clean]), study, [], {})


def _no_results(report):
    return lambda study, params: report([], [], study, [], params)


@pytest.mark.parametrize("study_config, report, reads_positions", [
    ("interpolation-gaps-smoke", _no_results(gaps_markdown), True),
    ("direction-flips-smoke", _no_results(flips_markdown), True),
    ("convex-hull-smoke", _no_results(hulls_markdown), True),
    ("composition-smoke", _no_results(composition_markdown), True),
    ("probe-attributes-smoke", lambda study, params: priority_markdown([], study, [], params), False),
])
def test_a_probe_report_states_the_split_seeds_and_sampler_its_study_logged(study_config, report, reads_positions):
    """Config -> the params a study run logs (as MLflow stores them, text) -> the report's protocol."""
    cfg = load_study_config(REPO_ROOT / "configs" / "studies" / f"{study_config}.yaml", [
        "eval.split=dev", "seeds=[3, 4]", "data.seed=7", "eval.parser=threshold", "eval.bootstrap_resamples=500",
        "eval.precision=bf16",
    ])
    params = {name: str(value) for name, value in to_flat_dict(cfg).items()}
    protocol = report({"name": "s", "id": "i", "run_id": "r"}, params).splitlines()[2]
    assert protocol.startswith("Protocol: ")
    for phrase in ("the dev split, data seed 7", f"{cfg.data.resolution}² frames",
                   f"{cfg.dit['diffusion']['cond_frames']} conditioning frames", f"{cfg.eval.sample_steps} sampling steps in bf16",
                   "training seeds [3, 4]", "(500 resamples)"):
        assert phrase in protocol
    assert ("parser `threshold`" in protocol) == reads_positions
    # The dev split's checks choose settings; a report on it says so above them, one on test does not.
    assert "**Dev split**: these checks are for choosing settings" in report({"name": "s", "id": "i", "run_id": "r"}, params)
    test = {**params, "eval.split": "test"}
    assert "**Dev split**" not in report({"name": "s", "id": "i", "run_id": "r"}, test)


def test_a_collision_needs_more_frames_than_twice_its_margin():
    with pytest.raises(ConfigError, match="min_frames_around_collision: 8 frames before and after the impact need more than 16"):
        load_data_config("collision", ["physics.num_frames=16"])
