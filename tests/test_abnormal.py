"""The abnormal-rate judge (phyray/eval/abnormal.py) and what it stands on.

- objects from pixels: segmentation, and tracks against PHYRE's own object states;
- each check's known answer on a hand-made video (one object misbehaving at a known frame);
- real PHYRE ground truth, and "different but plausible" videos (same template and seed,
  another red-ball placement), not flagged; every corruption of phyray/eval/corrupt.py caught;
- the CLI on a mixed directory, and its one-line errors on bad input.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pyarrow as pa
import pytest
from scipy.optimize import linear_sum_assignment

from phyray.artifacts import Identity, write_product
from phyray.cli import main
from phyray.data.shards import PLANAR_RGB, area_downsample, encode_frames, shard_name, write_shard
from phyray.eval.abnormal import (
    CHECKS,
    abnormal_report,
    find_violations,
    palette_labels,
    summarize_abnormal,
)
from phyray.eval.corrupt import CORRUPTIONS, CorruptionError, corrupt
from phyray.eval.objects import BACKGROUND, UNKNOWN, find_blobs, link_blobs, segment
from phyray.sim.phyre import PHYRE_PALETTE, index_to_rgb

SIDE = 256
FRAMES = 8
G = 6.5  # PHYRE's gravity, px per frame² at 256²
WHITE, RED, PURPLE, GRAY, BLACK = 0, 1, 4, 5, 6

# Real videos: one per object family (bars and jar, balls, sticks, held-out 10066, ...), and two
# "different but plausible" videos: template 10023 seed 1 with other red-ball placements.
GROUND_TRUTH = [(10003, 1, 2), (10016, 1, 2), (10023, 1, 2), (10053, 1, 2), (10066, 1, 2), (10068, 1, 2)]
PLAUSIBLE = [(10023, 1, 3), (10023, 1, 4)]
# PHYRE's featurised objects (PhyreSidecar.simulate): x, y (fractions, y up), shape one-hot
# (ball, bar, jar, sticks) at 4-7, colour one-hot (red, green, blue, purple, gray, black) at 8-13.
SHAPE, COLOUR = slice(4, 8), slice(8, 14)
JAR = 2
COLOUR_INDEX = np.array([RED, 2, 3, PURPLE, GRAY, BLACK])  # one-hot position -> palette index


# ---------------------------------------------------------------------------------------------
# Hand-made videos
# ---------------------------------------------------------------------------------------------

ROWS, COLS = np.mgrid[0:SIDE, 0:SIDE] + 0.5  # pixel centres


def disc(frame: np.ndarray, x: float, y: float, r: float, colour: int) -> None:
    frame[(COLS - x) ** 2 + (ROWS - y) ** 2 <= r * r] = colour


def ellipse(frame: np.ndarray, x: float, y: float, a: float, b: float, colour: int) -> None:
    frame[((COLS - x) / a) ** 2 + ((ROWS - y) / b) ** 2 <= 1] = colour


def scene(falling: bool = True, stop_after: int | None = None) -> np.ndarray:
    """(8, 256, 256) indices: a static black bar, a red and a gray ball resting on the floor
    (the bottom wall), and a gray ball falling freely from rest (hovering from `stop_after`)."""
    frames = np.zeros((FRAMES, SIDE, SIDE), dtype=np.uint8)
    frames[:, 150:156, 30:110] = BLACK
    for t in range(FRAMES):
        disc(frames[t], 60, SIDE - 10, 10, RED)
        disc(frames[t], 180, SIDE - 12, 12, GRAY)
        if falling:
            k = t if stop_after is None else min(t, stop_after)
            disc(frames[t], 140, 40 + G * k * k / 2, 10, GRAY)
    return frames


def from_frame(first: int, erase: tuple | None, draw) -> np.ndarray:
    """The scene, edited from frame `first` on: erase disc (x, y, r), then draw(frame)."""
    frames = scene()
    for t in range(first, FRAMES):
        if erase is not None:
            disc(frames[t], *erase, WHITE)
        draw(frames[t])
    return frames


RESTING = (180, SIDE - 12, 12)  # the gray ball on the floor


def vanish() -> np.ndarray:
    frames = scene()
    for t in range(4, FRAMES):  # the falling ball is gone from frame 4
        disc(frames[t], 140, 40 + G * t * t / 2, 10, WHITE)
    return frames


def appear() -> np.ndarray:
    return from_frame(4, None, lambda f: disc(f, 230, SIDE - 10, 10, GRAY))


def static_moves() -> np.ndarray:
    def shift_bar(frame):
        frame[150:156, 30:110] = WHITE
        frame[150:156, 38:118] = BLACK

    return from_frame(3, None, shift_bar)


def not_rigid() -> np.ndarray:  # the resting ball swells
    return from_frame(5, RESTING, lambda f: disc(f, 180, SIDE - 17, 17, GRAY))


def teleport() -> np.ndarray:  # the resting ball jumps 80 px along the floor
    return from_frame(4, RESTING, lambda f: disc(f, 100, SIDE - 12, 12, GRAY))


def interpenetration() -> np.ndarray:
    """The red ball rests beside the gray one, then slides half into it (drawn over it)."""
    frames = from_frame(0, (60, SIDE - 10, 10), lambda f: disc(f, 158, SIDE - 10, 10, RED))
    for t in range(4, FRAMES):
        disc(frames[t], 158, SIDE - 10, 10, WHITE)
        disc(frames[t], *RESTING, GRAY)
        disc(frames[t], 170, SIDE - 10, 10, RED)
    return frames


def levitation() -> np.ndarray:  # falls for 3 frames, then hangs: c[4] - 2 c[3] + c[2] is not g
    return scene(stop_after=3)


def colour_change() -> np.ndarray:
    return from_frame(5, None, lambda f: disc(f, *RESTING, PURPLE))


# check -> (video, the frame where it must first fire)
KNOWN_ANSWERS = {
    "vanish": (vanish, 4),
    "appear": (appear, 4),
    "static_moves": (static_moves, 3),
    "not_rigid": (not_rigid, 5),
    "teleport": (teleport, 4),
    "interpenetration": (interpenetration, 4),
    "levitation": (levitation, 3),
    "colour_change": (colour_change, 5),
}


def test_hand_made_clean_scene_passes():
    verdict = find_violations(scene())
    assert not verdict.abnormal, verdict.violations


@pytest.mark.parametrize("check", CHECKS)
def test_each_check_fires_alone_at_its_frame(check):
    make, frame = KNOWN_ANSWERS[check]
    verdict = find_violations(make())
    fired = {name: first for name, first in verdict.first.items() if first is not None}
    assert fired == {check: frame}, verdict.violations


def test_a_stretched_ball_is_not_rigid():
    # Same area, other shape: caught by the principal spreads, not by the area.
    frames = from_frame(5, RESTING, lambda f: ellipse(f, 180, SIDE - 8, 18, 8, GRAY))
    verdict = find_violations(frames)
    assert {k: v for k, v in verdict.first.items() if v is not None} == {"not_rigid": 5}


def fired(frames: np.ndarray) -> dict[str, int]:
    return {k: v for k, v in find_violations(frames).first.items() if v is not None}


def land(frames: np.ndarray, x: float, top: float, hover: float, settle: float, rest: int) -> np.ndarray:
    """Draw a gray ball (radius 10) falling from `top` for four frames, resting with its centre
    at `hover` for `rest` frames, then at `settle` for the rest of the video."""
    heights = [top, top + G / 2, top + 2 * G, top + 4.5 * G] + [hover] * (FRAMES - 4)
    heights[4 + rest:] = [settle] * (FRAMES - 4 - rest)
    for t, y in enumerate(heights):
        disc(frames[t], x, y, 10, GRAY)
    return frames


def falling_onto_floor(rest: int) -> np.ndarray:
    """A gray ball falls, stops with its bottom 5 px above the floor (where PHYRE's objects first
    come to rest) and, after `rest` frames there, sinks onto the floor."""
    return land(scene(falling=False), 140, 170, SIDE - 15, SIDE - 10, rest)


def test_resting_above_the_floor_briefly_is_not_levitation():
    assert fired(falling_onto_floor(rest=3)) == {}
    # ... but hanging there for good is.
    assert fired(falling_onto_floor(rest=FRAMES)) == {"levitation": 5}


def test_touching_across_a_rasterised_gap_at_128():
    """At 128², a ball at rest on a bar may show a one-pixel gap (each edge rounds by up to
    half a pixel): touching, not levitating; a 3-pixel gap is levitation."""
    side = 128
    rows, cols = np.mgrid[0:side, 0:side] + 0.5

    def video(gap: int) -> np.ndarray:
        frames = np.zeros((FRAMES, side, side), dtype=np.uint8)
        frames[:, 100:104, 20:80] = BLACK
        frames[:, (cols - 50) ** 2 + (rows - (94 - gap)) ** 2 <= 36] = RED  # bottom row 99 - gap
        return frames

    assert fired(video(1)) == {}
    # Frame 1 is not judged (PHYRE's first step pushes overlapping objects apart): hovering
    # shows from the triple (1, 2, 3).
    assert fired(video(3)) == {"levitation": 2}


def falling_onto_bar(rest: int) -> np.ndarray:
    """A gray ball falls onto a standing gray bar, stops 4 px above its top (as PHYRE's balls do
    after a fast fall: dev 10009 seed 511) and, after `rest` frames there, comes down onto it."""
    frames = np.zeros((FRAMES, SIDE, SIDE), dtype=np.uint8)
    frames[:, 192:SIDE, 134:140] = GRAY  # the bar, standing on the floor
    return land(frames, 137, 120, 192 - 4 - 10, 192 - 10, rest)


def test_resting_above_another_object_briefly_is_not_levitation():
    assert fired(falling_onto_bar(rest=3)) == {}
    # ... but hanging there for good is.
    assert fired(falling_onto_bar(rest=FRAMES)) == {"levitation": 5}


def falling_thin_bar(side: int, hangs_from: int | None = None, longer_at: int | None = None) -> np.ndarray:
    """(8, side, side): a thin gray bar (3 px wide, 30 long) falling under gravity at `side`²;
    from `hangs_from` on it hangs where it was; at frame `longer_at` it is drawn two rows longer
    at its bottom end (its centroid 1 px low for that frame: an end's rasterisation)."""
    frames = np.zeros((FRAMES, side, side), dtype=np.uint8)
    g = G * side / SIDE
    for t in range(FRAMES):
        k = t if hangs_from is None else min(t, hangs_from)
        top = int(round(10 + g * k * k / 2))
        frames[t, top : top + 30 + (2 if t == longer_at else 0), 40:43] = GRAY
    return frames


def test_a_thin_bars_centroid_off_for_one_frame_is_no_levitation():
    """One frame's centroid 1 px off shows as accelerations 1, -2, 1 px per frame² around it:
    -2 is beyond the tolerance at 128² (1.6), the sum over it and a neighbouring frame is not.
    A bar that stops in the air is off by g every frame and by 2 g over two."""
    assert fired(falling_thin_bar(128)) == {}
    assert fired(falling_thin_bar(128, longer_at=4)) == {}
    assert fired(falling_thin_bar(128, hangs_from=4)) == {"levitation": 4}


def pushed_out_at_start(hidden: bool) -> np.ndarray:
    """A gray ball (radius 12) resting on a static platform. In frame 0 its lower half lies
    inside the platform, drawn under it (`hidden`: PHYRE's generator leaves such overlaps) or
    missing (a half ball in the open, 12 px above the platform: a morph); from frame 1 on the
    whole ball rests on the platform, pushed out by PHYRE's first step."""
    frames = np.zeros((FRAMES, SIDE, SIDE), dtype=np.uint8)
    for t in range(FRAMES):
        if t == 0 and not hidden:
            disc(frames[t], 128, 188, 12, GRAY)
            frames[t, 188:200] = WHITE  # the lower half is missing
        else:
            disc(frames[t], 128, 200 if t == 0 else 188, 12, GRAY)
        frames[t, 200:216, 60:200] = BLACK  # drawn over the ball in frame 0
    return frames


def test_an_overlap_left_in_frame_0_may_resolve_in_the_first_step():
    """What frame 0 hid under another colour shows in frame 1: the ball doubles its area and
    changes its shape, explained by a shift of it into the platform's pixels. The same half
    ball in the open, doubling in the first step, is not rigid."""
    assert fired(pushed_out_at_start(hidden=True)) == {}
    assert fired(pushed_out_at_start(hidden=False)) == {"not_rigid": 1}


def ball_left_by_a_sliding_bar(bar: bool) -> np.ndarray:
    """A red ball falls onto the end of a gray bar lying on a static shelf and comes to rest
    5 px above it (as PHYRE's balls do after a fast fall: dev 10031 seed 600, where the bar
    tipped away under the ball); the bar then slides away along the shelf, 30 px a frame, and
    the ball, still for a frame, falls on past the shelf's end. Without the bar (`bar` False)
    the ball stops in the air."""
    frames = np.zeros((FRAMES, SIDE, SIDE), dtype=np.uint8)
    rest = 100.0  # the ball's centre at rest; its bottom row is 107, the bar's top 113
    heights = [rest - 2 - 4.5 * G, rest - 2 - 4 * G, rest - 2 - 2.5 * G, rest - 2, rest, rest, rest + G, rest + 3 * G]
    frames[:, 119:125, 90:200] = BLACK  # the shelf, its left end 22 px right of the ball
    for t, y in enumerate(heights):
        disc(frames[t], 60, y, 8, RED)
        if bar:
            shift = 30 * max(0, t - 4)
            frames[t, 113:119, 50 + shift : 130 + shift] = GRAY
    return frames


def test_a_ball_left_by_the_object_it_landed_on_is_not_levitating():
    """Held from below within the floor's slack in the frame it stops, the ball landed: its
    stop (frame 4, judged over frames 3-5: 5 px from the bar, farther than the 2 px its motion
    adds to the contact reach), its frame at rest and its fall after the bar left are no
    levitation. Stopping where nothing holds it is."""
    assert fired(ball_left_by_a_sliding_bar(bar=True)) == {}
    assert fired(ball_left_by_a_sliding_bar(bar=False)) == {"levitation": 3}


def thrown_down(jump_at: int | None = None) -> np.ndarray:
    """A gray ball thrown down at 40 px per frame falls under gravity: steps 43, 50, 56, 63 px,
    the last two beyond the teleport limit (51 px at 256²) but each its predecessor plus g; with
    `jump_at`, it is drawn 60 px to the right from that frame on."""
    frames = np.zeros((5, SIDE, SIDE), dtype=np.uint8)
    for t in range(5):
        shift = 60 if jump_at is not None and t >= jump_at else 0
        disc(frames[t], 60 + shift, 12 + 40 * t + G * t * t / 2, 10, GRAY)
    return frames


def test_fast_motion_is_no_teleport_but_a_jump_is():
    assert fired(thrown_down()) == {}
    assert fired(thrown_down(jump_at=4))["teleport"] == 4


def test_a_bar_sunk_into_the_floor_keeps_its_shape():
    """A bar standing on the floor sinks 12 px below the frame's edge for two frames (16 % of it
    hidden, as fast PHYRE objects do): no violation; halved there, it is not rigid."""

    def video(top_from_4: int) -> np.ndarray:
        frames = scene(falling=False)
        for t in range(FRAMES):
            frames[t, (top_from_4 if t in (4, 5) else 180) : SIDE, 200:212] = GRAY
        return frames

    assert fired(video(192)) == {}
    assert fired(video(218)) == {"not_rigid": 4}


def test_a_bar_coming_out_of_the_floor_is_rigid():
    """A bar standing sunk into the floor comes 12 px farther out (PHYRE's standing bars hide
    about 14 px below the frame's edge and show it as they topple): its area grows by what the
    added length covers at its width. Coming 24 px out is more than a wall hides; as long, but
    thinner at the same area, it is stretched."""

    def video(top: int, width: int = 6) -> np.ndarray:
        frames = scene(falling=False)
        for t in range(FRAMES):
            if t < 4:
                frames[t, 200:SIDE, 100:106] = GRAY
            else:
                frames[t, top:SIDE, 100 : 100 + width] = GRAY
        return frames

    assert fired(video(188)) == {}
    assert fired(video(176)) == {"not_rigid": 4}
    assert fired(video(172, width=4)) == {"not_rigid": 4}


def test_a_bar_out_of_the_floor_keeps_its_whole_area_once_lifted():
    """A bar sunk into the floor comes out (frame 4) and then lifts off it for a frame, as a
    toppling bar bounces: what it showed coming out is its whole area, not a growth."""
    frames = scene(falling=False)
    for t in range(FRAMES):
        top = 200 if t < 4 else 188
        lift = 2 if t == 6 else 0
        frames[t, top - lift : SIDE - lift, 100:106] = GRAY
    assert fired(frames) == {}


def gray_bar_on_floor(cols: slice) -> np.ndarray:
    """(8, 256, 256) indices: a gray bar lying on the floor (rows 250-255) over `cols`."""
    frames = np.zeros((FRAMES, SIDE, SIDE), dtype=np.uint8)
    frames[:, SIDE - 6 :, cols] = GRAY
    return frames


def test_same_colour_objects_trading_places_are_no_violation():
    """Gray objects trading places (dev templates 10000, 10040): a ball (radius 9) resting on a
    gray bar, which lies on a static shelf, rolls off its end onto the shelf at frame 4 while a
    falling gray ball (radius 8) lands on the bar; the linker pairs the falling ball with the
    one that rolled off, 27 % larger. The gray cluster keeps its area: nothing fires. Had the
    falling ball not landed (gone), the cluster would lose it: it vanished."""

    def video(lands: bool) -> np.ndarray:
        frames = np.zeros((FRAMES, SIDE, SIDE), dtype=np.uint8)
        frames[:, 200:206, 40:220] = BLACK  # the shelf
        frames[:, 194:200, 100:200] = GRAY  # the bar on it
        for t in range(FRAMES):
            if t < 4:
                disc(frames[t], 110, 185, 9, GRAY)  # resting on the bar
                disc(frames[t], 106, 186 + G * (t * t - 16) / 2, 8, GRAY)  # falling onto it
            else:
                disc(frames[t], 82, 191, 9, GRAY)  # rolled off its left end onto the shelf
                if lands:
                    disc(frames[t], 106, 186, 8, GRAY)
        return frames

    assert fired(video(lands=True)) == {}
    assert fired(video(lands=False)) == {"vanish": 4}


def test_a_ball_thrown_out_of_a_group_beyond_the_linkers_reach_is_no_appearance():
    """A gray ball resting on a gray bar (one blob) is thrown 50 px off it in one frame, then
    flies freely: no link reaches it, but the bar's blob lost what the ball carries away. The
    same ball thrown out of nothing (the bar never held it) appears."""

    def video(held: bool) -> np.ndarray:
        frames = gray_bar_on_floor(slice(40, 140))
        for t in range(FRAMES):
            if t < 4 and held:
                disc(frames[t], 130, SIDE - 14, 8, GRAY)
            if t >= 4:
                k = t - 4
                disc(frames[t], 170 + 5 * k, 215 - 20 * k + G * k * k / 2, 8, GRAY)
        return frames

    assert fired(video(held=True)) == {}
    assert fired(video(held=False)) == {"appear": 4}


def test_static_blends_next_to_another_object_do_not_count():
    """At 64², static pixels next to another object may flip (their colours blend); as many
    flipping away from any object are the static object moving."""
    side = 64

    def video(cols: slice) -> np.ndarray:
        frames = np.zeros((FRAMES, side, side), dtype=np.uint8)
        frames[:, 30:35, 5:45] = BLACK  # 200 px: 10 may change
        frames[:, 26:30, 20:32] = GRAY  # a gray object on top of it
        frames[1:, 30, cols] = WHITE
        return frames

    assert "static_moves" not in fired(video(slice(18, 34)))  # 16 px, all within 2 px of the gray
    assert fired(video(slice(1, 17))).get("static_moves") == 1  # 12 px of them beyond it


def crossed_for_a_frame(parted: bool, stretched_from: int | None = None) -> np.ndarray:
    """(8, 256, 256): a resting gray ball (an ellipse from `stretched_from`) that a thin black
    line crosses in frame 4, cutting a sliver off it; or (`parted`) two touching gray balls that
    part by 3 px in frame 4 and touch again."""
    frames = np.zeros((FRAMES, SIDE, SIDE), dtype=np.uint8)
    for t in range(FRAMES):
        if parted:
            gap = 3 if t == 4 else 0
            disc(frames[t], 100, SIDE - 20, 20, GRAY)
            disc(frames[t], 140 + gap, SIDE - 20, 20, GRAY)
        elif stretched_from is not None and t >= stretched_from:
            ellipse(frames[t], 128, SIDE - 12, 30, 12, GRAY)
        else:
            disc(frames[t], 128, SIDE - 20, 20, GRAY)
    if not parted:
        frames[4, :, 141:144] = BLACK
    return frames


def test_an_object_another_colour_crosses_for_a_frame_stays_one_object():
    # The cut-off sliver rejoins the ball with only the black line between them: one object,
    # so the ball's track keeps its shape check; two balls that part show background between.
    blobs = find_blobs(crossed_for_a_frame(parted=False))
    links = link_blobs(blobs)
    assert len(blobs.in_frame(4)) == 3  # ball, sliver, line
    assert links.object_count(blobs).tolist() == [1, 1, 1, 1, 2, 1, 1, 1]
    blobs = find_blobs(crossed_for_a_frame(parted=True))
    assert link_blobs(blobs).object_count(blobs).tolist() == [2] * FRAMES
    # A ball stretched into an ellipse (same area) before the crossing is still not rigid.
    assert fired(crossed_for_a_frame(parted=False, stretched_from=2)).get("not_rigid") == 2


def test_segmentation_reads_blends_and_noise():
    palette = PHYRE_PALETTE.astype(float)
    white, gray, red = palette[WHITE], palette[GRAY], palette[RED]
    pixels = np.array(
        [
            white, gray, red, palette[BLACK],
            0.7 * gray + 0.3 * white,  # mostly gray: gray
            0.3 * gray + 0.7 * white,  # a faint rim: background
            red + [-6, 5, 4],  # a VAE's noise
            [255, 0, 0],  # pure red is no PHYRE colour
            palette[7],  # light red is a faint red: background (see objects.py)
        ]
    ).round().astype(np.uint8)[None]  # (1, 9, 3)
    np.testing.assert_array_equal(
        segment(pixels)[0], [WHITE, GRAY, RED, BLACK, GRAY, BACKGROUND, RED, UNKNOWN, BACKGROUND]
    )


# ---------------------------------------------------------------------------------------------
# Real PHYRE videos
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phyre_videos(phyre_env):
    from phyray.sim.phyre import PhyreSidecar

    with PhyreSidecar() as sidecar:
        videos = sidecar.simulate_batch(GROUND_TRUTH + PLAUSIBLE)
    return videos


def test_tracks_match_phyre_states(phyre_videos):
    """Where an object is its own component (no other object of its colour inside its box),
    the centroid sits on PHYRE's centre of mass; object counts are right where every object is
    separately visible, and merged groups are counted from when they part."""
    errors, jar_errors = [], []
    counted = right = separate = separate_right = 0
    for video in phyre_videos:
        objects = video["objects"]  # (T, N, 15)
        blobs = find_blobs(video["frames"])
        links = link_blobs(blobs)
        counts = links.object_count(blobs)
        colours = COLOUR_INDEX[objects[0, :, COLOUR].argmax(axis=1)]  # (N,)
        for t in range(objects.shape[0]):
            xy = np.stack([objects[t, :, 0] * SIDE, SIDE - objects[t, :, 1] * SIDE], axis=1)  # image px
            here = blobs.in_frame(t)
            counted += 1
            right += counts[t] == len(colours)
            if all(np.sum(blobs.colour[here] == c) == np.sum(colours == c) for c in np.unique(colours)):
                separate += 1
                separate_right += counts[t] == len(colours)
            for colour in np.unique(colours):
                mine, theirs = here[blobs.colour[here] == colour], np.flatnonzero(colours == colour)
                distance = np.linalg.norm(xy[theirs][:, None] - blobs.centroid[mine][None], axis=2)
                for i, j in zip(*linear_sum_assignment(distance)):
                    box = blobs.bbox[mine[j]]
                    inside = ((xy[theirs, 1] >= box[0]) & (xy[theirs, 1] <= box[2])
                              & (xy[theirs, 0] >= box[1]) & (xy[theirs, 0] <= box[3]))
                    if inside.sum() == 1 and inside[i] and links.multiplicity[mine[j]] == 1:
                        is_jar = objects[t, theirs[i], SHAPE].argmax() == JAR
                        (jar_errors if is_jar else errors).append(distance[i, j])
    errors, jar_errors = np.array(errors), np.array(jar_errors)
    print(f"\ncentroid error: {len(errors)} balls/bars/sticks, max {errors.max():.2f} px, "
          f"p99 {np.percentile(errors, 99):.2f}; {len(jar_errors)} jars, median {np.median(jar_errors):.2f}; "
          f"count right on {right / counted:.0%} of frames, {separate_right}/{separate} where all are apart")
    assert len(errors) > 500 and np.mean(errors < 1.0) >= 0.99
    # PHYRE's jar position is its polygons' centre of mass, ~1 px from its drawn pixels' centroid.
    assert np.median(jar_errors) < 1.5
    assert separate > 50 and separate_right / separate >= 0.99
    assert right / counted >= 0.6


def test_ground_truth_and_plausible_videos_are_not_flagged(phyre_videos):
    records = abnormal_report(
        {"video_id": f"t{v['template_id']}-s{v['seed']}-r{v['trial']}", "frames": index_to_rgb(v["frames"]),
         "split": "eval", "template_id": v["template_id"]}
        for v in phyre_videos
    )
    assert [r["video_id"] for r in records if r["abnormal"]] == []
    assert len(records) == len(GROUND_TRUTH) + len(PLAUSIBLE)
    rows = summarize_abnormal(records, resamples=100)
    pooled = {r["metric"]: r for r in rows if r["template_id"] == "all"}
    assert pooled["abnormal_rate"]["value"] == 0.0 and pooled["abnormal_rate"]["n"] == 8
    assert set(pooled) == {"abnormal_rate", *(f"abnormal_rate/{c}" for c in CHECKS)}
    assert {r["template_id"] for r in rows} == {"all", "10003", "10016", "10023", "10053", "10066", "10068"}


# Real ground truth from the dev split (seeds 400-411) that the judge flagged before it judged
# objects of one colour by their cluster (docs/abnormal.md, 2026-12-05): (template, seed,
# trial), side, what fired then.
# Real videos that fooled earlier rules (dev seeds), with the rule that fired on each.
HARD_CASES = [
    ((10018, 409, 990), 256, "not_rigid: a standing bar paired with the stick the crossing let go"),
    ((10040, 411, 990), 256, "not_rigid: a ball that rolled into a pile paired with one leaving it"),
    ((10063, 410, 990), 256, "teleport: the same, 73 px apart"),
    ((10062, 411, 990), 256, "appear: a ball flung out of a group beyond the linker's reach"),
    ((10035, 402, 991), 256, "vanish: a bar fell into a pile while another left it"),
    ((10015, 400, 990), 256, "not_rigid: a bar out of the floor lifting off it for a frame"),
    ((10000, 409, 990), 128, "not_rigid: a toppled bar paired with a stick, at 128²"),
    ((10029, 503, 990), 256, "teleport: a ball that fell fast into a pile paired with one leaving it"),
    ((10009, 511, 990), 256, "levitation: a ball 4 px above a standing bar for three frames after a fall"),
    ((10047, 505, 990), 128, "levitation: a thin bar's centroid 0.6 px off for a frame, at 128²"),
    ((10057, 604, 990), 256, "not_rigid: a static ball a gray bar lay across in frame 0, freed in the first step"),
    ((10031, 600, 990), 256, "levitation: a ball 5 px above a bar's end that tipped away under it"),
    ((10039, 602, 990), 256, "vanish: a ball joined a jar as a bar left it (a birth the cluster explains)"),
    ((10040, 602, 990), 128, "not_rigid: a static bar's end blended with a ball resting on it, at 128²"),
    ((10042, 609, 990), 256, "not_rigid: sticks trading places in a pile beside a bar sunk in the floor"),
]


@pytest.fixture(scope="module")
def hard_videos(phyre_env):
    from phyray.sim.phyre import PhyreSidecar

    with PhyreSidecar() as sidecar:
        return sidecar.simulate_batch([item for item, _, _ in HARD_CASES])


def test_real_videos_that_fooled_earlier_rules_are_not_flagged(hard_videos):
    for video, (item, side, was) in zip(hard_videos, HARD_CASES):
        labels = video["frames"]
        if side != labels.shape[1]:
            labels = palette_labels(area_downsample(index_to_rgb(labels), side))
        assert fired(labels) == {}, (item, side, was)


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_every_corruption_is_caught(phyre_videos, kind):
    made = 0
    for index, video in enumerate(phyre_videos[: len(GROUND_TRUTH)]):
        try:
            corrupted = corrupt(video["frames"], kind, np.random.default_rng(index))
        except CorruptionError:  # e.g. no static object to move in this template
            continue
        made += 1
        assert 1 <= corrupted.frame < len(video["frames"])
        changed = np.flatnonzero((corrupted.frames != video["frames"]).any(axis=(1, 2)))
        assert changed.min() == corrupted.frame, (kind, index)
        verdict = find_violations(corrupted.frames)
        assert verdict.abnormal, (kind, index, corrupted.details)
    assert made >= 3


# Corruptions of the dev split (bench/abnormal.py's seeding: corruption seed 0) that first
# drafts of later rules let through: (template, task seed, kind, side, what let it through).
HARD_CORRUPTIONS = [
    (10018, 200, "morph", 128, "a frame-1 shrink of an object touching another colour in frame 0"),
    (10022, 200, "teleport", 256, "pasted 91 px away within the pile's chained cluster"),
    (10020, 202, "morph", 256, "a stretched small static ball, below static_moves' 5 % of all static pixels"),
    (10028, 202, "morph", 256, "a bar stretched into the floor: the edge hides as much as it lost"),
    (10012, 201, "morph", 128, "a stretched ball a stick cuts for a frame: counted as two objects, never shape-checked"),
]


@pytest.fixture(scope="module")
def hard_corruption_videos(phyre_env):
    from phyray.sim.phyre import PhyreSidecar

    with PhyreSidecar() as sidecar:
        return sidecar.simulate_batch([(template, seed, 990) for template, seed, *_ in HARD_CORRUPTIONS])


def test_corruptions_that_fooled_first_drafts_are_caught(hard_corruption_videos):
    for video, (template, seed, kind, side, was) in zip(hard_corruption_videos, HARD_CORRUPTIONS):
        rng = np.random.default_rng([0, template, seed, CORRUPTIONS.index(kind)])
        labels = corrupt(video["frames"], kind, rng).frames
        if side != labels.shape[1]:
            labels = palette_labels(area_downsample(index_to_rgb(labels), side))
        assert find_violations(labels).abnormal, (template, seed, kind, side, was)


# ---------------------------------------------------------------------------------------------
# The CLI
# ---------------------------------------------------------------------------------------------


def write_dataset(out, table: pa.Table) -> None:
    """A one-shard dataset product of `table` (no Ray)."""
    write_product(
        out, Identity("dataset", {"test": out.name}), [shard_name(0)], [table.num_rows],
        lambda missing: [write_shard(table, out / shard_name(0))],
    )


@pytest.fixture(scope="module")
def ground_truth_table(phyre_videos):
    from phyray.data.combinatorial import build_shard
    from phyray.sim.phyre import PhyreSidecar

    sidecar = PhyreSidecar()  # not started: its answers are the videos the fixture simulated
    items = GROUND_TRUTH[:3]
    sidecar.simulate_batch = lambda _, frames_codec=None: phyre_videos[: len(items)]
    table, _ = build_shard(sidecar, {"items": [list(i) for i in items], "split": "eval_in_template"})
    return table


def test_cli_scores_a_mixed_directory(tmp_path, ground_truth_table, capsys):
    write_dataset(tmp_path / "gt", ground_truth_table)
    code = main(["eval", "corrupt", "--reference", str(tmp_path / "gt"), "--out", str(tmp_path / "mixed"),
                 "--kinds", "vanish,teleport,colour_swap"])
    assert code == 0, capsys.readouterr().err
    assert "12 labelled videos" in capsys.readouterr().out
    code = main(["eval", "abnormal", "--videos", str(tmp_path / "mixed"), "--out", str(tmp_path / "r" / "report.json"),
                 "--quiet"])
    assert code == 0, capsys.readouterr().err
    with open(tmp_path / "r" / "abnormal.csv") as handle:
        flags = {row["video_id"]: row for row in csv.DictReader(handle)}
    assert len(flags) == 12
    for video_id, row in flags.items():
        kind = video_id.rsplit("-", 1)[1]
        assert row["abnormal"] == str(kind != "none"), video_id
    assert all(flags[v]["colour_change"] == "True" for v in flags if v.endswith("-colour_swap"))
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    pooled = {r["metric"]: r["value"] for r in report if r["template_id"] == "all"}
    assert pooled["abnormal_rate"] == 0.75
    assert (tmp_path / "r" / "report.csv").is_file()


def bad_input(tmp_path, capsys, *args) -> str:
    code = main(["eval", "abnormal", *args, "--out", str(tmp_path / "report.json"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    return err


def test_cli_bad_input_is_one_line_naming_the_file(tmp_path, ground_truth_table, capsys):
    (tmp_path / "empty").mkdir()
    err = bad_input(tmp_path, capsys, "--videos", str(tmp_path / "empty"))
    assert str(tmp_path / "empty") in err and "manifest.json" in err

    write_dataset(tmp_path / "noframes", ground_truth_table.drop_columns(["frames"]))
    err = bad_input(tmp_path, capsys, "--videos", str(tmp_path / "noframes"))
    assert "shard-00000.parquet" in err and "no frames" in err

    # Ball-scene colours (pure red, pure blue) are not PHYRE's palette.
    row = ground_truth_table.slice(0, 1).to_pylist()[0]
    from phyray.eval.abnormal import phyre_indices

    foreign = np.array([[255, 255, 255], [255, 0, 0], [0, 0, 255]], dtype=np.uint8)
    indices = phyre_indices(row)
    rgb = foreign[np.where(indices == WHITE, 0, np.where(indices == RED, 1, 2))]
    table = ground_truth_table.slice(0, 1)
    table = table.set_column(table.schema.get_field_index("frames"), "frames", pa.array([encode_frames(rgb)]))
    table = table.set_column(table.schema.get_field_index("frames_encoding"), "frames_encoding", pa.array([PLANAR_RGB]))
    write_dataset(tmp_path / "foreign", table)
    err = bad_input(tmp_path, capsys, "--videos", str(tmp_path / "foreign"))
    assert "shard-00000.parquet" in err and "not a PHYRE video" in err
