"""The three ball scenarios on pymunk: initial placement and simulation. No Ray, no rendering.

A scene is K balls (K = 1 for uniform motion and parabola, 2 for collision) with radius,
initial position and initial velocity. `simulate` steps a pymunk space and records every
ball's position and velocity at each frame; frame k is the state after k * stride steps.

The composition probes (phyray/sim/compose.py) add squares that translate without rotating,
objects at rest and static vertical walls; `simulate` records every contact as an `Event`.

Why pymunk (Chipmunk2D) and not the paper's Box2D: Box2D treats contacts with a closing speed
below its velocity threshold (1.0) as inelastic, which corrupts the OOD collisions with speeds
in [0, 0.8]; Chipmunk applies restitution at every speed and resolves overlap with separate
bias velocities that never touch the real ones, so head-on collisions are elastic to rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pymunk
from pymunk._chipmunk import lib as chipmunk

from phyray.config import DataConfig, PhysicsConfig


@dataclass(frozen=True)
class BallScene:
    """Initial conditions of one video: (K,) radii, (K, 2) positions and velocities (y up).

    `shapes` names each object's shape ("disc" or "square", `phyray.config.SHAPES`; None: all
    discs); a square's radius is its half-side.
    """

    radii: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    shapes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Wall:
    """A static vertical wall: its left face at x = `x`, `thickness` wide, higher than the world."""

    x: float
    thickness: float


@dataclass(frozen=True)
class Event:
    """A contact: two objects colliding, or one bouncing off a wall.

    frame: the first frame recorded after it (its velocities are the new ones); time: seconds
    at the end of the physics step it happened in; objects: the object indices involved.
    """

    kind: str  # "collision" or "bounce"
    frame: int
    time: float
    objects: tuple[int, ...]

    def record(self) -> dict:
        return {"kind": self.kind, "frame": self.frame, "time": self.time, "objects": list(self.objects)}


@dataclass(frozen=True)
class Trajectory:
    """Per-frame states: positions and velocities (T, K, 2), float64, world units, y up; the
    contacts in the order they happened."""

    positions: np.ndarray
    velocities: np.ndarray
    events: tuple[Event, ...] = ()


def masses(radii: np.ndarray, density: float = 1.0) -> np.ndarray:
    """Disc masses: density times area, so mass grows with r² as in the paper."""
    return density * math.pi * np.asarray(radii, dtype=np.float64) ** 2


def elastic_velocities(m1, m2, v1, v2):
    """1-D perfectly elastic collision: velocities after impact (works on arrays)."""
    total = m1 + m2
    return ((m1 - m2) * v1 + 2 * m2 * v2) / total, ((m2 - m1) * v2 + 2 * m1 * v1) / total


# ---------------------------------------------------------------------------------------------
# Placement
# ---------------------------------------------------------------------------------------------


def place_single_ball(
    rng: np.random.Generator, radius: float, speed: float, cfg: DataConfig
) -> BallScene:
    """Uniform motion / parabola: a ball at the left moving right (docs/paper.md §3).

    x0 ~ U[r, W - (n·v·Δ + r)] keeps the ball in view for `min_frames_in_view` frames; at OOD
    speeds where no such x0 exists (e.g. v = 6 crosses the world in 17 frames) it starts at the
    left edge, x0 = r, and stays in view as long as it can. y0 ~ U[r + 0.5, W - 0.5 - r] for
    uniform motion; the parabola starts near the top, y0 ~ U[W - 0.5 - r - 1, W - 0.5 - r].
    """
    world, frame_dt = cfg.physics.world_size, cfg.physics.frame_dt
    x_hi = max(radius, world - (cfg.min_frames_in_view * speed * frame_dt + radius))
    x0 = rng.uniform(radius, x_hi)
    if cfg.scenario == "parabola":
        y0 = rng.uniform(world - 0.5 - radius - 1.0, world - 0.5 - radius)
    else:
        y0 = rng.uniform(radius + 0.5, world - 0.5 - radius)
    return BallScene(
        radii=np.array([radius]),
        positions=np.array([[x0, y0]]),
        velocities=np.array([[speed, 0.0]]),
    )


def mirror_scene(scene: BallScene, world_size: float) -> BallScene:
    """The scene reflected in the vertical line x = W/2: positions x -> W - x, velocities
    vx -> -vx. Its frames are the original's flipped left to right (the renderer's pixel centres
    are symmetric about the middle), so a right-moving ball becomes a left-moving one."""
    positions, velocities = scene.positions.copy(), scene.velocities.copy()
    positions[:, 0] = world_size - positions[:, 0]
    velocities[:, 0] = -velocities[:, 0]
    return BallScene(radii=scene.radii, positions=positions, velocities=velocities)


def _collision_time_window(cfg: DataConfig) -> tuple[float, float, float]:
    """(earliest, latest) impact time, and how long after it both balls must stay in view.

    At least n frames strictly before the impact (t_c > (n-1)·Δ) and n frames after it; each
    bound keeps half a frame of margin for the impact landing on a physics step after t_c.
    """
    n, frame_dt = cfg.min_frames_around_collision, cfg.physics.frame_dt
    last_frame = cfg.physics.num_frames - 1
    earliest = (n - 1) * frame_dt + 0.5 * frame_dt
    latest = (last_frame - n + 1) * frame_dt - 0.5 * frame_dt
    return earliest, latest, cfg.collision_frames_in_view_after * frame_dt


def collision_bounds(r1, r2, v1, v2, t_c, cfg: DataConfig):
    """Feasible interval [lo, hi] of the contact point x_c for impact at time t_c (arrays ok).

    The left ball (radius r1, speed +v1) and the right ball (r2, speed -v2) touch at x_c at
    t_c. Constraints: both fully in view at t = 0, and still fully in view `horizon` seconds
    after the impact (their paths are straight lines, so the endpoints suffice).
    """
    world = cfg.physics.world_size
    _, _, horizon = _collision_time_window(cfg)
    m1, m2 = masses(r1, cfg.physics.density), masses(r2, cfg.physics.density)
    u1, u2 = elastic_velocities(m1, m2, v1, -v2)
    lo = np.maximum(np.maximum(2 * r1 + v1 * t_c, 2 * r1 - u1 * horizon), -u2 * horizon)
    hi = np.minimum(
        np.minimum(world - 2 * r2 - v2 * t_c, world - u1 * horizon), world - 2 * r2 - u2 * horizon
    )
    return lo, hi


def collision_feasible(r1, r2, v1, v2, cfg: DataConfig) -> np.ndarray:
    """Whether a placement exists. hi - lo only shrinks as t_c grows, so test the earliest t_c."""
    earliest, _, _ = _collision_time_window(cfg)
    lo, hi = collision_bounds(r1, r2, v1, v2, earliest, cfg)
    return lo <= hi


def place_collision(
    rng: np.random.Generator, r1: float, r2: float, v1: float, v2: float, cfg: DataConfig
) -> BallScene:
    """Two balls on one horizontal line heading for a head-on impact.

    Placement is solved, not searched: the impact time t_c is drawn uniformly from the times
    that admit a contact point (the feasible set is an interval starting at the earliest time,
    see `collision_bounds`), then the contact point x_c uniformly from its feasible interval.
    y ~ U[max(r) + 0.5, W - 0.5 - max(r)]. Raises ValueError when no placement exists (callers
    filter with `collision_feasible` first).
    """
    earliest, latest, _ = _collision_time_window(cfg)
    if not collision_feasible(r1, r2, v1, v2, cfg):
        raise ValueError(f"no collision placement for r1={r1} r2={r2} v1={v1} v2={v2}")
    # The feasible t_c interval ends where the first bound crosses; find it by bisection on
    # the monotone gap hi - lo (exact to 1e-9 s, far below a physics step).
    t_lo, t_hi = earliest, latest
    lo, hi = collision_bounds(r1, r2, v1, v2, t_hi, cfg)
    if lo > hi:
        for _ in range(60):
            mid = 0.5 * (t_lo + t_hi)
            lo, hi = collision_bounds(r1, r2, v1, v2, mid, cfg)
            t_lo, t_hi = (mid, t_hi) if lo <= hi else (t_lo, mid)
        latest = t_lo
    t_c = rng.uniform(earliest, latest)
    lo, hi = collision_bounds(r1, r2, v1, v2, t_c, cfg)
    x_c = rng.uniform(lo, hi)
    y = rng.uniform(max(r1, r2) + 0.5, cfg.physics.world_size - 0.5 - max(r1, r2))
    return BallScene(
        radii=np.array([r1, r2]),
        positions=np.array([[x_c - r1 - v1 * t_c, y], [x_c + r2 + v2 * t_c, y]]),
        velocities=np.array([[v1, 0.0], [-v2, 0.0]]),
    )


# ---------------------------------------------------------------------------------------------
# Simulation
# ---------------------------------------------------------------------------------------------


def simulate(scene: BallScene, physics: PhysicsConfig, walls: tuple[Wall, ...] = ()) -> Trajectory:
    """Step a pymunk space and record each object's state at every frame, and every contact.

    Balls are circles of density `physics.density` (mass ∝ r²), elasticity and friction from
    the config. A square is a box of the same density with an infinite moment of inertia, so it
    translates and never rotates (the renderer draws squares axis-aligned). Walls are static
    segments with the same elasticity and friction (a contact's elasticity is the product of
    its two shapes': 1 with 1 is elastic); without walls objects leave the view freely.
    """
    space = pymunk.Space()
    space.gravity = physics.gravity
    shapes = scene.shapes or ("disc",) * len(scene.radii)
    bodies, owner = [], {}
    for k, (radius, position, velocity, kind) in enumerate(zip(scene.radii, scene.positions, scene.velocities, shapes)):
        body = pymunk.Body()
        body.position = tuple(position)
        body.velocity = tuple(velocity)
        if kind == "square":
            shape = pymunk.Poly.create_box(body, (2 * float(radius), 2 * float(radius)))
        elif kind == "disc":
            shape = pymunk.Circle(body, float(radius))
        else:
            raise ValueError(f"shape: the simulator has discs and squares, not {kind!r}")
        shape.density = physics.density
        shape.elasticity = physics.elasticity
        shape.friction = physics.friction
        space.add(body, shape)
        if kind == "square":
            body.moment = math.inf  # after the shape: adding it recomputes mass and moment
        bodies.append(body)
        owner[shape] = k
    for wall in walls:
        # A capsule of radius thickness/2 whose left face is at x, reaching far above and below
        # the world so nothing passes around its ends.
        middle, half = wall.x + wall.thickness / 2, wall.thickness / 2
        world = physics.world_size
        segment = pymunk.Segment(space.static_body, (middle, -world), (middle, 2 * world), half)
        segment.elasticity = physics.elasticity
        segment.friction = physics.friction
        space.add(segment)

    step = 0  # physics steps taken so far: the contact callback's clock
    events: list[Event] = []

    def contact(arbiter, _space, _data) -> None:
        involved = tuple(sorted(owner[s] for s in arbiter.shapes if s in owner))
        # The step ending at (step + 1)·dt resolves it: the first frame at or after that step.
        frame = -(-(step + 1) // physics.stride)
        events.append(Event("collision" if len(involved) == 2 else "bounce", frame, (step + 1) * physics.dt, involved))

    space.on_collision(begin=contact)
    # Steps after the first go straight to Chipmunk. pymunk's `Space.step` wraps each one in
    # Python that no step here needs after the first: it checks new bodies' mass and moment, and
    # locks the space so that callbacks defer their adds and removes (`contact` only records).
    # That wrapper was a third of a one-ball video's simulation: 0.34 -> 0.22 ms, with the same
    # trajectories and events (tests/test_sim.py). `_space` is pymunk 7.3.1's handle (pinned).
    chipmunk_space = space._space
    states = np.empty((physics.num_frames, len(bodies), 4), dtype=np.float64)
    for frame in range(physics.num_frames):
        if frame:
            for _ in range(physics.stride):
                if step:
                    chipmunk.cpSpaceStep(chipmunk_space, physics.dt)
                else:
                    space.step(physics.dt)
                step += 1
        for k, body in enumerate(bodies):
            states[frame, k] = (*body.position, *body.velocity)
    return Trajectory(positions=states[..., :2], velocities=states[..., 2:], events=tuple(events))


def impact_frame(trajectory: Trajectory, threshold: float = 1e-6) -> int | None:
    """The first frame whose recorded velocity differs from the initial one (None: no impact)."""
    change = np.abs(trajectory.velocities - trajectory.velocities[0]).max(axis=(1, 2))
    hits = np.flatnonzero(change > threshold)
    return int(hits[0]) if hits.size else None
