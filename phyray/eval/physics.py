"""Physics evaluation: ball states parsed from frames, and velocity error against the simulator.

Parsing (docs/paper.md §9). A ball is found by its colour mask, the paper's thresholds: red
R > 127, G < 127, B < 127; blue R < 127, G < 127, B > 127 (in general, channels the colour
saturates above 127 and channels it empties below 127). Two parsers:

- "threshold" (the paper's): centre = centroid of the mask, radius = sqrt(area / π).
- "subpixel" (default): centroid weighted by each pixel's colour coverage, how far the pixel is
  from white toward the ball's colour (`_coverage`), restricted to the mask dilated by one pixel
  (the ball plus its anti-aliased rim) so background noise away from the ball gets no weight;
  radius = sqrt(coverage sum / π).

Pixels map to world units with the renderer's convention (phyray/render.py): pixel (i, j) has its
centre at ((j + 0.5)·s, world − (i + 0.5)·s), s = world / W. The released evaluator converted
with 10/W against a renderer that put pixels at 10·i/(W − 1), so every parsed velocity came out
v·(W − 1)/W, v/256 low at its 256 px: that bias is the paper's ground-truth floor, and it sits in
every cell of its Fig. 3 (docs/paper.md §13). phyray's renderer and parser agree on pixel centres,
so its floors and errors sit about 0.0098 (v/256 at the ID mean speed 2.5) below the paper's in
every ID cell; compare errors above the floor.

Velocity error (all velocities in world units per second, frames `frame_dt` = 0.1 s apart):

- Velocities are backward differences v_t = (x_t − x_{t−1}) / Δ over the interval (t−1, t].
  The reference is the ground truth's exact mean velocity over the same interval,
  (x̂_t − x̂_{t−1}) / Δ. For uniform motion and away from a collision it equals the simulator's
  v̂_t; for the parabola it is the velocity at the interval's midpoint, whereas comparing with
  v̂_t would charge every correct video g·Δ/2 = 0.125 in y.
- Valid frames: t ≥ c (after the c conditioning frames) with the ground-truth ball fully in view;
  an interval counts when both its endpoints are valid, so the first is (c, c + 1]. Collision:
  only frames from the collision frame t_c on count, t_c being the first frame whose ground-truth
  velocity (any ball, any component) differs from the previous frame's by more than 0.1; if no
  jump is that large (slow OOD balls), the row's `impact_frame` (first frame whose velocity
  differs from the initial one at all) is used; a video with neither has no valid frame.
- `vel_err_per_frame` (the paper's formula): mean over valid (ball, interval) pairs of
  ‖v_t − v̂_t‖, the Euclidean norm; `_x` and `_y` are the same mean of |Δv_x| and |Δv_y|.
  The study uses the norm for every scenario: the parabola's law acts on v_y, which the released
  code's x-only error (`_x`, kept for comparison) ignores, and in uniform motion and collision
  the ground-truth v_y is 0, so the norm adds only the vertical drift a generated ball should
  not have (on ground-truth frames it equals `_x` up to parser noise).
- `vel_err_mean_velocity` (the released code's variant, which the paper's Fig. 3 reports,
  docs/paper.md §13): per ball ‖mean_t v_t − mean_t v̂_t‖ over its valid intervals (post-collision
  intervals for collision), averaged over the balls that have any; `_x`, `_y` per component.
- A video with no valid interval gets NaN (callers exclude and count it).

The released evaluator's rules (docs/paper.md §9, §13), where they differ from the above:

- Radius filter (`paper_kept`): it drops videos with a small ground-truth ball (r < 0.6 for one
  ball, r1 or r2 ≤ 0.5 for collision); phyray keeps them, since its renderer draws every ball.
- Collision window (`valid_frames(window="released")`): one window for both balls, t ≥ c with
  both in view, so counting stops for both when the first leaves; the collision frame is found
  in that window's ground-truth x positions (`released_collision_frames`), with no fallback.
- Border: its x has no pixel-centre half pixel, so a missing ball falls back s/2 right of
  phyray's border in phyray's coordinates.

`physics_metrics(paper_filter=True)` applies all three to every velocity metric (default off:
phyray's numbers). `paper_vel_err`, always computed, is the metric of the paper's Fig. 3: the x-only
mean-velocity error under the released rules, NaN for a filtered video. With the threshold parser
it reproduces the released code on phyray's frames (tests/test_paper_eval.py); with the study's
parser it is that parser's paper-comparable number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

PARSERS = ("subpixel", "threshold")
COND_FRAMES = 3
FRAME_DT = 0.1
WORLD_SIZE = 10.0
MASK_THRESHOLD = 127  # the paper's channel threshold
JUMP_THRESHOLD = 0.1  # a ground-truth velocity change above this marks the collision frame
WINDOW_BATCH_PIXELS = 2**18
WINDOWS = ("per_ball", "released")
# The released drivers' radius filter: one ball kept at r >= 0.6, collision at r1, r2 > 0.5.
PAPER_MIN_RADIUS = {"uniform_motion": 0.6, "parabola": 0.6, "collision": 0.5}

VELOCITY_METRICS = (
    "vel_err_per_frame",
    "vel_err_per_frame_x",
    "vel_err_per_frame_y",
    "vel_err_mean_velocity",
    "vel_err_mean_velocity_x",
    "vel_err_mean_velocity_y",
)
# The metric the paper's Fig. 3 reports: the released evaluator's rules (see the docstring).
PAPER_METRIC = "paper_vel_err"
PHYSICS_METRICS = (*VELOCITY_METRICS, PAPER_METRIC, "parse_fail_rate", "parse_failures")


@dataclass(frozen=True)
class ParsedStates:
    """Ball states parsed from frames, in world units (y up).

    positions: (N, T, K, 2) centres, NaN where the ball was not found.
    radii: (N, T, K), NaN where not found.
    found: (N, T, K) bool.
    """

    positions: np.ndarray
    radii: np.ndarray
    found: np.ndarray


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def _colour_rule(color: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The channels a ball colour saturates (255) and empties (0), as (3,) bool masks."""
    color = np.asarray(color)
    high, low = color == 255, color == 0
    if not (high | low).all() or not high.any() or not low.any():
        raise ValueError(
            f"ball colour {color.tolist()}: the parser knows colours whose channels are 0 or 255 "
            "(red, blue, ...)"
        )
    return high, low


