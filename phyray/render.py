"""States -> frames: anti-aliased discs, squares and rings on white, vectorised over a batch of videos.

Static scenery (the composition probes' walls, `wall_background`) is a background frame the
objects are painted over.

World coordinates are y-up in [0, world_size]²; image rows run top-down, so world y maps to
row `(world_size - y) / world_size * H`. Pixel (row i, col j) covers the world square whose
centre is at ((j + 0.5) * s, world_size - (i + 0.5) * s) with s = world_size / W, so the
centroid of a disc's coverage is the disc's projected centre.

Speed: balls cover a few percent of a frame, so coverage is computed only in a square window
around each disc (vectorised over every ball in every frame of every video) and the background
is a constant fill. Frames are painted in planar (T, 3, H, W) memory, the layout the shard codec
compresses, and returned as a (T, H, W, 3) view of it, so encoding needs no transpose copy.
"""

from __future__ import annotations

import numpy as np

from phyray.config import SHAPES

RED = (255, 0, 0)
BLUE = (0, 0, 255)
DISC, SQUARE, RING = (SHAPES.index(name) for name in ("disc", "square", "ring"))


def ball_colors(num_balls: int) -> np.ndarray:
    """The paper's colours: red for the single/left ball, blue for the right ball. (K, 3) uint8."""
    return np.array([RED, BLUE][:num_balls], dtype=np.uint8)


def world_to_pixel(xy: np.ndarray, resolution: int, world_size: float) -> np.ndarray:
    """World (x, y-up) -> continuous pixel (col, row); pixel (i, j) has its centre at j+0.5, i+0.5."""
    scale = resolution / world_size
    return np.stack([xy[..., 0] * scale, (world_size - xy[..., 1]) * scale], axis=-1)


