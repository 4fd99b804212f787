"""PHYRE sidecar: builds and simulates the combinatorial templates for phyray over stdin/stdout.

PHYRE 0.2.2 only ships wheels for Python <= 3.9, so phyray (Python 3.11) runs this program with
the interpreter of `.venv-phyre` (see scripts/setup_phyre.sh) as a long-lived subprocess; the
client is `phyray/sim/phyre.py`. Needs phyre and numpy (< 1.24); with `zstandard` beside them it
can also send frames already encoded (below), which saves the client the 2 MB copy per video.

Protocol
--------
Every message, in both directions, is a 4-byte big-endian unsigned length N followed by N bytes
of UTF-8 JSON (the header). A response header may list binary arrays under "payloads", each
{"item": i, "key": name, "dtype": numpy dtype string, "shape": [...]}; their raw C-order bytes
follow the header back to back in that order (prod(shape) * itemsize bytes each), so frames
never pass through JSON.

Requests (one response each, in order):

  {"op": "ping"}
      -> {"ok": true, "python": "3.9.18", "phyre": "0.2.2", "palette": [[r, g, b] x 8],
          "frame_codecs": ["zstd-palette8"]}   (empty without zstandard)
  {"op": "describe_templates"}
      -> {"object_types": [8 names], "templates": {"10000": [4 names], ...}}   (all 70)
  {"op": "simulate", "template_id": 10003, "seed": 5, "trial": 17,
   "frames": 32, "stride": 20, "rgb": false}
      -> {"items": [meta], "payloads": [...]}
  {"op": "simulate_batch", "items": [{"template_id": .., "seed": .., "trial": ..}, ...],
   "frames": 32, "stride": 20, "frames_codec": "zstd-palette8"}   (codec optional)
      -> {"items": [meta, ...], "payloads": [...]}
  {"op": "check_action", "template_id": .., "seed": .., "action": [x, y, r]}
      -> {"valid": bool}   (PHYRE's own check: inside the scene and overlapping nothing)

A simulated item's meta is {"template_id", "seed", "trial", "action": [x, y, r] (PHYRE's
ball-tier action in [0, 1]^3), "red_ball_px": [x, y, radius] (after PHYRE's quantisation),
"placement": "heuristic" | "fallback", "attempts", "object_types": [N names, the red ball
last], "frames_simulated", "frames_shape": [T, 256, 256]}, and its payloads are
  frames   uint8   (T, 256, 256)     PHYRE colour indices, row 0 = top of the scene; with
                                     "frames_codec": "zstd-palette8", uint8 (nbytes,): those
                                     indices as one zstd frame (level 1), phyray's stored form
  objects  float32 (T, N, 15)        PHYRE's 14 featurised values (x, y, angle, diameter,
                                     shape one-hot x4, colour one-hot x6) + a dynamic flag
  rgb      uint8   (T, 256, 256, 3)  only with "rgb": true: phyre.observations_to_uint8_rgb
Frame k is the scene after stride * k + 1 Box2D steps (60 steps per simulated second), the
first `frames` frames of the paper's recording. Stock PHYRE runs every requested step here (the
goal relation is never satisfied), so `frames_simulated` equals `frames`; should a PHYRE build
return fewer, the last frame is repeated and `frames_simulated` says how many were real.

Any failure is answered with {"error": "..."} (plus "item": {template_id, seed, trial} when a
simulated item failed) and the sidecar keeps serving; it exits when stdin closes. Exit status 3 means phyre could not be imported (wrong interpreter/venv).

Determinism: the scene depends only on (template_id, seed) and the red ball only on
(template_id, seed, trial) through seeded numpy RandomStates, never on process state.
"""

from __future__ import annotations

import json
import os
import platform
import struct
import sys
from importlib import metadata
from typing import BinaryIO, NamedTuple

EXIT_NO_PHYRE = 3

try:
    import numpy as np
    import phyre
    import phyre.action_mappers
    import phyre.simulation
    import phyre.simulator
    import phyre.vis
    from phyre import simulator_bindings
except ImportError as exc:  # the client turns this status into PhyreUnavailable
    sys.stderr.write(f"phyre sidecar: cannot import phyre/numpy: {exc}\n")
    sys.exit(EXIT_NO_PHYRE)

import templates  # after the import check: it needs phyre

try:  # optional: frames leave already encoded ("frame_codecs" in the ping answer)
    import zstandard

    PALETTE8 = "zstd-palette8"  # phyray.data.shards.PALETTE8: zstd of (T, H, W) uint8 indices
    FRAME_ENCODERS = {PALETTE8: zstandard.ZstdCompressor(level=1).compress}
