"""Real images from a folder, as the reference side of FID (``[fid] reference = "path/to/folder"``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError, first_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def load_image_folder(folder: str | Path) -> torch.Tensor:
    """Every image file of ``folder`` (sorted by name, not recursive) as ``(N, C, H, W)`` floats in [-1, 1].

    All images must have one size (FID compares feature statistics, not pixels, but a batch needs one
    shape: resize them beforehand). Grey images stay one channel when all are grey; otherwise all are RGB.

    Raises:
        ConfigError: no images, an unreadable file, or images of different sizes (one line).
    """
    from PIL import Image

    path = Path(folder).expanduser()
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < 2:
        raise ConfigError(f"reference folder {path} holds {len(files)} images ({', '.join(IMAGE_SUFFIXES)}); FID needs at least 2")
    images = []
    for file in files:
        try:
            with Image.open(file) as image:
                images.append(image.copy())
        except OSError as error:
            raise ConfigError(f"cannot read reference image {file}: {first_line(error)}") from None
    sizes = {image.size for image in images}
    if len(sizes) > 1:
        raise ConfigError(f"reference folder {path} holds images of {len(sizes)} sizes ({', '.join(f'{w}x{h}' for w, h in sorted(sizes)[:3])}...): resize them to one")
    mode = "L" if all(image.mode in ("L", "1") for image in images) else "RGB"
    arrays = np.stack([np.asarray(image.convert(mode), dtype=np.uint8).reshape(image.size[1], image.size[0], -1) for image in images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 127.5 - 1.0
