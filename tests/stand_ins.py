"""Stand-ins for what the presets of real models need and this machine cannot download."""

from __future__ import annotations

import torch
from torch import nn

from optuna_diffusion.fid import load_feature_extractor
from optuna_diffusion.reference_stats import reference_stats


class PooledColours(nn.Module):
    """A stand-in FID feature network for RGB images: mean colour of each image quarter (12 features)."""

    def __init__(self) -> None:
        super().__init__()
        self.num_features = 12

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(images, 2).flatten(1)


def stand_in_features(folder, size: int = 8) -> tuple[str, str]:
    """A TorchScript feature network and reference statistics of random images, as files."""
    path = folder / "features.pt"
    torch.jit.script(PooledColours()).save(str(path))
    images = torch.rand(64, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    reference = reference_stats(images, load_feature_extractor(str(path))).save_npz(folder / "reference.npz")
    return str(path), str(reference)
