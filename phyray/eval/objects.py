"""Objects from pixels: palette segmentation, connected components ("blobs") and their links.

PHYRE draws every object flat in one colour of its palette (`phyray.sim.phyre.PHYRE_PALETTE`:
red user ball, gray dynamic, black static, ...) on white, so a video parses into objects without
any learned model:

1. `segment`: each pixel gets the palette colour it shows, or background, or UNKNOWN. A pixel is
   read as a blend of one palette colour with the white background (what anti-aliasing, area
   downsampling and a VAE's blur produce): the colour whose white-to-colour line passes closest
   to the pixel wins, and the pixel is that colour when it covers at least half of it, else
   background. A pixel farther than `colour_tolerance` from every such line is UNKNOWN (ignored).
   Exact palette pixels are exact, except a tint: light red (PHYRE colour 7) lies on the
   white-to-red line (an 18 % red), indistinguishable from a red ball's faint rim, so it is no
   object colour and reads as background.
2. `find_blobs`: 8-connected components of each colour per frame (one `scipy.ndimage.label` call
   per colour over the whole video, with no connection along time), dropped below `min_area`;
   per component its frame, colour, area, centroid, central second moments (orientation and
   principal axes: a rotation-invariant shape descriptor), bounding box and a label image.
3. `link_blobs`: components of frames t-1 and t of the same colour are matched one-to-one by
   `scipy.optimize.linear_sum_assignment` on position (predicted with the previous velocity),
   area and principal spreads; unmatched ones that touch others form merge / split events (two
   objects of one colour touching become one component, or separate), and the rest stay
   unexplained births and deaths, which the abnormal-rate checks (phyray/eval/abnormal.py)
   judge.

Touching objects of one colour. PHYRE's dynamic objects are all gray and pile up: in ground
truth the per-colour component count equals the object count on only about a quarter of the
frames, and PHYRE even leaves objects of one colour overlapping (a bar through a jar's wall,
crossing sticks). A component is therefore a *group* of one or more objects. Its `multiplicity`
counts them: a merge adds its parents' multiplicities, and a split into more pieces than the
parent was known to hold raises the parent's (and its one-to-one ancestors') multiplicity, so
objects that touch at the start but separate later are counted from frame 0 on. Objects that stay
together for the whole video stay one group (their count is a lower bound).

Coordinates: x = column + 0.5, y = row + 0.5 in pixels (row 0 at the top, y down), so a pixel's
centre sits at half-integers; PHYRE's own positions are y-up fractions of the scene
(x_px = x·W, y_px = H − y·H).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from phyray.sim.phyre import PHYRE_PALETTE

BACKGROUND = 0  # palette index 0 is the background (white in PHYRE)
UNKNOWN = 255  # a pixel no palette colour explains
REFERENCE_SIDE = 256  # PHYRE's frame side; pixel thresholds below are stated at this size
_LUT_BITS = 6  # colour lookup table resolution per channel (64³ = 262,144 entries)
# 8-connectivity inside a frame, no connection between frames: one label call per colour labels
# every frame of a video at once.
_IN_FRAME = np.zeros((3, 3, 3), dtype=bool)
_IN_FRAME[1] = True


@dataclass(frozen=True)
class ObjectConfig:
    """How pixels become objects. Pixel sizes are at 256² and scale with the frame side."""

    # RGB distance from a pixel to the nearest white-to-palette-colour line beyond which the
    # pixel is UNKNOWN. Ground truth is exact (distance 0); 40 keeps a VAE's colour noise
    # (a few units) and leaves the midpoints between palette colours (gray-white 50 % blends
    # are 43 from white and from gray, but on the gray line) correctly read.
    colour_tolerance: float = 40.0
    # Components smaller than this (px at 256²) are noise: PHYRE's smallest objects, the
    # static balls of diameter 11 px, cover ~95 px; a generated video's speckle rarely forms
    # a 12-pixel component.
    min_area_px: float = 12.0
    # Plain moves: the farthest a component may move between frames (fraction of the frame
    # side) and the largest ratio of area and of either principal spread. PHYRE's fastest
    # ground-truth motion is ~43 px per frame (0.17); farther links are judged as teleports by
    # the abnormal checks. A rigid object keeps its area within ~15 % (a thin bar's rasterised
    # width flips between 5 and 6 px); anything beyond 1.5x is a merge, split or morph.
    link_distance: float = 0.4
    link_area_ratio: float = 1.5
    # A paired blob next to a merge or split stays a plain move (it is not part of the event)
    # only if it moved at most this share of the side from where it was predicted and kept its
    # area and both spreads within these ratios: a neighbour that merged into it would change
    # them (a ball on a thin bar doubles its minor spread), while piles reshuffle around it.
    identity_distance: float = 0.03
    identity_area_ratio: float = 1.15
    identity_spread_ratio: float = 1.1
    # The cost of leaving a blob unpaired, against a pair's cost (distance / link_distance +
    # |log area ratio| / log link_area_ratio): pairs costing more than twice this stay apart.
    unmatched_cost: float = 0.6
    # Components whose pixels come this close (px at 256², the earlier one moved by its
    # velocity) may be one object merging or splitting; plus, for how far the earlier one may
    # have gone, this share of the side when its velocity is known (a frame of free fall is
    # 0.025) and this share when not (it came out of a merge or split: PHYRE's objects rarely
    # move more than 0.1 of the side per frame near others).
    touch_px: float = 3.0
    known_motion_slack: float = 0.03
    unknown_motion_slack: float = 0.1

    def scale(self, side: int) -> float:
        """Lengths in px at 256² times this give px at `side`."""
        return side / REFERENCE_SIDE


# ---------------------------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _colour_lut(palette_bytes: bytes, tolerance: float) -> np.ndarray:
    """Palette index (or BACKGROUND, UNKNOWN) of every quantised RGB: (64³,) uint8."""
    palette = np.frombuffer(palette_bytes, dtype=np.uint8).reshape(-1, 3).astype(np.float32)
    step = 256 >> _LUT_BITS
    levels = np.arange(0, 256, step, dtype=np.float32) + (step - 1) / 2  # bin centres
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    lines = palette - palette[BACKGROUND]  # (P, 3) background-to-colour directions

    def blend(offset: np.ndarray, colours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coverage of each colour in (N, 3) `offset` from the background, and the squared
        distance from its line: (N, K) each."""
        along = offset @ lines[colours].T
        length2 = (lines[colours] ** 2).sum(axis=1)
        coverage = np.clip(along / length2, 0.0, 1.0)
        residual2 = (offset**2).sum(axis=1, keepdims=True) - 2 * coverage * along + coverage**2 * length2
        return coverage, residual2

    # A tint (light red is 18 % red on white) is a faint rim of its colour, not an object colour.
    colours = np.arange(1, len(palette))
    coverage, residual2 = blend(lines[colours], colours)
    np.fill_diagonal(residual2, np.inf)
    tint = ((residual2 < 10.0**2) & (coverage < 0.5)).any(axis=1)
    colours = colours[~tint]
    coverage, residual2 = blend(grid - palette[BACKGROUND], colours)  # (B, K)
    best = residual2.argmin(axis=1)  # (B,)
    rows = np.arange(len(grid))
    label = np.where(coverage[rows, best] >= 0.5, colours[best], BACKGROUND).astype(np.uint8)
    label[residual2[rows, best] > tolerance**2] = UNKNOWN
    return label


