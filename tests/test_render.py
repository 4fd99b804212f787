"""The renderer: colours, orientation, anti-aliasing and sub-pixel accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from phyray.render import ball_colors, render_videos, world_to_pixel


def _one_ball(x, y, r, resolution=128, frames=1):
    positions = np.tile(np.array([[[x, y]]]), (1, frames, 1, 1))  # (1, T, 1, 2)
    return render_videos(positions, np.array([[r]]), ball_colors(1), resolution)[0]


def test_colours_and_background():
    frame = _one_ball(5.0, 5.0, 1.0)[0]
    assert frame.shape == (128, 128, 3) and frame.dtype == np.uint8
    assert tuple(frame[0, 0]) == (255, 255, 255)
    assert tuple(frame[64, 64]) == (255, 0, 0)
    two = render_videos(
        np.array([[[[2.0, 5.0], [8.0, 5.0]]]]), np.array([[1.0, 1.0]]), ball_colors(2), 64
    )[0, 0]
    col_right = int(8.0 / 10 * 64)
    assert tuple(two[32, col_right]) == (0, 0, 255)


def test_world_y_up_maps_to_rows_top_down():
    frame = _one_ball(5.0, 8.0, 0.5)[0]
    red = (frame[..., 0] > 127) & (frame[..., 1] < 127)
    rows = np.flatnonzero(red.any(axis=1))
    assert rows.mean() < 64  # high y -> near the top of the image


def test_edges_are_anti_aliased():
    frame = _one_ball(5.03, 4.97, 1.0)[0]
    green = frame[..., 1]
    partial = (green > 0) & (green < 255)
    assert partial.sum() > 20  # a ring of intermediate values, not a hard edge


def test_centroid_within_quarter_pixel_at_128():
    rng = np.random.default_rng(0)
    for _ in range(50):
        x, y, r = rng.uniform(2, 8), rng.uniform(2, 8), rng.uniform(0.3, 1.5)
        frame = _one_ball(x, y, r)[0]
        red = (frame[..., 0] > 127) & (frame[..., 1] < 127) & (frame[..., 2] < 127)
        rows, cols = np.nonzero(red)
        col_px, row_px = world_to_pixel(np.array([x, y]), 128, 10.0)
        # Pixel (i, j) has its centre at (j + 0.5, i + 0.5).
        assert abs(cols.mean() + 0.5 - col_px) <= 0.25
        assert abs(rows.mean() + 0.5 - row_px) <= 0.25


def test_resolutions_and_partially_visible_balls():
    for resolution in (32, 64, 128, 256):
        frames = _one_ball(0.2, 9.9, 1.0, resolution=resolution, frames=2)
        assert frames.shape == (2, resolution, resolution, 3)
        assert (frames[0, 0, 0] == (255, 0, 0)).all()  # the visible quarter of the ball
    gone = _one_ball(30.0, 5.0, 1.0)[0]
    assert (gone == 255).all()


def test_batch_rendering_equals_one_by_one():
    rng = np.random.default_rng(1)
    positions = rng.uniform(0, 10, size=(5, 4, 2, 2))
    radii = rng.uniform(0.3, 2.0, size=(5, 2))
    batch = render_videos(positions, radii, ball_colors(2), 64)
    for i in range(5):
        single = render_videos(positions[i : i + 1], radii[i : i + 1], ball_colors(2), 64)
        np.testing.assert_array_equal(batch[i], single[0])


def test_a_reused_buffer_gives_the_same_frames_whatever_it_held():
    rng = np.random.default_rng(2)
    positions = rng.uniform(0, 10, size=(3, 4, 2, 2))
    radii = rng.uniform(0.3, 2.0, size=(3, 2))
    background = np.full((64, 64, 3), 255, np.uint8)
    background[:, 20:24] = (40, 40, 40)  # a wall
    buffer = rng.integers(0, 256, size=(3, 4, 3, 64, 64), dtype=np.uint8)  # the last batch's frames
    for wall in (None, background):
        fresh = render_videos(positions, radii, ball_colors(2), 64, background=wall)
        drawn = render_videos(positions, radii, ball_colors(2), 64, background=wall, out=buffer)
        np.testing.assert_array_equal(drawn, fresh)
        assert np.shares_memory(drawn, buffer)
    with pytest.raises(ValueError, match=r"out must be \(3, 4, 3, 64, 64\) uint8"):
        render_videos(positions, radii, ball_colors(2), 64, out=buffer[:2])
