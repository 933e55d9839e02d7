"""LTX-Video (``LTXPipeline``): packed video tokens, T5 embeddings with their mask, flow matching, a 3D VAE.

Like Flux, the transformer works on *packed* latents: the ``(C, f, h, w)`` latents cut into patches (1 x 1 x 1
for LTX-Video), one token per patch; the initial noise is drawn unpacked per sample (common random numbers)
and packed, as ``prepare_latents`` does, and the final latents are unpacked before the VAE. The VAE compresses
time 8 times and space 32 times (``(frames - 1) / 8 + 1`` latent frames). Prompts are encoded by the pipeline's
``encode_prompt`` (128 tokens) with their attention mask; the unconditional pass is the negative prompt, ``""``
by default. Guidance batches both halves, unconditional first, in float32 (no ``guidance_rescale``). The
transformer also takes the latent grid and ``rope_interpolation_scale = (8 / frame_rate, 32, 32)`` at the
pipeline's default frame rate (25). Decoding undoes the VAE's latent normalisation and, for a VAE with
timestep conditioning (LTX-Video 0.9.1+), passes the pipeline's default ``decode_timestep`` of 0 (no noise).

The pipeline computes the sigma shift from the video's token count (``mu``, :meth:`LTXFamily.shift_mu`) and
always passes its own sigmas: a plan reaches it through :func:`~optuna_diffusion.pipelines.pin_schedule`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..compat_diffusers import ltx_pack, ltx_unpack
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
c = pipe.scheduler.config                                          # the mu LTXPipeline passes: its video's tokens
mu = calculate_shift(latents.shape[1], c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
pin_schedule(pipe.scheduler, {{**pipeline_schedule_kwargs(plan.timesteps, pipe.scheduler, mu=mu), "mu": mu}})
frames = pipe(prompts, {negative_argument}guidance_scale={guidance_scale}, height=height, width=width,
              num_frames=num_frames, latents=latents, num_inference_steps=plan.num_steps).frames
"""


class LTXFamily(VideoPipelineFamily):
    """``LTXPipeline`` on an ``LTXVideoTransformer3DModel`` (LTX-Video 0.9.x text-to-video)."""

    name = "ltx-video"
    pipelines = ("LTXPipeline",)
    guidance_order = ("unconditional", "conditional")
    call_template = CallTemplate(
        "ltx-video",
        body=_CALL_BODY,
        note="LTXPipeline passes its own sigmas: the plan's are pinned on its scheduler, with its mu",
        imports=("from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift",),
        project_imports=(
            VIDEO_INPUTS_IMPORT, "from optuna_diffusion.pipelines import pin_schedule, pipeline_schedule_kwargs",
        ),
    )

    def vae_scale_factor(self, model: DiffusionModel) -> int:
        return int(model.pipeline.vae_spatial_compression_ratio)

    def temporal_factor(self, model: DiffusionModel) -> int:
        return int(model.pipeline.vae_temporal_compression_ratio)

    def patches(self, model: DiffusionModel) -> tuple[int, int]:
        """``(spatial, temporal)`` patch size of the transformer."""
        config = model.denoiser.config
        return int(config.patch_size), int(config.patch_size_t)

    def latent_multiple(self, model: DiffusionModel) -> int:
        # The pipeline's check_inputs wants heights and widths of multiples of 32 pixels, whatever its VAE.
        return max(self.patches(model)[0], 32 // self.vae_scale_factor(model))

    def grid(self, model: DiffusionModel) -> tuple[int, int, int]:
        """``(f, h, w)`` of the latent video (what the transformer is told as num_frames, height, width)."""
        _, frames, height, width = self.latent_shape(model)
        return frames, height, width

    def sample_shape(self, model: DiffusionModel) -> tuple[int, ...]:
        channels, frames, height, width = self.latent_shape(model)
        patch, patch_t = self.patches(model)
        return (frames // patch_t) * (height // patch) * (width // patch), channels * patch_t * patch * patch

    def initial_noise(self, model: DiffusionModel, seed: int, start: int, stop: int) -> torch.Tensor:
        return ltx_pack(super().initial_noise(model, seed, start, stop), *self.patches(model))

    def shift_mu(self, model: DiffusionModel) -> float | None:
        """``LTXPipeline``'s ``mu``: ``calculate_shift`` of the latent video's f h w tokens (the scheduler's settings,
        with the pipeline's defaults), which the pipeline computes whether or not its scheduler shifts dynamically."""
        frames, height, width = self.grid(model)
        return model.schedule.mu_for(frames * height * width)

    def encode(self, model: DiffusionModel, text: str) -> dict[str, torch.Tensor]:
        pipe = model.pipeline
        prompt_embeds, mask, _, _ = pipe.encode_prompt(
            prompt=text, negative_prompt=None, do_classifier_free_guidance=False, device=model.device,
            max_sequence_length=call_default(pipe, "max_sequence_length"),
        )
        return {"encoder_hidden_states": prompt_embeds, "encoder_attention_mask": mask}

    def inputs(
        self, model: DiffusionModel, conditions: Conditions, settings: SamplingSettings, *, unconditional: bool
    ) -> dict[str, Any]:
        return self.embeddings(conditions, unconditional=unconditional)

    def call_kwargs(self, model: DiffusionModel, x: torch.Tensor, t: torch.Tensor, inputs: dict[str, Any]) -> dict:
        frames, height, width = self.grid(model)
        temporal, spatial = self.temporal_factor(model), self.vae_scale_factor(model)
        return {
            **super().call_kwargs(model, x, t, inputs),
            # The pipeline casts the latents to the prompt embeddings' dtype (the text encoder's).
            "hidden_states": x.to(inputs["encoder_hidden_states"].dtype),
            "num_frames": frames, "height": height, "width": width,
            "rope_interpolation_scale": (temporal / call_default(model.pipeline, "frame_rate"), spatial, spatial),
            "attention_kwargs": None,
        }

    def call(self, model: DiffusionModel, x: torch.Tensor, t: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        return model.denoiser(**self.call_kwargs(model, x, t, inputs), return_dict=False)[0].float()

    def decode(self, model: DiffusionModel, x: torch.Tensor) -> torch.Tensor:
        frames, height, width = self.grid(model)
        latents = ltx_unpack(x.float(), frames, height, width, *self.patches(model))
        video = self.decode_latents(model, latents.to(next(model.vae.parameters()).device))
        return video.float().permute(0, 2, 1, 3, 4)

    def decode_latents(self, model: DiffusionModel, latents: torch.Tensor) -> torch.Tensor:
        """The VAE's video of final latents ``(N, C, f, h, w)`` in float32, normalised back in float32 (as the pipeline)."""
        vae = model.vae
        shape = (1, -1, 1, 1, 1)
        mean = vae.latents_mean.view(shape).to(latents.device, latents.dtype)
        std = vae.latents_std.view(shape).to(latents.device, latents.dtype)
        latents = (latents * std / vae.config.scaling_factor + mean).to(next(vae.parameters()).dtype)
        timestep = None
        if vae.config.timestep_conditioning:  # the pipeline's default decode_timestep 0: no decode noise
            default = call_default(model.pipeline, "decode_timestep")
            timestep = torch.full((len(latents),), float(default), device=latents.device, dtype=latents.dtype)
        return vae.decode(latents, timestep, return_dict=False)[0]
