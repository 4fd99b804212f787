"""Composition probes (paper §5.4, Fig. 11): walls, squares and objects at rest in the simulator,
the kinds of composition video and the training mixtures they make, and the per-object metric
on ground truth and on hand-made rollouts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from phyray.cli import main
from phyray.config import COMPOSE_VARIANTS, ConfigError, PhysicsConfig, load_compose_config
from phyray.data.generate import build_shard, shard_tasks, simulate_video
from phyray.data.plan import plan_dataset
from phyray.data.shards import decode_frames, iter_rows, read_manifest
from phyray.eval.composition import composition_records, composition_summary, segment_names
from phyray.eval.physics import in_view
from phyray.render import render_videos, wall_background
from phyray.sim.balls import BallScene, Wall, elastic_velocities, impact_frame, simulate
from phyray.study.cases import composition_checks, composition_markdown
from phyray.study.verdict import Estimate

REPO = Path(__file__).resolve().parents[1]
MINI = ["physics.num_frames=16", "render.resolution=32"]
WALL = Wall(8.5, 0.5)


def test_a_wall_bounce_conserves_speed_and_reflects_the_normal_component():
    physics = PhysicsConfig()
    for shape, size in (("disc", 0.8), ("square", 0.6)):
        # Moving right and up into the wall: vx turns back, vy (along the wall) is kept.
        scene = BallScene(radii=np.array([size]), positions=np.array([[6.0, 3.0]]), velocities=np.array([[3.0, 1.5]]),
                          shapes=(shape,))
        trajectory = simulate(scene, physics, (WALL,))
        after = trajectory.velocities[-1, 0]
        np.testing.assert_allclose(after, [-3.0, 1.5], atol=1e-9)
        np.testing.assert_allclose(np.hypot(*trajectory.velocities[:, 0].T), np.hypot(3.0, 1.5), rtol=1e-12)
        # The object never passes the wall's face, and the bounce is recorded at the frame its
        # velocity changes: the object touches the wall after (8.5 - 0.8 - 6) / 3 = 0.57 s.
        assert (trajectory.positions[:, 0, 0] + size <= WALL.x + 1e-6).all()
        [event] = trajectory.events
        assert (event.kind, event.objects) == ("bounce", (0,)) and event.frame == impact_frame(trajectory)


def test_a_square_translates_without_rotating_through_an_off_centre_hit():
    """A disc strikes a square's face well below its centre: with a finite moment the square
    would spin and take linear energy into rotation; it takes none, and the 1-D elastic formula
    of the two masses holds along x."""
    physics = PhysicsConfig()
    square, disc = 1.0, 0.5
    scene = BallScene(radii=np.array([disc, square]), positions=np.array([[2.0, 4.3], [6.0, 5.0]]),
                      velocities=np.array([[2.0, 0.0], [0.0, 0.0]]), shapes=("disc", "square"))
    trajectory = simulate(scene, physics)
    m = np.array([np.pi * disc**2, (2 * square) ** 2])
    u_disc, u_square = elastic_velocities(m[0], m[1], 2.0, 0.0)
    np.testing.assert_allclose(trajectory.velocities[-1, :, 0], [u_disc, u_square], atol=1e-9)
    np.testing.assert_allclose(trajectory.velocities[:, :, 1], 0.0, atol=1e-12)
    energy = 0.5 * (m[None] * (trajectory.velocities**2).sum(axis=2)).sum(axis=1)
    np.testing.assert_allclose(energy, energy[0], rtol=1e-12)
    assert [(e.kind, e.objects) for e in trajectory.events] == [("collision", (0, 1))]


def test_an_object_at_rest_stays_put_beside_a_moving_one():
    cfg = load_compose_config("spatial", MINI)
    _, trajectory, placement = simulate_video(cfg, {"kind": 0.0}, 3)  # square_moves
    assert placement["kind"] == "square_moves" and placement["events"] == []
    np.testing.assert_array_equal(trajectory.velocities[:, 0], 0.0)
    np.testing.assert_array_equal(trajectory.positions[:, 0], np.broadcast_to(trajectory.positions[0, 0], (16, 2)))
    assert (trajectory.velocities[:, 1, 0] < -0.99).all()  # the square moves left, away from the wall


def test_the_wall_is_a_dark_bar_the_objects_are_painted_beside():
    background = wall_background([(8.5, 0.5)], (0, 0, 0), 32)
    columns = np.flatnonzero((background[0] < 128).all(axis=-1))
    np.testing.assert_array_equal(columns, [27, 28])  # 8.5-9.0 world units: pixels 27.2-28.8
    assert (background == background[:1]).all()  # top to bottom
    # A red ball touching the wall keeps its colour; the bar stays dark where the ball is not.
    positions = np.array([[[[8.5 - 1.0, 5.0]]]])
    frame = render_videos(positions, np.array([[1.0]]), np.array([[255, 0, 0]], np.uint8), 32, background=background)[0, 0]
    row = frame[16]
    assert tuple(row[23]) == (255, 0, 0) and (frame[0, 27:29] < 128).all() and (row[28] < 128).all()
    # Without a background the renderer is unchanged.
    plain = render_videos(positions, np.array([[1.0]]), np.array([[255, 0, 0]], np.uint8), 32)[0, 0]
    assert (plain[0] == 255).all()


@pytest.mark.parametrize("variant", COMPOSE_VARIANTS)
def test_training_mixes_both_kinds_and_no_composed_video_while_evaluation_holds_only_composed_ones(variant):
    cfg = load_compose_config(variant, MINI)
    compose = cfg.compose
    kinds_of = {}
    for split, size in (("train", "60"), ("eval_id", "20"), ("eval_ood", "20")):
        plan = plan_dataset(cfg, split, size, 0)
        table, _ = build_shard(cfg, shard_tasks(cfg, plan, "unused", [0])[0])
        rows = table.to_pylist()
        kinds_of[split] = [json.loads(r["params"])["kind"] for r in rows]
        for row in rows:
            params = json.loads(row["params"])
            events = [e["kind"] for e in params["events"]]
            moving = [np.abs(np.asarray(row["velocities"])[:, k, 0]).max() > 0 for k in range(len(row["radii"]))]
            # Each row names its objects' shapes and colours and its events' frames.
            assert len(row["shapes"]) == len(row["colors"]) == len(row["radii"])
            assert all(3 < e["frame"] < 16 for e in params["events"])
            if params["kind"] == compose.eval:
                assert row["ood_level"] == compose.eval
            if variant == "spatial":
                assert row["shapes"] == ["disc", "square"]
                assert all(moving) == (params["kind"] == "both_move")
            else:
                assert events == {"collision": ["collision"], "bounce": ["bounce"],
                                  "collision_bounce": ["collision", "bounce"]}[params["kind"]]
            if params["kind"] == "bounce":
                assert row["colors"] == [list(compose.bounce_color)]
    assert sorted(set(kinds_of["train"])) == sorted(compose.train)
    assert kinds_of["train"].count(compose.train[0]) == 30
    assert sorted(set(kinds_of["eval_id"])) == sorted(compose.train)
    assert set(kinds_of["eval_ood"]) == {compose.eval}
    # The VAE's set (kinds: all) holds the composed kind beside the trained two.
    every = cfg.model_copy(update={"compose": compose.model_copy(update={"kinds": "all"})})
    codes = set(plan_dataset(every, "train", "60", 0).params[:, 0])
    assert len(codes) == 3


def test_the_command_line_generates_a_composition_split_by_its_study_name(tmp_path, ray_local):
    out = tmp_path / "composed"
    code = main(["data", "generate", "--scenario", "compose-temporal", "--split", "eval_ood", "--size", "6",
                 "--resolution", "32", "--set", "physics.num_frames=16", "--num-workers", "2", "--quiet", "--out", str(out)])
    assert code == 0
    assert read_manifest(out)["identity"]["settings"]["config"]["compose"]["eval"] == "collision_bounce"
    kinds = [json.loads(row["params"])["kind"] for row in iter_rows(out)]
    assert kinds == ["collision_bounce"] * 6
    # The contact sheet of a set against itself: per video, its frames 0, 5, 10, 15 twice.
    sheet_path = tmp_path / "sheet.png"
    subprocess.run([sys.executable, str(REPO / "scripts" / "contact_sheet.py"), "--reference", str(out), "--compare",
                    str(out), "--videos", "2", "--every", "5", "--scale", "1", "--out", str(sheet_path)], check=True)
    sheet = iio.imread(sheet_path)
    first = decode_frames(next(iter_rows(out)))
    assert sheet.shape == (4 * 32, 4 * 32, 3)
    assert (sheet[:32] == np.concatenate(list(first[::5]), axis=1)).all() and (sheet[:32] == sheet[32:64]).all()


def test_the_failure_variant_has_no_red_ball_near_the_wall_in_training():
    cfg = load_compose_config("temporal-noredbounce", MINI)
    table, _ = build_shard(cfg, shard_tasks(cfg, plan_dataset(cfg, "train", "40", 0), "unused", [0])[0])
    for row in table.to_pylist():
        events = json.loads(row["params"])["events"]
        bouncing = {row["colors"][k][0] for e in events if e["kind"] == "bounce" for k in e["objects"]}
        assert bouncing <= {0}  # only blue balls (R = 0) bounce


@pytest.mark.parametrize(("override", "message"), [
    ("compose.eval=collision", "compose: two different training kinds and another evaluation kind"),
    ("compose.train=[square_moves, bounce]", "compose: the kinds of one family"),
    ("compose.bounce_color=[0, 255, 0]", "compose.bounce_color: red"),
    ("compose.wall.x=9.8", "compose.wall: x \\+ thickness = 10.3 lies beyond the world"),
])
def test_bad_composition_settings_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_compose_config("temporal", [*MINI, override])


def test_a_kind_the_settings_cannot_place_says_which_settings():
    cfg = load_compose_config("temporal", [*MINI, "compose.min_frames_between_events=7"])
    with pytest.raises(ValueError, match="no collision_bounce video in 1000 draws.*min_frames_between_events"):
        simulate_video(cfg, {"kind": 5.0}, 0)


# ---------------------------------------------------------------------------------------------
# The metric
# ---------------------------------------------------------------------------------------------


def _composed(variant: str, count: int):
    cfg = load_compose_config(variant, MINI)
    table, _ = build_shard(cfg, shard_tasks(cfg, plan_dataset(cfg, "eval_ood", str(count), 0), "unused", [0])[0])
    rows = table.to_pylist()
    return cfg, rows, [decode_frames(row) for row in rows]


def _rerender(cfg, row, positions):
    wall = cfg.compose.wall
    background = wall_background([(wall.x, wall.thickness)], wall.color, 32)
    shapes = np.array([[0 if s == "disc" else 1 for s in row["shapes"]]])
    return render_videos(positions[None], np.array([row["radii"]]), np.array(row["colors"], np.uint8), 32,
                         shapes=shapes, background=background)[0]


@pytest.mark.parametrize("variant", ["spatial", "temporal"])
def test_ground_truth_scores_near_zero_error_and_full_survival(variant):
    _, rows, frames = _composed(variant, 12)
    records = composition_records(frames, rows, "subpixel", 3)
    for record in records:
        for obj in record["objects"]:
            assert obj["survival"] == 1.0 and not obj["vanished"]
            errors = [s["error"] for s in obj["segments"].values() if s["moving"]]
            # Touching balls blend their rims at 32²: one interval just before a collision errs most.
            assert errors and max(errors) < 0.15
            assert obj.get("bounced", True) is True
    summary = composition_summary(records, resamples=100, seed=0)
    roles = {"spatial": ("red_ball", "blue_square"), "temporal": ("red_ball", "blue_ball")}[variant]
    for role in roles:
        assert summary[f"{role}/moving_error"]["mean"] < 0.03 and summary[f"{role}/vanished"]["mean"] == 0.0
    bouncer = "red_ball" if variant == "spatial" else "blue_ball"
    assert summary[f"{bouncer}/bounced"]["mean"] == 1.0 and summary[f"{bouncer}/bounced"]["n"] == 12


def test_a_red_ball_that_disappears_after_the_collision_vanished_and_a_blue_ball_that_passes_the_wall_did_not_bounce():
    cfg, rows, _ = _composed("temporal", 4)
    row = rows[0]
    positions = np.asarray(row["positions"], dtype=np.float64)
    collision, bounce = [e["frame"] for e in json.loads(row["params"])["events"]]
    lost = positions.copy()
    lost[collision:, 0] = (-50.0, -50.0)  # the red ball is drawn nowhere from the collision on
    through = positions.copy()
    # The blue ball keeps its post-collision velocity through the wall instead of turning back.
    velocity = positions[bounce - 1, 1] - positions[bounce - 2, 1]
    through[bounce:, 1] = positions[bounce - 1, 1] + velocity * np.arange(1, 17 - bounce)[:, None]
    records = composition_records([_rerender(cfg, row, lost), _rerender(cfg, row, through)], [row, row], "subpixel", 3)
    red, blue = records[0]["objects"]
    judged = in_view(positions[None, 3:], np.array([row["radii"]]))[0, :, 0].sum()
    assert red["role"] == "red_ball" and red["vanished"] and red["survival"] == pytest.approx((collision - 3) / judged)
    assert np.isnan(red["segments"]["after_bounce"]["error"])  # nothing left to measure
    assert not blue["vanished"] and blue["bounced"] is True
    assert records[1]["objects"][1]["bounced"] is False and not records[1]["objects"][1]["vanished"]
    summary = composition_summary(records, resamples=100, seed=0)
    assert summary["red_ball/vanished"]["mean"] == 0.5 and summary["blue_ball/bounced"]["mean"] == 0.5


def test_segments_are_named_after_the_events_that_open_them():
    assert segment_names([]) == ["start"]
    assert segment_names([{"kind": "collision"}, {"kind": "bounce"}, {"kind": "bounce"}]) == [
        "start", "after_collision", "after_bounce", "after_bounce_2"]


def _result(variant: str, ood: dict, trained: dict, floor: float = 0.01) -> dict:
    """A composition result as `composition_results` makes it: estimates[source][group][role][quantity]."""
    estimate = lambda v: Estimate(v, v * 0.9, v * 1.1)  # noqa: E731
    model = {"ood": {role: {q: estimate(v) for q, v in qs.items()} for role, qs in ood.items()},
             "id": {role: {"moving_error": estimate(v)} for role, v in trained.items()}}
    floors = {group: {role: {q: estimate(floor) for q in qs} for role, qs in model[group].items()} for group in model}
    return {"variant": variant, "model": "DiT-T", "data_size": "3K", "seeds": 1, "num_videos": estimate(100),
            "estimates": {"model": model, "vae": floors, "parser": floors}}


def test_the_composition_checks_state_the_papers_findings():
    spatial = _result("spatial", {"red_ball": {"start": 0.2, "after_bounce": 0.22, "bounced": 0.9},
                                  "blue_square": {"start": 0.15, "after_bounce": 0.16}},
                      {"red_ball": 0.2, "blue_square": 0.15})
    temporal = _result("temporal", {"blue_ball": {"after_bounce": 0.3, "bounced": 0.8}, "red_ball": {"vanished": 0.03}},
                       {"blue_ball": 0.3, "red_ball": 0.3})
    failing = _result("temporal-noredbounce", {"blue_ball": {"bounced": 0.3}, "red_ball": {"vanished": 0.3}},
                      {"blue_ball": 0.3, "red_ball": 0.3})
    answers = {c["check"].split(":")[0]: c["answer"] for c in composition_checks([spatial, temporal, failing])}
    assert answers == {"spatial": "yes", "temporal": "yes", "noredbounce": "yes"}
    # A composed segment far above the object's trained error: the spatial check says no.
    broken = _result("spatial", {"red_ball": {"start": 0.2, "after_bounce": 0.9}}, {"red_ball": 0.2})
    assert composition_checks([broken])[0]["answer"] == "no"
    text = composition_markdown([spatial, temporal, failing], composition_checks([spatial, temporal, failing]),
                                {"name": "s", "id": "i", "run_id": "r"}, [], {})
    assert "| spatial | DiT-T | 3K | blue_square | start | 0.150 [0.135, 0.165] | 0.150 [0.135, 0.165] |" in text
    assert "| temporal-noredbounce | DiT-T | 3K | red_ball | – | 30% [27, 33] |" in text
    assert "over a third" not in text
