"""``DiTPipeline``: a class-conditional DiT on VAE latents.

The denoiser is called as :class:`~optuna_diffusion.families.DiTFamily` calls a bare DiT (conditional
half first; the pipeline's null class is 1000, ``num_embeds_ada_norm`` of the ImageNet models); the
final latents are decoded as ``vae.decode(latents / scaling_factor)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..pipelines import CallTemplate
from ._dit import DiTFamily

if TYPE_CHECKING:
    from ..protocols import ModelLike as DiffusionModel  # what a family reads of models.DiffusionModel

_CALL_BODY = """\
apply(pipe, plan)                                                  # skips and reuses, per step
set_timesteps = pipe.scheduler.set_timesteps
pipe.scheduler.set_timesteps = lambda *args, **kwargs: set_timesteps(timesteps=list(plan.timesteps))
labels = {class_labels}  # the class labels of the study's first samples
images = pipe(class_labels=labels, guidance_scale={guidance_scale}, num_inference_steps=plan.num_steps,
              generator=torch.Generator().manual_seed({seed} * 1_000_003)).images  # the study's noise of samples 0..63
"""


class DiTPipelineFamily(DiTFamily):
    """``DiTPipeline``: :class:`DiTFamily` plus the VAE decode."""

    name = "dit-pipeline"
    pipelines = ("DiTPipeline",)
    uses_prompts = False
    call_template = CallTemplate(
        "dit",
        body=_CALL_BODY,
        note="DiTPipeline takes no time steps: its scheduler is given the plan's",
        project_imports=(),
        patches_scheduler=True,
        max_first_samples=64,  # the pipeline's generator draws the initial noise, the study's first chunk of 64
        ddpm_refusal=(
            "DiTPipeline draws the ddpm solver's step noise from the generator of its initial noise, so no call "
            "of it makes a ddpm study's samples; run the plan with optuna-diffusion evaluate"
        ),
    )

    def decode(self, model: DiffusionModel, x: torch.Tensor) -> torch.Tensor:
        vae = model.vae
        reference = next(vae.parameters())
        latents = x.to(device=reference.device, dtype=reference.dtype) / vae.config.scaling_factor
        return vae.decode(latents, return_dict=False)[0].float()

    def call(self, model: DiffusionModel, x: torch.Tensor, t: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        return super().call(model, x.to(model.denoiser.dtype), t, inputs)
