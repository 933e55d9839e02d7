"""``DiTPipeline``: a class-conditional DiT on VAE latents.

The denoiser is called as :class:`~optuna_diffusion.families.DiTFamily` calls a bare DiT (conditional
half first; the pipeline's null class is 1000, ``num_embeds_ada_norm`` of the ImageNet models); the
final latents are decoded as ``vae.decode(latents / scaling_factor)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ._dit import DiTFamily

if TYPE_CHECKING:
    from ..protocols import ModelLike as DiffusionModel  # what a family reads of models.DiffusionModel


class DiTPipelineFamily(DiTFamily):
    """``DiTPipeline``: :class:`DiTFamily` plus the VAE decode."""

    name = "dit-pipeline"
    pipelines = ("DiTPipeline",)
    uses_prompts = False

    def decode(self, model: DiffusionModel, x: torch.Tensor) -> torch.Tensor:
        vae = model.vae
        reference = next(vae.parameters())
        latents = x.to(device=reference.device, dtype=reference.dtype) / vae.config.scaling_factor
        return vae.decode(latents, return_dict=False)[0].float()

    def call(self, model: DiffusionModel, x: torch.Tensor, t: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        return super().call(model, x.to(model.denoiser.dtype), t, inputs)
