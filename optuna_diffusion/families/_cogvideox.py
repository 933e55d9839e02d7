"""CogVideoX (``CogVideoXPipeline``): T5 embeddings, v-prediction on an SNR-shifted DDPM schedule, a 3D VAE.

Prompts are encoded by the pipeline's ``encode_prompt`` (padded to the call's ``max_sequence_length``, 226
tokens, which the 2B transformer's positional embedding expects); the unconditional pass is the negative
prompt, ``""`` by default. Guidance batches both halves, unconditional first, and is computed in float32,
as the pipeline does. Latents are laid out ``(f, C, h, w)`` (frames before channels), ``f = (frames - 1) / 4
+ 1``, odd (the VAE decodes an even ``f`` to ``4 f`` frames: 1 + 8k frames, 49 by default); the defaults are the transformer's ``sample_frames`` and ``sample_height/width`` times the VAE's
factor. 5B transformers take 3D rotary embeddings of the latent grid (``image_rotary_emb``), made as the
pipeline makes them. Latents are decoded as ``latents / scaling_factor``.

The schedule is the scheduler's: ``CogVideoXDDIMScheduler``'s SNR shift and zero-terminal rescale are read
into ``trained_betas`` (:func:`~optuna_diffusion.schedules.stock_scheduler_config`), so the project's solvers
and the pipeline's exported scheduler see the same noise levels. CogVideoX 1.5 (``patch_size_t``) pads the
latent frames to its temporal patch; a frame count that needs padding is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..compat_diffusers import cogvideox_rotary_embeddings
from ..errors import ConfigError
from ..pipelines import GENERATOR, CallTemplate
from ._base import Conditions, chunked_noise
from ._pipeline import call_default
from ._video import VIDEO_INPUTS_IMPORT, VIDEO_STUDY_INPUTS, VideoPipelineFamily

if TYPE_CHECKING:
    from ..protocols import ModelLike as DiffusionModel  # what a family reads of models.DiffusionModel
    from ..protocols import SettingsLike as SamplingSettings  # what it reads of generation.SamplingSettings


_CALL_BODY = """\
apply(pipe, plan)                                                  # skips and reuses, per step
""" + VIDEO_STUDY_INPUTS + """\
frames = pipe(prompts, {negative_argument}guidance_scale={guidance_scale}, height=height, width=width,
              num_frames=num_frames, latents=latents,
              """ + GENERATOR + """,  # the study's first batch's (ddpm's step noise)
              **pipeline_schedule_kwargs(plan.timesteps, pipe.scheduler)).frames
"""


class CogVideoXFamily(VideoPipelineFamily):
    """``CogVideoXPipeline`` on a ``CogVideoXTransformer3DModel`` (CogVideoX 2B / 5B)."""

    name = "cogvideox"
    pipelines = ("CogVideoXPipeline",)
    guidance_order = ("unconditional", "conditional")
    call_template = CallTemplate(
        "cogvideox",
        body=_CALL_BODY,
        note="the scheduler of the study's solver holds CogVideoX's SNR-shifted levels",
        project_imports=(VIDEO_INPUTS_IMPORT, "from optuna_diffusion.pipelines import pipeline_schedule_kwargs"),
    )

    def default_image_size(self, model: DiffusionModel) -> tuple[int, int]:
        config, factor = model.denoiser.config, self.vae_scale_factor(model)
        return int(config.sample_height) * factor, int(config.sample_width) * factor

    def default_num_frames(self, model: DiffusionModel) -> int:
        return int(model.denoiser.config.sample_frames)

    def latent_frames(self, model: DiffusionModel) -> int:
        frames = super().latent_frames(model)
        if frames % 2 == 0:  # its VAE upsamples time keeping the first frame apart only for odd counts
            below = self.num_frames(model) - self.temporal_factor(model)
            raise ConfigError(
                f"num_frames = {self.num_frames(model)} gives {frames} latent frames, which CogVideoX's VAE decodes to "
                f"{frames * self.temporal_factor(model)} frames: give an odd number of latent frames "
                f"(e.g. num_frames = {below} or {below + 2 * self.temporal_factor(model)})"
            )
        patch_t = model.denoiser.config.patch_size_t
        if patch_t is not None and frames % patch_t:
            raise ConfigError(
                f"{model.source} patches {patch_t} latent frames at once; {frames} latent frames would be padded: "
                f"give num_frames with a multiple of {patch_t} latent frames"
            )
        return frames

    def sample_shape(self, model: DiffusionModel) -> tuple[int, ...]:
        """``(f, C, h, w)``: the pipeline's latents put frames before channels (``latent_shape`` is the VAE's)."""
        channels, frames, height, width = self.latent_shape(model)
        return frames, channels, height, width

    def initial_noise(self, model: DiffusionModel, seed: int, start: int, stop: int) -> torch.Tensor:
        return chunked_noise(seed, start, stop, self.sample_shape(model))

    def encode(self, model: DiffusionModel, text: str) -> dict[str, torch.Tensor]:
        pipe = model.pipeline
        prompt_embeds, _ = pipe.encode_prompt(
            text, None, do_classifier_free_guidance=False, device=model.device,
            max_sequence_length=call_default(pipe, "max_sequence_length"),
        )
        return {"encoder_hidden_states": prompt_embeds}

    def inputs(
        self, model: DiffusionModel, conditions: Conditions, settings: SamplingSettings, *, unconditional: bool
    ) -> dict[str, Any]:
        return self.embeddings(conditions, unconditional=unconditional)

    def rotary_embeddings(self, model: DiffusionModel) -> Any:
        """The transformer's ``image_rotary_emb`` (None where it uses sin-cos position embeddings, 2B)."""
        if not model.denoiser.config.use_rotary_positional_embeddings:
            return None
        height, width = self.image_size(model)
        return cogvideox_rotary_embeddings(model.pipeline, height, width, self.latent_frames(model), model.device)

    def call_kwargs(self, model: DiffusionModel, x: torch.Tensor, t: torch.Tensor, inputs: dict[str, Any]) -> dict:
        kwargs = super().call_kwargs(model, x, t, inputs)
        return {**kwargs, "image_rotary_emb": self.rotary_embeddings(model), "attention_kwargs": None}

    def call(self, model: DiffusionModel, x: torch.Tensor, t: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        return model.denoiser(**self.call_kwargs(model, x, t, inputs), return_dict=False)[0].float()

    def decode_latents(self, model: DiffusionModel, latents: torch.Tensor) -> torch.Tensor:
        latents = latents.permute(0, 2, 1, 3, 4)  # (N, C, f, h, w), as the VAE takes them
        return model.vae.decode(1 / model.vae.config.scaling_factor * latents).sample