except ImportError:
    FRAME_ENCODERS = {}

# ---------------------------------------------------------------------------------------------
# Red-ball placement (the released generator's "positioning" heuristic, p = 1)
# ---------------------------------------------------------------------------------------------

# Columns of PHYRE's featurised objects.
X, Y, ANGLE, DIAMETER, SHAPE_BALL, SHAPE_BAR = 0, 1, 2, 3, 4, 5

MIN_BALL_RADIUS, MAX_BALL_RADIUS = 0.02, 0.2  # fractions of the scene width
RADIUS_SCALE = 5.0  # ball-tier action radius = 5 x that radius, as in the released generator
EDGE_MARGIN = 0.05
HORIZONTAL_TOLERANCE = 0.05  # in turns (angle / 2 pi), as in the released generator
HEURISTIC_TRIES = 100
FALLBACK_TRIES = 10_000

BALL_MAPPER = phyre.action_mappers.SingleBallActionMapper()


class Placement(NamedTuple):
    action: np.ndarray  # (3,) PHYRE ball-tier action
    user_input: object  # scene_if.UserInput that PHYRE simulates
    how: str  # "heuristic" or "fallback"
    attempts: int


def radius_range(features: np.ndarray) -> tuple[float, float]:
    """Red-ball radius range: [half the smallest ball radius, 4x the largest], clamped."""
    radii = features[features[:, SHAPE_BALL] == 1, DIAMETER] / 2
    if len(radii) == 0:
        return MIN_BALL_RADIUS, MAX_BALL_RADIUS
    return max(radii.min() / 2, MIN_BALL_RADIUS), min(radii.max() * 4, MAX_BALL_RADIUS)


def target_objects(features: np.ndarray) -> np.ndarray:
    """Indices of the objects the red ball may be placed above or below.

    Near-horizontal bars are skipped. The released code tested angle < 0.05 turns only, which
    misses bars tilted slightly clockwise (angle ~ 0.97) or upside down; here a bar counts as
    horizontal when its angle is within the tolerance of 0 or 1/2 turn.
    """
    half_turn = features[:, ANGLE] % 0.5
    tilt = np.minimum(half_turn, 0.5 - half_turn)
    horizontal_bar = (features[:, SHAPE_BAR] == 1) & (tilt < HORIZONTAL_TOLERANCE)
    candidates = np.flatnonzero(~horizontal_bar)
    return candidates if len(candidates) else np.arange(len(features))


def heuristic_action(rng, features, candidates, r_min, r_max) -> np.ndarray:
    """Above or below (50/50) a random object, with x jitter of +-0.8 (r_obj + r_ball)."""
    obj = features[candidates[rng.randint(len(candidates))]]
    obj_radius = obj[DIAMETER] / 2
    radius = rng.uniform(r_min, r_max)
    shift = rng.uniform(-0.8, 0.8) * (obj_radius + radius)
    # The released generator bounds y with the *signed* shift and the object's radius as the
    # edge margin; both kept so the distribution matches the paper's data.
    if rng.uniform() < 0.5:
        y = rng.uniform(obj[Y] + 0.9 * shift, 1.0 - obj_radius - EDGE_MARGIN)
    else:
        y = rng.uniform(obj_radius + EDGE_MARGIN, obj[Y] - 0.9 * shift)
    return np.array([obj[X] + shift, y, radius * RADIUS_SCALE])


def valid_user_input(task: templates.TemplateTask, action: np.ndarray):
    """PHYRE's UserInput for `action`, or None if it leaves the scene or overlaps a body."""
    user_input, inside = BALL_MAPPER.action_to_user_input(action)
    if not inside:
        return None
    # The ball tier keeps no extra space around bodies (SingleBallActionMapper).
    if phyre.simulator.check_for_occlusions(
        task.serialized, user_input, keep_space_around_bodies=False
    ):
        return None
    return user_input


def place_red_ball(task: templates.TemplateTask, trial: int) -> Placement:
    """Deterministic red ball for (template, seed, trial); resampled until PHYRE accepts it.

    After HEURISTIC_TRIES rejected heuristic placements it falls back to a random valid
    action of PHYRE's ball tier with a radius from the same range (the released code drew from
    a pre-sampled discrete action set; this samples the same distribution directly).
    """
    rng = np.random.RandomState([task.template_id, task.seed, trial])
    r_min, r_max = radius_range(task.features)
    candidates = target_objects(task.features)
    for attempt in range(1, HEURISTIC_TRIES + 1):
        action = heuristic_action(rng, task.features, candidates, r_min, r_max)
        user_input = valid_user_input(task, action)
        if user_input is not None:
            return Placement(action, user_input, "heuristic", attempt)
    for attempt in range(HEURISTIC_TRIES + 1, HEURISTIC_TRIES + FALLBACK_TRIES + 1):
        action = BALL_MAPPER.sample(valid_only=True, rng=rng)
        action[2] = rng.uniform(r_min, r_max) * RADIUS_SCALE
        user_input = valid_user_input(task, action)
        if user_input is not None:
            return Placement(action, user_input, "fallback", attempt)
    raise RuntimeError(f"no valid red-ball placement after {FALLBACK_TRIES} fallback tries")