def _locator(rules: list[tuple[np.ndarray, np.ndarray]], ball: int) -> int:
    """The channel whose low values locate a ball: one its colour empties and every other
    colour saturates (B for red beside blue), else its first emptied channel."""
    low = rules[ball][1].copy()
    for other, (high, _) in enumerate(rules):
        if other != ball and (low & high).any():
            low &= high
    return int(np.flatnonzero(low)[0])


def _first_last(hit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last True index along the last axis of `hit` (0 and L - 1 where none is)."""
    return hit.argmax(axis=-1), hit.shape[-1] - 1 - hit[..., ::-1].argmax(axis=-1)


def _candidate_boxes(
    stacks: Sequence[np.ndarray], channels: Sequence[int]
) -> dict[int, np.ndarray]:
    """Per frame and channel, the box of pixels below the threshold in the channel, plus a 1-px rim.

    Every pixel of a ball's mask has its locator channel below 127, so the box holds the whole
    mask and its dilation. One pass over the frames: minima over strips of `step` rows give the
    exact column span and the first and last strips with a hit; only those two strips are
    scanned again for the exact rows. Each stack is read in one call for all the channels; the
    rest runs once over every stack's frames together (per-call costs dominate at 64²).

    Args:
        stacks: (M_i, 3, H, W) uint8 planar frames (any strides), one shape (H, W).
        channels: the channels to find boxes in (e.g. every ball's locator).

    Returns:
        {channel: (4, ΣM_i) int64 row_lo, row_hi, col_lo, col_hi}, inclusive, frames in stack
        order; (0, 0, 0, 0) for frames with no candidate pixel.
    """
    channels = sorted(set(channels))
    # Any subset of the three channels is evenly spaced (R and B: every second), so the chosen
    # channels are one view of each stack.
    spacing = max((channels[-1] - channels[0]) // max(len(channels) - 1, 1), 1)
    chosen = slice(channels[0], channels[-1] + 1, spacing)
    c, (_, _, h, w) = len(channels), stacks[0].shape
    # A strip's minimum is numpy's reduction over its rows, vectorised along W (about twice as
    # fast as halving it by elementwise minima, which writes half-size copies). Longer strips
    # make that pass cheaper and the rescan of two strips dearer: 16 rows is the best at 256².
    step = next(s for s in (16, 8, 4, 2, 1) if h % s == 0)
    # (M_i, C, H/step, step, W) views
    strips = [s[:, chosen].reshape(len(s), c, h // step, step, w) for s in stacks]
    bounds = np.cumsum([0] + [len(s) for s in stacks])  # stack i: frames bounds[i]:bounds[i + 1]
    strip_min = np.empty((bounds[-1], c, h // step, w), dtype=np.uint8)  # (M, C, H/step, W)
    for part, lo, hi in zip(strips, bounds[:-1], bounds[1:]):
        np.minimum.reduce(part, axis=3, out=strip_min[lo:hi])
    col_hit = strip_min.min(axis=2) < MASK_THRESHOLD  # (M, C, W)
    first_col, last_col = _first_last(col_hit)  # (M, C) each
    first_strip, last_strip = _first_last(strip_min.min(axis=3) < MASK_THRESHOLD)
    # The first candidate of a strip in row-major order lies in its top row with one; the last
    # strip is read upside down (whole rows, so the copy stays row by row), making its bottom
    # row with a candidate the first. argmax over the flat strip, not a minimum per row.
    top, bottom = np.empty((2, bounds[-1], c), dtype=np.intp)  # flat index of that candidate
    chosen_index = np.arange(c)
    for part, lo, hi in zip(strips, bounds[:-1], bounds[1:]):
        frames = np.arange(hi - lo)[:, None]
        head = part[frames, chosen_index, first_strip[lo:hi]] < MASK_THRESHOLD  # (M_i, C, step, W)
        np.argmax(head.reshape(hi - lo, c, step * w), axis=2, out=top[lo:hi])
        tail = part[frames, chosen_index, last_strip[lo:hi], ::-1] < MASK_THRESHOLD  # bottom-up
        np.argmax(tail.reshape(hi - lo, c, step * w), axis=2, out=bottom[lo:hi])
    top_row = first_strip * step + top // w  # (M, C)
    bottom_row = last_strip * step + step - 1 - bottom // w
    box = np.stack([
        np.maximum(top_row - 1, 0),
        np.minimum(bottom_row + 1, h - 1),
        np.maximum(first_col - 1, 0),
        np.minimum(last_col + 1, w - 1),
    ])  # (4, M, C)
    box[:, ~col_hit.any(axis=2)] = 0
    return {channel: box[:, :, i] for i, channel in enumerate(channels)}


def _gather_windows(planes: np.ndarray, row0: np.ndarray, col0: np.ndarray, height: int, width: int) -> np.ndarray:
    """(M, 3, height, width) copies of each frame's window with top-left pixel (row0, col0)."""
    m, c, h, w = planes.shape
    # sliding_window_view's view, built directly: its argument checks cost ~10 µs a call.
    shape = (m, c, h - height + 1, w - width + 1, height, width)  # (M, 3, H', W', h, w)
    windows = as_strided(planes, shape, planes.strides + planes.strides[2:], writeable=False)
    return windows[np.arange(m), :, row0, col0]


def _dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 binary dilation of (M, h, w) masks, each frame separately.

    Shifts run on the flattened array (one long loop instead of one per short row); the rows'
    first and last pixels, where a flat shift wraps into the neighbouring row or frame, are then
    redone exactly.
    """
    m, h, w = mask.shape
    across = mask.copy()
    flat, source = across.reshape(-1), mask.reshape(-1)
    flat[1:] |= source[:-1]
    flat[:-1] |= source[1:]
    across[:, :, 0] = mask[:, :, 0] | mask[:, :, min(1, w - 1)]
    across[:, :, -1] = mask[:, :, -1] | mask[:, :, max(w - 2, 0)]
    out = across.copy()
    flat, source = out.reshape(-1), across.reshape(-1)
    flat[w:] |= source[:-w]
    flat[:-w] |= source[w:]
    out[:, 0] = across[:, 0] | across[:, min(1, h - 1)]
    out[:, -1] = across[:, -1] | across[:, max(h - 2, 0)]
    return out


def _ball_weights(windows: np.ndarray, high: np.ndarray, low: np.ndarray, parser: str) -> tuple[np.ndarray, int]:
    """Per-pixel weights of one ball in its windows, and the weight of a fully covered pixel.

    "threshold": the paper's mask (saturated channels above 127, emptied channels below).
    "subpixel": the colour coverage on the mask dilated by one pixel. With z emptied and f
    saturated channels, coverage = (z·Σ_high ch − f·Σ_low ch) / (255·z·f), clipped at 0. On the
    white→colour line (what the renderer paints) it is the blend weight, e.g. red:
    (2R − G − B)/510 = (255 − mean(G, B))/255; unlike the distance from white alone it is 0, not
    0.5, on a blue pixel, so a touching ball of the other colour does not pull the centroid.

    Args:
        windows: (M, 3, h, w) uint8.

    Returns:
        (M, h, w) float32 weights holding integers (the sums in `_moments` are then exact) and
        the full-coverage weight.
    """
    mask = windows[:, 0] > MASK_THRESHOLD if high[0] else windows[:, 0] < MASK_THRESHOLD
    for c in (1, 2):
        mask &= windows[:, c] > MASK_THRESHOLD if high[c] else windows[:, c] < MASK_THRESHOLD
    if parser == "threshold":
        return mask.astype(np.float32), 1
    z, f = int(low.sum()), int(high.sum())
    # Summed in int16 (|z·Σ_high − f·Σ_low| <= 510): half the bytes of float32, and no
    # uint8 → float32 casts inside the arithmetic (numpy buffers those); converted exactly at
    # the end. About 20 % faster than the same sums in float32.
    sums = []
    for side in (high, low):
        channels = np.flatnonzero(side)
        summed = windows[:, channels[0]].astype(np.int16)  # (M, h, w)
        for c in channels[1:]:
            np.add(summed, windows[:, c], out=summed)
        sums.append(summed)
    coverage, low_sum = sums  # coverage holds Σ_high until the subtraction
    if z != 1:
        coverage *= z
    if f != 1:
        low_sum *= f
    coverage -= low_sum
    np.maximum(coverage, 0, out=coverage)
    coverage *= _dilate(mask)
    return coverage.astype(np.float32), 255 * z * f


def _moments(weights: np.ndarray, row0: np.ndarray, col0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Σw, Σw·row, Σw·col over (M, h, w) weights, rows/cols in frame pixels; (M,) int64 each.

    The weights are integers and every partial sum of a row or column stays below 2^24, so the
    float32 sums are exact; the moments are then formed in int64. A frame's parse therefore does
    not depend on its window's size or place, i.e. on the batch it is parsed in.
    """
    m, h, w = weights.shape
    per_row = (weights.reshape(m * h, w) @ np.ones(w, dtype=np.float32)).reshape(m, h)
    per_col = np.matmul(np.ones((1, h), dtype=np.float32), weights)[:, 0]  # (M, w)
    per_row, per_col = per_row.astype(np.int64), per_col.astype(np.int64)
    total = per_row.sum(axis=1)
    rows = per_row @ np.arange(h, dtype=np.int64) + row0 * total
    cols = per_col @ np.arange(w, dtype=np.int64) + col0 * total
    return total, rows, cols


def _planar_stacks(frames: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """(M, 3, H, W) planar views of the input videos (no copies for planar-backed frames)."""
    if isinstance(frames, np.ndarray):
        n, t, h, w, c = frames.shape
        return [frames.reshape(n * t, h, w, c).transpose(0, 3, 1, 2)]
    return [video.transpose(0, 3, 1, 2) for video in frames]


def parse_states(
    frames: np.ndarray | Sequence[np.ndarray],
    colors: np.ndarray | Sequence[Sequence[int]],
    parser: str = "subpixel",
    world_size: float = WORLD_SIZE,
) -> ParsedStates:
    """Parse each ball's centre and radius in every frame of a batch of videos.

    Vectorised over all frames. Balls cover a few percent of a frame, so per ball one pass over
    one channel finds a box around its candidate pixels in every frame (`_candidate_boxes`), the
    boxes are cut out at one size per video (its largest; per batch for an (N, T, ...) array),
    and only those windows are parsed.

    Args:
        frames: (N, T, H, W, 3) uint8, or a sequence of N (T, H, W, 3) uint8 videos of one shape
            (e.g. `decode_frames` views, parsed without stacking them into one copy).
        colors: (K, 3) ball colours; ball k is searched by colour k's mask.
        parser: "subpixel" (coverage-weighted, default) or "threshold" (the paper's).
        world_size: side of the square world in world units.

    Returns:
        ParsedStates with (N, T, K, ...) arrays in world units.
    """
    if parser not in PARSERS:
        raise ValueError(f"parser: unknown {parser!r}; choose from {', '.join(PARSERS)}")
    colors = np.asarray(colors, dtype=np.int64).reshape(-1, 3)
    rules = [_colour_rule(color) for color in colors]
    stacks = _planar_stacks(frames)
    n, (_, _, h, w) = len(frames), stacks[0].shape
    if any(s.shape != stacks[0].shape for s in stacks):
        raise ValueError("parse_states: all videos must have the same (T, H, W, 3) shape")
    t, k = sum(len(s) for s in stacks) // n, len(colors)

    centres = np.full((n * t, k, 2), np.nan)  # continuous pixel (col, row) of each ball
    radii = np.full((n * t, k), np.nan)
    found = np.zeros((n * t, k), dtype=bool)
    locators = [_locator(rules, ball) for ball in range(k)]
    boxes = _candidate_boxes(stacks, locators)
    for ball, (high, low) in enumerate(rules):
        total, rows, cols = np.empty((3, n * t), dtype=np.int64)
        done = 0  # frames parsed so far, over all stacks
        for stack in stacks:
            box = boxes[locators[ball]][:, done:done + len(stack)]  # (4, M)
            # Each stack's windows take its own largest box: a batch's largest ball would make
            # every video's windows that big (the parse does not depend on the size, `_moments`).
            height, width = int((box[1] - box[0]).max()) + 1, int((box[3] - box[2]).max()) + 1
            # Frames in batches of ~2^18 window pixels, so windows and weights stay in cache.
            batch = max(1, WINDOW_BATCH_PIXELS // (height * width))
            # Boxes that would run past the frame edge move back inside; they still hold the box.
            row0, col0 = np.minimum(box[0], h - height), np.minimum(box[2], w - width)
            for start in range(0, len(stack), batch):
                part = slice(start, start + batch)
                windows = _gather_windows(stack[part], row0[part], col0[part], height, width)
                weights, full = _ball_weights(windows, high, low, parser)
                out = slice(done, done + len(windows))
                total[out], rows[out], cols[out] = _moments(weights, row0[part], col0[part])
                done += len(windows)
        hit = total > 0  # a mask pixel has positive weight, so this is "the mask is not empty"
        found[:, ball] = hit
        centres[hit, ball, 0] = cols[hit] / total[hit] + 0.5
        centres[hit, ball, 1] = rows[hit] / total[hit] + 0.5
        radii[hit, ball] = np.sqrt(total[hit] / (full * np.pi))

    positions = np.stack(
        [centres[..., 0] * (world_size / w), world_size - centres[..., 1] * (world_size / h)], axis=-1
    )
    return ParsedStates(
        positions=positions.reshape(n, t, k, 2),
        radii=(radii * (world_size / w)).reshape(n, t, k),
        found=found.reshape(n, t, k),
    )


def fill_missing(parsed: ParsedStates, world_size: float = WORLD_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The paper's rule for a ball not found in a frame, vectorised.

    x falls back to the border: 0 for the left ball (ball 0 of a two-ball scene), world_size for
    the right or single ball; y and r keep the ball's last parsed values. Before a ball's first
    detection they take its first parsed values (the released code used NaN there, which
    poisoned the video's mean); a ball never found gets y = world_size / 2, r = 0.

    Returns:
        positions (N, T, K, 2) and radii (N, T, K), with no NaN.
    """
    found = parsed.found
    _, t, k = found.shape
    frame = np.arange(t)[None, :, None]
    last = np.maximum.accumulate(np.where(found, frame, -1), axis=1)
    following = np.minimum.accumulate(np.where(found, frame, t)[:, ::-1], axis=1)[:, ::-1]
    source = np.where(last >= 0, last, following)  # (N, T, K) frame whose y and r are kept
    never = source >= t
    source = np.minimum(source, t - 1)
    y = np.take_along_axis(parsed.positions[..., 1], source, axis=1)
    radii = np.take_along_axis(parsed.radii, source, axis=1)
    y[never], radii[never] = world_size / 2, 0.0
    border = np.where((np.arange(k) == 0) & (k > 1), 0.0, world_size)  # (K,)
    x = np.where(found, parsed.positions[..., 0], border)
    return np.stack([x, y], axis=-1), radii


# ---------------------------------------------------------------------------------------------
# Valid frames and velocity error
# ---------------------------------------------------------------------------------------------


def in_view(gt_positions: np.ndarray, gt_radii: np.ndarray, world_size: float = WORLD_SIZE) -> np.ndarray:
    """(N, T, K) whether each ground-truth ball is fully inside the world square.

    Args:
        gt_positions: (N, T, K, 2); gt_radii: (N, K).
    """
    r = gt_radii[:, None, :, None]
    return ((gt_positions - r >= 0) & (gt_positions + r <= world_size)).all(axis=-1)


def impact_frame_of(row: dict[str, Any]) -> int | None:
    """A collision row's `impact_frame` from its params (None when absent)."""
    value = json.loads(row["params"]).get("impact_frame") if row.get("params") else None
    return None if value is None else int(value)


def collision_frames(gt_velocities: np.ndarray, impact_frames: Sequence[int | None] | None = None) -> np.ndarray:
    """(N,) the first frame whose ground-truth velocity jumped by more than JUMP_THRESHOLD.

    Where no jump is that large, the video's `impact_frames` entry is used; where that is None
    too, T (no collision frame: nothing is post-collision).

    Args:
        gt_velocities: (N, T, K, 2).
        impact_frames: (N,) from each row's params, or None.
    """
    n, t = gt_velocities.shape[:2]
    jump = np.abs(np.diff(gt_velocities, axis=1)).max(axis=(2, 3)) > JUMP_THRESHOLD  # (N, T-1)
    first = np.where(jump.any(axis=1), jump.argmax(axis=1) + 1, t)
    impact_frames = [None] * n if impact_frames is None else impact_frames
    fallback = np.array([t if f is None else f for f in impact_frames], dtype=np.int64)
    return np.where(first < t, first, fallback)


def released_collision_frames(
    gt_positions: np.ndarray, window: np.ndarray, frame_dt: float = FRAME_DT
) -> np.ndarray:
    """(N,) the released evaluator's collision frame; T where it finds none.

    It looks for the impact in the ground-truth x positions of its window's frames: the first
    interval whose velocity (x_t − x_{t−1}) / Δ differs from the previous interval's by more than
    JUMP_THRESHOLD for either ball, from the window's second interval on. That interval holds
    the impact, so post-collision intervals start at its end frame t. Without such a jump (slow
    balls, or an impact before the window's second interval) nothing is post-collision.

    Args:
        gt_positions: (N, T, K, 2).
        window: (N, T) the released window. It is contiguous (a ball that leaves does not come
            back), so consecutive window frames are consecutive frames, as the released
            differences over its list of window frames assume.
    """
    t = window.shape[1]
    x_velocity = np.diff(gt_positions[..., 0].astype(np.float64), axis=1) / frame_dt  # (N, T-1, K)
    # jump[:, j]: the interval ending at frame j + 2 against the one before it.
    jump = (np.abs(np.diff(x_velocity, axis=1)) > JUMP_THRESHOLD).any(axis=2)  # (N, T-2)
    jump &= window[:, :-2] & window[:, 1:-1] & window[:, 2:]
    return np.where(jump.any(axis=1), jump.argmax(axis=1) + 2, t)


def valid_frames(
    gt_positions: np.ndarray,
    gt_velocities: np.ndarray,
    gt_radii: np.ndarray,
    scenario: str,
    cond_frames: int = COND_FRAMES,
    impact_frames: Sequence[int | None] | None = None,
    world_size: float = WORLD_SIZE,
    window: str = "per_ball",
    frame_dt: float = FRAME_DT,
) -> np.ndarray:
    """(N, T, K) frames the velocity error counts: t ≥ c, ball fully in view, post-collision.

    window: "per_ball" (phyray's): each ball counts while it is itself in view, from the
    `collision_frames` frame on. "released": the released evaluator's one window per video,
    t ≥ c with every ball in view, from the `released_collision_frames` frame on. For one ball
    the frames are the same (up to float32 rounding at the border); for collision both balls
    stop counting when the first leaves.
    """
    if window not in WINDOWS:
        raise ValueError(f"window: unknown {window!r}; choose from {', '.join(WINDOWS)}")
    t = gt_positions.shape[1]
    if window == "released":
        # In float64, as the released code compares its (float64) states: a ball whose edge
        # touches the border in float32 arithmetic can lie just outside it in float64.
        gt_positions, gt_radii = gt_positions.astype(np.float64), gt_radii.astype(np.float64)
    valid = in_view(gt_positions, gt_radii, world_size) & (np.arange(t) >= cond_frames)[None, :, None]
    if window == "released":
        valid = valid & valid.all(axis=2, keepdims=True)
    if scenario == "collision":
        if window == "released":
            first = released_collision_frames(gt_positions, valid[:, :, 0], frame_dt)
        else:
            first = collision_frames(gt_velocities, impact_frames)
        valid = valid & (np.arange(t)[None, :] >= first[:, None])[:, :, None]
    return valid


def paper_kept(gt_radii: np.ndarray, scenario: str) -> np.ndarray:
    """(N,) whether each video survives the released evaluator's radius filter.

    The released drivers filter on each record's `init`, the generation radii, i.e. phyray's
    ground-truth radii, not the parsed ones: eval_uniform and eval_parabola drop r < 0.6,
    eval_collision drops r1 <= 0.5 or r2 <= 0.5 ("filter out dispearing balls").

    Args:
        gt_radii: (N, K) ground-truth radii (float32 as stored: a radius stored as 0.6 is kept).
    """
    threshold = PAPER_MIN_RADIUS[scenario]
    kept = gt_radii > threshold if scenario == "collision" else gt_radii >= threshold
    return kept.all(axis=1)


def _mean_where(values: np.ndarray, where: np.ndarray, axis) -> np.ndarray:
    """Mean of `values` over `axis` where `where` holds; NaN where nothing counts."""
    count = where.sum(axis=axis)
    total = np.where(where, values, 0.0).sum(axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)  # divisor >= 1


def velocity_errors(
    positions: np.ndarray, gt_positions: np.ndarray, valid: np.ndarray, frame_dt: float = FRAME_DT
) -> dict[str, np.ndarray]:
    """Both velocity-error variants per video (see the module docstring).

    Args:
        positions: (N, T, K, 2) parsed positions (after `fill_missing`; NaN allowed in frames that
            are not valid).
        gt_positions: (N, T, K, 2) ground truth.
        valid: (N, T, K) valid frames (`valid_frames`).
        frame_dt: seconds between frames.

    Returns:
        {metric: (N,) float64} for VELOCITY_METRICS; NaN for a video without a valid interval.
    """
    velocity = np.diff(positions, axis=1) / frame_dt  # (N, T-1, K, 2): interval (t-1, t]
    reference = np.diff(gt_positions.astype(np.float64), axis=1) / frame_dt
    counted = valid[:, 1:] & valid[:, :-1]  # (N, T-1, K): both endpoints valid
    error = np.where(counted[..., None], velocity - reference, 0.0)
    per_frame = {
        "vel_err_per_frame": _mean_where(np.hypot(error[..., 0], error[..., 1]), counted, (1, 2)),
        "vel_err_per_frame_x": _mean_where(np.abs(error[..., 0]), counted, (1, 2)),
        "vel_err_per_frame_y": _mean_where(np.abs(error[..., 1]), counted, (1, 2)),
    }
    mean_v, mean_ref, ball_counted = mean_velocities(positions, gt_positions, valid, frame_dt)
    ball_error = mean_v - mean_ref
    mean_velocity = {
        "vel_err_mean_velocity": _mean_where(np.hypot(ball_error[..., 0], ball_error[..., 1]), ball_counted, 1),
        "vel_err_mean_velocity_x": _mean_where(np.abs(ball_error[..., 0]), ball_counted, 1),
        "vel_err_mean_velocity_y": _mean_where(np.abs(ball_error[..., 1]), ball_counted, 1),
    }
    return per_frame | mean_velocity


def mean_velocities(
    positions: np.ndarray, gt_positions: np.ndarray, valid: np.ndarray, frame_dt: float = FRAME_DT
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each ball's mean generated and true velocity over its counted intervals (both endpoints
    valid), (N, K, 2) each, NaN where none counts, and whether any counts, (N, K)."""
    counted = (valid[:, 1:] & valid[:, :-1])[..., None]  # (N, T-1, K, 1)
    generated = _mean_where(np.diff(positions, axis=1) / frame_dt, counted, 1)
    true = _mean_where(np.diff(gt_positions.astype(np.float64), axis=1) / frame_dt, counted, 1)
    return generated, true, counted[..., 0].any(axis=1)


def parse_failures(
    found: np.ndarray, visible: np.ndarray, cond_frames: int = COND_FRAMES
) -> tuple[np.ndarray, np.ndarray]:
    """Frames t ≥ c where a fully visible ground-truth ball was not found.

    Returns:
        failures (N,) int64 and their rate among such (ball, frame) pairs (N,), NaN if none.
    """
    judged = visible & (np.arange(found.shape[1]) >= cond_frames)[None, :, None]
    failures = (judged & ~found).sum(axis=(1, 2))
    count = judged.sum(axis=(1, 2))
    rate = np.where(count > 0, failures / np.maximum(count, 1), np.nan)  # divisor >= 1
    return failures, rate


def parse_after_conditioning(
    frames: np.ndarray | Sequence[np.ndarray], num_frames: int, colors: np.ndarray, parser: str = "subpixel",
    cond_frames: int = COND_FRAMES, world_size: float = WORLD_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Ball positions (N, T, K, 2) parsed from frame c − 1 on (missing balls filled by
    `fill_missing`; NaN before), and where each ball was found, (N, T, K).

    Only frames from c − 1 on are parsed: velocities need frames ≥ c, and the last conditioning
    frame gives the fallback y and r for a ball missing right after it."""
    frame_count = frames.shape[1] if isinstance(frames, np.ndarray) else frames[0].shape[0]
    if frame_count != num_frames:
        raise ValueError(f"videos have {frame_count} frames, their ground truth {num_frames}")
    first = max(cond_frames - 1, 0)
    videos = frames[:, first:] if isinstance(frames, np.ndarray) else [video[first:] for video in frames]
    parsed = parse_states(videos, colors, parser, world_size)
    positions, _ = fill_missing(parsed, world_size)
    n = positions.shape[0]
    padded = np.full((n, num_frames) + positions.shape[2:], np.nan)
    padded[:, first:] = positions
    found = np.zeros((n, num_frames, positions.shape[2]), dtype=bool)
    found[:, first:] = parsed.found
    return padded, found


def physics_metrics(
    frames: np.ndarray | Sequence[np.ndarray],
    gt_positions: np.ndarray,
    gt_velocities: np.ndarray,
    gt_radii: np.ndarray,
    colors: np.ndarray,
    scenario: str,
    impact_frames: Sequence[int | None] | None = None,
    parser: str = "subpixel",
    cond_frames: int = COND_FRAMES,
    frame_dt: float = FRAME_DT,
    world_size: float = WORLD_SIZE,
    paper_filter: bool = False,
) -> dict[str, np.ndarray]:
    """Parse a batch of videos of one scenario (`parse_after_conditioning`) and score them
    against the ground truth.

    Args:
        frames: (N, T, H, W, 3) uint8 or a sequence of N (T, H, W, 3) videos.
        gt_positions, gt_velocities: (N, T, K, 2) ground truth; gt_radii: (N, K).
        colors: (K, 3) ball colours.
        scenario: "uniform_motion", "collision" or "parabola".
        impact_frames: (N,) collision rows' `impact_frame` (fallback collision frame).
        parser, cond_frames, frame_dt, world_size: see the module docstring.
        paper_filter: score every velocity metric under the released evaluator's rules (radius
            filter, collision window, border); `paper_vel_err` always is.

    Returns:
        {metric: (N,)} for PHYSICS_METRICS (NaN where a video has nothing to count).
    """
    padded, found = parse_after_conditioning(frames, gt_positions.shape[1], colors, parser, cond_frames, world_size)
    width = frames.shape[3] if isinstance(frames, np.ndarray) else frames[0].shape[2]
    # The released parser's x lacks the pixel-centre half pixel (x = col·s), so the border it
    # puts a missing ball at lies s/2 right of phyray's.
    released_positions = padded.copy()
    released_positions[..., 0] += np.where(found, 0.0, 0.5 * world_size / width)

    truth = (gt_positions, gt_velocities, gt_radii, scenario, cond_frames, impact_frames, world_size)
    released = valid_frames(*truth, window="released", frame_dt=frame_dt)
    released = released & paper_kept(gt_radii, scenario)[:, None, None]
    paper = velocity_errors(released_positions, gt_positions, released, frame_dt)
    metrics = paper if paper_filter else velocity_errors(padded, gt_positions, valid_frames(*truth), frame_dt)
    failures, rate = parse_failures(found, in_view(gt_positions, gt_radii, world_size), cond_frames)
    return metrics | {
        PAPER_METRIC: paper["vel_err_mean_velocity_x"],
        "parse_fail_rate": rate,
        "parse_failures": failures.astype(np.float64),
    }
