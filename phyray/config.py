"""Typed configuration: pydantic models loaded from YAML, with dotted overrides and flat dicts.

Every YAML file under `configs/` is validated by one of the models here. Inside phyray the typed
objects travel; at the edges (Ray Tune `param_space`, MLflow params) `to_flat_dict` turns them
into plain flat dicts.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from phyray.presets import DIT_PRESETS, ROLLOUT_PRECISIONS, VAE_PRESETS, is_trainable

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"

BALL_SCENARIOS = ("uniform_motion", "collision", "parabola")
# PHYRE scenes: templates instead of a data config (phyray/sim/phyre.py, phyray/study/combinatorial.py).
COMBINATORIAL = "combinatorial"
# dev_id / dev_ood are drawn as eval_id / eval_ood are, from their own random streams: sets of
# the same distributions and sizes for choosing settings, so the test sets stay unseen until
# the verdict (appended: the codes of the first three, and so their videos, are unchanged).
SPLITS = ("train", "eval_id", "eval_ood", "dev_id", "dev_ood")
# The evaluation set each split is drawn like (its sizes, ID or OOD points).
EVAL_KIND = {"eval_id": "eval_id", "eval_ood": "eval_ood", "dev_id": "eval_id", "dev_ood": "eval_ood"}

# The paper's named training-set sizes; any other size is a plain count ("200", "2K", "1.5M").
SIZE_PRESETS = ("30K", "300K", "3M")
# Their nominal videos (collision's grids drop about 5%; a composition set has exactly these).
NOMINAL_SIZES = {"30K": 30_000, "300K": 300_000, "3M": 3_000_000}


class ConfigError(ValueError):
    """A configuration problem, with a message naming the offending field or file."""


class Strict(BaseModel):
    """Base for all config models: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------
# Physics, rendering and value ranges
# ---------------------------------------------------------------------------------------------


class PhysicsConfig(Strict):
    """The simulated world (docs/paper.md §1 "Simulator and world").

    Frame k is the state after k * stride steps, so frames are `dt * stride` seconds apart and
    frame 0 is the initial state. (The released Box2D code records after 10k+1 steps; starting
    at the initial state makes the conditioning frames show the sampled parameters exactly.)
    """

    world_size: float = Field(10.0, gt=0)
    dt: float = Field(0.01, gt=0)
    stride: int = Field(10, ge=1)
    num_frames: int = Field(32, ge=4)
    gravity: tuple[float, float] = (0.0, 0.0)
    density: float = Field(1.0, gt=0)
    elasticity: float = Field(1.0, ge=0, le=1)
    friction: float = Field(0.0, ge=0)

    @property
    def frame_dt(self) -> float:
        return self.dt * self.stride


class RenderConfig(Strict):
    """How states become frames (docs/paper.md §2 "Rendering and storage")."""

    resolution: int = Field(128, ge=16, le=1024)
    # Width of the anti-aliased edge in pixels: coverage ramps from 1 to 0 over this band.
    edge_px: float = Field(1.0, gt=0, le=4)


class ValueRange(Strict):
    """A closed interval [lo, hi] of a non-negative physical quantity."""

    lo: float = Field(ge=0)
    hi: float = Field(ge=0)

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise ValueError(f"a range is [lo, hi], got {list(value)}")
            return {"lo": value[0], "hi": value[1]}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> ValueRange:
        if self.hi < self.lo:
            raise ValueError(f"inverted range [{self.lo}, {self.hi}]: hi must be >= lo")
        return self

    @property
    def width(self) -> float:
        return self.hi - self.lo

    def overlaps(self, other: ValueRange) -> bool:
        return self.lo < other.hi and other.lo < self.hi


def _as_union(value: Any) -> Any:
    """`[0.7, 1.4]` is one range; `[[0.3, 0.6], [1.5, 2.0]]` is a union of ranges."""
    if isinstance(value, (list, tuple)) and value and not isinstance(value[0], (list, tuple, dict)):
        return [value]
    return value