def segment(
    frames: np.ndarray, palette: np.ndarray = PHYRE_PALETTE, colour_tolerance: float = 40.0
) -> np.ndarray:
    """(..., H, W, 3) uint8 RGB -> (..., H, W) uint8 palette indices (BACKGROUND, UNKNOWN).

    Colours are looked up in a 6-bit-per-channel table (decided at each bin's centre, so within
    ±2 units of the exact rule); palette index 0 must be the background.
    """
    lut = _colour_lut(np.ascontiguousarray(palette, dtype=np.uint8).tobytes(), float(colour_tolerance))
    shift = 8 - _LUT_BITS
    rgb = frames >> shift  # (..., H, W, 3) uint8
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    key = (r << (2 * _LUT_BITS)) | (g << _LUT_BITS) | b
    return lut[key]


def unknown_fraction(labels: np.ndarray) -> float:
    """Share of the non-background pixels that no palette colour explains (0 if none)."""
    unknown = np.count_nonzero(labels == UNKNOWN)
    foreground = np.count_nonzero(labels != BACKGROUND)
    return unknown / foreground if foreground else 0.0


# ---------------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blobs:
    """The connected components of one video, sorted by frame then colour (M in all).

    frame (M,) int, colour (M,) palette index, area (M,) px, centroid (M, 2) px (x, y; y down),
    moments (M, 3) central second moments per pixel (μxx, μyy, μxy) px², bbox (M, 4) int
    (row0, col0, row1, col1), exclusive ends; ids (T, H, W) int32 with blob index + 1 at each
    of its pixels and 0 elsewhere; frame_start (T + 1,) so that frame t holds blobs
    frame_start[t]:frame_start[t + 1].
    """

    frame: np.ndarray
    colour: np.ndarray
    area: np.ndarray
    centroid: np.ndarray
    moments: np.ndarray
    bbox: np.ndarray
    ids: np.ndarray
    frame_start: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.ids.shape

    def __len__(self) -> int:
        return len(self.frame)

    def in_frame(self, t: int) -> np.ndarray:
        return np.arange(self.frame_start[t], self.frame_start[t + 1])

    @property
    def axes(self) -> np.ndarray:
        """(M, 2) standard deviations along the principal axes (major, minor), px."""
        xx, yy, xy = self.moments.T
        mean = (xx + yy) / 2
        spread = np.sqrt(((xx - yy) / 2) ** 2 + xy**2)
        return np.sqrt(np.maximum(np.stack([mean + spread, mean - spread], axis=1), 0.0))

    @property
    def orientation(self) -> np.ndarray:
        """(M,) angle of the major axis in radians, in (-π/2, π/2], image axes (y down)."""
        xx, yy, xy = self.moments.T
        return 0.5 * np.arctan2(2 * xy, xx - yy)

    def mask(self, index: int) -> np.ndarray:
        """(H, W) bool mask of one blob."""
        return self.ids[self.frame[index]] == index + 1