# ---------------------------------------------------------------------------------------------
# Simulation
# ---------------------------------------------------------------------------------------------

Arrays = list[tuple[str, np.ndarray]]


def run_simulation(task: templates.TemplateTask, user_input, steps: int, stride: int):
    """PHYRE's magic_ponies without its extra copy of the frames (2 MB per video).

    Returns (T, H, W) uint8 colour indices (row 0 = bottom) and (T, N, 14) featurised objects.
    """
    _, _, images, objects, n_objects, _, _ = simulator_bindings.magic_ponies_general(
        task.serialized,
        phyre.simulator.serialize(user_input),
        False,  # keep_space_around_bodies: the ball tier keeps none
        steps,
        stride,
        True,  # need_images
        True,  # need_featurized_objects
    )
    images = images.reshape(-1, templates.SCENE_HEIGHT, templates.SCENE_WIDTH)
    objects = objects.reshape(-1, n_objects, phyre.simulator.OBJECT_FEATURE_SIZE)
    # Shifts jars' positions from their base to their centre of mass, as magic_ponies does.
    return images, phyre.simulation.finalize_featurized_objects(objects)


def simulate_item(
    template_id: int, seed: int, trial: int, frames: int, stride: int, rgb: bool, codec=None
) -> tuple[dict, Arrays]:
    """Simulate one video; returns its meta and its named arrays (frames encoded by `codec`,
    one of FRAME_ENCODERS' names, if given)."""
    task = templates.build_task(template_id, seed)
    placement = place_red_ball(task, trial)
    # PHYRE records after each step whose 0-based index is a multiple of the stride.
    steps = stride * (frames - 1) + 1
    images, objects = run_simulation(task, placement.user_input, steps, stride)
    simulated = len(images)
    if simulated < frames:  # see the module docstring: repeat the last frame
        pad = frames - simulated
        images = np.concatenate([images, np.repeat(images[-1:], pad, axis=0)])
        objects = np.concatenate([objects, np.repeat(objects[-1:], pad, axis=0)])
    images, objects = images[:frames], objects[:frames]

    dynamic = np.append(task.dynamic, True).astype(np.float32)  # the red ball is dynamic
    dynamic = np.broadcast_to(dynamic[None, :, None], objects.shape[:2] + (1,))
    # PHYRE rasters have row 0 at the bottom; flip to image order like observations_to_*.
    indices = np.ascontiguousarray(images[:, ::-1])  # (T, 256, 256)
    if codec is not None:
        indices = np.frombuffer(FRAME_ENCODERS[codec](indices), dtype=np.uint8)  # (nbytes,)
    arrays = [
        ("frames", indices),
        ("objects", np.concatenate([objects, dynamic], axis=2).astype(np.float32)),
    ]
    if rgb:
        arrays.append(("rgb", np.stack([phyre.observations_to_uint8_rgb(f) for f in images])))

    ball = placement.user_input.balls[0]
    meta = {
        "template_id": template_id,
        "seed": seed,
        "trial": trial,
        "action": placement.action.tolist(),
        "red_ball_px": [ball.position.x, ball.position.y, ball.radius],
        "placement": placement.how,
        "attempts": placement.attempts,
        "object_types": list(task.object_types) + ["red_ball"],
        "frames_simulated": simulated,
        "frames_shape": [frames, images.shape[1], images.shape[2]],  # (T, H, W) before encoding
    }
    return meta, arrays


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------

MAX_FRAMES = 1000
UINT32 = 2**32  # numpy RandomState seeds are uint32 words


def _int_field(request: dict, key: str, low: int, high: int, default=None) -> int:
    value = request.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value < high:
        raise ValueError(f"{key!r} must be an integer in [{low}, {high}), got {value!r}")
    return value


def _recording(request: dict) -> tuple[int, int]:
    """(frames, stride) of a simulate request; the paper's 32 frames every 20 steps by default."""
    frames = _int_field(request, "frames", 1, MAX_FRAMES + 1, default=32)
    stride = _int_field(request, "stride", 1, MAX_FRAMES + 1, default=20)
    return frames, stride


