"""Physics invariants of the three ball scenarios and their placement rules."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pymunk
import pytest

import phyray.sim.balls as balls
from phyray.config import load_data_config, load_scenario_config
from phyray.data.generate import simulate_video
from phyray.data.plan import plan_dataset
from phyray.sim.balls import (
    BallScene,
    collision_feasible,
    elastic_velocities,
    impact_frame,
    masses,
    simulate,
)


@pytest.fixture(scope="module")
def configs():
    return {name: load_data_config(name) for name in ("uniform_motion", "collision", "parabola")}


def test_uniform_motion_is_exactly_linear(configs):
    cfg = configs["uniform_motion"]
    for seed, (radius, speed) in enumerate([(0.7, 1.0), (1.4, 4.0), (0.3, 6.0), (2.0, 0.0)]):
        _, traj, _ = simulate_video(cfg, {"radius": radius, "velocity": speed}, seed)
        t = np.arange(cfg.physics.num_frames) * cfg.physics.frame_dt
        expected_x = traj.positions[0, 0, 0] + speed * t
        np.testing.assert_allclose(traj.positions[:, 0, 0], expected_x, rtol=0, atol=1e-9)
        np.testing.assert_allclose(traj.positions[:, 0, 1], traj.positions[0, 0, 1], atol=1e-12)
        np.testing.assert_allclose(traj.velocities[:, 0], [[speed, 0.0]] * len(t), atol=1e-12)


@pytest.mark.parametrize("speeds", [(1.0, 1.0), (4.0, 2.5), (0.05, 0.02), (0.3, 0.7), (6.0, 4.5), (2.0, 0.0)])
@pytest.mark.parametrize("radii", [(1.0, 1.0), (0.5, 1.5), (2.0, 0.3)])
def test_collision_is_perfectly_elastic_at_every_speed(configs, speeds, radii):
    """Momentum and kinetic energy are conserved and the 1-D elastic formula holds after impact,
    including the OOD speeds below 1 where Box2D's velocity threshold makes contacts inelastic."""
    physics = configs["collision"].physics
    (v1, v2), (r1, r2) = speeds, radii
    gap = 0.5 * (v1 + v2)  # impact after 0.5 s, well inside the 3.1 s video
    scene = BallScene(
        radii=np.array([r1, r2]),
        positions=np.array([[3.0, 5.0], [3.0 + r1 + r2 + gap, 5.0]]),
        velocities=np.array([[v1, 0.0], [-v2, 0.0]]),
    )
    traj = simulate(scene, physics)
    m = masses(scene.radii)
    momentum = (m[None, :, None] * traj.velocities).sum(axis=1)  # (T, 2)
    energy = 0.5 * (m[None, :] * (traj.velocities**2).sum(axis=2)).sum(axis=1)  # (T,)
    np.testing.assert_allclose(momentum, np.broadcast_to(momentum[0], momentum.shape), atol=1e-12)
    np.testing.assert_allclose(energy, energy[0], rtol=1e-12, atol=1e-15)
    u1, u2 = elastic_velocities(m[0], m[1], v1, -v2)
    frame = impact_frame(traj)
    assert frame is not None and frame <= 6
    np.testing.assert_allclose(traj.velocities[-1, :, 0], [u1, u2], atol=1e-12)
    np.testing.assert_allclose(traj.velocities[-1, :, 1], 0.0, atol=1e-12)


def test_parabola_matches_the_discrete_integrator_and_the_analytic_bound(configs):
    cfg = configs["parabola"]
    physics = cfg.physics
    g = physics.gravity[1]
    _, traj, _ = simulate_video(cfg, {"radius": 1.0, "velocity": 2.0}, 3)
    x0, y0 = traj.positions[0, 0]
    steps = np.arange(physics.num_frames) * physics.stride
    # Chipmunk moves positions with the current velocity, then adds g dt to it, so after n
    # steps y = y0 + g dt² n(n-1)/2 and v = g dt n.
    exact_discrete = y0 + g * physics.dt**2 * steps * (steps - 1) / 2
    np.testing.assert_allclose(traj.velocities[:, 0, 1], g * physics.dt * steps, atol=1e-9)
    np.testing.assert_allclose(traj.positions[:, 0, 1], exact_discrete, atol=1e-9)
    np.testing.assert_allclose(traj.positions[:, 0, 0], x0 + 2.0 * steps * physics.dt, atol=1e-9)
    t = steps * physics.dt
    analytic = y0 + 0.5 * g * t**2
    # The integrator trails the analytic parabola by |g| dt t / 2: O(dt), at most 0.039 here.
    deviation = np.abs(traj.positions[:, 0, 1] - analytic)
    assert np.all(deviation <= 0.5 * abs(g) * physics.dt * t + 1e-9)
    assert deviation.max() == pytest.approx(0.5 * abs(g) * physics.dt * t[-1], rel=1e-6)


