"""The 70 combinatorial PHYRE templates (ids 10000-10069), written with PHYRE's creator API.

Runs under the sidecar's Python 3.9 with only phyre and numpy. The stock phyre wheel has no
templates above 10000, so they are defined here from the paper's released generator
(phyworld: data/task_scripts/main/task100XX.py and phyre/component_utils.py):

* 8 object types; a template is 4 of them: `itertools.combinations` over `OBJECT_TYPES` in
  this order, shuffled with `random.Random(4)`, template id = 10000 + index. The plain shuffle
  of the list of tuples reproduces the documented subsets (6-template set and held-out
  10060-10069), which `tests/test_phyre.py` checks.
* Object parameters are fractions of the scene (stock 256 x 256 here, 512 in the paper's fork);
  PHYRE's scale arguments are fractions of the scene width, so the recipes carry over unchanged.
* Everything random about a task comes from one `np.random.RandomState([template_id, seed])`,
  so (template_id, seed) fixes the scene in any process.

Deliberate differences from the released code, each commented where it happens: the static-ball
chain draws exactly its 2-6 walk balls (the released code also drew the walk's start point and
duplicates after a branch restart), and the goal relation is NONE so PHYRE never ends a
simulation early (the fork commented out its stop-when-solved instead).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import phyre.simulator
from phyre.creator import SCENE_HEIGHT, SCENE_WIDTH
from phyre.creator import creator as creator_lib

OBJECT_TYPES = (
    "dynamic_ball_1",
    "dynamic_ball_2",
    "static_ball",
    "dynamic_bar",
    "dynamic_standing_bars",
    "static_bar",
    "dynamic_jar",
    "dynamic_standingsticks",
)
OBJECTS_PER_TEMPLATE = 4
FIRST_TEMPLATE_ID = 10000
# Seed of the shuffle that orders the 70 combinations (the released task scripts use 4).
TEMPLATE_ORDER_SEED = 4

W, H = float(SCENE_WIDTH), float(SCENE_HEIGHT)  # PHYRE scene size in pixels (256)


def template_object_sets() -> list[tuple[str, ...]]:
    """The 70 object sets in template order: index i is template 10000 + i."""
    combos = list(itertools.combinations(OBJECT_TYPES, OBJECTS_PER_TEMPLATE))
    random.Random(TEMPLATE_ORDER_SEED).shuffle(combos)
    return combos


TEMPLATE_OBJECTS = {FIRST_TEMPLATE_ID + i: objs for i, objs in enumerate(template_object_sets())}


# ---------------------------------------------------------------------------------------------
# The 8 object types. Each builder adds its bodies to the TaskCreator and returns them.
# ---------------------------------------------------------------------------------------------


def build_dynamic_ball(C, rng):
    diameter = rng.uniform(0.06, 0.12)  # PHYRE's ball scale is the diameter / scene width
    x = rng.uniform(0.3, 0.6)
    bottom = rng.uniform(0.4, 0.85)
    return [C.add("dynamic ball", scale=diameter, center_x=x * W, bottom=bottom * H)]


# Static-ball chain: a random walk from just above the y = 0.5 line; steps landing at or above
# the line are rejected, and a long line branches from a random earlier ball with p = 0.2.
CHAIN_START = (0.4, 0.55)
CHAIN_TOP = 0.5
CHAIN_BALL_SCALE = 0.04
CHAIN_MAX_STEPS = 10_000  # the walk ends within ~100 steps; this only guards an endless loop


def static_ball_chain(rng) -> list[tuple[float, float]]:
    """Centres (fractions of the scene) of 2-6 static balls along a random walk."""
    n_balls = rng.randint(2, 7)
    balls: list[tuple[float, float]] = []
    origin = CHAIN_START
    angle = rng.uniform() * 2 * np.pi
    angle_diff = rng.uniform() * 2 * np.pi / 10
    line_length = 1
    for _ in range(CHAIN_MAX_STEPS):
        if len(balls) == n_balls:
            return balls
        if line_length >= 3 and balls and rng.uniform() < 0.2:
            # Branch: restart the walk from an earlier ball without adding a duplicate ball
            # there (the released code appended the restart point again).
            origin = balls[rng.randint(len(balls))]
            line_length = 1
            angle = rng.uniform() * 2 * np.pi
            angle_diff = rng.uniform() * 2 * np.pi / 10
            continue
        line_length += 1
        step = rng.uniform(0.05, 0.2)
        angle += angle_diff
        x, y = origin[0] + step * np.cos(angle), origin[1] + step * np.sin(angle)
        if y >= CHAIN_TOP:
            continue
        # Points outside the scene move the walk on but are not drawn.
        origin = (x, y)
        if 0.0 < x < 1.0 and 0.0 < y < 1.0:
            balls.append((x, y))
    raise RuntimeError("static ball chain did not finish")


def build_static_ball(C, rng):
    return [
        C.add("static ball", scale=CHAIN_BALL_SCALE, center_x=x * W, center_y=y * H)
        for x, y in static_ball_chain(rng)
    ]


def build_dynamic_bar(C, rng):
    length = rng.uniform(0.15, 0.5)
    x = rng.uniform(0.3, 0.6)
    bottom = rng.uniform(0.2, 0.8)
    angle = rng.uniform(-90, 90)
    # Placed first, then rotated about its centre, as in the released code.
    bar = C.add("dynamic bar", length).set_center_x(x * W).set_bottom(bottom * H)
    return [bar.set_angle(angle)]


def build_dynamic_standing_bars(C, rng):
    offset = rng.uniform(0.45, 0.6)
    spacing = 0.15
    if rng.uniform() < 0.5:  # mirror the staircase
        spacing, offset = -spacing, 1.0 - offset
    n_bars = rng.randint(1, 5)
    first = -n_bars // 2  # floor division of the negated count, as in the released code
    return [
        C.add(
            "dynamic bar",
            scale=0.2 + 0.05 * i,
            angle=90,
            bottom=0,
            left=(offset + spacing * idx) * W,
        )
        for i, idx in enumerate(range(first, first + n_bars))
    ]


def build_static_bar(C, rng):
    length = rng.uniform(0.2, 0.5)
    bottom = rng.uniform(0.1, 0.5)
    angle = rng.uniform(-60, 60)
    right = rng.uniform(0.3, 0.4)
    bar = C.add("static bar", length).set_right(right * W).set_bottom(bottom * H)
    return [bar.set_angle(angle)]


def build_dynamic_jar(C, rng):
    size = rng.uniform(0.08, 0.3)
    x = rng.uniform(0.3, 0.6)
    bottom = rng.uniform(0.2, 0.8)
    angle = rng.uniform(-45, 45)
    if rng.uniform() < 0.7:  # floating and tilted
        return [C.add("dynamic jar", scale=size, bottom=bottom * H, center_x=x * W, angle=angle)]
    return [C.add("dynamic jar", scale=size, bottom=0, center_x=x * W, angle=0)]


def build_dynamic_standingsticks(C, rng):
    size = rng.uniform(0.3, 0.6)
    x = rng.uniform(0.3, 0.6)
    bottom = rng.uniform(0.2, 0.5)
    angle = rng.uniform(-90, 90)
    if rng.uniform() < 0.3:  # upright on the floor
        return [C.add("dynamic standingsticks", scale=size, bottom=0, center_x=x * W)]
    return [
        C.add("dynamic standingsticks", scale=size, bottom=bottom * H, center_x=x * W, angle=angle)
    ]


BUILDERS: dict[str, Callable] = {
    "dynamic_ball_1": build_dynamic_ball,
    "dynamic_ball_2": build_dynamic_ball,
    "static_ball": build_static_ball,
    "dynamic_bar": build_dynamic_bar,
    "dynamic_standing_bars": build_dynamic_standing_bars,
    "static_bar": build_static_bar,
    "dynamic_jar": build_dynamic_jar,
    "dynamic_standingsticks": build_dynamic_standingsticks,
}
assert set(BUILDERS) == set(OBJECT_TYPES)


# ---------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------


class TemplateTask(NamedTuple):
    """One built task: what the sidecar needs to place the red ball and simulate.

    `object_types`, `dynamic` and `features` follow PHYRE's featurised-object order: the scene
    bodies in creation order, walls excluded.
    """

    template_id: int
    seed: int
    serialized: bytes  # thrift-serialised phyre Task, the form magic_ponies takes
    object_types: tuple[str, ...]
    dynamic: np.ndarray  # (N,) bool
    features: np.ndarray  # (N, 14) float32, PHYRE's featurised objects before the red ball


def check_template_id(template_id: int) -> None:
    if template_id not in TEMPLATE_OBJECTS:
        last = FIRST_TEMPLATE_ID + len(TEMPLATE_OBJECTS) - 1
        raise ValueError(f"unknown template {template_id} (valid: {FIRST_TEMPLATE_ID}-{last})")


def _set_goal(C, rng, groups: list[tuple[str, list]]) -> None:
    """Goal as in the released scripts (first dynamic object vs a random other object).

    The relation is NONE: it is never satisfied, so stock PHYRE simulates every requested step
    (with TOUCHING it stops 3 s after the goal holds; the paper's fork disabled that stop). The
    goal filters nothing; the explicit description keeps PHYRE from recolouring the two bodies.
    """
    first_dynamic = next(i for i, (name, _) in enumerate(groups) if name.startswith("dynamic"))
    others = [bodies[-1] for i, (_, bodies) in enumerate(groups) if i != first_dynamic]
    body1 = groups[first_dynamic][1][0]
    body2 = others[rng.randint(len(others))]
    C.update_task(
        body1=body1,
        body2=body2,
        relationships=[C.SpatialRelationship.NONE],
        description="combinatorial scene (no goal)",
    )


@lru_cache(maxsize=256)
def build_task(template_id: int, seed: int) -> TemplateTask:
    """Build template `template_id` with task seed `seed` (deterministic, cached)."""
    check_template_id(template_id)
    rng = np.random.RandomState([template_id, seed])
    C = creator_lib.TaskCreator()
    groups = [(name, BUILDERS[name](C, rng)) for name in TEMPLATE_OBJECTS[template_id]]
    _set_goal(C, rng, groups)
    C.check_task()

    object_types = tuple(name for name, bodies in groups for _ in bodies)
    dynamic = np.array([body.dynamic for _, bodies in groups for body in bodies])
    features = phyre.simulator.scene_to_featurized_objects(C.task.scene).features[0]
    if len(features) != len(object_types):
        raise RuntimeError(
            f"PHYRE featurised {len(features)} objects, template built {len(object_types)}"
        )
    return TemplateTask(
        template_id=template_id,
        seed=seed,
        serialized=phyre.simulator.serialize(C.task),
        object_types=object_types,
        dynamic=dynamic,
        features=features.astype(np.float32),
    )
