"""Videos as frames: the one place where a measure of images reads a video.

A video model's decoded samples are frames ``(N, F, C, H, W)`` (the video families decode to that
layout); FID, its reference statistics and preview grids take every frame as one image,
``(N * F, C, H, W)``. Images ``(N, C, H, W)`` pass unchanged.
"""

from __future__ import annotations

import torch

from .errors import OptunaDiffusionError


def frames_as_images(images: torch.Tensor) -> torch.Tensor:
    """Images ``(N, C, H, W)`` as they are; videos ``(N, F, C, H, W)`` as their ``N * F`` frames, video by video."""
    if images.dim() == 5:
        return images.flatten(0, 1)
    if images.dim() != 4:
        raise OptunaDiffusionError(
            f"expected images (N, C, H, W) or videos (N, F, C, H, W), got shape {tuple(images.shape)}"
        )
    return images


def frames_per_sample(images: torch.Tensor) -> int:
    """Frames of each sample: ``F`` of videos ``(N, F, C, H, W)``, 1 of images."""
    return int(images.shape[1]) if images.dim() == 5 else 1