class ParameterSpace(Strict):
    """Ranges of radius and speed for one regime (ID: one range each; OOD: a union each)."""

    radius: list[ValueRange]
    velocity: list[ValueRange]

    @field_validator("radius", "velocity", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _as_union(value)

    @field_validator("radius")
    @classmethod
    def _positive_radius(cls, ranges: list[ValueRange]) -> list[ValueRange]:
        if any(r.lo <= 0 for r in ranges):
            raise ValueError("radius ranges must be > 0")
        return ranges


# ---------------------------------------------------------------------------------------------
# Dataset configs (configs/data/<scenario>.yaml)
# ---------------------------------------------------------------------------------------------


class GridPreset(Strict):
    """Number of distinct values per sampled parameter; the training set is their product."""

    radius: int = Field(ge=1)
    velocity: int = Field(ge=1)


# Attribute probes (docs/paper.md §6.4): object shapes the renderer draws, and the attributes a
# probe can pit against each other. Size is a disc's or ring's radius, a square's half-side.
SHAPES = ("disc", "square", "ring")
PROBE_ATTRIBUTES = ("color", "shape", "size", "velocity")
# The probe pairs of the paper (configs/data/probes/<pair>.yaml), in its Figs. 8, 9 and 13 order.
PROBE_PAIRS = ("color_shape", "size_shape", "velocity_shape", "velocity_size", "color_size", "color_velocity", "ring_ball")
# A probe is a study scenario of its own (uniform motion on the probe's data): "probe-<pair>".
PROBE_PREFIX = "probe-"
PROBE_SCENARIOS = tuple(PROBE_PREFIX + pair for pair in PROBE_PAIRS)
# Interpolation gaps (paper §5.1, Fig. 5; docs/paper.md §6.1): uniform motion trained on speed
# bands only (configs/data/gaps/<layout>.yaml), each layout a study scenario "gap-<layout>".
GAP_LAYOUTS = ("wide", "medium", "narrow", "3bands", "4bands")
GAP_PREFIX = "gap-"
GAP_SCENARIOS = tuple(GAP_PREFIX + layout for layout in GAP_LAYOUTS)
# Direction flips (paper §5.2, Fig. 7; docs/paper.md §6.3): fast balls trained moving right only
# (Set-1) or both ways (Set-2), configs/data/flips/<set>.yaml, study scenarios "flip-<set>".
FLIP_SETS = ("right", "both")
FLIP_PREFIX = "flip-"
FLIP_SCENARIOS = tuple(FLIP_PREFIX + name for name in FLIP_SETS)
# The collision convex hull (paper §5.1, Fig. 6; docs/paper.md §6.2): collision trained with
# regions of the (v1, v2) or (r1, r2) plane left out, configs/data/hulls/<variant>.yaml, study
# scenarios "hull-<variant>".
HULL_VARIANTS = ("square", "three_squares", "lshape", "mass")
HULL_PREFIX = "hull-"
HULL_SCENARIOS = tuple(HULL_PREFIX + name for name in HULL_VARIANTS)
# Composition (paper §5.4, Fig. 11, A.5.3; docs/paper.md §6.5, 6.6): training mixes two kinds of
# video beside a wall and evaluation composes them, configs/data/compose/<variant>.yaml, study
# scenarios "compose-<variant>". "temporal-noredbounce" is the paper's failure variant (its
# bounce videos have no red ball).
COMPOSE_VARIANTS = ("spatial", "temporal", "temporal-noredbounce")
COMPOSE_PREFIX = "compose-"
COMPOSE_SCENARIOS = tuple(COMPOSE_PREFIX + name for name in COMPOSE_VARIANTS)
# Every scenario the ball simulator makes (load_scenario_config reads each one's data config).
SIMULATED_SCENARIOS = (*BALL_SCENARIOS, *PROBE_SCENARIOS, *GAP_SCENARIOS, *FLIP_SCENARIOS, *HULL_SCENARIOS,
                       *COMPOSE_SCENARIOS)
# The kinds of composition video (phyray/sim/compose.py). Spatial: a red ball and a blue square
# in two horizontal bands; the square moves (away from the wall) with the ball at rest, the ball
# bounces off the wall with the square at rest, or both. Temporal: a red and a blue ball collide
# and never reach the wall, one ball bounces off the wall, or they collide and then the blue one
# bounces off the wall.
SPATIAL_KINDS = ("square_moves", "ball_bounces", "both_move")
TEMPORAL_KINDS = ("collision", "bounce", "collision_bounce")
COMPOSE_KINDS = (*SPATIAL_KINDS, *TEMPORAL_KINDS)


class ProbeConfig(Strict):
    """An attribute-priority probe on uniform motion (paper §5.3, Figs. 8, 9, 13).

    Each of the two probed `attributes` (A, B) has two disjoint value sets, index 0 and 1: one
    colour or shape each, or one range of size or speed each. Training videos take the
    (A set, B set) combinations in `train`; evaluation takes all four: the trained two are the
    eval_id split, the swapped two the eval_ood split, one OOD level each, named by its values
    ("blue-disc"). An attribute not probed keeps `color[0]`, `shape[0]`, or the ID range.
    """

    attributes: tuple[Literal[PROBE_ATTRIBUTES], Literal[PROBE_ATTRIBUTES]]
    color: tuple[tuple[int, int, int], tuple[int, int, int]] = ((255, 0, 0), (0, 0, 255))
    shape: tuple[Literal[SHAPES], Literal[SHAPES]] = ("disc", "square")
    size: tuple[ValueRange, ValueRange] = (ValueRange(lo=0.7, hi=1.05), ValueRange(lo=1.05, hi=1.4))
    velocity: tuple[ValueRange, ValueRange] = (ValueRange(lo=1.0, hi=2.5), ValueRange(lo=2.5, hi=4.0))
    # (A set, B set) of each trained combination: one pairing of the sets, e.g. small-red and
    # large-blue, so each value of one attribute is seen with one value of the other only.
    train: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (1, 1))
    # A ring's inner radius over its outer radius (the paper's ring is not specified).
    ring_inner: float = Field(0.6, gt=0, lt=1)
    # What a training split holds: the `train` combinations (the DiT's set), or all four (the
    # set a probe study's VAE learns from: `StudyVAE.probe_combinations`).
    combinations: Literal["trained", "all"] = "trained"

    @model_validator(mode="after")
    def _check(self) -> ProbeConfig:
        if self.attributes[0] == self.attributes[1]:
            raise ValueError(f"probe.attributes: two different attributes, got {list(self.attributes)}")
        if sorted(self.train) not in ([(0, 0), (1, 1)], [(0, 1), (1, 0)]):
            raise ValueError(f"probe.train: one pairing of the sets, [[0, 0], [1, 1]] or [[0, 1], [1, 0]]; got {list(self.train)}")
        if any(not 0 <= c <= 255 for rgb in self.color for c in rgb) or self.color[0] == self.color[1]:
            raise ValueError(f"probe.color: two different RGB colours in 0-255, got {list(self.color)}")
        if self.shape[0] == self.shape[1]:
            raise ValueError(f"probe.shape: two different shapes, got {list(self.shape)}")
        for name in ("size", "velocity"):
            first, second = getattr(self, name)
            if first.overlaps(second):
                raise ValueError(f"probe.{name}: the two ranges overlap: [{first.lo}, {first.hi}] and [{second.lo}, {second.hi}]")
        if any(r.lo <= 0 for r in self.size):
            raise ValueError("probe.size: sizes must be > 0")
        return self

    def set_of(self, attribute: str, values: Any) -> Any:
        """Which set (0 or 1) each value of a continuous attribute falls in; -1: neither. A value
        on the boundary of two touching ranges belongs to the first."""
        import numpy as np

        values = np.asarray(values, dtype=np.float64)
        first, second = getattr(self, attribute)
        return np.where((values >= first.lo) & (values <= first.hi), 0,
                        np.where((values >= second.lo) & (values <= second.hi), 1, -1))

    def combo_of(self, size: float, velocity: float, color: int, shape: int) -> tuple[int, int]:
        """An object's (A set, B set): a probed size or speed by its value, a colour or shape by
        its set index."""
        sets = {"size": int(self.set_of("size", size)), "velocity": int(self.set_of("velocity", velocity)),
                "color": color, "shape": shape}
        return tuple(sets[a] for a in self.attributes)

    def value_label(self, attribute: str, index: int) -> str:
        """A readable name of one value set: "red", "square", "small", "slow"."""
        if attribute == "color":
            return COLOR_NAMES.get(tuple(self.color[index]), "#{:02x}{:02x}{:02x}".format(*self.color[index]))
        if attribute == "shape":
            return self.shape[index]
        ranges = getattr(self, attribute)
        lower = int(ranges[index].lo > ranges[1 - index].lo)  # 0: the lower range
        return {"size": ("small", "large"), "velocity": ("slow", "fast")}[attribute][lower]

    def combo_label(self, combo: tuple[int, int]) -> str:
        """A combination's name, A's value first: "red-square", "slow-large"."""
        return "-".join(self.value_label(a, i) for a, i in zip(self.attributes, combo))

    @property
    def training_combinations(self) -> tuple[tuple[int, int], ...]:
        """The combinations a training split holds (see `combinations`)."""
        return self.train if self.combinations == "trained" else ((0, 0), (0, 1), (1, 0), (1, 1))

    @property
    def swapped(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The two combinations never trained on."""
        return tuple(c for c in ((0, 0), (0, 1), (1, 0), (1, 1)) if c not in self.train)


COLOR_NAMES = {(255, 0, 0): "red", (0, 0, 255): "blue", (0, 160, 0): "green", (0, 0, 0): "black"}


class WallConfig(Strict):
    """The composition scenes' static vertical wall, from the top of the view to its bottom.

    The paper shows a wall but gives no place, width or colour; these are choices."""

    # Its left face (world units): near the right edge, leaving room left of it for a collision
    # and a bounce within 16 frames.
    x: float = Field(8.5, gt=0)
    # 1.6 px at 32², 6.4 px at 128²: still a bar after a VAE's 4x spatial compression.
    thickness: float = Field(0.5, gt=0)
    # Dark: the ball parser's colour masks (red, blue: phyray/eval/physics.py) take no pixel of it.
    color: tuple[int, int, int] = (0, 0, 0)


class ComposeConfig(Strict):
    """A composition probe (paper §5.4, Fig. 11): training mixes two kinds of video (`train`),
    the ID evaluation split holds the same two, the OOD split the composed kind (`eval`), one
    OOD level named after it. Sizes come from `DataConfig.id.radius` (a square's half-side), speeds
    from `id.velocity`; the first event of a video falls at least `min_frames_around_collision`
    frames in, the last as many before the end."""

    train: tuple[Literal[COMPOSE_KINDS], Literal[COMPOSE_KINDS]]
    eval: Literal[COMPOSE_KINDS]
    # Share of the first training kind in a training or ID evaluation split: the paper's
    # temporal training set is half and half; its spatial one's mixture is not given (the same).
    train_share: float = Field(0.5, gt=0, lt=1)
    # The colour of a `bounce` video's one ball: red (temporal), or blue (the failure variant).
    bounce_color: tuple[int, int, int] = (255, 0, 0)
    wall: WallConfig = WallConfig()
    # Frames from one event of a video to the next (a collision, then the bounce), so the
    # segment between them has velocity intervals of its own.
    min_frames_between_events: int = Field(3, ge=1)
    # What a training split holds: the two `train` kinds (the DiT's set), or every kind of the
    # variant, the composed one included (the set a composition study's VAE learns from:
    # `StudyVAE.probe_combinations`).
    kinds: Literal["trained", "all"] = "trained"

    @model_validator(mode="after")
    def _check(self) -> ComposeConfig:
        family = SPATIAL_KINDS if self.train[0] in SPATIAL_KINDS else TEMPORAL_KINDS
        if self.train[0] == self.train[1] or self.eval in self.train:
            raise ValueError(f"compose: two different training kinds and another evaluation kind, got train "
                             f"{list(self.train)}, eval {self.eval!r}")
        if {*self.train, self.eval} != set(family):
            raise ValueError(f"compose: the kinds of one family, {', '.join(SPATIAL_KINDS)} or {', '.join(TEMPORAL_KINDS)}; "
                             f"got train {list(self.train)}, eval {self.eval!r}")
        if tuple(self.bounce_color) not in ((255, 0, 0), (0, 0, 255)):
            raise ValueError(f"compose.bounce_color: red [255, 0, 0] or blue [0, 0, 255], got {list(self.bounce_color)}")
        if any(not 0 <= c <= 255 for c in self.wall.color):
            raise ValueError(f"compose.wall.color: an RGB colour in 0-255, got {list(self.wall.color)}")
        return self

    @property
    def training_kinds(self) -> tuple[str, ...]:
        """The kinds a training split holds (see `kinds`)."""
        return self.train if self.kinds == "trained" else (*self.train, self.eval)


class DataConfig(Strict):
    """One ball scenario: its physics, parameter ranges, OOD levels, size presets and shards.

    With `probe` (uniform motion only), a dataset is an attribute probe: see `ProbeConfig`;
    its `ood` ranges and `ood_levels` are not used.
    """

    scenario: Literal["uniform_motion", "collision", "parabola"]
    physics: PhysicsConfig = PhysicsConfig()
    render: RenderConfig = RenderConfig()
    id: ParameterSpace
    ood: ParameterSpace
    # Named OOD levels; each maps to the parameters drawn from OOD ranges (the rest stay ID).
    # Uniform/parabola: radius, velocity, both. Collision: r1, v1, r1_r2, v1_v2, r1_v1, all.
    ood_levels: dict[str, list[str]]
    # Training grids per named size: values per parameter (collision: each of r1, r2 gets
    # `radius` values and each of v1, v2 gets `velocity` values).
    grids: dict[str, GridPreset]
    # How a grid's values are laid out: `linspace` (uniform, collision) or `sorted_uniform`
    # (parabola: sorted uniform-random samples, as the released generator does).
    grid_spacing: Literal["linspace", "sorted_uniform"] = "linspace"
    # Default sizes of the evaluation splits (videos, spread evenly over OOD levels).
    eval_sizes: dict[Literal["eval_id", "eval_ood"], int]
    shard_size: int = Field(1000, ge=1)
    # Uniform/parabola: the ball stays fully in view for at least this many frames where the
    # speed allows it. Collision: at least this many frames before and after the impact, both
    # balls fully in view at the start, and (0 = the paper's rule) fully in view for this many
    # frames after the impact. With 0 about 5% of the 30K grid has no placement (the paper
    # drops about 6%); requiring 9 frames in view after the impact would drop 48%.
    min_frames_in_view: int = Field(24, ge=1)
    min_frames_around_collision: int = Field(8, ge=1)
    collision_frames_in_view_after: int = Field(0, ge=0)
    probe: ProbeConfig | None = None
    # Uniform motion: training speeds only inside these disjoint bands of the ID range (the
    # paper's interpolation gaps, §5.1: the grid's points outside them are dropped); evaluation
    # still draws from the whole ID range, so it holds speeds inside and outside the gaps.
    train_velocity: list[ValueRange] | None = None
    # Uniform motion: the training split's direction of motion. "both" mirrors every second
    # training video (x -> W - x, v -> -v: the paper's horizontal-flip augmentation, §5.2, made
    # once in the data rather than drawn per step, so the latents stay cacheable); evaluation
    # sets always move right, as the paper's.
    train_direction: Literal["right", "both"] = "right"
    # Boxes left out of the training grid (the paper's "square-out" collisions, §5.1): each box
    # bounds some of the grid's parameters ({v1: [2, 3], v2: [2, 3]}) and drops every training
    # point inside all its bounds; evaluation still draws the whole ranges, holes included.
    train_exclude: list[dict[str, ValueRange]] | None = None
    # A composition probe (collision only: objects that collide and bounce): see ComposeConfig;
    # its `ood` ranges, `ood_levels` and `grids` are not used (sizes are counts of videos).
    compose: ComposeConfig | None = None

    @field_validator("train_velocity", mode="before")
    @classmethod
    def _bands(cls, value: Any) -> Any:
        return _as_union(value)

    @model_validator(mode="after")
    def _consistent(self) -> DataConfig:
        for name in SIZE_PRESETS:
            if name not in self.grids:
                raise ValueError(f"grids: missing the paper's size preset {name!r}")
        params = {"radius", "velocity"} if self.scenario != "collision" else {"r1", "r2", "v1", "v2"}
        for level, ood_params in self.ood_levels.items():
            unknown = set(ood_params) - params
            if unknown or not ood_params:
                raise ValueError(
                    f"ood_levels.{level}: parameters must be a non-empty subset of {sorted(params)}"
                )
        # An OOD value must never be an ID value, or "OOD" error would include ID videos.
        for field in ("radius", "velocity"):
            for ood_range in getattr(self.ood, field):
                for id_range in getattr(self.id, field):
                    if ood_range.overlaps(id_range):
                        raise ValueError(
                            f"ood.{field}: range [{ood_range.lo}, {ood_range.hi}] overlaps the ID "
                            f"range [{id_range.lo}, {id_range.hi}]"
                        )
        if len(self.id.radius) != 1 or len(self.id.velocity) != 1:
            raise ValueError("id.radius and id.velocity are single ranges")
        if self.probe is not None:
            if self.scenario != "uniform_motion":
                raise ValueError(f"probe: attribute probes run on uniform_motion, not {self.scenario}")
            for name, space in (("size", self.id.radius[0]), ("velocity", self.id.velocity[0])):
                for value_set in getattr(self.probe, name):
                    if value_set.lo < space.lo or value_set.hi > space.hi:
                        raise ValueError(
                            f"probe.{name}: [{value_set.lo}, {value_set.hi}] is outside the ID range [{space.lo}, {space.hi}]"
                        )
        if self.train_velocity is not None:
            self._check_bands(self.train_velocity)
        if self.scenario == "collision" and self.physics.num_frames <= 2 * self.min_frames_around_collision:
            # At num_frames = 2n the impact has one admissible time, lost to rounding.
            raise ValueError(
                f"min_frames_around_collision: {self.min_frames_around_collision} frames before and after the impact "
                f"need more than {2 * self.min_frames_around_collision} frames; physics.num_frames is {self.physics.num_frames}"
            )
        for index, box in enumerate(self.train_exclude or []):
            params = {"radius", "velocity"} if self.scenario != "collision" else {"r1", "r2", "v1", "v2"}
            if not box or set(box) - params:
                raise ValueError(f"train_exclude[{index}]: bounds a non-empty subset of {sorted(params)}, got {sorted(box)}")
        if self.train_direction != "right" and self.scenario != "uniform_motion":
            raise ValueError(f"train_direction: mirrored training videos are for uniform_motion, not {self.scenario}")
        if self.compose is not None:
            if self.scenario != "collision" or self.train_exclude is not None:
                raise ValueError(f"compose: composition scenes are laid over collision without left-out boxes, not {self.scenario}")
            wall = self.compose.wall
            if wall.x + wall.thickness > self.physics.world_size:
                raise ValueError(f"compose.wall: x + thickness = {wall.x + wall.thickness} lies beyond the world "
                                 f"({self.physics.world_size})")
        return self

    def _check_bands(self, bands: list[ValueRange]) -> None:
        if self.scenario != "uniform_motion" or self.probe is not None:
            raise ValueError("train_velocity: speed bands are for uniform_motion without a probe")
        space = self.id.velocity[0]
        for band, following in zip(bands, [*bands[1:], None]):
            if band.lo < space.lo or band.hi > space.hi or band.width == 0:
                raise ValueError(f"train_velocity: [{band.lo}, {band.hi}] is not a band inside the ID range [{space.lo}, {space.hi}]")
            if following is not None and following.lo <= band.hi:
                raise ValueError("train_velocity: bands must be listed in increasing order, apart from each other")

    def identity_fields(self) -> dict[str, Any]:
        """The config as an identity records it: a probe, speed bands, boxes, a composition or a
        direction left unset do not enter it, so ball datasets keep the identities they had
        before these existed."""
        unset = {name for name in ("probe", "train_velocity", "train_exclude", "compose") if getattr(self, name) is None}
        if self.train_direction == "right":
            unset.add("train_direction")
        return self.model_dump(mode="json", exclude=unset or None)

    def excluded(self, points: Any, names: tuple[str, ...]) -> Any:
        """Whether each (N, P) point, columns named by `names`, lies in a `train_exclude` box."""
        import numpy as np

        points = np.asarray(points, dtype=np.float64)
        out = np.zeros(len(points), dtype=bool)
        for box in self.train_exclude or []:
            inside = np.ones(len(points), dtype=bool)
            for name, bounds in box.items():
                column = points[:, names.index(name)]
                inside &= (column >= bounds.lo) & (column <= bounds.hi)
            out |= inside
        return out

    def in_training_bands(self, velocity: Any) -> Any:
        """Whether each speed lies in a training band (all True without bands)."""
        import numpy as np

        velocity = np.asarray(velocity, dtype=np.float64)
        if self.train_velocity is None:
            return np.ones(velocity.shape, dtype=bool)
        return np.any([(velocity >= b.lo) & (velocity <= b.hi) for b in self.train_velocity], axis=0)

    @property
    def num_balls(self) -> int:
        return 2 if self.scenario == "collision" else 1


# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------

_COUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_size(size: str | int) -> tuple[str, int | None]:
    """Split a dataset size into (label, count).

    Named presets ("30K", "300K", "3M") return count None: their grid is the paper's. Any other
    size is a plain count of videos: "200" -> 200, "2K" -> 2000, "1.5M" -> 1500000.
    """
    text = str(size).strip()
    if text in SIZE_PRESETS:
        return text, None
    match = _COUNT.match(text)
    if not match:
        raise ConfigError(
            f"size: cannot parse {text!r}; use one of {', '.join(SIZE_PRESETS)} or a count like 200, 2K"
        )
    scale = {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()]
    count = float(match.group(1)) * scale
    if count < 1 or count != math.floor(count):
        raise ConfigError(f"size: {text!r} is not a positive whole number of videos")
    return text, int(count)


# ---------------------------------------------------------------------------------------------
# Loading and overrides
# ---------------------------------------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)


def _format_validation_error(err: ValidationError, source: str) -> str:
    """One line: the source, the field path, and pydantic's message without its prefix.

    Checks that span fields (model validators) put the field name in their message instead.
    """
    first = err.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    where = ".".join(str(p) for p in first["loc"])
    return f"{source}: {where}: {message}" if where else f"{source}: {message}"


def validate(model: type[M], data: dict[str, Any], source: str = "config") -> M:
    """Validate a dict against a config model, raising ConfigError naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str], model: type[BaseModel] | None = None) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides (value parsed as YAML) to a nested dict, returning a copy.

    With `model`, a scalar given to a field `model` declares as text stays the text typed:
    `name=256` is "256", not YAML's number 256, which a str field rejects. Unknown keys are
    left for validation to reject, so a typo fails with the field's name.
    """
    result = yaml.safe_load(yaml.safe_dump(data))  # deep copy through plain types
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value")
        node = result
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a mapping")
        # Composed first, then constructed: the nodes keep each scalar's text as typed.
        loader = yaml.SafeLoader(raw)
        try:
            parsed = loader.get_single_node()
            value = loader.construct_document(parsed) if parsed is not None else None
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: not valid YAML ({getattr(err, 'problem', None) or err})") from None
        finally:
            loader.dispose()
        node[leaf] = _as_declared(value, parsed, _declared_type(model, key.split(".")))
    return result


def _declared_type(model: type[BaseModel] | None, path: list[str]) -> Any:
    """The annotation of the field at a dotted path of `model`; None where nothing declares it
    (no model, an unknown key, or a free-form dict such as a study's `dit`)."""
    annotation: Any = model
    for part in path:
        annotation = _required(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part)
            annotation = None if field is None else field.annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        else:
            return None
    return annotation


def _required(annotation: Any) -> Any:
    """`X | None` is X: null stays null, anything else is read as X."""
    if get_origin(annotation) in (Union, UnionType):
        arms = [arm for arm in get_args(annotation) if arm is not type(None)]
        if len(arms) == 1:
            return arms[0]
    return annotation


def _is_text(annotation: Any) -> bool:
    """A field whose every accepted value is a string: str, or a Literal of strings."""
    if get_origin(annotation) is Literal:
        return all(isinstance(choice, str) for choice in get_args(annotation))
    return annotation is str


def _as_declared(value: Any, node: yaml.Node | None, annotation: Any) -> Any:
    """`value` (YAML's reading of `node`) with every non-null scalar that `annotation` declares as
    text replaced by the scalar as typed; lists, tuples, mappings and models are walked into."""
    annotation = _required(annotation)
    if isinstance(node, yaml.ScalarNode):
        return node.value if value is not None and not isinstance(value, str) and _is_text(annotation) else value
    origin, args = get_origin(annotation), get_args(annotation)
    if isinstance(node, yaml.SequenceNode) and isinstance(value, list):
        if origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
            return [_as_declared(v, n, args[0]) for v, n in zip(value, node.value)]
        if origin is tuple and len(args) == len(value):
            return [_as_declared(v, n, a) for v, n, a in zip(value, node.value, args)]
    if isinstance(node, yaml.MappingNode) and isinstance(value, dict):
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            declared = {name: field.annotation for name, field in annotation.model_fields.items()}
        elif origin is dict:
            declared = dict.fromkeys(value, args[1])
        else:
            return value
        nodes = {key.value: item for key, item in node.value}  # the last of a repeated key wins, as in `value`
        return {key: _as_declared(item, nodes[key], declared[key]) if key in nodes and key in declared else item
                for key, item in value.items()}
    return value


def load_config(model: type[M], path: str | Path, overrides: list[str] | None = None) -> M:
    """Load YAML from `path`, apply dotted overrides, validate against `model`."""
    data = apply_overrides(load_yaml(path), overrides or [], model)
    return validate(model, data, source=str(path))


def load_data_config(scenario: str, overrides: list[str] | None = None) -> DataConfig:
    """The dataset config of a ball scenario from `configs/data/<scenario>.yaml`."""
    if scenario not in BALL_SCENARIOS:
        raise ConfigError(f"scenario: unknown {scenario!r}; choose from {', '.join(BALL_SCENARIOS)}")
    return load_config(DataConfig, CONFIG_DIR / "data" / f"{scenario}.yaml", overrides)


def load_scenario_config(scenario: str, overrides: list[str] | None = None) -> DataConfig:
    """The dataset config of a study scenario: a ball scenario, a probe ("probe-color_shape"),
    an interpolation-gap layout ("gap-wide"), a direction set ("flip-both"), a convex-hull
    variant ("hull-square") or a composition variant ("compose-spatial")."""
    if scenario.startswith(PROBE_PREFIX):
        return load_probe_config(scenario.removeprefix(PROBE_PREFIX), overrides)
    if scenario.startswith(GAP_PREFIX):
        return load_gap_config(scenario.removeprefix(GAP_PREFIX), overrides)
    if scenario.startswith(FLIP_PREFIX):
        return load_flip_config(scenario.removeprefix(FLIP_PREFIX), overrides)
    if scenario.startswith(HULL_PREFIX):
        return load_hull_config(scenario.removeprefix(HULL_PREFIX), overrides)
    if scenario.startswith(COMPOSE_PREFIX):
        return load_compose_config(scenario.removeprefix(COMPOSE_PREFIX), overrides)
    return load_data_config(scenario, overrides)


def _load_variant(
    kind: str, noun: str, directory: str, name: str, names: tuple[str, ...], overrides: list[str] | None,
    base: str = "uniform_motion",
) -> DataConfig:
    """`configs/data/<directory>/<name>.yaml` laid over a ball scenario's config (its keys
    replace the base's), then the overrides."""
    if name not in names:
        raise ConfigError(f"{kind}: unknown {noun} {name!r}; choose from {', '.join(names)}")
    path = CONFIG_DIR / "data" / directory / f"{name}.yaml"
    data = load_yaml(CONFIG_DIR / "data" / f"{base}.yaml") | load_yaml(path)
    return validate(DataConfig, apply_overrides(data, overrides or [], DataConfig), source=str(path))


def load_probe_config(pair: str, overrides: list[str] | None = None) -> DataConfig:
    """The dataset config of an attribute probe (configs/data/probes/<pair>.yaml)."""
    return _load_variant("probe", "pair", "probes", pair, PROBE_PAIRS, overrides)


def load_gap_config(layout: str, overrides: list[str] | None = None) -> DataConfig:
    """The dataset config of an interpolation-gap layout (configs/data/gaps/<layout>.yaml)."""
    return _load_variant("gap", "layout", "gaps", layout, GAP_LAYOUTS, overrides)


def load_flip_config(name: str, overrides: list[str] | None = None) -> DataConfig:
    """The dataset config of a direction-flip set (configs/data/flips/<set>.yaml)."""
    return _load_variant("flip", "set", "flips", name, FLIP_SETS, overrides)


def load_hull_config(name: str, overrides: list[str] | None = None) -> DataConfig:
    """The dataset config of a convex-hull variant (configs/data/hulls/<variant>.yaml)."""
    return _load_variant("hull", "variant", "hulls", name, HULL_VARIANTS, overrides, base="collision")


def load_compose_config(name: str, overrides: list[str] | None = None) -> DataConfig:
    """The dataset config of a composition variant (configs/data/compose/<variant>.yaml)."""
    return _load_variant("compose", "variant", "compose", name, COMPOSE_VARIANTS, overrides, base="collision")


def to_flat_dict(obj: BaseModel | dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a config into {"a.b.c": scalar}; lists become JSON-like strings.

    The form Ray Tune's `param_space` and MLflow params want.
    """
    data = obj.model_dump(mode="json") if isinstance(obj, BaseModel) else obj
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(to_flat_dict(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = yaml.safe_dump(value, default_flow_style=True).strip()
        else:
            flat[name] = value
    return flat


# ---------------------------------------------------------------------------------------------
# Training configs (configs/train/<name>.yaml)
# ---------------------------------------------------------------------------------------------


class TrainData(Strict):
    """Where training reads from. VAE: pixel shards. DiT: latent shards (`phyray data encode`)."""

    train: str
    # Pixel shards of held-out videos to roll out and score every `eval_every` steps.
    eval: str | None = None
    eval_videos: int = Field(4, ge=1)
    shuffle_buffer: int = Field(64, ge=0)
    # A worker whose data shard fits in this many MiB keeps it in memory after the first epoch
    # instead of re-streaming it every epoch (see phyray/train/loop.py `batches`); 0 = never.
    cache_mb: int = Field(1024, ge=0)


class TrainModel(Strict):
    vae: str = "vae-f8t4c4"
    dit: str = "DiT-S"
    patch: tuple[int, int, int] = (1, 2, 2)


class TrainDiffusion(Strict):
    timesteps: int = Field(1000, ge=2)
    beta_schedule: str = "scaled_linear"
    cond_frames: int = Field(3, ge=1)
    sample_steps: int = Field(50, ge=1)


class TrainOptim(Strict):
    """AdamW with linear warm-up then cosine decay to `min_lr_ratio` of the peak.

    The paper states no optimiser; these are DiT's (AdamW, no weight decay) with the warm-up
    and decay most video DiTs use.
    """

    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(0, ge=0)
    decay: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1)


class TrainTracking(Strict):
    # None: $MLFLOW_TRACKING_URI, else a SQLite file in the run directory.
    tracking_uri: str | None = None
    experiment: str = "phyray-train"


def compile_scope(value: Any) -> Any:
    """`compile: true | false` (the field was a switch before it had scopes) as the recommended
    scope or as off; any other value as it is, for the field's own check."""
    if isinstance(value, bool):
        return "blocks" if value else "off"
    return value


class TrainConfig(Strict):
    """One training run: a VAE on pixel shards or a DiT on latent shards, on Ray Train + DeepSpeed."""

    task: Literal["vae", "dit"]
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    # Ray Train storage_path: the run's checkpoints, config and (by default) MLflow store live
    # under <output_dir>/<name>. Relative paths are taken from the current directory.
    output_dir: str = "runs/train"
    data: TrainData
    model: TrainModel = TrainModel()
    diffusion: TrainDiffusion = TrainDiffusion()
    optim: TrainOptim = TrainOptim()
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=1)  # global batch per optimiser step
    micro_batch: int = Field(ge=1)  # per worker per forward pass
    grad_clip: float = Field(1.0, ge=0)  # max global gradient norm; 0 = no clipping
    ema_decay: float = Field(0.9999, ge=0, lt=1)
    vae_beta: float = Field(1e-4, ge=0)  # KL weight of the VAE loss
    vae_recon: Literal["l1", "mse"] = "l1"  # the VAE's reconstruction term (phyray.models.vae.vae_loss)
    # VAE: extra weight on pixels that move (foreground_weight in vae_loss). 0 = plain mean. For
    # small objects on a static background, where an unweighted loss is minimised by the empty
    # background for hundreds of steps before the objects' colours and shapes are learnt.
    vae_foreground_weight: float = Field(0.0, ge=0)
    # VAE: the posterior log-variance the encoder starts from (VideoVAE.init_logvar); None = the
    # output conv's own init, about 0, so each latent starts under noise of std 1. With a small KL
    # weight a negative start (-8: std 0.02) lets the decoder read the encoder's code from step one
    # instead of the empty background; docs/experiments.md measures it on the probe VAE.
    vae_logvar_init: float | None = None
    # VAE: train on a random window of this many frames of each video; None = whole videos.
    # Exact for frame-local VAEs, an approximation for causal ones (phyray/models/vae.py VideoVAE).
    vae_clip_frames: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0)
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(1000, ge=1)
    eval_every: int = Field(0, ge=0)  # 0: only at the end (if data.eval is set)
    zero_stage: int = Field(1, ge=0, le=2)  # with one worker, 0 (engine.deepspeed_config)
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    # torch.compile for the training step; the EMA and its rollouts stay eager. "blocks" (what
    # `true` means) compiles each of the DiT's transformer blocks, all sharing one compiled graph,
    # so the first step pays one block's compile whatever the depth; "network" compiles the DiT
    # whole (one CPU thread, a cold compile of 39 s against 52 s for DiT-W, 37 against 86 s for
    # DiT-S, the same step; bench/compile_step.py, docs/performance.md "2026-12-07 (4)"). A VAE
    # has no repeated block, so both compile its encoder and decoder. Off by default: compiled kernels
    # round in another order, so weights differ from eager ones in the last bits (a run's
    # identity includes this field).
    compile: Literal["off", "blocks", "network"] = "off"
    workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: int = Field(1, ge=1)
    # How Ray places the workers (its placement-group strategies). PACK fills a node first;
    # STRICT_SPREAD puts each worker on its own node (one per GPU host, or a run that must not
    # lose every worker with one node), and after a lost node waits for a replacement.
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    max_failures: int = Field(0, ge=-1)
    tracking: TrainTracking = TrainTracking()
    # Test hook: worker rank 1 (or 0 with one worker) raises once when it reaches this step.
    fail_once_at_step: int | None = None

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_scope(cls, value: Any, info: ValidationInfo) -> Any:
        """A VAE compiles whole in either scope, so its config says "network": two names for one
        product would train it twice."""
        value = compile_scope(value)
        return "network" if value == "blocks" and info.data.get("task") == "vae" else value

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.model.vae not in VAE_PRESETS:
            raise ValueError(f"model.vae: unknown preset {self.model.vae!r}; choose from {', '.join(VAE_PRESETS)}")
        if self.vae_clip_frames is not None:
            spec = VAE_PRESETS[self.model.vae]
            if (self.vae_clip_frames - 1) % spec["temporal_compression"]:
                raise ValueError(
                    f"vae_clip_frames: {self.vae_clip_frames} is not 1 + k * {spec['temporal_compression']} "
                    "(the VAE's temporal compression)"
                )
        if self.task == "vae" and not is_trainable(self.model.vae):
            raise ValueError(f"model.vae: {self.model.vae!r} has no weights to train (a study only calibrates its latent scale)")
        if self.task == "dit" and self.model.dit not in DIT_PRESETS:
            raise ValueError(f"model.dit: unknown preset {self.model.dit!r}; choose from {', '.join(DIT_PRESETS)}")
        per_step = self.micro_batch * self.workers
        if self.batch_size % per_step:
            raise ValueError(
                f"batch_size: {self.batch_size} is not divisible by micro_batch x workers = "
                f"{self.micro_batch} x {self.workers}"
            )
        return self

    @property
    def grad_accum(self) -> int:
        return self.batch_size // (self.micro_batch * self.workers)


