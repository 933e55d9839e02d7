"""PNG grids of samples, for optuna-dashboard artifacts and for looking at results."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def save_image_grid(images: torch.Tensor, path: str | Path, *, min_tile: int = 32) -> Path:
    """Save ``(N, C, H, W)`` images in [-1, 1] as one PNG grid; small images are enlarged to ``min_tile`` px."""
    from PIL import Image

    images = images.detach().float().clamp(-1, 1).cpu()
    count, channels, height, width = images.shape
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = torch.full((channels, rows * height, columns * width), -1.0)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        grid[:, row * height : (row + 1) * height, column * width : (column + 1) * width] = image
    pixels = ((grid + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(pixels[:, :, 0] if channels == 1 else np.ascontiguousarray(pixels))
    scale = max(1, math.ceil(min_tile / height))
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    path = Path(path)
    picture.save(path)
    return path