class ItemError(Exception):
    """A batch item failed; carries the item so that the error names it."""

    def __init__(self, item: dict):
        super().__init__(item)
        self.item = item


def _simulate_many(items: list, frames: int, stride: int, rgb: bool, codec=None) -> tuple[dict, list]:
    metas, payloads = [], []
    for i, item in enumerate(items):
        template_id = _int_field(item, "template_id", 0, UINT32)
        seed = _int_field(item, "seed", 0, UINT32)
        trial = _int_field(item, "trial", 0, UINT32)
        try:
            meta, arrays = simulate_item(template_id, seed, trial, frames, stride, rgb, codec)
        except Exception as exc:
            raise ItemError({"template_id": template_id, "seed": seed, "trial": trial}) from exc
        metas.append(meta)
        payloads.extend((i, key, array) for key, array in arrays)
    return {"items": metas}, payloads


def handle(request: dict) -> tuple[dict, list]:
    """Answer one request: (header, [(item, key, array), ...])."""
    op = request.get("op")
    if op == "ping":
        return {
            "ok": True,
            "python": platform.python_version(),
            "phyre": _phyre_version(),
            "palette": phyre.vis.WAD_COLORS.tolist(),  # what observations_to_uint8_rgb uses
            "frame_codecs": sorted(FRAME_ENCODERS),
        }, []
    if op == "describe_templates":
        return {
            "object_types": list(templates.OBJECT_TYPES),
            "templates": {str(t): list(objs) for t, objs in templates.TEMPLATE_OBJECTS.items()},
        }, []
    if op == "simulate":
        frames, stride = _recording(request)
        return _simulate_many([request], frames, stride, bool(request.get("rgb", False)))
    if op == "simulate_batch":
        frames, stride = _recording(request)
        items = request.get("items")
        if not isinstance(items, list):
            raise ValueError("'items' must be a list of {template_id, seed, trial}")
        codec = request.get("frames_codec")
        if codec is not None and codec not in FRAME_ENCODERS:
            raise ValueError(f"'frames_codec' must be one of {sorted(FRAME_ENCODERS)}, got {codec!r}")
        return _simulate_many(items, frames, stride, rgb=False, codec=codec)
    if op == "check_action":
        task = templates.build_task(
            _int_field(request, "template_id", 0, UINT32), _int_field(request, "seed", 0, UINT32)
        )
        action = np.asarray(request.get("action"), dtype=np.float64)
        if action.shape != (3,):
            raise ValueError(f"'action' must be [x, y, r], got {request.get('action')!r}")
        return {"valid": valid_user_input(task, action) is not None}, []
    raise ValueError(f"unknown op {op!r}")


def _phyre_version() -> str:
    try:
        return metadata.version("phyre")
    except metadata.PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------------------------------------
# Framing and main loop
# ---------------------------------------------------------------------------------------------

LENGTH = struct.Struct(">I")


def read_message(stream: BinaryIO) -> bytes | None:
    """The next message body, or None when the client has closed stdin."""
    prefix = stream.read(LENGTH.size)
    if len(prefix) < LENGTH.size:
        return None
    (size,) = LENGTH.unpack(prefix)
    body = stream.read(size)
    if len(body) < size:
        return None
    return body


def write_message(stream: BinaryIO, header: dict, payloads: list) -> None:
    arrays = [np.ascontiguousarray(array) for _, _, array in payloads]
    if payloads:
        header["payloads"] = [
            {"item": item, "key": key, "dtype": array.dtype.str, "shape": list(array.shape)}
            for (item, key, _), array in zip(payloads, arrays)
        ]
    body = json.dumps(header).encode()
    stream.write(LENGTH.pack(len(body)))
    stream.write(body)
    stream.writelines(memoryview(array).cast("B") for array in arrays)
    stream.flush()


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    while True:
        body = read_message(inp)
        if body is None:
            return
        try:
            header, payloads = handle(json.loads(body))
        except ItemError as exc:
            cause = exc.__cause__
            header, payloads = {"error": f"{type(cause).__name__}: {cause}", "item": exc.item}, []
        except Exception as exc:  # answer and keep serving; the client raises PhyreError
            header, payloads = {"error": f"{type(exc).__name__}: {exc}"}, []
        write_message(out, header, payloads)


def main() -> None:
    # Keep the protocol stream to ourselves: anything else printing to stdout (Python or
    # PHYRE's C++) would corrupt the framing, so fd 1 is pointed at stderr from here on.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
