"""Stable Diffusion 3 / 3.5 (``StableDiffusion3Pipeline``): three text encoders, flow matching.

Two CLIP encoders (penultimate hidden states side by side, padded to the T5 width) and T5 (up to the
pipeline's default ``max_sequence_length``, 256 tokens) make ``encoder_hidden_states``; the two CLIP
pooled embeddings make ``pooled_projections``. Guidance: unconditional half first, the empty prompt
by default; no skip-layer guidance. Latents are decoded as ``latents / scaling_factor + shift_factor``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..pipelines import CallTemplate
from ._base import Conditions
from ._pipeline import PipelineFamily, call_default

if TYPE_CHECKING:
    from ..protocols import ModelLike as DiffusionModel  # what a family reads of models.DiffusionModel
    from ..protocols import SettingsLike as SamplingSettings  # what it reads of generation.SamplingSettings


class StableDiffusion3Family(PipelineFamily):
    """``StableDiffusion3Pipeline`` on an ``SD3Transformer2DModel``."""

    name = "stable-diffusion-3"
    pipelines = ("StableDiffusion3Pipeline",)
    guidance_order = ("unconditional", "conditional")
    call_template = CallTemplate("sd3", note="flow matching: the plan's steps become sigmas under the scheduler's shift")

    def encode(self, model: DiffusionModel, text: str) -> dict[str, torch.Tensor]:
        pipe = model.pipeline
        prompt_embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=text,
            prompt_2=None,
            prompt_3=None,
            device=model.device,
            do_classifier_free_guidance=False,
            max_sequence_length=call_default(pipe, "max_sequence_length"),
        )
        return {"encoder_hidden_states": prompt_embeds, "pooled_projections": pooled}

    def inputs(
        self, model: DiffusionModel, conditions: Conditions, settings: SamplingSettings, *, unconditional: bool
    ) -> dict[str, Any]:
        return self.embeddings(conditions, unconditional=unconditional)

    def shift_mu(self, model: DiffusionModel) -> float | None:
        """``StableDiffusion3Pipeline``'s ``mu`` under dynamic shifting: ``calculate_shift`` of the patch tokens
        (its defaults: base 256 / 0.5, max 4096 / 1.16)."""
        config = model.scheduler_config
        if not config.get("use_dynamic_shifting"):
            return None
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

        _, height, width = self.latent_shape(model)
        patch = int(model.denoiser.config.patch_size)
        return float(calculate_shift(
            (height // patch) * (width // patch), config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5), config.get("max_shift", 1.16),
        ))

    def unscale_latents(self, model: DiffusionModel, latents: torch.Tensor) -> torch.Tensor:
        config = model.vae.config
        return latents / config.scaling_factor + config.shift_factor