def disc_coverage(
    centers_px: np.ndarray, radii_px: np.ndarray, window: int, edge_px: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Anti-aliased coverage of discs in square windows around their centres.

    Coverage falls linearly from 1 to 0 across a band `edge_px` wide centred on the circle, a
    good approximation of the exact pixel-area coverage that keeps the coverage centroid at the
    disc centre.

    Args:
        centers_px: (M, 2) continuous pixel centres (col, row).
        radii_px: (M,) radii in pixels.
        window: side of the square window in pixels (covers the largest disc plus its edge).
        edge_px: width of the coverage ramp across the disc's edge.

    Returns:
        coverage (M, window, window) float32 in [0, 1], and the window's top-left pixel indices
        row0, col0, each (M,) int64.
    """
    half = window // 2
    col0 = np.floor(centers_px[:, 0]).astype(np.int64) - half
    row0 = np.floor(centers_px[:, 1]).astype(np.int64) - half
    # Pixel-centre offsets are computed in float64 before the float32 cast, so a pixel's
    # value does not depend on where its window starts (i.e. on the batch's largest ball).
    offsets = np.arange(window) + 0.5
    dx = ((col0[:, None] + offsets) - centers_px[:, 0:1]).astype(np.float32)  # (M, w)
    dy = ((row0[:, None] + offsets) - centers_px[:, 1:2]).astype(np.float32)  # (M, w)
    # In-place passes over one (M, w, w) buffer: distance, then the clipped linear ramp.
    coverage = np.square(dy)[:, :, None] + np.square(dx)[:, None, :]
    np.sqrt(coverage, out=coverage)
    np.subtract(radii_px.astype(np.float32)[:, None, None], coverage, out=coverage)
    if edge_px != 1.0:
        coverage *= np.float32(1.0 / edge_px)
    coverage += np.float32(0.5)
    np.clip(coverage, 0.0, 1.0, out=coverage)
    return coverage, row0, col0


def shape_coverage(
    centers_px: np.ndarray, sizes_px: np.ndarray, shapes: np.ndarray, window: int, edge_px: float = 1.0,
    ring_inner: float = 0.6,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`disc_coverage` for objects of any shape in `SHAPES` (codes (M,) int), same windows.

    - square (axis-aligned, half-side = size): the product of the two 1-D ramps; with a 1 px
      ramp that is the exact area of the pixel the square covers.
    - ring: the disc of the outer radius minus the disc of `ring_inner` times it.
    """
    coverage, row0, col0 = disc_coverage(centers_px, sizes_px, window, edge_px)
    squares = np.flatnonzero(shapes == SQUARE)
    if squares.size:
        offsets = np.arange(window) + 0.5
        ramps = []
        for axis, corner in ((0, col0), (1, row0)):
            d = np.abs((corner[squares, None] + offsets) - centers_px[squares, axis : axis + 1])  # (S, w)
            ramps.append(np.clip((sizes_px[squares, None] - d) / edge_px + 0.5, 0.0, 1.0).astype(np.float32))
        coverage[squares] = ramps[1][:, :, None] * ramps[0][:, None, :]  # rows x cols
    rings = np.flatnonzero(shapes == RING)
    if rings.size:
        inner, _, _ = disc_coverage(centers_px[rings], sizes_px[rings] * ring_inner, window, edge_px)
        coverage[rings] -= inner
    return coverage, row0, col0


def render_videos(
    positions: np.ndarray,
    radii: np.ndarray,
    colors: np.ndarray,
    resolution: int,
    world_size: float = 10.0,
    edge_px: float = 1.0,
    shapes: np.ndarray | None = None,
    ring_inner: float = 0.6,
    background: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Render videos of balls or, given `shapes`, of discs, squares and rings.

    Args:
        positions: (N, T, K, 2) world positions (y up).
        radii: (N, K) world sizes: a disc's or ring's radius, a square's half-side.
        colors: (K, 3) or (N, K, 3) uint8 colours; object k is painted over objects < k.
        resolution: output height = width in pixels.
        world_size: side of the square world in world units.
        edge_px: anti-aliasing ramp width in pixels.
        shapes: (K,) or (N, K) codes into `SHAPES` (default: all discs); squares do not rotate.
        ring_inner: a ring's inner radius over its outer radius.
        background: (H, W, 3) uint8 frame under the objects (default: white).
        out: planar (N, T, 3, H, W) uint8 memory to draw into, whatever it holds: a generator
            hands the same buffer to batch after batch, where a fresh 24 MiB array was mostly
            page-faulted in again (4.8 ms per batch of four 256² videos; refilling it: 0.9 ms).

    Returns:
        (N, T, H, W, 3) uint8 frames: a view of planar (N, T, 3, H, W) memory (`out` if given).
    """
    n, t, k, _ = positions.shape
    colors = np.broadcast_to(np.asarray(colors, dtype=np.uint8), (n, k, 3))
    radii_px = np.asarray(radii, dtype=np.float64) * (resolution / world_size)  # (N, K)
    window = int(np.ceil(2 * radii_px.max() + edge_px)) + 3
    if out is not None and (out.shape != (n, t, 3, resolution, resolution) or out.dtype != np.uint8):
        raise ValueError(f"out must be ({n}, {t}, 3, {resolution}, {resolution}) uint8, got {out.shape} {out.dtype}")
    planar = np.empty((n, t, 3, resolution, resolution), dtype=np.uint8) if out is None else out
    scenery = None  # summed-area table of the background's non-white pixels, (H + 1, W + 1)
    if background is None:
        planar.fill(255)
    else:
        planar[:] = np.asarray(background, dtype=np.uint8).transpose(2, 0, 1)
        scenery = np.pad((planar[0, 0] != 255).any(axis=0).cumsum(axis=0).cumsum(axis=1), ((1, 0), (1, 0)))
    corners = []  # (row0, col0) of every earlier ball's windows, to detect overlaps
    for ball in range(k):
        centers = world_to_pixel(positions[:, :, ball].reshape(n * t, 2), resolution, world_size)
        sizes = np.repeat(radii_px[:, ball], t)
        if shapes is None:
            coverage, row0, col0 = disc_coverage(centers, sizes, window, edge_px)
        else:
            codes = np.repeat(np.broadcast_to(np.asarray(shapes), (n, k))[:, ball], t)
            coverage, row0, col0 = shape_coverage(centers, sizes, codes, window, edge_px, ring_inner)
        color = np.repeat(colors[:, ball], t, axis=0)  # (M, 3) uint8
        # The disc painted over white, one (M, w, w) plane per distinct channel value (a red
        # ball's G and B share one; 255 leaves white as it is). It is the general blend below
        # at under = 255, in the same float32 arithmetic, so both paths give the same bytes.
        over_white = {
            value: np.rint(np.float32(255) + coverage * (np.float32(value) - np.float32(255))).astype(np.uint8)
            for value in np.unique(color).tolist()
            if value != 255
        }
        # Where an earlier ball's window overlaps this one, blend over what is there instead.
        overlaps = np.zeros(n * t, dtype=bool)
        for prev_row0, prev_col0 in corners:
            overlaps |= (np.abs(row0 - prev_row0) < window) & (np.abs(col0 - prev_col0) < window)
        corners.append((row0, col0))
        # Clip each window to the image; a ball wholly out of view leaves an empty window.
        r_lo, c_lo = np.maximum(row0, 0), np.maximum(col0, 0)
        r_hi, c_hi = np.minimum(row0 + window, resolution), np.minimum(col0 + window, resolution)
        if scenery is not None:
            # Windows over scenery blend too (the fast path paints over white); an empty window
            # (out of view) is cut to nothing inside the table.
            top, left = np.minimum(r_lo, resolution), np.minimum(c_lo, resolution)
            bottom, right = np.maximum(r_hi, top), np.maximum(c_hi, left)
            overlaps |= (scenery[bottom, right] - scenery[top, right] - scenery[bottom, left] + scenery[top, left]) > 0
        for m in np.flatnonzero((r_hi > r_lo) & (c_hi > c_lo)):
            video, frame = divmod(int(m), t)
            inside = np.s_[r_lo[m] - row0[m] : r_hi[m] - row0[m], c_lo[m] - col0[m] : c_hi[m] - col0[m]]
            region = planar[video, frame, :, r_lo[m] : r_hi[m], c_lo[m] : c_hi[m]]  # (3, h, w) view
            if overlaps[m]:
                under = region.astype(np.float32)
                tint = color[m].astype(np.float32)[:, None, None]
                region[...] = np.rint(under + coverage[m][inside] * (tint - under))
                continue
            for channel, value in enumerate(color[m].tolist()):
                if value != 255:
                    region[channel] = over_white[value][m][inside]
    return planar.transpose(0, 1, 3, 4, 2)


def wall_background(
    walls: list[tuple[float, float]], color: tuple[int, int, int], resolution: int, world_size: float = 10.0,
    edge_px: float = 1.0,
) -> np.ndarray:
    """A white (H, W, 3) uint8 frame with vertical bars from top to bottom, anti-aliased like a
    square's sides: each wall (x of its left face, thickness) in world units, in one colour."""
    scale = resolution / world_size
    centres = np.arange(resolution) + 0.5
    coverage = np.zeros(resolution, dtype=np.float32)  # per column: every row is covered alike
    for x, thickness in walls:
        half, middle = thickness * scale / 2, (x + thickness / 2) * scale
        ramp = np.clip((half - np.abs(centres - middle)) / edge_px + 0.5, 0.0, 1.0).astype(np.float32)
        coverage = np.maximum(coverage, ramp)
    tint = np.asarray(color, dtype=np.float32)
    row = np.rint(np.float32(255) + coverage[:, None] * (tint[None, :] - np.float32(255))).astype(np.uint8)  # (W, 3)
    return np.broadcast_to(row[None], (resolution, resolution, 3)).copy()
