"""Features of moving-digit frames for FID, and the direction a clip moves in, both from the frames' ink.

The digits feature network (:mod:`optuna_diffusion.zoo.feature_net`) reads 8x8 digits; a 16x16
moving-digit frame holds one somewhere (whole, or partly where it slides in or out over an edge).
:class:`InkWindowFeatures` cuts every frame, real or generated, with one fixed operator -- the 8x8
window centred on the frame's ink (its centre of mass, rounded, kept inside the frame) -- and hands the
window to that network. On a real frame with the whole digit the window is the digit as the data set
has it (the digits are centred in their 8x8 boxes), so the features are those the network was trained
on; a generated frame is judged the same way. No new network is trained: a frame FID measures what the
digits FID measures, per frame.

:func:`motion_directions` reads the direction of a clip off the same centre of mass (the larger of its
horizontal and vertical displacement from the first frame to the last, and its sign).
"""

from __future__ import annotations

import torch
from torch import nn

from .moving_digits import DIRECTIONS

WINDOW = 8


def ink(frames: torch.Tensor) -> torch.Tensor:
    """Ink of frames in [-1, 1] (``-1`` blank): ``(x + 1) / 2`` clamped to [0, 1], channels averaged."""
    return ((frames.float().mean(dim=-3) + 1) / 2).clamp(0, 1)


def ink_centres(frames: torch.Tensor) -> torch.Tensor:
    """``(..., 2)`` (row, column) centre of mass of the ink of frames ``(..., C, H, W)``; a blank frame: its centre."""
    weights = ink(frames)
    height, width = weights.shape[-2:]
    total = weights.sum(dim=(-2, -1))
    rows = torch.arange(height, dtype=weights.dtype, device=weights.device)
    columns = torch.arange(width, dtype=weights.dtype, device=weights.device)
    row = (weights.sum(dim=-1) * rows).sum(dim=-1)
    column = (weights.sum(dim=-2) * columns).sum(dim=-1)
    centre = torch.stack([row, column], dim=-1) / total.clamp_min(1e-6).unsqueeze(-1)
    middle = torch.tensor([(height - 1) / 2, (width - 1) / 2], dtype=weights.dtype, device=weights.device)
    return torch.where((total > 1e-6).unsqueeze(-1), centre, middle)


def ink_windows(frames: torch.Tensor, size: int = WINDOW) -> torch.Tensor:
    """The ``size`` x ``size`` window of each frame ``(N, C, H, W)`` centred on its ink: ``(N, C, size, size)``."""
    count, channels, height, width = frames.shape
    if height < size or width < size:
        raise ValueError(f"frames of {height}x{width} are smaller than the {size}x{size} window")
    corner = (ink_centres(frames) - (size - 1) / 2).round().long()
    top = corner[:, 0].clamp(0, height - size)
    left = corner[:, 1].clamp(0, width - size)
    offsets = torch.arange(size, device=frames.device)
    index = torch.arange(count, device=frames.device)[:, None, None]
    rows = (top[:, None] + offsets)[:, :, None]
    columns = (left[:, None] + offsets)[:, None, :]
    return frames.permute(0, 2, 3, 1)[index, rows, columns].permute(0, 3, 1, 2)


class InkWindowFeatures(nn.Module):
    """A digits feature network read through :func:`ink_windows`: ``(N, C, H, W)`` frames -> ``(N, d)`` features.

    Args:
        digits_net: a :class:`~optuna_diffusion.zoo.feature_net.DigitsFeatureNet` (8x8 input).
    """

    def __init__(self, digits_net: nn.Module) -> None:
        super().__init__()
        self.digits_net = digits_net
        self.num_features = int(digits_net.num_features)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.digits_net(ink_windows(frames.float()))


def motion_directions(videos: torch.Tensor) -> torch.Tensor:
    """Direction index (:data:`~optuna_diffusion.zoo.moving_digits.DIRECTIONS`) of videos ``(N, F, C, H, W)``.

    The ink's centre of mass moves from the first frame to the last; the larger of its vertical and
    horizontal displacement, and its sign, say right, left, down or up.
    """
    centres = ink_centres(videos)
    shift = centres[:, -1] - centres[:, 0]  # (N, 2): rows, columns
    down, right = shift[:, 0], shift[:, 1]
    horizontal = right.abs() >= down.abs()
    index = {name: i for i, name in enumerate(DIRECTIONS)}
    across = torch.where(right >= 0, index["right"], index["left"])
    along = torch.where(down >= 0, index["down"], index["up"])
    return torch.where(horizontal, across, along)
