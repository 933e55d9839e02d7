"""Wan 2.1 text-to-video (``WanPipeline``): UMT5 embeddings, flow matching, a causal 3D VAE.

Prompts are encoded by the pipeline's ``encode_prompt`` (its ``prompt_clean``, padded to the call's
``max_sequence_length``, 512 tokens, zeros past the prompt's end) and cast to the transformer's dtype;
the unconditional pass is the negative prompt, ``""`` by default. Guidance: the pipeline calls the
transformer twice per step, conditional first, then unconditional, and so does this family (not one
batch of both): a reused block then sees the same previous outputs here as in the pipeline. The time step
goes to the transformer as the scheduler's ``sigma * 1000``, one per sample. Latents are
``(16, (frames - 1) / 4 + 1, H / 8, W / 8)`` and are decoded as ``latents * latents_std + latents_mean``.

Wan 2.2's two-transformer pipelines (``transformer_2`` with a ``boundary_ratio``) and its per-token time
steps (``expand_timesteps``, TI2V-5B) are refused: a plan runs one denoiser.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError
from ..pipelines import CallTemplate
from ._base import Conditions
from ._pipeline import call_default
from ._video import VIDEO_INPUTS_IMPORT, VIDEO_STUDY_INPUTS, VideoPipelineFamily

if TYPE_CHECKING:
    from ..protocols import ModelLike as DiffusionModel  # what a family reads of models.DiffusionModel
    from ..protocols import SettingsLike as SamplingSettings  # what it reads of generation.SamplingSettings


_CALL_BODY = """\
apply(pipe, plan)                                                  # skips and reuses, per step
""" + VIDEO_STUDY_INPUTS + """\
pin_schedule(pipe.scheduler, pipeline_schedule_kwargs(plan.timesteps, pipe.scheduler))  # its call takes no sigmas
frames = pipe(prompts, {negative_argument}guidance_scale={guidance_scale}, height=height, width=width,
              num_frames=num_frames, latents=latents, num_inference_steps=plan.num_steps).frames
"""


class WanFamily(VideoPipelineFamily):
    """``WanPipeline`` on one ``WanTransformer3DModel`` (Wan 2.1 T2V 1.3B / 14B)."""

    name = "wan"
    pipelines = ("WanPipeline",)
    guidance_order = ("conditional", "unconditional")
    call_template = CallTemplate(
        "wan",
        body=_CALL_BODY,
        note="WanPipeline takes no sigmas: the plan's are pinned on its scheduler",
        project_imports=(
            VIDEO_INPUTS_IMPORT, "from optuna_diffusion.pipelines import pin_schedule, pipeline_schedule_kwargs",
        ),
    )

    def latent_multiple(self, model: DiffusionModel) -> int:
        _, patch_height, patch_width = model.denoiser.config.patch_size
        if patch_height != patch_width:
            raise ConfigError(f"{model.source}: a transformer patch of {patch_height}x{patch_width} is not supported")
        return int(patch_height)

    def check(self, model: DiffusionModel, settings: SamplingSettings, *, text: Any = None) -> None:
        config = model.pipeline.config
        if getattr(model.pipeline, "transformer_2", None) is not None or config.get("boundary_ratio") is not None:
            raise ConfigError(
                f"{model.source} is a two-transformer Wan 2.2 pipeline (transformer_2, boundary_ratio); "
                "optuna-diffusion runs one denoiser per plan (Wan 2.1)"
            )
        if config.get("expand_timesteps"):
            raise ConfigError(f"{model.source} takes a time step per token (expand_timesteps, Wan 2.2 TI2V); not supported")
        super().check(model, settings, text=text)

    def encode(self, model: DiffusionModel, text: str) -> dict[str, torch.Tensor]:
        pipe = model.pipeline
        prompt_embeds, _ = pipe.encode_prompt(
            prompt=text, negative_prompt=None, do_classifier_free_guidance=False, device=model.device,
            max_sequence_length=call_default(pipe, "max_sequence_length"),
        )
        return {"encoder_hidden_states": prompt_embeds.to(model.denoiser.dtype)}

    def inputs(
        self, model: DiffusionModel, conditions: Conditions, settings: SamplingSettings, *, unconditional: bool
    ) -> dict[str, Any]:
        return {**self.embeddings(conditions, unconditional=unconditional), "attention_kwargs": None}

    def call(self, model: DiffusionModel, x: torch.Tensor, t: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        return model.denoiser(**self.call_kwargs(model, x, t, inputs), return_dict=False)[0]

    def predict(
        self, model: DiffusionModel, x: torch.Tensor, t: torch.Tensor, conditions: Conditions, settings: SamplingSettings
    ) -> torch.Tensor:
        """The guided velocity, from two calls in the pipeline's order (conditional, then unconditional)."""
        conditional = self.call(model, x, t, self.inputs(model, conditions, settings, unconditional=False))
        if not self.uses_guidance(settings):
            return conditional
        unconditional = self.call(model, x, t, self.inputs(model, conditions, settings, unconditional=True))
        return unconditional + settings.guidance_scale * (conditional - unconditional)

    def decode_latents(self, model: DiffusionModel, latents: torch.Tensor) -> torch.Tensor:
        config = model.vae.config
        shape = (1, config.z_dim, 1, 1, 1)
        mean = torch.tensor(config.latents_mean).view(shape).to(latents.device, latents.dtype)
        inverse_std = 1.0 / torch.tensor(config.latents_std).view(shape).to(latents.device, latents.dtype)
        return model.vae.decode(latents / inverse_std + mean, return_dict=False)[0]
