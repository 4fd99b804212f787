"""Composition scenes (paper §5.4, Fig. 11, A.5.3; docs/paper.md §6.5, 6.6): placement of each
kind of video beside a static wall, simulated by `phyray.sim.balls.simulate`. No Ray, no rendering.

The wall stands near the right edge (`ComposeConfig.wall`). Object 0 is red, object 1 blue
(phyray/data/generate.py paints them; a `bounce` video's one ball is `bounce_color`). Sizes are drawn from `DataConfig.id.radius` (a square's half-side), speeds from
`id.velocity`; the paper gives neither for these experiments.

Spatial kinds: a red ball (object 0) in the lower half of the view and a blue square (object 1)
in the upper half, apart, so they never meet.
- `square_moves`: the square moves left, away from the wall (so it never reaches it, at any
  number of frames; the paper does not say which way it moves); the ball is at rest.
- `ball_bounces`: the ball moves right and bounces off the wall; the square is at rest.
- `both_move`: the square moves as in square_moves while the ball bounces as in ball_bounces.

Temporal kinds: a red ball (object 0) moving right meets a blue ball (object 1) moving left on
one horizontal line, as the collision scenario's balls do.
- `collision`: they collide, and neither reaches the wall before the video ends.
- `bounce`: one ball alone (`ComposeConfig.bounce_color`) moves right and bounces off the wall.
- `collision_bounce`: they collide near the wall, and the blue ball then bounces off it.

Event times are solved, not searched (as `place_collision` solves the impact time): each event
time is drawn uniformly from the window that leaves `min_frames_around_collision` frames before
the first event and after the last, `ComposeConfig.min_frames_between_events` between two, and the
placement follows from it. The simulation then must show exactly the kind's events at frames that
keep those margins; a draw that does not (the blue ball of a `collision` reaching the wall, a
second collision after the bounce) is drawn again from the same generator, so a video's seed alone
reproduces it.
"""

from __future__ import annotations

import numpy as np

from phyray.config import COMPOSE_KINDS, ComposeConfig, DataConfig
from phyray.sim.balls import BallScene, Trajectory, Wall, elastic_velocities, masses, simulate

# Draws per video before a kind is declared impossible under the config.
MAX_TRIES = 1000
# An object starting at rest by the wall, or moving away from it, keeps this gap (world units) so
# no contact begins at the first step.
WALL_GAP = 0.05
# The spatial kinds' two bands keep this gap between them at the middle height, for the same reason.
BAND_GAP = 0.1
# (kind, objects) of the events each kind shows, in order.
EXPECTED_EVENTS = {
    "square_moves": [],
    "ball_bounces": [("bounce", (0,))],
    "both_move": [("bounce", (0,))],
    "collision": [("collision", (0, 1))],
    "bounce": [("bounce", (0,))],
    "collision_bounce": [("collision", (0, 1)), ("bounce", (1,))],
}


def compose_walls(compose: ComposeConfig) -> tuple[Wall, ...]:
    return (Wall(compose.wall.x, compose.wall.thickness),)


def event_window(cfg: DataConfig) -> tuple[float, float]:
    """(earliest, latest) time of an event: `min_frames_around_collision` frames n strictly
    before the first and n from the last on, with half a frame of margin each (the collision
    scenario's window, `phyray.sim.balls.place_collision`)."""
    n, frame_dt = cfg.min_frames_around_collision, cfg.physics.frame_dt
    return (n - 0.5) * frame_dt, (cfg.physics.num_frames - n - 0.5) * frame_dt


def _bounce_path(rng: np.random.Generator, cfg: DataConfig, radius: float, speed: float, earliest: float, latest: float):
    """x0 of a ball moving right at `speed` that reaches the wall at a time drawn from
    [earliest, latest] and starts fully in view; None if no such time exists."""
    wall = cfg.compose.wall.x
    latest = min(latest, (wall - 2 * radius) / speed)
    if latest < earliest:
        return None
    return wall - radius - speed * rng.uniform(earliest, latest)


