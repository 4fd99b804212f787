"""Attribute readout from pixels: the colour, shape, size and position of the one object of an
attribute-probe video (paper §5.3), frame by frame, whatever colour or shape the model drew.

The velocity parser (`phyray.eval.physics`) finds a ball by its known colour; a probe rollout may
change the colour, so here the object is every non-white pixel, weighted by its coverage
w = max over channels of (255 - value) / 255 (exact for the probe colours, each of which has a
zero channel); coverage below `BACKGROUND_TOL` is a generated frame's tint, not object. From w:
- position: the weighted centroid (world units, y up), hence the velocity;
- colour: the nearest of the candidate colours to the core pixels' mean colour (w > 0.5);
- shape, from two numbers that do not depend on the object's size:
  - squareness Q = (m40 + m04 - 6·m22) / (m40 + m04 + 2·m22), from the central 4th moments:
    0 for any rotation-symmetric shape (disc, ring), -3/7 for an axis-aligned square;
  - hollowness: the coverage at the centroid relative to the core (0 for a ring's hole, 1 for a
    disc's middle);
- size: from the area Σw as that shape's size (a disc's or ring's radius, a square's half-side).

A frame is readable when the object is present (area of at least `MIN_AREA_PX` pixels) and
wholly in view (no coverage on the frame's outermost pixels): a shape cut by the edge is neither.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from phyray.config import SHAPES

SQUARENESS_SPLIT = -0.2  # between a disc's 0 and a square's -3/7
HOLLOW_SPLIT = 0.5  # centre coverage relative to the core: a ring's hole is ~0, a disc's ~1
MIN_AREA_PX = 2.0
# Coverage below this is background: a generated or reconstructed frame is never pure white (a VAE
# leaves tints of a few levels everywhere, 0.02-0.05 here, and the frame-local VAE a band of
# ~0.13 along the frame's border, which at 0.1 made every reconstructed frame "touch the edge"),
# and over a 32² frame such a tint adds tens of pixels of false area and moves the centroid and
# moments toward the frame's middle. The cost on exact renders is the anti-aliased rim below it:
# ground truth's size error 0.09 % -> 0.26 % at 64², 0.23 % -> 0.60 % at 32², shape still right
# on every frame (docs/experiments.md, 2026-12-04 night: chosen on the dev split).
BACKGROUND_TOL = 0.2
CORE = 0.5  # pixels at least this covered carry the object's colour


@dataclass(frozen=True)
class Readout:
    """Per-frame attributes of the object in (N, T) frames.

    readable: (N, T) bool, the object present and wholly in view;
    color: (N, T) int, index into the candidate colours (-1: no object);
    shape: (N, T) int, index into `SHAPES` (-1: no object);
    size: (N, T) world units (NaN: no object), as the read shape's size;
    position: (N, T, 2) world units, y up (NaN: no object);
    squareness, hollowness: (N, T) the shape features, for calibration.
    """

    readable: np.ndarray
    color: np.ndarray
    shape: np.ndarray
    size: np.ndarray
    position: np.ndarray
    squareness: np.ndarray
    hollowness: np.ndarray


def read_attributes(
    videos: np.ndarray,
    colors: np.ndarray,
    world_size: float = 10.0,
    ring_inner: float = 0.6,
    background_tol: float = BACKGROUND_TOL,
) -> Readout:
    """Read each frame's object.

    Args:
        videos: (N, T, H, W, 3) uint8.
        colors: (C, 3) the candidate colours (a probe's two).
        world_size: the world's side in world units.
        ring_inner: a ring's inner radius over its outer one (for the ring's size from its area).
        background_tol: coverage below this counts as background (see BACKGROUND_TOL).
    """
    n, t, h, w, _ = videos.shape
    frames = videos.reshape(n * t, h, w, 3)
    weight = (255.0 - frames.min(axis=-1).astype(np.float32)) / 255.0  # (M, H, W) coverage
    # A colour with a zero channel reaches w = 1; the min over channels is that channel.
    weight[weight < background_tol] = 0.0
    area = weight.sum(axis=(1, 2))  # (M,) pixels
    present = area >= MIN_AREA_PX
    safe = np.where(present, area, 1.0)
    ys, xs = np.arange(h, dtype=np.float32) + 0.5, np.arange(w, dtype=np.float32) + 0.5
    row_mass, col_mass = weight.sum(axis=2), weight.sum(axis=1)  # (M, H), (M, W)
    cy, cx = row_mass @ ys / safe, col_mass @ xs / safe  # (M,) continuous pixel centre
    dy = ys[None, :] - cy[:, None]  # (M, H)
    dx = xs[None, :] - cx[:, None]  # (M, W)
    m40 = (col_mass * dx**4).sum(axis=1)
    m04 = (row_mass * dy**4).sum(axis=1)
    m22 = np.einsum("mhw,mh,mw->m", weight, dy**2, dx**2)
    squareness = (m40 + m04 - 6 * m22) / np.maximum(m40 + m04 + 2 * m22, 1e-12)

    core = weight >= CORE
    core_level = np.where(core.any(axis=(1, 2)), (weight * core).sum(axis=(1, 2)) / np.maximum(core.sum(axis=(1, 2)), 1), 1.0)
    hollowness = 1.0 - _sample(weight, cx, cy) / np.maximum(core_level, 1e-6)

    shape = np.where(squareness < SQUARENESS_SPLIT, SHAPES.index("square"),
                     np.where(hollowness > HOLLOW_SPLIT, SHAPES.index("ring"), SHAPES.index("disc")))
    per_area = np.select(
        [shape == SHAPES.index("square"), shape == SHAPES.index("ring")],
        [np.sqrt(area) / 2, np.sqrt(area / (np.pi * (1 - ring_inner**2)))],
        np.sqrt(area / np.pi),
    )
    scale = world_size / w

    # The core's mean colour, nearest candidate (colours compared in RGB).
    pixels = frames.reshape(n * t, h * w, 3).astype(np.float32)
    core_flat = core.reshape(n * t, h * w).astype(np.float32)
    mean_color = np.einsum("mp,mpc->mc", core_flat, pixels) / np.maximum(core_flat.sum(axis=1), 1)[:, None]
    distance = np.linalg.norm(mean_color[:, None, :] - np.asarray(colors, np.float32)[None], axis=-1)
    color = np.where(present & core.any(axis=(1, 2)), distance.argmin(axis=1), -1)

    border = np.concatenate([weight[:, 0], weight[:, -1], weight[:, :, 0], weight[:, :, -1]], axis=1)
    readable = present & (border.max(axis=1) < 0.05)
    position = np.stack([cx * scale, world_size - cy * scale], axis=-1)
    position[~present] = np.nan
    return Readout(
        readable=readable.reshape(n, t),
        color=color.reshape(n, t),
        shape=np.where(present, shape, -1).reshape(n, t),
        size=np.where(present, per_area * scale, np.nan).reshape(n, t),
        position=position.reshape(n, t, 2),
        squareness=squareness.reshape(n, t),
        hollowness=hollowness.reshape(n, t),
    )


def _sample(weight: np.ndarray, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """Bilinear coverage at continuous pixel points (col cx, row cy), (M,) each."""
    m, h, w = weight.shape
    x, y = np.clip(cx - 0.5, 0, w - 1), np.clip(cy - 0.5, 0, h - 1)
    x0, y0 = np.minimum(x.astype(np.int64), w - 2), np.minimum(y.astype(np.int64), h - 2)
    fx, fy = x - x0, y - y0
    idx = np.arange(m)
    top = weight[idx, y0, x0] * (1 - fx) + weight[idx, y0, x0 + 1] * fx
    bottom = weight[idx, y0 + 1, x0] * (1 - fx) + weight[idx, y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy
