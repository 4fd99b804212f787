"""Objects from pixels: palette segmentation, connected components ("blobs") and their links.

PHYRE draws every object flat in one colour of its palette (`phyray.sim.phyre.PHYRE_PALETTE`:
red user ball, gray dynamic, black static, ...) on white, so a video parses into objects without
any learned model:

1. `segment`: each pixel gets the palette colour it shows, or background, or UNKNOWN. A pixel is
   read as a blend of one palette colour with the white background (what anti-aliasing, area
   downsampling and a VAE's blur produce): the colour whose white-to-colour line passes closest
   to the pixel wins, and the pixel is that colour when it covers at least half of it, else
   background. A pixel farther than `colour_tolerance` from every such line is UNKNOWN (ignored).
   Exact palette pixels are exact; light red (PHYRE colour 7) lies on the white-to-red line (an
   18 % red), so it reads as background: it is indistinguishable from a red ball's faint rim.
2. `find_blobs`: 8-connected components of each colour per frame (one `scipy.ndimage.label` call
   per colour over the whole video, with no connection along time), dropped below `min_area`;
   per component its frame, colour, area, centroid, central second moments (orientation and
   principal axes: a rotation-invariant shape descriptor), bounding box and a label image.
3. `link_blobs`: components of frames t-1 and t of the same colour are matched one-to-one by
   `scipy.optimize.linear_sum_assignment` on position (predicted with the previous velocity) and
   area; unmatched ones are explained as merges (two objects of one colour touching become one
   component) and splits (they separate) when the area allows, else they stay unexplained births
   and deaths, which the abnormal-rate checks (phyray/eval/abnormal.py) judge.

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

from dataclasses import dataclass, field
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
    # One-to-one links: the farthest a component may move between frames (fraction of the frame
    # side) and the largest area ratio. PHYRE's fastest ground-truth motion is ~43 px per
    # frame (0.17); links beyond are judged as teleports by the abnormal checks anyway.
    link_distance: float = 0.4
    link_area_ratio: float = 3.0
    # A merge or split is accepted when the parent's area has room for the piece: the piece's
    # area is at most this much larger than the room left (loose, since PHYRE's same-colour
    # objects may overlap when they touch).
    merge_area_slack: float = 0.5
    # Two components' boxes closer than this (px at 256²) may be one object merging or splitting.
    touch_px: float = 3.0

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
    offset = grid - palette[BACKGROUND]  # (B, 3) from the background colour
    lines = palette[1:] - palette[BACKGROUND]  # (K, 3) background-to-colour directions
    length2 = (lines**2).sum(axis=1)  # (K,)
    along = offset @ lines.T  # (B, K)
    coverage = np.clip(along / length2, 0.0, 1.0)  # fraction of the colour in the blend
    residual2 = (offset**2).sum(axis=1, keepdims=True) - 2 * coverage * along + coverage**2 * length2
    best = residual2.argmin(axis=1)  # (B,)
    rows = np.arange(len(grid))
    label = np.where(coverage[rows, best] >= 0.5, best + 1, BACKGROUND).astype(np.uint8)
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
    key = (rgb[..., 0].astype(np.uint32) << (2 * _LUT_BITS)) | (rgb[..., 1].astype(np.uint32) << _LUT_BITS) | rgb[..., 2]
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

    @property
    def touches_border(self) -> np.ndarray:
        """(M,) bool: the component reaches the frame's edge (it may be partly out of view)."""
        _, h, w = self.shape
        b = self.bbox
        return (b[:, 0] == 0) | (b[:, 1] == 0) | (b[:, 2] == h) | (b[:, 3] == w)

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
    into (one each for a plain move; several for a merge / split; none for an unexplained birth
    / death). track (M,) int: id of the one-to-one chain the blob belongs to (a merge, split,
    birth starts a new one). velocity (M, 2) px per frame since the parent (0 without a single
    parent). multiplicity (M,) int: objects the blob is known to hold.
    """

    parents: list[list[int]]
    children: list[list[int]]
    track: np.ndarray
    velocity: np.ndarray
    multiplicity: np.ndarray = field(repr=False)

    def single_parent(self, index: int) -> int | None:
        """The parent of a plain one-to-one continuation, else None."""
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
    """Link each frame's blobs to the previous frame's (see the module docstring)."""
    count = len(blobs)
    t_count, _, side = blobs.shape
    scale = config.scale(side)
    max_distance = config.link_distance * side
    log_ratio_gate = np.log(config.link_area_ratio)
    parents: list[list[int]] = [[] for _ in range(count)]
    children: list[list[int]] = [[] for _ in range(count)]
    velocity = np.zeros((count, 2))
    for t in range(1, t_count):
        previous, current = blobs.in_frame(t - 1), blobs.in_frame(t)
        for colour in np.intersect1d(blobs.colour[previous], blobs.colour[current]):
            p = previous[blobs.colour[previous] == colour]
            c = current[blobs.colour[current] == colour]
            predicted = blobs.centroid[p] + velocity[p]  # (Np, 2)
            distance = np.linalg.norm(predicted[:, None] - blobs.centroid[None, c], axis=2)  # (Np, Nc)
            log_ratio = np.abs(np.log(blobs.area[None, c] / blobs.area[p, None]))
            cost = distance / max_distance + log_ratio / log_ratio_gate
            allowed = (distance <= max_distance) & (log_ratio <= log_ratio_gate)
            rows, cols = linear_sum_assignment(np.where(allowed, cost, 1e6))
            for i, j in zip(rows, cols):
                if allowed[i, j]:
                    parents[c[j]].append(int(p[i]))
                    children[p[i]].append(int(c[j]))
            _explain_merges_and_splits(blobs, p, c, velocity, parents, children, config, scale)
        for j in current:
            if len(parents[j]) == 1 and len(children[parents[j][0]]) == 1:
                velocity[j] = blobs.centroid[j] - blobs.centroid[parents[j][0]]
    track = _tracks(parents, children)
    multiplicity = _multiplicity(blobs, parents, children)
    return Links(parents, children, track, velocity, multiplicity)


def _explain_merges_and_splits(blobs, p, c, velocity, parents, children, config, scale) -> None:
    """Attach unmatched blobs of one colour to a touching blob whose area has room for them."""
    moved = blobs.bbox[p] + np.rint(np.tile(velocity[p][:, ::-1], 2)).astype(np.int64)  # predicted boxes
    near = _box_gap(moved, blobs.bbox[c]) <= config.touch_px * scale  # (Np, Nc)
    slack = 1.0 + config.merge_area_slack

    def room(index: int, others: list[int]) -> float:
        return blobs.area[index] - sum(blobs.area[k] for k in others)

    # A lost previous blob merged into the current blob with the most room left for it.
    for i in np.argsort(-blobs.area[p]):
        if children[p[i]]:
            continue
        candidates = [j for j in np.flatnonzero(near[i]) if room(c[j], parents[c[j]]) * slack >= blobs.area[p[i]]]
        if candidates:
            j = max(candidates, key=lambda k: room(c[k], parents[c[k]]))
            parents[c[j]].append(int(p[i]))
            children[p[i]].append(int(c[j]))
    # A new current blob split off the previous blob with the most room left for it.
    for j in np.argsort(-blobs.area[c]):
        if parents[c[j]]:
            continue
        candidates = [i for i in np.flatnonzero(near[:, j]) if room(p[i], children[p[i]]) * slack >= blobs.area[c[j]]]
        if candidates:
            i = max(candidates, key=lambda k: room(p[k], children[p[k]]))
            parents[c[j]].append(int(p[i]))
            children[p[i]].append(int(c[j]))


def _tracks(parents: list[list[int]], children: list[list[int]]) -> np.ndarray:
    """Track id per blob: a blob continues its parent's track only in a one-to-one link."""
    track = np.empty(len(parents), dtype=np.int64)
    next_id = 0
    for j in range(len(parents)):  # blobs are in frame order, so parents come first
        if len(parents[j]) == 1 and len(children[parents[j][0]]) == 1:
            track[j] = track[parents[j][0]]
        else:
            track[j], next_id = next_id, next_id + 1
    return track


def _multiplicity(blobs: Blobs, parents, children) -> np.ndarray:
    """Objects each blob holds: merges add up; a split into more pieces than the parent held
    raises the parent's count and its one-to-one ancestors' (they were touching all along)."""
    multiplicity = np.ones(len(blobs), dtype=np.int64)
    for t in range(1, blobs.shape[0]):
        for i in blobs.in_frame(t - 1):  # splits first: they may raise the parents' counts
            pieces = children[i]
            if len(pieces) < 2:
                continue
            deficit = len(pieces) - multiplicity[i]
            ancestor = i
            while deficit > 0:
                multiplicity[ancestor] += deficit
                up = parents[ancestor]
                if len(up) != 1 or len(children[up[0]]) != 1:
                    break
                ancestor = up[0]
            # Each piece holds one object; any the parent held beyond that go to the largest.
            largest = max(pieces, key=lambda k: blobs.area[k])
            multiplicity[largest] += multiplicity[i] - len(pieces)
        for j in blobs.in_frame(t):
            up = parents[j]
            if len(up) > 1 or (len(up) == 1 and len(children[up[0]]) == 1):
                multiplicity[j] = sum(multiplicity[k] for k in up)
    return multiplicity
