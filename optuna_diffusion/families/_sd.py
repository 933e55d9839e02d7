"""Stable Diffusion 1.x/2.x (``StableDiffusionPipeline``) and SDXL (``StableDiffusionXLPipeline``).

Both guide as their pipelines do: the unconditional half first, ``uncond + w (cond - uncond)``, no
guidance rescale. SDXL adds, per sample, the pooled embedding of its second text encoder
(``text_embeds``) and the time ids ``(height, width, 0, 0, height, width)`` (original size, crop
corner, target size: the pipeline's defaults), the same for both halves; its unconditional pass with
no negative prompt is zeros when the pipeline says ``force_zeros_for_empty_prompt``. SDXL latents are
decoded with ``latents_mean``/``latents_std`` when the VAE config has them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError
from ..pipelines import CallTemplate
from ._base import Conditions
from ._pipeline import PipelineFamily

if TYPE_CHECKING:
    from ..protocols import ModelLike as DiffusionModel  # what a family reads of models.DiffusionModel
    from ..protocols import SettingsLike as SamplingSettings  # what it reads of generation.SamplingSettings


class StableDiffusionFamily(PipelineFamily):
    """``StableDiffusionPipeline``: a ``UNet2DConditionModel`` on the CLIP text encoder's last hidden states."""

    name = "stable-diffusion"
    pipelines = ("StableDiffusionPipeline",)
    main_input = "sample"
    expand_timestep = False  # the pipeline passes the scheduler's scalar time step
    guidance_order = ("unconditional", "conditional")
    call_template = CallTemplate("sd", note="Stable Diffusion 1.x and 2.x, epsilon or v-prediction")

    def check(self, model: DiffusionModel, settings: SamplingSettings, *, text: Any = None) -> None:
        super().check(model, settings, text=text)
        if model.denoiser.config.time_cond_proj_dim is not None:
            raise ConfigError(
                f"{model.source} has a guidance-distilled UNet (time_cond_proj_dim); optuna-diffusion runs "
                "classifier-free guidance by batching only"
            )

    def encode(self, model: DiffusionModel, text: str) -> dict[str, torch.Tensor]:
        prompt_embeds, _ = model.pipeline.encode_prompt(text, model.device, 1, False)
        return {"encoder_hidden_states": prompt_embeds}

    def inputs(
        self, model: DiffusionModel, conditions: Conditions, settings: SamplingSettings, *, unconditional: bool
    ) -> dict[str, Any]:
        return self.embeddings(conditions, unconditional=unconditional)


class StableDiffusionXLFamily(StableDiffusionFamily):
    """``StableDiffusionXLPipeline``: two CLIP text encoders, pooled embeddings and time ids."""

    name = "stable-diffusion-xl"
    pipelines = ("StableDiffusionXLPipeline",)
    upcasts_vae = True
    call_template = CallTemplate("sdxl")

    def check(self, model: DiffusionModel, settings: SamplingSettings, *, text: Any = None) -> None:
        super().check(model, settings, text=text)
        unet, pipe = model.denoiser, model.pipeline
        expected = unet.add_embedding.linear_1.in_features
        passed = unet.config.addition_time_embed_dim * 6 + self._projection_dim(model)
        if expected != passed:
            raise ConfigError(
                f"{model.source}: the UNet expects added embeddings of width {expected}, but six time ids and the "
                f"pooled text embedding give {passed} (an SDXL refiner or a mismatched text_encoder_2?)"
            )
        if pipe.text_encoder_2 is None:
            raise ConfigError(f"{model.source} has no text_encoder_2, which SDXL's pooled embedding comes from")

    @staticmethod
    def _projection_dim(model: DiffusionModel) -> int:
        return int(model.pipeline.text_encoder_2.config.projection_dim)

    def encode(self, model: DiffusionModel, text: str) -> dict[str, torch.Tensor]:
        prompt_embeds, _, pooled, _ = model.pipeline.encode_prompt(
            prompt=text, device=model.device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return {"encoder_hidden_states": prompt_embeds, "text_embeds": pooled}

    def encode_negative(self, model: DiffusionModel, text: str | None) -> dict[str, torch.Tensor]:
        pipe = model.pipeline
        if text is not None or not pipe.config.force_zeros_for_empty_prompt:
            return super().encode_negative(model, text)
        # The pipeline's zeros_like(prompt_embeds): its width is the text encoders' widths side by side.
        encoders = [encoder for encoder in (pipe.text_encoder, pipe.text_encoder_2) if encoder is not None]
        width = sum(int(encoder.config.hidden_size) for encoder in encoders)
        length = int(pipe.tokenizer_2.model_max_length)
        dtype = pipe.text_encoder_2.dtype
        return {
            "encoder_hidden_states": torch.zeros(1, length, width, device=model.device, dtype=dtype),
            "text_embeds": torch.zeros(1, self._projection_dim(model), device=model.device, dtype=dtype),
        }

    def time_ids(self, model: DiffusionModel, size: int, dtype: torch.dtype) -> torch.Tensor:
        """The pipeline's default ``add_time_ids``: original size, crop corner (0, 0), target size."""
        height, width = self.image_size(model)
        ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=dtype, device=model.device)
        return ids.repeat(size, 1)

    def inputs(
        self, model: DiffusionModel, conditions: Conditions, settings: SamplingSettings, *, unconditional: bool
    ) -> dict[str, Any]:
        embeds = self.embeddings(conditions, unconditional=unconditional)
        context = embeds["encoder_hidden_states"]
        added = {"text_embeds": embeds["text_embeds"], "time_ids": self.time_ids(model, conditions.size, context.dtype)}
        return {"encoder_hidden_states": context, "added_cond_kwargs": added}

    def unscale_latents(self, model: DiffusionModel, latents: torch.Tensor) -> torch.Tensor:
        config = model.vae.config
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is None or std is None:
            return latents / config.scaling_factor
        shape = (1, len(mean), 1, 1)
        mean = torch.tensor(mean, device=latents.device, dtype=latents.dtype).view(shape)
        std = torch.tensor(std, device=latents.device, dtype=latents.dtype).view(shape)
        return latents * std / config.scaling_factor + mean
