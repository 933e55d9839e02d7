"""FID as a fitness metric: the study's feature network against its reference statistics."""

from __future__ import annotations

import torch
from torch import nn

from ..fid import FIDMeter
from ..reference_stats import ReferenceStats
from ._base import FitnessMeter


class FIDFitness(FitnessMeter):
    """FID of a plan's images (:class:`~optuna_diffusion.fid.FIDMeter`) in ``extractor``'s feature space.

    A video's frames count as images (FID over frames, against reference statistics of real frames).

    Args:
        reference: feature statistics of the real data.
        extractor: feature network (its ``num_features`` must match ``reference``).
    """

    metric = "fid"
    label = "FID"

    def __init__(self, reference: ReferenceStats, extractor: nn.Module) -> None:
        self.meter = FIDMeter(reference, extractor)

    def begin(self, num_samples: int) -> None:
        self.meter.reset()

    def update(self, samples: torch.Tensor, start: int, stop: int) -> None:
        self.meter.update(samples)  # a video: its frames (the meter reads videos as frames)

    def compute(self) -> float:
        return self.meter.compute()