# ---------------------------------------------------------------------------------------------
# Study configs (configs/studies/<name>.yaml)
# ---------------------------------------------------------------------------------------------

# Fields of a TrainConfig that a study sets itself for every run it launches.
STUDY_OWNED_TRAIN_FIELDS = ("task", "name", "output_dir", "tracking", "fail_once_at_step", "data.train", "data.eval")


class StudyPhyre(Strict):
    """How a combinatorial study draws its PHYRE videos (docs/paper.md §12) and cuts them.

    A data size is videos per training template: seeds 0..S-1 (S = min(size, template_seeds))
    times size / S red-ball trials each (trials 0-989). In-template evaluation takes trial 990
    of seeds 0..n-1 of every training template (n = data.eval_id, the paper's 100 when unset),
    out-of-template trial 0 of seeds 0..n-1 of every held-out template (n = data.eval_ood).
    """

    # Task seeds (object layouts) per template: the paper's 100.
    template_seeds: int = Field(100, ge=1)
    # Frames kept of PHYRE's 32 (1/3 s apart): fewer for CPU presets.
    num_frames: int = Field(32, ge=2, le=32)
    # PHYRE videos per shard of the 256² palette datasets.
    shard_size: int = Field(1000, ge=1)


class StudyData(Strict):
    """The datasets a study generates (or reuses) for every scenario."""

    resolution: int = Field(128, ge=16, le=1024)
    seed: int = Field(0, ge=0)
    # Evaluation-set sizes; None = the paper's (configs/data/<scenario>.yaml `eval_sizes`).
    eval_id: int | None = Field(None, ge=1)
    eval_ood: int | None = Field(None, ge=1)
    # Data-config overrides applied to every ball scenario, e.g. ["physics.num_frames=16"].
    overrides: list[str] = []
    # PHYRE scenes of a combinatorial study (its eval_id / eval_ood are videos per template).
    phyre: StudyPhyre = StudyPhyre()


