"""Attribute probes (paper §5.3): shapes on the renderer, the probe plans, and their datasets."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from phyray.cli import main
from phyray.config import (
    PROBE_PAIRS,
    REPO_ROOT,
    SHAPES,
    ConfigError,
    load_data_config,
    load_probe_config,
)
from phyray.data import decode_frames, iter_rows, read_manifest
from phyray.data.generate import build_shard, dataset_identity, shard_tasks
from phyray.data.plan import plan_dataset, training_grid
from phyray.data.shards import PROBE_SCHEMA, SCHEMA
from phyray.eval.attributes import read_attributes
from phyray.eval.probes import priority, probe_records, summarize_outcomes
from phyray.render import render_videos
from phyray.study.prepare import vae_root, vae_share_size
from phyray.study.priority import priority_order
from phyray.study.settings import load_study_config

SQUARE, RING = SHAPES.index("square"), SHAPES.index("ring")


def _coverage(x, y, size, shape, resolution=64):
    """One blue object's coverage per pixel, from its red channel (255: none, 0: full)."""
    frame = render_videos(np.array([[[[x, y]]]]), np.array([[size]]), np.array([[0, 0, 255]], np.uint8),
                          resolution, shapes=np.array([shape]))[0, 0]
    return (255.0 - frame[..., 0]) / 255.0


@pytest.mark.parametrize("size", [0.35, 0.7, 1.05, 1.4])
def test_a_squares_pixels_cover_its_area_within_two_percent_at_64(size):
    rng = np.random.default_rng(int(size * 100))
    for x, y in rng.uniform(2.5, 7.5, size=(5, 2)):
        side_px = 2 * size * 6.4
        coverage = _coverage(x, y, size, SQUARE)
        assert coverage.sum() == pytest.approx(side_px**2, rel=0.02)
        # Axis-aligned, not rotated: full rows and columns inside, and the centroid at the centre.
        rows, cols = np.nonzero(coverage > 0.999)
        assert (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) == rows.size
        weights = coverage / coverage.sum()
        assert (weights.sum(axis=0) * (np.arange(64) + 0.5)).sum() == pytest.approx(x * 6.4, abs=0.05)


def test_a_ring_is_the_annulus_between_its_radii():
    size, inner = 1.2, 0.6
    coverage = _coverage(5.0, 5.0, size, RING)
    radius_px = size * 6.4
    assert coverage.sum() == pytest.approx(math.pi * radius_px**2 * (1 - inner**2), rel=0.03)
    assert coverage[32, 32] == 0  # the hole
    assert coverage[32, 32 + int(radius_px * 0.8)] == 1  # the band


def test_explicit_discs_render_the_same_bytes_as_the_default():
    rng = np.random.default_rng(3)
    positions, radii = rng.uniform(0, 10, size=(4, 3, 2, 2)), rng.uniform(0.3, 2.0, size=(4, 2))
    colors = np.array([[255, 0, 0], [0, 0, 255]], np.uint8)
    np.testing.assert_array_equal(render_videos(positions, radii, colors, 64),
                                  render_videos(positions, radii, colors, 64, shapes=np.zeros((4, 2), int)))


def _digest(scenario, split, size):
    """A ball dataset's identity, and a digest of its decoded frames and states."""
    cfg = load_data_config(scenario, ["render.resolution=32", "shard_size=1000"])
    plan = plan_dataset(cfg, split, size, 0)
    table, _ = build_shard(cfg, shard_tasks(cfg, plan, Path("unused"), [0])[0])
    assert table.schema == SCHEMA
    digest = hashlib.sha256()
    for row in table.to_pylist():
        digest.update(decode_frames(row).tobytes())
        digest.update(np.asarray(row["positions"], np.float32).tobytes())
        digest.update(repr((row["params"], row["radii"], row["colors"], row["video_id"])).encode())
    return dataset_identity(cfg, plan).id, digest.hexdigest()[:16]


def test_ball_datasets_are_unchanged_by_probes():
    # Recorded before objects had shapes: the same identities, frames and states.
    assert _digest("uniform_motion", "eval_ood", "12") == ("c1dd0a816e20", "044b649953974c29")
    assert _digest("collision", "eval_id", "6") == ("0436050b99c8", "21bb5dd972c92ef7")
    assert _digest("parabola", "train", "10") == ("5f4f68fbdb03", "a300aa07800c26f2")


# ---------------------------------------------------------------------------------------------
# Plans: training holds the trained combinations only, evaluation all four
# ---------------------------------------------------------------------------------------------


