"""Moving digits: scikit-learn's 8x8 digits gliding across a 16x16 frame, the data of ``digits-video``.

A clip is ``NUM_FRAMES`` frames of one digit moving one pixel a frame in a straight line, in one of four
directions, on a blank background (-1). Its label says both: ``label = digit * 4 + direction`` with
directions ``right, left, down, up`` (0..3), so 40 classes, and the null class 40 for classifier-free
guidance. Every digit of the data set appears in every direction; where it starts is drawn from a seed:
across the motion anywhere the digit fits, along it anywhere that keeps at least ``MIN_VISIBLE`` of its
8 columns (rows) in the frame throughout, so a digit may slide in over one edge or out over the other.

Where a digit is matters only relative to its other frames: the distribution is nearly the same shifted,
which a transformer with relative (rotary) positions alone, such as Wan's, can model; clips that always
start at an edge would need absolute positions, which ``WanTransformer3DModel`` does not have. Pixels
lie in [-1, 1], as the digits' (:mod:`optuna_diffusion.zoo.data`).

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
SPEED = 1  # pixels a frame
MIN_VISIBLE = 5  # columns (rows) of the 8x8 digit in the frame at all times
ACROSS = FRAME_SIZE - IMAGE_SIZE  # the last place across the motion (the digit whole in the frame)
TRAVEL = SPEED * (NUM_FRAMES - 1)  # pixels moved from the first frame to the last
FIRST_START = MIN_VISIBLE - IMAGE_SIZE  # where a forward glide (right, down) may start: FIRST_START..LAST_START
LAST_START = FRAME_SIZE - MIN_VISIBLE - TRAVEL
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


def glide_corners(direction: int, across: int, start: int, num_frames: int = NUM_FRAMES) -> list[tuple[int, int]]:
    """``(row, column)`` of the digit's top-left corner in each frame (outside the frame where it slides out).

    Args:
        direction: index into :data:`DIRECTIONS`.
        across: the fixed coordinate, 0..ACROSS (the row of a horizontal glide, the column of a vertical one).
        start: the glide's place in ``FIRST_START..LAST_START``: the first frame's corner coordinate along
            a right or down glide; a left or up glide is its mirror image (it ends where the mirror starts).
        num_frames: frames of the clip.
    """
    if not 0 <= direction < len(DIRECTIONS):
        raise ValueError(f"direction must be in 0..{len(DIRECTIONS) - 1}, got {direction}")
    if not 0 <= across <= ACROSS or not FIRST_START <= start <= LAST_START:
        raise ValueError(f"across must be in 0..{ACROSS} and start in {FIRST_START}..{LAST_START}, got {across}, {start}")
    along = [start + SPEED * frame for frame in range(num_frames)]
    name = DIRECTIONS[direction]
    if name in ("left", "up"):
        along = [FRAME_SIZE - IMAGE_SIZE - a for a in along]
    return [(across, a) if name in ("right", "left") else (a, across) for a in along]


def moving_digit(image: torch.Tensor, direction: int, across: int, start: int, num_frames: int = NUM_FRAMES) -> torch.Tensor:
    """One clip ``(1, F, 16, 16)`` of an ``(1, 8, 8)`` digit image gliding in ``direction`` (cut at the frame's edges)."""
    margin = IMAGE_SIZE  # the digit drawn on a canvas one digit wider on every side, then the frame cut out
    canvas = torch.full((1, num_frames, FRAME_SIZE + 2 * margin, FRAME_SIZE + 2 * margin), BACKGROUND, dtype=image.dtype)
    for frame, (row, column) in enumerate(glide_corners(direction, across, start, num_frames)):
        canvas[0, frame, margin + row : margin + row + IMAGE_SIZE, margin + column : margin + column + IMAGE_SIZE] = image[0]
    return canvas[:, :, margin : margin + FRAME_SIZE, margin : margin + FRAME_SIZE].clone()


def load_moving_digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Every digit in every direction: ``(videos, labels)``, ``(7188, 1, 8, 16, 16)`` in [-1, 1] and ``(7188,)``.

    Clip ``4 i + d`` is digit image ``i`` moving in direction ``d``; where it glides is drawn from ``seed``.
    """
    images, digits = load_digits_images()
    generator = torch.Generator().manual_seed(seed)
    across = torch.randint(0, ACROSS + 1, (len(images), len(DIRECTIONS)), generator=generator)
    start = torch.randint(FIRST_START, LAST_START + 1, (len(images), len(DIRECTIONS)), generator=generator)
    videos = torch.stack([
        moving_digit(image, direction, int(across[i, direction]), int(start[i, direction]))
        for i, image in enumerate(images)
        for direction in range(len(DIRECTIONS))
    ])
    labels = video_label(digits.repeat_interleave(len(DIRECTIONS)), torch.arange(len(DIRECTIONS)).repeat(len(images)))
    return videos, labels