def _place(rng: np.random.Generator, cfg: DataConfig, kind: str) -> BallScene | None:
    """One draw of a kind's scene (None: this draw has no placement)."""
    compose, world = cfg.compose, cfg.physics.world_size
    size, speed = cfg.id.radius[0], cfg.id.velocity[0]
    wall, frame_dt = compose.wall.x, cfg.physics.frame_dt
    earliest, latest = event_window(cfg)
    gap = compose.min_frames_between_events * frame_dt
    if kind in ("square_moves", "ball_bounces", "both_move"):
        r, s = rng.uniform(size.lo, size.hi, 2)
        v_ball, v_square = rng.uniform(speed.lo, speed.hi, 2)
        ball_y = rng.uniform(0.5 + r, world / 2 - BAND_GAP / 2 - r)
        square_y = rng.uniform(world / 2 + BAND_GAP / 2 + s, world - 0.5 - s)
        if kind == "square_moves":
            ball_x, v_ball = rng.uniform(r, wall - WALL_GAP - r), 0.0
        else:
            ball_x = _bounce_path(rng, cfg, r, v_ball, earliest, latest)
            if ball_x is None:
                return None
        if kind == "ball_bounces":
            square_x, v_square = rng.uniform(s, wall - WALL_GAP - s), 0.0
        else:
            # Moving left: fully in view for min_frames_in_view frames where the speed allows.
            frames = min(cfg.min_frames_in_view, cfg.physics.num_frames)
            x_hi = wall - WALL_GAP - s
            square_x, v_square = rng.uniform(min(x_hi, s + v_square * (frames - 1) * frame_dt), x_hi), -v_square
        return BallScene(radii=np.array([r, s]), positions=np.array([[ball_x, ball_y], [square_x, square_y]]),
                         velocities=np.array([[v_ball, 0.0], [v_square, 0.0]]), shapes=("disc", "square"))
    if kind == "bounce":
        r, v = rng.uniform(size.lo, size.hi), rng.uniform(speed.lo, speed.hi)
        x = _bounce_path(rng, cfg, r, v, earliest, latest)
        if x is None:
            return None
        return BallScene(radii=np.array([r]), positions=np.array([[x, rng.uniform(0.5 + r, world - 0.5 - r)]]),
                         velocities=np.array([[v, 0.0]]), shapes=("disc",))
    r1, r2 = rng.uniform(size.lo, size.hi, 2)
    v1, v2 = rng.uniform(speed.lo, speed.hi, 2)
    if kind == "collision":
        t_c = rng.uniform(earliest, latest)
        # The red ball starts in view, the blue one left of the wall.
        lo, hi = 2 * r1 + v1 * t_c, wall - WALL_GAP - 2 * r2 - v2 * t_c
        if hi < lo:
            return None
        x_c = rng.uniform(lo, hi)
    else:  # collision_bounce: the blue ball leaves the collision toward the wall
        _, u2 = elastic_velocities(masses(r1, cfg.physics.density), masses(r2, cfg.physics.density), v1, -v2)
        if u2 <= 0 or latest - gap < earliest:
            return None
        t_c = rng.uniform(earliest, latest - gap)
        t_b = rng.uniform(t_c + gap, latest)
        x_c = wall - 2 * r2 - u2 * (t_b - t_c)
        if x_c - 2 * r1 - v1 * t_c < 0 or x_c + 2 * r2 + v2 * t_c > wall - WALL_GAP:
            return None
    y = rng.uniform(max(r1, r2) + 0.5, world - 0.5 - max(r1, r2))
    return BallScene(radii=np.array([r1, r2]), positions=np.array([[x_c - r1 - v1 * t_c, y], [x_c + r2 + v2 * t_c, y]]),
                     velocities=np.array([[v1, 0.0], [-v2, 0.0]]), shapes=("disc", "disc"))


def _shows_its_events(cfg: DataConfig, kind: str, trajectory: Trajectory) -> bool:
    """Whether a simulation has exactly the kind's events, with the frame margins kept."""
    events = trajectory.events
    if [(e.kind, e.objects) for e in events] != EXPECTED_EVENTS[kind]:
        return False
    if not events:
        return True
    n, frames = cfg.min_frames_around_collision, cfg.physics.num_frames
    apart = all(b.frame - a.frame >= cfg.compose.min_frames_between_events for a, b in zip(events, events[1:]))
    return events[0].frame >= n and events[-1].frame <= frames - n and apart


def place_and_simulate(rng: np.random.Generator, cfg: DataConfig, kind: str) -> tuple[BallScene, Trajectory]:
    """A kind's scene and its simulation, drawn until the simulation shows the kind's events.

    Raises ValueError naming the settings when MAX_TRIES draws give none."""
    if cfg.compose is None or kind not in COMPOSE_KINDS:
        raise ValueError(f"kind: {kind!r} is no composition kind of this config")
    walls = compose_walls(cfg.compose)
    for _ in range(MAX_TRIES):
        scene = _place(rng, cfg, kind)
        if scene is None:
            continue
        trajectory = simulate(scene, cfg.physics, walls)
        if _shows_its_events(cfg, kind, trajectory):
            return scene, trajectory
    raise ValueError(
        f"compose: no {kind} video in {MAX_TRIES} draws; widen id.radius or id.velocity, move compose.wall.x, or "
        f"lower min_frames_around_collision ({cfg.min_frames_around_collision}) or compose.min_frames_between_events "
        f"({cfg.compose.min_frames_between_events}) for {cfg.physics.num_frames} frames"
    )