class StudyVAE(Strict):
    """The VAE of each (scenario, resolution): reused when already trained, else trained once."""

    preset: str = "vae-f8t4c4"
    # Training set of the VAE (a size of `data_sizes`'s kind); None = the largest of data_sizes.
    train_size: str | None = None
    # "shared": one VAE (seed vae.train.seed) for every study seed; "per_seed": each of the
    # study's `seeds` trains its own VAE with that seed (and its own latents), so the spread
    # across seeds includes the VAE's.
    seeds: Literal["shared", "per_seed"] = "shared"
    # An attribute probe's VAE learns from a training set of "all" four combinations of the
    # pair (the paper's VAE is pretrained on general images and videos: it knows no pairing), so
    # an attribute the DiT flips is the DiT's doing; "trained": the DiT's own two combinations,
    # a VAE that can learn the pairing itself (a confound, kept to measure it). A composition
    # variant's VAE likewise learns from "all" its kinds of video, the composed one included (a
    # pretrained VAE has seen objects collide and bounce in any order), or the DiT's "trained" two.
    probe_combinations: Literal["all", "trained"] = "all"
    # The scenario whose training set (of train_size) the VAE learns from, one VAE for every
    # scenario of the study; None: each scenario trains its own on its own data. A VAE is a
    # frame codec: the paper's is pretrained on general video and never sees the probe's
    # training split, so e.g. the interpolation gaps share the uniform-motion VAE rather than
    # each layout learning one from speeds with a hole in them.
    train_on: str | None = None
    # "scenario": each scenario's VAE learns from its own VAE set (as the options above make it);
    # "study": one VAE for every scenario of the study, learning from `train_size` videos in
    # all, an equal share of each scenario's VAE set, rows interleaved (phyray/data/mix.py). A
    # probe study's pairs then share one codec that has seen every colour, shape, size and speed
    # of every pair and the pairing of none, as the paper's one pretrained VAE; and the study
    # trains one VAE, not one per pair.
    scope: Literal["scenario", "study"] = "scenario"
    # What the VAE's training set spans: "id", the DiT's largest training set (or the set the
    # options above choose); "id+ood", a set of the same size whose radius and speed ranges are
    # the hull of the ID and OOD ranges (no training bands or left-out boxes either): the
    # paper's VAE, pretrained on general video, has seen every size and speed, so its
    # reconstruction of an OOD video is no OOD failure of its own. The DiT's sets are unchanged.
    data_span: Literal["id", "id+ood"] = "id"
    # TrainConfig fields of the VAE run (steps, batch_size, micro_batch, optim, workers, ...).
    train: dict[str, Any] = {}

    @field_validator("preset")
    @classmethod
    def _known(cls, preset: str) -> str:
        if preset not in VAE_PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(VAE_PRESETS)}")
        return preset


