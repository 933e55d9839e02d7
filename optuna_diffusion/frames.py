"""Videos as frames: the one place where a measure of images reads a video.

A video model's decoded samples are frames ``(N, F, C, H, W)`` (the video families decode to that
layout); FID, its reference statistics, CLIP score, the teacher distances and preview grids take every
frame as one image, ``(N * F, C, H, W)``. Images ``(N, C, H, W)`` pass unchanged.
"""

from __future__ import annotations

import torch

from .errors import OptunaDiffusionError


def frames_as_images(samples: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Videos ``(N, F, C, H, W)`` as their ``N F`` frames ``(N F, C, H, W)``, video by video, and ``F``; images pass with 1."""
    if samples.dim() == 5:
        return samples.flatten(0, 1), int(samples.shape[1])
    if samples.dim() != 4:
        raise OptunaDiffusionError(
            f"expected images (N, C, H, W) or videos (N, F, C, H, W), got shape {tuple(samples.shape)}"
        )
    return samples, 1
