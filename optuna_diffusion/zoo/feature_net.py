"""A small CNN classifier of 8x8 digits whose penultimate layer is the FID feature space of the digits study.

Inception-v3 features mean nothing on 8x8 grey-scale digits, so the digits study measures FID in the
64-d penultimate layer of a classifier trained on the digits themselves, as FID does with Inception.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def as_digits(images: torch.Tensor, size: int = 8) -> torch.Tensor:
    """``(N, C, H, W)`` images in [-1, 1] as the ``(N, 1, size, size)`` grey digits the net reads.

    Channels are averaged and larger images area-averaged down to 8x8, so a digit a pipeline draws
    at 32x32 (each digit pixel a 4x4 block, as ``digits-t2i`` does) comes back exactly."""
    images = images.float()
    if images.shape[1] != 1:
        images = images.mean(dim=1, keepdim=True)
    if images.shape[-2] != size or images.shape[-1] != size:  # (TorchScript: no tuple comparison, no globals)
        images = nn.functional.adaptive_avg_pool2d(images, size)
    return images


class DigitsFeatureNet(nn.Module):
    """CNN over ``(N, 1, 8, 8)`` images in [-1, 1]; ``forward`` returns ``(N, num_features)`` features.

    Other sizes and colour images are brought to 8x8 grey first (:func:`as_digits`). It is a drop-in
    ``feature=`` module for torchmetrics' ``FrechetInceptionDistance``.
    """

    def __init__(self, num_features: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.num_features = num_features
        self.num_classes = num_classes
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(128, num_features),
            nn.ReLU(),
        )
        self.head = nn.Linear(num_features, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(as_digits(images))

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, num_classes)``."""
        return self.head(self.forward(images))

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / WEIGHTS_NAME))
        config = {"num_features": self.num_features, "num_classes": self.num_classes}
        (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "DigitsFeatureNet":
        folder = Path(folder)
        config = json.loads((folder / CONFIG_NAME).read_text())
        net = cls(**config)
        net.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
        return net.eval().requires_grad_(False)
