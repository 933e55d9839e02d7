"""What every fitness metric does: take a plan's samples batch by batch, give one number, lower is better."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol

import torch

if TYPE_CHECKING:
    from ..generation import ImageGenerator, SamplingSettings
    from ..models import DiffusionModel
    from ..plan import Plan

METRICS = ("fid", "clip-score", "teacher")
"""Values of ``[fitness] metric`` (and ``rescore``)."""


class Evaluator(Protocol):
    """What a metric reads of the evaluator that binds it (:class:`~optuna_diffusion.evaluation.PlanEvaluator`,
    which imports the metrics: they name it by this protocol, so imports run one way)."""

    model: DiffusionModel
    settings: SamplingSettings
    generator: ImageGenerator

    def generate(
        self, plan: Plan, num_samples: int, start: int, stop: int, *, decoded: bool = True, use_cache: bool = True
    ) -> torch.Tensor:
        """Samples ``start..stop-1`` of ``plan``'s set of ``num_samples`` (on the CPU)."""
        ...


class FitnessMeter:
    """Scores the samples of one plan, fed batch by batch (streamed: only one batch is alive at a time).

    The evaluator calls :meth:`bind` once, then per plan :meth:`begin`, :meth:`update` for every batch
    of samples ``start..stop-1`` in order, and :meth:`compute`. Values are minimised, so metrics where
    higher is better are negated (``-PSNR``) or complemented (``1-SSIM``); :attr:`label` names the value.

    Attributes:
        metric: the ``[fitness] metric`` this meter implements.
        label: the value's name in tables and in the dashboard (``"FID"``, ``"-PSNR"`` ...).
        decoded: whether :meth:`update` gets decoded images in [-1, 1] (clamped) or the solver's final
            samples (a latent model's latents, a pixel model's unclamped images).
    """

    metric: ClassVar[str] = ""
    label: str = ""
    decoded: bool = True

    def bind(self, evaluator: Evaluator) -> None:
        """Called once by the evaluator that feeds this meter (to check the model, or to generate targets)."""

    def begin(self, num_samples: int) -> None:
        """Start scoring a plan on a sample set of ``num_samples`` samples (forget the previous plan)."""

    def update(self, samples: torch.Tensor, start: int, stop: int) -> None:
        """Add samples ``start..stop-1`` of the set (``samples[i]`` is sample ``start + i``)."""
        raise NotImplementedError

    def compute(self) -> float:
        """The value over the samples added since :meth:`begin` (lower is better)."""
        raise NotImplementedError


def frames_as_images(samples: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Videos ``(N, F, C, H, W)`` as their ``N F`` frames ``(N F, C, H, W)``, and ``F``; images pass with 1."""
    if samples.dim() == 5:
        return samples.flatten(0, 1), samples.shape[1]
    return samples, 1


def to_unit_pixels(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] as the 8-bit pixels one would save, back in [0, 1] floats."""
    return to_uint8(images).float() / 255.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] as uint8 pixels in [0, 255] (uint8 input passes through)."""
    if images.dtype == torch.uint8:
        return images
    return ((images.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
