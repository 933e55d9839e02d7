"""Sample grids: a visible gutter between samples, and tiles large enough to read in a thumbnail."""

from __future__ import annotations

import torch

from optuna_diffusion.preview import image_grid, save_image_grid


def test_tiles_are_enlarged_and_set_apart_by_a_grey_gutter(tmp_path):
    images = torch.ones(5, 1, 8, 8)  # white digits-sized samples
    images[1] = -1.0  # one black sample
    grid = image_grid(images, min_tile=48, gutter=4)
    assert grid.shape == (2 * (48 + 4) + 4, 3 * (48 + 4) + 4)  # 3 columns, 2 rows of 48-pixel tiles
    assert (grid[4:52, 4:52] == 255).all() and (grid[4:52, 56:104] == 0).all()
    gutters = [grid[:4], grid[:, :4], grid[:, 52:56], grid[52:56]]
    assert all((gutter == 128).all() for gutter in gutters)  # mid-grey: visible against black and white
    path = save_image_grid(torch.zeros(3, 3, 8, 8), tmp_path / "grid.png")
    assert path.stat().st_size > 0


def test_large_images_are_not_enlarged():
    grid = image_grid(torch.zeros(1, 3, 64, 64), min_tile=48, gutter=2)
    assert grid.shape == (68, 68, 3)


def test_a_video_is_a_row_of_its_frames():
    videos = torch.ones(2, 5, 3, 8, 8)  # (N, F, C, H, W)
    videos[1, 4] = -1.0  # the last frame of the second video black
    grid = image_grid(videos, min_tile=8, gutter=4)
    assert grid.shape == (2 * (8 + 4) + 4, 5 * (8 + 4) + 4, 3)  # 2 rows of 5 frames
    assert (grid[16:24, 52:60] == 0).all() and (grid[4:12, 52:60] == 255).all()
