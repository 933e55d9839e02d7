"""Flux (``FluxPipeline``): packed latents, CLIP pooled + T5 embeddings, guidance by embedding.

The transformer works on *packed* latents: the ``(C, h, w)`` latents cut into 2x2 patches, one token
of ``4 C`` channels per patch, with position ids ``(0, row, column)`` per token (``img_ids``) and zeros
for the text tokens (``txt_ids``). The solver runs on packed latents; the initial noise is drawn
unpacked (per sample, common random numbers) and packed, as ``prepare_latents`` does; the final latents
are unpacked before the VAE (``latents / scaling_factor + shift_factor``).

Flux is guidance-distilled: no classifier-free guidance batch. A transformer with ``guidance_embeds``
(Flux dev) takes ``guidance_scale`` as an input (``guidance``); schnell has none and ignores it. The
pipeline's optional true CFG (``true_cfg_scale`` with a negative prompt) is not run here. The time step
goes to the transformer as ``t / 1000``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..compat_diffusers import flux_image_ids
from ..compat_diffusers import flux_pack as pack
from ..compat_diffusers import flux_unpack as unpack
from ..pipelines import GENERATOR, STUDY_INPUTS, CallTemplate
from ._base import Conditions
from ._pipeline import PipelineFamily, call_default

if TYPE_CHECKING:
    from ..protocols import ModelLike as DiffusionModel  # what a family reads of models.DiffusionModel
    from ..protocols import SettingsLike as SamplingSettings  # what it reads of generation.SamplingSettings

_CALL_BODY = """\
apply(pipe, plan)                                                  # double- and single-stream blocks
""" + STUDY_INPUTS + """\
c = pipe.scheduler.config                                          # the mu Flux passes (FLUX.1-dev)
mu = calculate_shift(latents.shape[1], c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
images = pipe(prompts, guidance_scale={guidance_scale}, height=height, width=width, latents=latents,
              """ + GENERATOR + """,  # the study's first batch's
              **pipeline_schedule_kwargs(plan.timesteps, pipe.scheduler, mu=mu)).images
"""


class FluxFamily(PipelineFamily):
    """``FluxPipeline`` on a ``FluxTransformer2DModel`` (schnell or dev)."""

    name = "flux"
    pipelines = ("FluxPipeline",)
    call_template = CallTemplate(
        "flux",
        body=_CALL_BODY,
        note="dev shifts its sigmas by mu, computed from the latent tokens; schnell ignores mu",
        imports=("from diffusers.pipelines.flux.pipeline_flux import calculate_shift",),
        shift_patch=2,  # mu from the packed latent tokens, one per 2 x 2 patch
        negative_prompts=False,  # guidance-distilled: no unconditional pass
    )

    def latent_multiple(self, model: DiffusionModel) -> int:
        return 2  # latents are packed in 2x2 patches

    def latent_shape(self, model: DiffusionModel) -> tuple[int, int, int]:
        height, width = self.image_size(model)
        factor = self.vae_scale_factor(model)
        return int(model.denoiser.config.in_channels) // 4, height // factor, width // factor

    def sample_shape(self, model: DiffusionModel) -> tuple[int, ...]:
        channels, height, width = self.latent_shape(model)
        return (height // 2) * (width // 2), channels * 4

    def initial_noise(self, model: DiffusionModel, seed: int, start: int, stop: int) -> torch.Tensor:
        return pack(super().initial_noise(model, seed, start, stop))

    def decode(self, model: DiffusionModel, x: torch.Tensor) -> torch.Tensor:
        _, height, width = self.latent_shape(model)
        return super().decode(model, unpack(x, height, width))

    def unscale_latents(self, model: DiffusionModel, latents: torch.Tensor) -> torch.Tensor:
        config = model.vae.config
        return latents / config.scaling_factor + config.shift_factor

    def uses_guidance(self, settings: SamplingSettings) -> bool:
        return False  # guidance-distilled: one call per step

    def shift_mu(self, model: DiffusionModel) -> float | None:
        """``FluxPipeline``'s ``mu``: ``calculate_shift`` of the packed latent tokens, (H / 16) (W / 16) at VAE factor 8."""
        schedule = model.schedule
        if not getattr(schedule, "use_dynamic_shifting", False):
            return None
        return schedule.mu_for(self.sample_shape(model)[0])

    def encode(self, model: DiffusionModel, text: str) -> dict[str, torch.Tensor]:
        pipe = model.pipeline
        prompt_embeds, pooled, _ = pipe.encode_prompt(
            prompt=text, prompt_2=None, device=model.device, num_images_per_prompt=1,
            max_sequence_length=call_default(pipe, "max_sequence_length"),
        )
        return {"encoder_hidden_states": prompt_embeds, "pooled_projections": pooled}

    def image_ids(self, model: DiffusionModel, dtype: torch.dtype) -> torch.Tensor:
        """``img_ids``: ``(0, row, column)`` of every 2x2 patch, row by row (``_prepare_latent_image_ids``)."""
        _, height, width = self.latent_shape(model)
        return flux_image_ids(height // 2, width // 2).to(device=model.device, dtype=dtype)

    def inputs(
        self, model: DiffusionModel, conditions: Conditions, settings: SamplingSettings, *, unconditional: bool
    ) -> dict[str, Any]:
        embeds = self.embeddings(conditions, unconditional=unconditional)
        context = embeds["encoder_hidden_states"]
        pipe = model.pipeline
        dtype = pipe.text_encoder.dtype if pipe.text_encoder is not None else model.denoiser.dtype
        inputs = {
            **embeds,
            "txt_ids": torch.zeros(context.shape[1], 3, device=model.device, dtype=dtype),
            "img_ids": self.image_ids(model, context.dtype),
            "guidance": None,
        }
        if model.denoiser.config.guidance_embeds:
            guidance = torch.full([1], settings.guidance_scale, device=model.device, dtype=torch.float32)
            inputs["guidance"] = guidance.expand(conditions.size)
        return inputs

    def timestep_input(self, model: DiffusionModel, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        return t.reshape(-1)[:1].expand(len(x)).to(x.dtype) / 1000

    def call(self, model: DiffusionModel, x: torch.Tensor, t: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        return model.denoiser(**self.call_kwargs(model, x, t, inputs), return_dict=False)[0]