class StudyEval(Strict):
    """How each trial's EMA model is rolled out and scored after training."""

    parser: Literal["subpixel", "threshold"] = "subpixel"
    # The velocity-error variant of the headline numbers (curves, table, Tune's metric).
    # vel_err_mean_velocity is what the paper's Fig. 3 shows (docs/paper.md §13); per-frame is
    # the formula its text gives. Both are always logged.
    headline_metric: Literal["vel_err_per_frame", "vel_err_mean_velocity"] = "vel_err_mean_velocity"
    sample_steps: int = Field(50, ge=1)
    batch_size: int = Field(16, ge=1)  # videos per rollout batch
    # What the VAE and DiT compute in during rollouts (phyray/presets.py ROLLOUT_PRECISIONS):
    # "fp32", what every reported number used, or "bf16" autocast. Other pixels, so other
    # rollouts: it enters their identity, and the reports' protocol line says it.
    precision: Literal[ROLLOUT_PRECISIONS] = "fp32"
    ssim: bool = True
    gifs: bool = True  # side-by-side GIFs of the best and worst rollouts of each split
    # Resamples of the 95% percentile-bootstrap interval of every reported mean (seeded by
    # data.seed; phyray/eval/stats.py).
    bootstrap_resamples: int = Field(1000, ge=100)
    # The evaluation sets: "test" (eval_id / eval_ood, what the verdict is computed on) or "dev"
    # (dev_id / dev_ood: same distributions and sizes, other videos) for choosing settings
    # without looking at the test sets. A combinatorial study's dev sets are other trials of
    # the same seeds (phyray/data/combinatorial.py SPLIT_TRIALS).
    split: Literal["test", "dev"] = "test"
    # The released evaluator's radius filter and collision window on every velocity metric
    # (phyray/eval/physics.py); `paper_vel_err`, the paper's Fig. 3 metric, always has them.
    paper_filter: bool = False
    # Direction flips: a generated ball "reverses" when it moves against its conditioned
    # direction faster than this (world units/s; ten times the parser's floor at 32², so a ball
    # that stops and jitters does not count). The paper gives no threshold.
    reversal_speed: float = Field(0.2, gt=0)
    # Combinatorial studies (phyray/eval/scenes.py): the abnormal-rate judge; LPIPS's AlexNet
    # backbone, a local torchvision state dict (None: LPIPS skipped, with a line saying so);
    # the I3D weights of FVD (None: those `scripts/fetch_weights.sh` fetched, skipped with a
    # line if absent); and the videos FVD compares per evaluation set (the paper's 600
    # in-template and 500 out-of-template; a set with fewer uses all of them).
    abnormal: bool = True
    lpips_backbone: str | None = None
    fvd_weights: str | None = None
    fvd_videos: dict[Literal["eval_in_template", "eval_out_of_template"], int] = {
        "eval_in_template": 600, "eval_out_of_template": 500,
    }

    @property
    def splits(self) -> tuple[str, str]:
        """(ID split, OOD split) the trials are scored on."""
        return ("eval_id", "eval_ood") if self.split == "test" else ("dev_id", "dev_ood")


