"""Moving digits: scikit-learn's 8x8 digits gliding across a 16x16 frame, the data of ``digits-video``.

A clip is ``NUM_FRAMES`` frames of one digit moving in a straight line, edge to edge, in one of four
directions, on a blank background (-1). Its label says both: ``label = digit * 4 + direction`` with
directions ``right, left, down, up`` (0..3), so 40 classes, and the null class 40 for classifier-free
guidance. Every digit of the data set appears in every direction; its place across the motion (the row
of a horizontal glide, the column of a vertical one) is drawn from a seed. Pixels lie in [-1, 1], as
the digits' (:mod:`optuna_diffusion.zoo.data`).

Videos are ``(N, 1, F, H, W)`` (channels, then frames), the layout ``WanTransformer3DModel`` reads.
"""

from __future__ import annotations

import torch

from .data import IMAGE_SIZE, NUM_CLASSES, load_digits_images

NUM_FRAMES = 8
FRAME_SIZE = 16
DIRECTIONS = ("right", "left", "down", "up")
NUM_VIDEO_CLASSES = NUM_CLASSES * len(DIRECTIONS)
VIDEO_NULL_CLASS = NUM_VIDEO_CLASSES  # label of the unconditional pass of classifier-free guidance
TRAVEL = FRAME_SIZE - IMAGE_SIZE  # pixels the digit moves from the first frame to the last
BACKGROUND = -1.0


def video_label(digit: torch.Tensor | int, direction: torch.Tensor | int) -> torch.Tensor | int:
    """The class of a digit moving in a direction (index into :data:`DIRECTIONS`)."""
    return digit * len(DIRECTIONS) + direction


def direction_of(label: torch.Tensor | int) -> torch.Tensor | int:
    """The direction index of a class (:data:`DIRECTIONS`)."""
    return label % len(DIRECTIONS)


def digit_of(label: torch.Tensor | int) -> torch.Tensor | int:
    """The digit of a class."""
    return label // len(DIRECTIONS)


def glide_corners(direction: int, across: int, num_frames: int = NUM_FRAMES) -> list[tuple[int, int]]:
    """``(row, column)`` of the digit's top-left corner in each frame: edge to edge, evenly in whole pixels.

    Args:
        direction: index into :data:`DIRECTIONS`.
        across: the fixed coordinate, 0..TRAVEL (the row of a horizontal glide, the column of a vertical one).
        num_frames: frames of the clip (at least 2).
    """
    if not 0 <= direction < len(DIRECTIONS):
        raise ValueError(f"direction must be in 0..{len(DIRECTIONS) - 1}, got {direction}")
    if not 0 <= across <= TRAVEL:
        raise ValueError(f"across must be in 0..{TRAVEL}, got {across}")
    along = [round(frame * TRAVEL / (num_frames - 1)) for frame in range(num_frames)]
    name = DIRECTIONS[direction]
    if name in ("left", "up"):
        along = [TRAVEL - a for a in along]
    return [(across, a) if name in ("right", "left") else (a, across) for a in along]


def moving_digit(image: torch.Tensor, direction: int, across: int, num_frames: int = NUM_FRAMES) -> torch.Tensor:
    """One clip ``(1, F, 16, 16)`` of an ``(1, 8, 8)`` digit image gliding in ``direction``."""
    video = torch.full((1, num_frames, FRAME_SIZE, FRAME_SIZE), BACKGROUND, dtype=image.dtype)
    for frame, (row, column) in enumerate(glide_corners(direction, across, num_frames)):
        video[0, frame, row : row + IMAGE_SIZE, column : column + IMAGE_SIZE] = image[0]
    return video


def load_moving_digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Every digit in every direction: ``(videos, labels)``, ``(7188, 1, 8, 16, 16)`` in [-1, 1] and ``(7188,)``.

    Clip ``4 i + d`` is digit image ``i`` moving in direction ``d``; its place across the motion is drawn
    from ``seed``.
    """
    images, digits = load_digits_images()
    across = torch.randint(0, TRAVEL + 1, (len(images), len(DIRECTIONS)), generator=torch.Generator().manual_seed(seed))
    videos = torch.stack([
        moving_digit(image, direction, int(across[i, direction]))
        for i, image in enumerate(images)
        for direction in range(len(DIRECTIONS))
    ])
    labels = video_label(digits.repeat_interleave(len(DIRECTIONS)), torch.arange(len(DIRECTIONS)).repeat(len(images)))
    return videos, labels