def _combos(cfg, params):
    """(N,) combination labels of plan rows (radius, velocity, colour set, shape set)."""
    probe = cfg.probe
    sets = {"size": probe.set_of("size", params[:, 0]), "velocity": probe.set_of("velocity", params[:, 1]),
            "color": params[:, 2].astype(int), "shape": params[:, 3].astype(int)}
    return [probe.combo_label((int(a), int(b))) for a, b in zip(sets[probe.attributes[0]], sets[probe.attributes[1]])]


@pytest.mark.parametrize("pair", PROBE_PAIRS)
def test_probe_plans_train_on_two_combinations_and_evaluate_on_all_four(pair):
    cfg = load_probe_config(pair)
    trained = {cfg.probe.combo_label(c) for c in cfg.probe.train}
    swapped = {cfg.probe.combo_label(c) for c in cfg.probe.swapped}
    assert len(trained | swapped) == 4
    train = plan_dataset(cfg, "train", "2K", 0)
    assert train.num_videos == 2000 and train.names == ("radius", "velocity", "color", "shape")
    counts = Counter(_combos(cfg, train.params))
    assert set(counts) == trained and min(counts.values()) > 0.3 * 2000
    ood = plan_dataset(cfg, "eval_ood", "40", 0)
    assert Counter(_combos(cfg, ood.params)) == Counter(ood.ood_levels.tolist()) == {c: 20 for c in swapped}
    ident = plan_dataset(cfg, "eval_id", "40", 0)
    assert Counter(_combos(cfg, ident.params)) == {c: 20 for c in trained}
    # Evaluation points are never training points.
    grid = {tuple(p) for p in training_grid(cfg, "30K", 0)[:, :2].round(12)}
    assert not {tuple(p) for p in np.concatenate([ood.params, ident.params])[:, :2].round(12)} & grid


@pytest.mark.parametrize("pair", PROBE_PAIRS)
def test_a_probes_vae_set_holds_all_four_combinations_in_equal_shares(pair):
    cfg = load_probe_config(pair, ["probe.combinations=all"])
    counts = Counter(_combos(cfg, plan_dataset(cfg, "train", "2K", 0).params))
    assert len(counts) == 4 and min(counts.values()) > 0.22 * 2000


def test_velocity_size_keeps_half_the_grid_as_the_paper():
    # The paper: slow-small and fast-large balls of uniform-300K, "about 150K".
    plan = plan_dataset(load_probe_config("velocity_size"), "train", "300K", 0)
    assert 140_000 < plan.num_videos < 160_000
    r, v = plan.params[:, 0], plan.params[:, 1]
    assert (((r <= 1.05) & (v <= 2.5)) | ((r >= 1.05) & (v >= 2.5))).all()