class StudyResources(Strict):
    # Trials running at once; None = as many as the cluster's CPUs/GPUs hold (see
    # phyray/study/plan.py `max_concurrent_trials`).
    max_concurrent_trials: int | None = Field(None, ge=1)
    # Logical CPUs of the embedded local Ray (no cluster); None = max(4, the machine's cores).
    local_cpus: int | None = Field(None, ge=1)


class StudyPlanning(Strict):
    """Assumptions of `--plan`: the GPU's bf16 peak and the MFU a trial reaches on it."""

    gpu: str = "A100"
    mfu: float = Field(0.4, gt=0, le=1)


class StudyConfig(Strict):
    """A scaling study: scenarios x model presets x data sizes, trained and evaluated on Ray."""

    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    # MLflow experiment of the study; None = "phyray-study-<name>".
    experiment: str | None = None
    # <output_dir>/<name> holds the study's trials, Tune state and (by default) its MLflow store.
    output_dir: str = "runs/studies"
    # Shared cache of datasets, VAEs and latents, reused across trials and studies.
    data_dir: str = "runs/data"
    scenarios: list[str] = Field(min_length=1)
    models: list[str] = Field(min_length=1)
    data_sizes: list[str] = Field(min_length=1)
    # Training seeds: every cell trains once per seed (DiT init, noise and data order; the VAE
    # too with vae.seeds: per_seed); the report gives mean and sd across seeds.
    seeds: list[int] = Field([0], min_length=1)
    # Training template sets of a combinatorial study ("6", "30", "60", or ids and ranges such as
    # "10003,10005" or "10000-10009"): a grid axis beside models and data sizes, which are then
    # videos per template. Checked against PHYRE's catalogue by phyray.study.settings.
    templates: list[str] = []
    # Cells left out of the grid: each entry names some of a trial's fields (scenario, model,
    # data_size, templates, seed) and removes every trial that matches all of them, e.g. the
    # paper's DiT-B, run at 60 templates only: [{model: DiT-B, templates: "6"}, ...].
    exclude: list[dict[Literal["scenario", "model", "data_size", "templates", "seed"], str | int]] = []
    data: StudyData = StudyData()
    vae: StudyVAE = StudyVAE()
    # TrainConfig fields of every DiT trial (steps, batch_size, micro_batch, optim, diffusion,
    # workers, use_gpu, ...); the study sets task, name, output_dir, data and tracking itself.
    dit: dict[str, Any] = {}
    eval: StudyEval = StudyEval()
    # None: $MLFLOW_TRACKING_URI, else a SQLite file in the study directory.
    tracking_uri: str | None = None
    resources: StudyResources = StudyResources()
    plan: StudyPlanning = StudyPlanning()

    @field_validator("scenarios")
    @classmethod
    def _scenarios(cls, scenarios: list[str]) -> list[str]:
        known = (*SIMULATED_SCENARIOS, COMBINATORIAL)
        for scenario in scenarios:
            if scenario not in known:
                raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(known)}")
        if COMBINATORIAL in scenarios and len(scenarios) > 1:
            raise ValueError(f"{COMBINATORIAL} runs alone: its grid is models x templates x videos per template")
        for family, report in ((PROBE_SCENARIOS, "the attribute priority"), (GAP_SCENARIOS, "the interpolation-gap verdict"),
                               (FLIP_SCENARIOS, "the direction-flip verdict"), (HULL_SCENARIOS, "the convex-hull verdict"),
                               (COMPOSE_SCENARIOS, "the composition verdict")):
            members = [s for s in scenarios if s in family]
            if members and len(members) < len(scenarios):
                raise ValueError(f"{family[0].split('-')[0]} scenarios run apart from the others: their report is {report}")
        return _unique(scenarios)

    @field_validator("templates", mode="before")
    @classmethod
    def _templates(cls, templates: Any) -> Any:
        return _unique([str(spec) for spec in templates]) if isinstance(templates, list) else templates

    @field_validator("dit")
    @classmethod
    def _dit_compile(cls, dit: dict[str, Any]) -> dict[str, Any]:
        """`compile` spelled as its trials' configs spell it, and left out at "off", its default:
        the study's identity hashes this dict, and `true` and `blocks` (or `false` and nothing)
        are the same trials, so they are one study."""
        if "compile" not in dit:
            return dit
        scope = compile_scope(dit["compile"])
        return {key: value for key, value in dit.items() if key != "compile"} | ({} if scope == "off" else {"compile": scope})

    @field_validator("models")
    @classmethod
    def _models(cls, models: list[str]) -> list[str]:
        for model in models:
            if model not in DIT_PRESETS:
                raise ValueError(f"unknown model preset {model!r}; choose from {', '.join(DIT_PRESETS)}")
        return _unique(models)

    @field_validator("data_sizes", mode="before")
    @classmethod
    def _sizes(cls, sizes: Any) -> Any:
        if isinstance(sizes, list):
            sizes = [str(size) for size in sizes]
            for size in sizes:
                try:
                    parse_size(size)
                except ConfigError as err:
                    raise ValueError(str(err).removeprefix("size: ")) from None
            return _unique(sizes)
        return sizes

    @model_validator(mode="after")
    def _owned_fields(self) -> StudyConfig:
        # What the study sets itself may not come from the config. Whether the rest makes valid
        # runs is checked by phyray.study.settings.check_study (load_study_config calls it).
        if self.vae.train_size is not None:
            try:
                parse_size(self.vae.train_size)
            except ConfigError as err:
                raise ValueError("vae.train_" + str(err)) from None
        if not is_trainable(self.vae.preset) and self.vae.train:
            raise ValueError(f"vae.train: {self.vae.preset!r} has no weights to train; remove vae.train")
        if not is_trainable(self.vae.preset) and self.vae.seeds == "per_seed":
            raise ValueError(f"vae.seeds: {self.vae.preset!r} has no weights, so no seed to vary; use shared")
        if self.vae.train_on is not None:
            if self.vae.train_on not in SIMULATED_SCENARIOS or COMBINATORIAL in self.scenarios:
                raise ValueError(f"vae.train_on: {self.vae.train_on!r} is not a ball scenario of a ball study; "
                                 f"choose from {', '.join(SIMULATED_SCENARIOS)}")
        if self.vae.scope == "study" and (self.vae.train_on is not None or COMBINATORIAL in self.scenarios):
            raise ValueError("vae.scope: 'study' mixes the study's own ball scenarios; it takes neither "
                             "vae.train_on nor a combinatorial scenario")
        if self.vae.data_span != "id" and COMBINATORIAL in self.scenarios:
            raise ValueError("vae.data_span: a combinatorial study's VAE learns from its PHYRE templates; "
                             "remove vae.data_span")
        if (COMBINATORIAL in self.scenarios) != bool(self.templates):
            raise ValueError(
                "templates: a combinatorial study needs its template sets" if COMBINATORIAL in self.scenarios
                else "templates: only a combinatorial study has a template axis"
            )
        if any(seed < 0 for seed in self.seeds) or len(set(self.seeds)) < len(self.seeds):
            raise ValueError(f"seeds: {self.seeds} must be distinct integers >= 0")
        for section, fields in (("vae.train", self.vae.train), ("dit", self.dit)):
            if "seed" in fields and (section == "dit" or self.vae.seeds == "per_seed"):
                raise ValueError(f"{section}.seed: the study's `seeds` set it; remove {section}.seed")
            given = set(fields) | {f"data.{key}" for key in fields.get("data") or {}}
            owned = sorted(given & set(STUDY_OWNED_TRAIN_FIELDS))
            if owned:
                raise ValueError(f"{section}: {', '.join(owned)} are set by the study, not the config")
        return self

    @property
    def experiment_name(self) -> str:
        return self.experiment or f"phyray-study-{self.name}"

    @property
    def study_dir(self) -> Path:
        """<output_dir>/<name>, as given; the study driver makes both paths absolute first
        (phyray.study.settings.resolve_paths), so trials never read them relative to Ray's
        working directory."""
        return Path(self.output_dir) / self.name


def _unique(items: list[str]) -> list[str]:
    duplicates = sorted({item for item in items if items.count(item) > 1})
    if duplicates:
        raise ValueError(f"listed twice: {', '.join(duplicates)}")
    return items
