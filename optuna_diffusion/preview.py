"""PNG grids of samples, for optuna-dashboard artifacts and for looking at results."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .frames import frames_as_images


def image_grid(images: torch.Tensor, *, min_tile: int = 48, gutter: int = 4) -> np.ndarray:
    """``(N, C, H, W)`` images (or ``(N, F, C, H, W)`` videos) in [-1, 1] as one uint8 ``(rows, columns[, 3])`` picture.

    Each image is enlarged (nearest neighbour, an integer factor) to at least ``min_tile`` pixels
    high, so that an 8x8 digit is still recognisable in the dashboard's thumbnail, and the tiles are
    set apart by a mid-grey ``gutter``, so that neighbouring images do not read as one. A video is one
    row of its frames.
    """
    images, frames = frames_as_images(images.detach())
    images = images.float().clamp(-1, 1).cpu()
    count, channels, height, width = images.shape
    scale = max(1, math.ceil(min_tile / height))
    tiles = images.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    tile_height, tile_width = height * scale, width * scale
    columns = frames if frames > 1 else math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = torch.zeros((channels, rows * (tile_height + gutter) + gutter, columns * (tile_width + gutter) + gutter))
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        top, left = gutter + row * (tile_height + gutter), gutter + column * (tile_width + gutter)
        grid[:, top : top + tile_height, left : left + tile_width] = tile
    pixels = ((grid + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return pixels[:, :, 0] if channels == 1 else np.ascontiguousarray(pixels)


def save_image_grid(images: torch.Tensor, path: str | Path, *, min_tile: int = 48, gutter: int = 4) -> Path:
    """Save ``(N, C, H, W)`` images (or ``(N, F, C, H, W)`` videos) in [-1, 1] as one PNG grid (see :func:`image_grid`)."""
    from PIL import Image

    path = Path(path)
    Image.fromarray(image_grid(images, min_tile=min_tile, gutter=gutter)).save(path)
    return path