def find_blobs(labels: np.ndarray, min_area: float = 12.0) -> Blobs:
    """Connected components of each colour in (T, H, W) palette-index frames.

    Background and UNKNOWN pixels belong to none; components under `min_area` pixels are
    dropped (their pixels get id 0).
    """
    t_count, h, w = labels.shape
    ids = np.zeros(labels.shape, dtype=np.int32)
    present = np.bincount(labels.ravel(), minlength=256)
    present[[BACKGROUND, UNKNOWN]] = 0
    colour_of = [0]  # colour of each provisional id (id 0: none)
    for colour in np.flatnonzero(present):
        mask = labels == colour
        # Label only the rows and columns the colour reaches in some frame (labelling costs
        # in proportion to the volume).
        rows = np.flatnonzero(mask.any(axis=(0, 2)))
        cols = np.flatnonzero(mask.any(axis=(0, 1)))
        window = np.s_[:, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        component, count = ndimage.label(mask[window], structure=_IN_FRAME)
        inside = component > 0
        ids[window][inside] = component[inside] + (len(colour_of) - 1)
        colour_of.extend([int(colour)] * count)
    colour_of = np.asarray(colour_of)

    flat = ids.ravel()
    pixels = np.flatnonzero(flat)  # object pixels only: a few % of the video
    owner = flat[pixels]
    frame_of_pixel, rest = np.divmod(pixels, h * w)
    row, col = np.divmod(rest, w)
    count = len(colour_of)
    area = np.bincount(owner, minlength=count).astype(np.float64)
    # Provisional ids are per colour, not per frame: order them by (frame, colour).
    frame_of_id = np.zeros(count, dtype=np.int64)
    frame_of_id[owner] = frame_of_pixel
    keep = area >= min_area
    keep[0] = False
    kept = np.flatnonzero(keep)
    kept = kept[np.lexsort((colour_of[kept], frame_of_id[kept]))]
    new_id = np.zeros(count, dtype=np.int32)
    new_id[kept] = np.arange(1, len(kept) + 1)
    ids = new_id[ids]
    owner = new_id[owner]  # 0 for dropped components

    x, y = col + 0.5, row + 0.5
    n_kept = len(kept) + 1  # bins: 0 (dropped) and the kept blobs
    sums = [np.bincount(owner, weights=v, minlength=n_kept)[1:] for v in (x, y, x * x, y * y, x * y)]
    n = area[kept]
    mean_x, mean_y = sums[0] / n, sums[1] / n
    moments = np.stack(
        [sums[2] / n - mean_x**2, sums[3] / n - mean_y**2, sums[4] / n - mean_x * mean_y], axis=1
    )
    # Bounding boxes: the extremes of each blob's pixels, from the pixels sorted by blob (the
    # dropped ones, owner 0, sort first and are skipped).
    order = np.argsort(owner, kind="stable")
    starts = np.searchsorted(owner[order], np.arange(1, n_kept))
    row, col = row[order], col[order]
    bbox = np.empty((len(kept), 4), dtype=np.int64)
    if len(kept):
        bbox[:, 0] = np.minimum.reduceat(row, starts)
        bbox[:, 1] = np.minimum.reduceat(col, starts)
        bbox[:, 2] = np.maximum.reduceat(row, starts) + 1
        bbox[:, 3] = np.maximum.reduceat(col, starts) + 1
    frame = frame_of_id[kept]
    return Blobs(
        frame=frame,
        colour=colour_of[kept],
        area=n,
        centroid=np.stack([mean_x, mean_y], axis=1).reshape(-1, 2),
        moments=moments.reshape(-1, 3),
        bbox=bbox,
        ids=ids,
        frame_start=np.searchsorted(frame, np.arange(t_count + 1)),
    )


# ---------------------------------------------------------------------------------------------
# Links over time
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Links:
    """How the blobs of consecutive frames continue (indices into `Blobs`).

    parents[i] / children[i]: blobs of the previous / next frame that blob i continues from /
    into: one each for a plain move; every blob of the other frame in its event for a merge,
    split or both at once; none for an unexplained birth / death. events: each multi-blob event
    as (previous blobs, current blobs). track (M,) int: the first blob of blob i's chain of
    plain moves (its identity over time). velocity (M, 2): px per frame since the parent of a
    plain move (0 otherwise). multiplicity (M,) int: objects the blob is known to hold (0: a
    piece of one that another colour lies across).
    """

    parents: list[list[int]]
    children: list[list[int]]
    events: list[tuple[list[int], list[int]]]
    track: np.ndarray
    velocity: np.ndarray
    multiplicity: np.ndarray

    def single_parent(self, index: int) -> int | None:
        """The parent of a plain one-to-one move, else None."""
        parents = self.parents[index]
        if len(parents) == 1 and len(self.children[parents[0]]) == 1:
            return parents[0]
        return None

    def object_count(self, blobs: Blobs) -> np.ndarray:
        """(T,) objects per frame: the blobs' multiplicities summed."""
        return np.bincount(blobs.frame, weights=self.multiplicity, minlength=blobs.shape[0]).astype(int)


def _box_gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixel gap between boxes (Na, 4) and (Nb, 4) -> (Na, Nb); 0 when they touch or overlap."""
    dy = np.maximum(0, np.maximum(a[:, None, 0] - b[None, :, 2], b[None, :, 0] - a[:, None, 2]))
    dx = np.maximum(0, np.maximum(a[:, None, 1] - b[None, :, 3], b[None, :, 1] - a[:, None, 3]))
    return np.hypot(dx, dy)


def link_blobs(blobs: Blobs, config: ObjectConfig = ObjectConfig()) -> Links:
    """Link each frame's blobs to the previous frame's, colour by colour.

    1. Plain moves: a one-to-one assignment (`linear_sum_assignment`) on the distance from each
       previous blob's predicted centroid (moved by its last velocity) and the largest log
       ratio of area and principal spreads, allowed within `link_distance` of the side and
       `link_area_ratio`.
    2. Events: every blob left over is joined with the blobs of the other frame it touches
       (pixels within `touch_px`, plus a slack for how far the previous one may have moved),
       and through them with their partners; each connected set with blobs on both sides is
       one merge / split event, except that a pair that plainly stayed put stays a plain move
       (see `_events`), and a set of one blob on each side is a plain move too (a morph: the
       abnormal checks judge its change of size). What is still alone is an unexplained birth
       or death.
    """
    count = len(blobs)
    t_count, _, side = blobs.shape
    max_distance = config.link_distance * side
    log_ratio_gate = np.log(config.link_area_ratio)
    touch = config.touch_px * config.scale(side)
    known = np.zeros(count, dtype=bool)  # blobs with a velocity (a plain move's child)
    spread = blobs.axes + 0.5  # (M, 2) px; the half pixel keeps thin bars' ratios sane
    parents: list[list[int]] = [[] for _ in range(count)]
    children: list[list[int]] = [[] for _ in range(count)]
    events: list[tuple[list[int], list[int]]] = []
    velocity = np.zeros((count, 2))
    for t in range(1, t_count):
        previous, current = blobs.in_frame(t - 1), blobs.in_frame(t)
        for colour in np.intersect1d(blobs.colour[previous], blobs.colour[current]):
            p = previous[blobs.colour[previous] == colour]
            c = current[blobs.colour[current] == colour]
            predicted = blobs.centroid[p] + velocity[p]  # (Np, 2)
            distance = np.linalg.norm(predicted[:, None] - blobs.centroid[None, c], axis=2)  # (Np, Nc)
            # Area and both principal spreads (rotation-invariant size and shape) must be
            # similar: a bar and a ball of equal area are not the same object.
            log_ratio_area = np.abs(np.log(blobs.area[None, c] / blobs.area[p, None]))  # (Np, Nc)
            log_ratio_spread = np.abs(np.log(spread[None, c] / spread[p, None])).max(axis=2)  # (Np, Nc)
            log_ratio = np.maximum(log_ratio_area, log_ratio_spread)
            allowed = (distance <= max_distance) & (log_ratio <= log_ratio_gate)
            cost = np.where(allowed, distance / max_distance + log_ratio / log_ratio_gate, np.inf)
            partner = {}
            # A pair that barely moved and kept its area and shape is one object whatever
            # merges or splits around it (a bar lying beside a pile).
            steady = (
                (distance <= config.identity_distance * side)
                & (log_ratio_area <= np.log(config.identity_area_ratio))
                & (log_ratio_spread <= np.log(config.identity_spread_ratio))
            )
            sure = set()
            for i, j in _assign(cost, config.unmatched_cost):
                partner[int(p[i])], partner[int(c[j])] = int(c[j]), int(p[i])
                if steady[i, j]:
                    sure.add(int(p[i]))
            reach = touch + np.where(known[p], config.known_motion_slack, config.unknown_motion_slack) * side
            for before, after in _events(blobs, p, c, partner, sure, velocity, reach):
                if len(before) == 1 and len(after) == 1:
                    parents[after[0]], children[before[0]] = list(before), list(after)
                    velocity[after[0]] = blobs.centroid[after[0]] - blobs.centroid[before[0]]
                    known[after[0]] = True
                elif before and after:
                    events.append((before, after))
                    for j in after:
                        parents[j] = list(before)
                    for i in before:
                        children[i] = list(after)
    track = np.arange(count)
    for j in range(count):  # blobs are in frame order, so a parent comes first
        if len(parents[j]) == 1 and len(children[parents[j][0]]) == 1:
            track[j] = track[parents[j][0]]
    return Links(parents, children, events, track, velocity, _multiplicity(blobs, parents, children, events))


def _assign(cost: np.ndarray, unmatched: float) -> list[tuple[int, int]]:
    """Minimum-cost one-to-one pairs of (Np, Nc) `cost` (inf: not allowed) where leaving a blob
    unpaired costs `unmatched`: a pair is only made if it is cheaper than leaving both alone,
    so a blob is never forced onto a far or mismatched partner."""
    n_p, n_c = cost.shape
    big = 1e6
    square = np.full((n_p + n_c, n_c + n_p), big)
    square[:n_p, :n_c] = np.where(np.isfinite(cost), cost, big)
    square[:n_p, n_c:] = np.where(np.eye(n_p, dtype=bool), unmatched, big)  # previous left alone
    square[n_p:, :n_c] = np.where(np.eye(n_c, dtype=bool), unmatched, big)  # current left alone
    square[n_p:, n_c:] = 0.0
    rows, cols = linear_sum_assignment(square)
    return [(i, j) for i, j in zip(rows, cols) if i < n_p and j < n_c and square[i, j] < big]


def _events(blobs, p, c, partner, sure, velocity, reach) -> list[tuple[list[int], list[int]]]:
    """Group one colour's blobs of frames t-1 (p) and t (c) into connected sets: assigned
    partners, and each unassigned blob with the other frame's blobs it touches (within reach[i]
    px of where previous blob p[i]'s velocity takes it, or of where it was). A `sure` pair (it
    barely moved and kept its size and shape) is then taken out of its set as a plain move,
    unless its change of area could be a merge or split: a neighbour's event did not involve
    it."""
    group = {int(k): int(k) for k in (*p, *c)}  # union-find over blob indices

    def root(k: int) -> int:
        while group[k] != k:
            group[k] = group[group[k]]
            k = group[k]
        return k

    for a, b in partner.items():
        group[root(a)] = root(b)
    # A previous blob may have moved on at its velocity or been stopped by a collision (the
    # floor, a pile): it touches a current blob if either place does.
    moved = blobs.bbox[p] + np.rint(np.tile(velocity[p][:, ::-1], 2)).astype(np.int64)  # predicted boxes
    gaps = np.minimum(_box_gap(moved, blobs.bbox[c]), _box_gap(blobs.bbox[p], blobs.bbox[c]))  # (Np, Nc)
    for i, j in zip(*np.nonzero(gaps <= reach[:, None])):
        before, after = int(p[i]), int(c[j])
        if before in partner and after in partner:
            continue
        if any(_touching(blobs, before, after, shift, reach[i]) for shift in (velocity[before], np.zeros(2))):
            group[root(before)] = root(after)
    sets: dict[int, tuple[list[int], list[int]]] = {}
    for k in p:
        sets.setdefault(root(int(k)), ([], []))[0].append(int(k))
    for k in c:
        sets.setdefault(root(int(k)), ([], []))[1].append(int(k))
    out = []
    for before, after in sets.values():
        # A sure pair leaves the event unless its change of area could be an unpaired member
        # merging into it or splitting off (half that member's area or more).
        unpaired = [k for k in (*before, *after) if k not in partner]
        smallest = min((blobs.area[k] for k in unpaired), default=np.inf)
        peeled = [
            k for k in before
            if k in sure and abs(blobs.area[partner[k]] - blobs.area[k]) < 0.5 * smallest
        ]
        for k in peeled:
            out.append(([k], [partner[k]]))
        rest = ([k for k in before if k not in peeled], [k for k in after if partner.get(k) not in peeled])
        if rest[0] or rest[1]:
            out.append(rest)
    return out


def _touching(blobs: Blobs, before: int, after: int, shift: np.ndarray, reach: float) -> bool:
    """Whether blob `before`, moved by `shift` (x, y px), comes within `reach` px of blob `after`."""
    _, h, w = blobs.shape
    shift = np.rint(shift[::-1]).astype(int)  # (rows, cols)
    margin = int(np.ceil(reach)) + 1
    box = blobs.bbox[after]
    r0, c0 = max(0, box[0] - margin), max(0, box[1] - margin)
    r1, c1 = min(h, box[2] + margin), min(w, box[3] + margin)
    target = blobs.ids[blobs.frame[after], r0:r1, c0:c1] == after + 1
    # The earlier blob's pixels in the same window, shifted by the velocity.
    src = blobs.ids[blobs.frame[before]]
    rows = np.arange(r0, r1) - shift[0]
    cols = np.arange(c0, c1) - shift[1]
    valid_r = (rows >= 0) & (rows < h)
    valid_c = (cols >= 0) & (cols < w)
    mover = np.zeros_like(target)
    mover[np.ix_(valid_r, valid_c)] = src[np.ix_(rows[valid_r], cols[valid_c])] == before + 1
    if not mover.any():
        return False
    distance = ndimage.distance_transform_edt(~target)
    return bool(distance[mover].min() <= reach)


def _multiplicity(blobs: Blobs, parents, children, events) -> np.ndarray:
    """Objects each blob holds. A plain move keeps the count; an event hands its previous blobs'
    total to its current blobs (one each at least, the rest to the largest); an event with more
    current blobs than that total shows the previous blobs held more (they were touching all
    along): the deficit is added to the largest previous blob and its one-to-one ancestors,
    unless another colour only lay across one object for a while (`_drawn_across`)."""
    multiplicity = np.ones(len(blobs), dtype=np.int64)
    events_by_frame = defaultdict(list)
    for before, after in events:
        events_by_frame[blobs.frame[after[0]]].append((before, after))
    for t in range(1, blobs.shape[0]):
        for before, after in events_by_frame[t]:
            if _drawn_across(blobs, before, after, parents, children):
                # One object's pieces: the largest holds it, the rest are fragments (0).
                multiplicity[after] = 0
                multiplicity[max(after, key=lambda k: blobs.area[k])] = multiplicity[before[0]]
                continue
            deficit = len(after) - sum(multiplicity[k] for k in before)
            ancestor = max(before, key=lambda k: blobs.area[k])
            while deficit > 0:
                multiplicity[ancestor] += deficit
                up = parents[ancestor]
                if len(up) != 1 or len(children[up[0]]) != 1:
                    break
                ancestor = up[0]
            largest = max(after, key=lambda k: blobs.area[k])
            multiplicity[largest] += sum(multiplicity[k] for k in before) - len(after)
        for j in blobs.in_frame(t):
            up = parents[j]
            if len(up) == 1 and len(children[up[0]]) == 1:
                multiplicity[j] = multiplicity[up[0]]
    return multiplicity


def _drawn_across(blobs: Blobs, before: list[int], after: list[int], parents, children) -> bool:
    """Whether a split shows one object that another colour's object lay across for a while,
    not objects that were touching: its pieces rejoin whole (each moving plainly until then),
    and they and the other colours' pixels between them form one connected patch (a stick
    crossing a ball at 128² cut a sliver off it for a frame: dev 10012 seed 201; for three
    frames: 10043 seed 202). Touching objects that part leave background between them. Counting
    such a split as two objects made the ball's whole track a group, whose shape is not judged."""
    if len(before) != 1 or len(after) < 2:
        return False
    ends = []
    for piece in after:  # each piece's chain of plain moves
        while len(children[piece]) == 1 and parents[children[piece][0]] == [piece]:
            piece = children[piece][0]
        ends.append(piece)
    rejoined = {tuple(children[k]) for k in ends}  # what each chain runs into
    if len(rejoined) != 1:
        return False
    (merged,) = rejoined
    if len(merged) != 1 or sorted(parents[merged[0]]) != sorted(ends):  # one blob, of these pieces only
        return False
    box = blobs.bbox[after]  # (pieces, 4) row0, col0, row1, col1
    window = blobs.ids[blobs.frame[after[0]], box[:, 0].min() : box[:, 2].max(), box[:, 1].min() : box[:, 3].max()]
    pieces = np.isin(window, np.asarray(after) + 1)
    others = (window > 0) & (blobs.colour[np.maximum(window, 1) - 1] != blobs.colour[after[0]])
    patch, _ = ndimage.label(pieces | others, structure=np.ones((3, 3), dtype=bool))
    return len(np.unique(patch[pieces])) == 1
