"""The base of the families of text-to-video diffusers pipelines (Wan, CogVideoX, LTX-Video).

A video pipeline is a text-to-image pipeline (:class:`~optuna_diffusion.families.PipelineFamily`) whose
latents have a time axis: ``(C, f, h, w)``, the video's frames compressed ``temporal`` times by its VAE
(``f = (frames - 1) / temporal + 1``: the first frame alone, then one latent frame per ``temporal`` frames)
and its height and width ``spatial`` times. The study sets the frame count (``[model] num_frames``, else
the pipeline's call default) beside the image size; a count the VAE cannot compress is a one-line error
(the pipelines round it with a warning instead).

A sample's decoded form is its frames, ``(F, C, H, W)`` in [-1, 1] (unclipped where the VAE does not clip),
the layout of the pipelines' ``output_type="pt"`` (which maps them to [0, 1]); a batch is
``(N, F, C, H, W)``. Measures on images treat each frame as an image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError
from ._pipeline import PipelineFamily, call_default

if TYPE_CHECKING:
    from ..protocols import ModelLike as DiffusionModel  # what a family reads of models.DiffusionModel
    from ..protocols import SettingsLike as SamplingSettings  # what it reads of generation.SamplingSettings


VIDEO_INPUTS_IMPORT = "from optuna_diffusion.study_inputs import study_image_size, study_latents, study_num_frames"
"""What a video family's exported call imports for the study's size, frame count and noise."""

VIDEO_STUDY_INPUTS = """\
height, width = study_image_size(pipe, {image_size})  # the study's [model] image_size (None: pipeline default)
num_frames = study_num_frames(pipe, {num_frames})  # the study's [model] num_frames (None: pipeline default)
prompts = {prompts}  # the prompts of the study's first samples
{negatives}latents = study_latents(pipe, seed={seed}, count=len(prompts), height=height, width=width,
                        num_frames=num_frames)  # their noise
"""
"""The lines of a video family's exported call that make the study's first prompts, size, frames and noise."""


class VideoPipelineFamily(PipelineFamily):
    """A text-to-video pipeline: latent videos ``(C, f, h, w)`` decoded by a 3D VAE into frames.

    Subclasses read their VAE's compression (:meth:`vae_scale_factor`, :meth:`temporal_factor`) the way
    their pipeline does, and implement :meth:`encode`, :meth:`inputs` and :meth:`decode_latents`.
    """

    name = "video-pipeline"
    makes_video = True

    # Sample space --------------------------------------------------------------------------------

    def vae_scale_factor(self, model: DiffusionModel) -> int:
        """Pixels per latent pixel, as the pipeline reads it off its VAE."""
        return int(model.pipeline.vae_scale_factor_spatial)

    def temporal_factor(self, model: DiffusionModel) -> int:
        """Frames per latent frame (after the first), as the pipeline reads it off its VAE."""
        return int(model.pipeline.vae_scale_factor_temporal)

    def default_image_size(self, model: DiffusionModel) -> tuple[int, int]:
        pipe = model.pipeline
        return int(call_default(pipe, "height")), int(call_default(pipe, "width"))

    def default_num_frames(self, model: DiffusionModel) -> int:
        """The frame count a plain ``pipe(prompt)`` makes."""
        return int(call_default(model.pipeline, "num_frames"))

    def num_frames(self, model: DiffusionModel) -> int:
        """The video's frame count (``model.num_frames``, default the pipeline's), checked against the VAE."""
        frames = model.num_frames or self.default_num_frames(model)
        temporal = self.temporal_factor(model)
        if (frames - 1) % temporal:
            below = (frames - 1) // temporal * temporal + 1
            raise ConfigError(
                f"num_frames = {frames} does not fit the VAE of {model.source}, which compresses time {temporal} times: "
                f"give 1 + a multiple of {temporal} (e.g. {below} or {below + temporal})"
            )
        return frames

    def latent_frames(self, model: DiffusionModel) -> int:
        """Latent frames of the video: ``(frames - 1) / temporal + 1``."""
        return (self.num_frames(model) - 1) // self.temporal_factor(model) + 1

    def latent_shape(self, model: DiffusionModel) -> tuple[int, ...]:
        """``(C, f, h, w)`` of one sample's latents, as the pipeline's ``prepare_latents`` makes them."""
        height, width = self.image_size(model)
        factor = self.vae_scale_factor(model)
        channels = int(model.denoiser.config.in_channels)
        return channels, self.latent_frames(model), height // factor, width // factor

    def check(self, model: DiffusionModel, settings: SamplingSettings, *, text: Any = None) -> None:
        super().check(model, settings, text=text)
        self.latent_frames(model)  # checks the frame count too

    # Decoding ------------------------------------------------------------------------------------

    def decode_latents(self, model: DiffusionModel, latents: torch.Tensor) -> torch.Tensor:
        """The VAE's video ``(N, C, F, H, W)`` of final latents (in the VAE's device and dtype), as the pipeline decodes."""
        raise NotImplementedError

    def decode(self, model: DiffusionModel, x: torch.Tensor) -> torch.Tensor:
        """Frames ``(N, F, C, H, W)`` in [-1, 1], float32, of final latents ``x``."""
        reference = next(model.vae.parameters())
        video = self.decode_latents(model, x.to(device=reference.device, dtype=reference.dtype))
        return video.float().permute(0, 2, 1, 3, 4)