def test_single_ball_stays_in_view_for_24_frames(configs):
    for name in ("uniform_motion", "parabola"):
        cfg = configs[name]
        plan = plan_dataset(cfg, "train", "200", seed=1)
        world = cfg.physics.world_size
        for params, seed in zip(plan.params[:50], plan.video_seeds[:50]):
            scene, traj, _ = simulate_video(cfg, dict(zip(plan.names, params)), int(seed))
            r, v = scene.radii[0], scene.velocities[0, 0]
            # Fast, large balls cross the world sooner; they start at the left edge instead.
            crossing = int(np.floor((world - 2 * r) / (v * cfg.physics.frame_dt) + 1e-9)) + 1
            x = traj.positions[: min(cfg.min_frames_in_view, crossing), 0, 0]
            assert np.all(x >= r - 1e-9) and np.all(x <= world - r + 1e-9)
            if name == "uniform_motion":
                y = traj.positions[0, 0, 1]
                assert r + 0.5 - 1e-9 <= y <= world - 0.5 - r + 1e-9


def test_collision_placement_gives_8_frames_either_side_and_balls_in_view(configs):
    cfg = configs["collision"]
    plan = plan_dataset(cfg, "train", "300", seed=2)
    for params, seed in zip(plan.params[:60], plan.video_seeds[:60]):
        scene, traj, placement = simulate_video(cfg, dict(zip(plan.names, params)), int(seed))
        frame = placement["impact_frame"]
        assert frame is not None
        assert frame >= cfg.min_frames_around_collision > 4  # after the 4th frame
        assert cfg.physics.num_frames - frame >= cfg.min_frames_around_collision
        x0 = scene.positions[:, 0]
        assert x0[0] >= scene.radii[0] - 1e-9 and x0[1] <= cfg.physics.world_size - scene.radii[1] + 1e-9


def test_infeasible_collisions_are_rejected_analytically(configs):
    cfg = configs["collision"]
    # Two large fast balls cannot fit 8 frames of approach in a 10-unit world.
    assert not collision_feasible(1.5, 1.5, 4.0, 4.0, cfg)
    assert collision_feasible(0.5, 0.5, 1.0, 1.0, cfg)


@pytest.mark.parametrize("scenario", ["uniform_motion", "collision", "parabola", "compose-spatial", "compose-temporal"])
def test_stepping_chipmunk_directly_changes_nothing(scenario, monkeypatch):
    """`simulate` takes its steps after the first straight in Chipmunk; through pymunk's own
    `Space.step` every time, the same videos give the same trajectories and contact events, bit
    for bit (one and two objects, squares, walls, gravity)."""
    cfg = load_scenario_config(scenario)
    plan = plan_dataset(cfg, "train", "24", 0)
    points = [dict(zip(plan.names, row.tolist())) for row in plan.params]

    def videos():
        return [simulate_video(cfg, point, int(seed))[1] for point, seed in zip(points, plan.video_seeds)]

    direct = videos()
    spaces: dict = {}

    class Space(pymunk.Space):  # one that the direct route can find from its Chipmunk handle
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            spaces[self._space] = self

    monkeypatch.setattr(balls.pymunk, "Space", Space)
    monkeypatch.setattr(balls, "chipmunk", SimpleNamespace(cpSpaceStep=lambda handle, dt: spaces[handle].step(dt)))
    through_pymunk = videos()
    assert spaces  # the route above was taken
    for ours, theirs in zip(direct, through_pymunk):
        np.testing.assert_array_equal(ours.positions, theirs.positions)
        np.testing.assert_array_equal(ours.velocities, theirs.velocities)
        assert ours.events == theirs.events
    assert any(trajectory.events for trajectory in direct) == (scenario not in ("uniform_motion", "parabola"))