@pytest.mark.parametrize(
    "override, message",
    [
        ("probe.attributes=[color, color]", "probe.attributes: two different attributes"),
        ("probe.attributes=[color, mass]", "probe.attributes.1"),
        ("probe.train=[[0, 0], [0, 1]]", "probe.train: one pairing"),
        ("probe.shape=[disc, hexagon]", "probe.shape.1"),
        ("probe.velocity=[[1.0, 3.0], [2.5, 4.0]]", "probe.velocity: the two ranges overlap"),
        ("probe.size=[[0.3, 0.6], [1.05, 1.4]]", "probe.size: [0.3, 0.6] is outside the ID range"),
        ("probe.color=[[255, 0, 0], [255, 0, 0]]", "probe.color: two different RGB colours"),
        ("scenario=parabola", "probe: attribute probes run on uniform_motion, not parabola"),
    ],
)
def test_bad_probe_configs_name_the_field(override, message):
    with pytest.raises(ConfigError, match="^.*probes/color_shape.yaml: ") as err:
        load_probe_config("color_shape", [override])
    assert message in str(err.value) and len(str(err.value).splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# Datasets: every attribute recorded per object, and read back from the pixels it was drawn with
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pair", ["color_shape", "ring_ball"])
def test_probe_datasets_record_and_draw_each_objects_attributes(tmp_path, ray_local, pair):
    out = tmp_path / pair
    code = main(["data", "generate", "--scenario", f"probe-{pair}", "--split", "eval_ood",
                 "--size", "12", "--resolution", "64", "--out", str(out), "--num-workers", "2", "--quiet",
                 "--set", "shard_size=5"])
    assert code == 0
    cfg = load_probe_config(pair, ["render.resolution=64", "shard_size=5"])
    assert read_manifest(out)["identity"]["settings"]["config"]["probe"]["attributes"] == ["color", "shape"]
    rows = list(iter_rows(out))
    assert len(rows) == 12
    for row in rows:
        params = json.loads(row["params"])
        color, shape = cfg.probe.color[params["color"]], cfg.probe.shape[params["shape"]]
        assert params["combo"] == row["ood_level"] == cfg.probe.combo_label((params["color"], params["shape"]))
        assert row["colors"] == [list(color)] and row["shapes"] == [shape]
        frame = decode_frames(row)[0].astype(float)  # the first frame: (H, W, 3)
        # Coverage from the channels the colour lacks (white has them all): 0 off, 1 on.
        coverage = ((255 - frame[..., np.asarray(color) == 0]) / 255).mean(axis=-1)
        x, y = row["positions"][0][0]
        col, line = int(x * 6.4), int((10 - y) * 6.4)  # the object's centre pixel
        assert (coverage[line, col] > 0.99) == (shape != "ring")  # a ring is hollow
        # Its area in pixels (every object starts wholly in view).
        expected = {"disc": math.pi, "square": 4.0, "ring": math.pi * (1 - cfg.probe.ring_inner**2)}[shape]
        assert coverage.sum() == pytest.approx(expected * (row["radii"][0] * 6.4) ** 2, rel=0.03)
    assert pq.read_schema(sorted(out.glob("shard-*.parquet"))[0]).remove_metadata() == PROBE_SCHEMA


def test_an_unknown_scenario_is_one_line_naming_the_flag(tmp_path, capsys):
    code = main(["data", "generate", "--out", str(tmp_path / "never"), "--quiet", "--scenario", "probe-taste_smell"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--scenario: unknown 'probe-taste_smell'" in err and "probe-color_shape" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "never").exists()


# ---------------------------------------------------------------------------------------------
# Readout and the probe metric
# ---------------------------------------------------------------------------------------------

COLOURS = np.array([[255, 0, 0], [0, 0, 255]], np.uint8)


@pytest.mark.parametrize("resolution", [32, 64])
def test_the_readout_recovers_shape_colour_size_and_position_from_ground_truth(resolution):
    rng = np.random.default_rng(resolution)
    n, t = 120, 6
    radius, velocity = rng.uniform(0.7, 1.4, n), rng.uniform(1, 4, n)
    x0, y0 = rng.uniform(radius, 10 - radius - velocity * 0.5), rng.uniform(radius + 0.5, 9.5 - radius)
    positions = np.stack([x0[:, None] + velocity[:, None] * 0.1 * np.arange(t), np.repeat(y0[:, None], t, 1)], -1)
    shapes, colours = rng.integers(0, 3, n), rng.integers(0, 2, n)
    videos = render_videos(positions[:, :, None], radius[:, None], COLOURS[colours][:, None], resolution,
                           shapes=shapes[:, None])
    readout = read_attributes(videos, COLOURS)
    readable = readout.readable
    assert readable.mean() > 0.95
    assert (readout.shape == shapes[:, None])[readable].all() and (readout.color == colours[:, None])[readable].all()
    assert np.abs(readout.size / radius[:, None] - 1)[readable].max() < 0.05
    # Within 0.15 px: the background tolerance (0.2) trims the anti-aliased rim unevenly when an
    # edge straddles pixels (worst 0.125 px at 32², 0.103 at 64²; mean 0.02 px).
    assert np.abs(readout.position - positions)[readable].max() < 0.15 * 10 / resolution


def _rollout(probe, before, after, frames=8, cond=3, x0=2.0, y=5.0):
    """A hand-made rollout and its reference row: the object drawn with `before` = (colour set,
    shape set, size, velocity) for the conditioning frames and `after` from then on."""
    positions, sizes, colours, shapes = [], [], [], []
    x = x0
    for frame in range(frames):
        color, shape, size, velocity = before if frame < cond else after
        if frame:
            x += (before if frame < cond else after)[3] * 0.1
        positions.append([x, y])
        sizes.append(size)
        colours.append(probe.color[color])
        shapes.append(SHAPES.index(probe.shape[shape]))
    video = np.stack([
        render_videos(np.array([[[p]]]), np.array([[s]]), np.array([c], np.uint8), 64, shapes=np.array([k]))[0, 0]
        for p, s, c, k in zip(positions, sizes, colours, shapes)
    ])
    color, shape, size, velocity = before
    row = {"video_id": "probe-0", "radii": [size],
           "params": json.dumps({"color": color, "shape": shape, "radius": size, "velocity": velocity})}
    return video, row


@pytest.mark.parametrize(
    "pair, before, after, expected",
    [
        # colour-shape, trained red discs and blue squares; conditioned on a red square (swapped):
        ("color_shape", (0, 1, 1.0, 2.0), (0, 0, 1.0, 2.0), "a_wins"),  # red disc: colour kept
        ("color_shape", (0, 1, 1.0, 2.0), (1, 1, 1.0, 2.0), "b_wins"),  # blue square: shape kept
        ("color_shape", (0, 1, 1.0, 2.0), (0, 1, 1.0, 2.0), "composed"),
        ("color_shape", (0, 1, 1.0, 2.0), (1, 0, 1.0, 2.0), "neither"),
        # velocity-size, trained slow-small and fast-large; a slow large ball speeds up: size wins.
        ("velocity_size", (0, 0, 1.3, 1.5), (0, 0, 1.3, 3.5), "b_wins"),
        ("velocity_size", (0, 0, 1.3, 1.5), (0, 0, 0.8, 1.5), "a_wins"),  # it shrinks: velocity wins
        # ring-ball, trained blue discs and red rings; a blue ring that becomes a red ring.
        ("ring_ball", (0, 1, 1.2, 2.0), (1, 1, 1.2, 2.0), "b_wins"),
        ("color_shape", (0, 1, 1.0, 2.0), (0, 1, 1.0, 40.0), "unreadable"),  # gone from view
    ],
)
def test_the_probe_metric_classifies_hand_made_rollouts(pair, before, after, expected):
    probe = load_probe_config(pair).probe
    video, row = _rollout(probe, before, after)
    readout = read_attributes(video[None], np.array(probe.color, np.uint8), ring_inner=probe.ring_inner)
    [record] = probe_records(probe, readout, [row], cond_frames=3, frame_dt=0.1)
    assert record["outcome"] == expected and not record["trained"]
    if pair == "velocity_size" and expected == "b_wins":
        assert record["velocity_drift"] == pytest.approx(2.0, abs=0.05)
        assert record["velocity_drift_toward"] == pytest.approx(2.0, abs=0.05)  # toward fast, as trained
        assert record["size_drift_toward"] == pytest.approx(0.0, abs=0.03)


def test_outcomes_summarise_with_intervals_and_name_the_winner():
    records = [{"trained": False, "outcome": "a_wins"}] * 30 + [{"trained": False, "outcome": "b_wins"}] * 5 \
        + [{"trained": False, "outcome": "composed"}] * 5 + [{"trained": True, "outcome": "composed"}] * 40
    summary = summarize_outcomes(records, resamples=500)
    assert summary["num_videos"] == 40 and summary["outcomes"]["a_wins"]["count"] == 30
    low, high = summary["outcomes"]["a_wins"]["ci"]
    assert low < 0.75 < high and summary["margin"]["mean"] == pytest.approx(25 / 40)
    assert priority(summary) == "a"
    even = summarize_outcomes([{"trained": False, "outcome": o} for o in ["a_wins", "b_wins"] * 10], resamples=500)
    assert priority(even) == "tie"


def _pair(pair, winner):
    a, b = load_probe_config(pair).probe.attributes
    return {"pair": pair, "a": a, "b": b, "winner": winner}


def test_the_priority_order_follows_the_pairwise_winners_or_names_what_prevents_one():
    paper = [_pair("color_shape", "color"), _pair("size_shape", "size"), _pair("velocity_shape", "velocity"),
             _pair("velocity_size", "size"), _pair("color_size", "color"), _pair("color_velocity", "color"),
             _pair("ring_ball", "shape")]  # the appendix pair stays out of the order
    assert priority_order(paper) == {"order": ["color", "size", "velocity", "shape"], "reason": None, "paper": "yes"}
    flipped = [*paper[:3], _pair("velocity_size", "velocity"), *paper[4:]]
    assert priority_order(flipped) == {"order": ["color", "velocity", "size", "shape"], "reason": None, "paper": "no"}
    cycle = [_pair("color_shape", "shape"), *paper[1:]]  # shape > colour > size > shape
    result = priority_order(cycle)
    assert result["order"] is None and result["reason"].startswith("cycle: ") and result["paper"] == "no"
    tie = [*paper[:5], _pair("color_velocity", "tie")]
    assert priority_order(tie) == {"order": None, "reason": "undecided at the intervals: color / velocity", "paper": "undecided"}
    assert priority_order(paper[:2])["reason"] == "2 of the 6 pairs of colour, size, velocity, shape were run"


def test_the_mini_studys_pairs_share_one_vae_from_equal_shares_and_scope_is_checked():
    mini = REPO_ROOT / "configs" / "studies" / "probe-attributes-mini.yaml"
    cfg = load_study_config(mini)
    assert cfg.vae.scope == "study" and vae_share_size(cfg) == "429"  # 3K over seven pairs, rounded up
    assert vae_root(cfg, "probe-color_shape") == vae_root(cfg, "probe-ring_ball")
    for override in ("vae.train_on=uniform_motion", "vae.scope=everything"):
        with pytest.raises(ConfigError, match="vae.(scope|train_on)"):
            load_study_config(mini, [override])
