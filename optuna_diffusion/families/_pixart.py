"""PixArt-alpha (``PixArtAlphaPipeline``) and PixArt-Sigma (``PixArtSigmaPipeline``).

One T5 text encoder; its attention mask goes to the transformer as ``encoder_attention_mask``. Prompts
are encoded with the pipeline's call defaults (``clean_caption``, which needs bs4 and ftfy, and
``max_sequence_length``: 120 tokens for alpha, 300 for Sigma); the unconditional pass is the empty
prompt, as the pipelines default ``negative_prompt=""``. Guidance: unconditional half first. PixArt-alpha
adds the resolution ``(height, width)`` and aspect ratio of the image when its transformer's
``sample_size`` is 128 (the 1024-pixel model), as its pipeline does; Sigma passes none. Images are made
at the model's image size itself (``use_resolution_binning=False``: no snapping to the trained sizes).
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


class PixArtFamily(PipelineFamily):
    """``PixArtSigmaPipeline`` (and the base of alpha): T5 embeddings and their attention mask."""

    name = "pixart-sigma"
    pipelines = ("PixArtSigmaPipeline",)
    guidance_order = ("unconditional", "conditional")
    call_template = CallTemplate(
        "pixart",
        note="PixArt-Sigma; PixArt-Alpha the same with PixArtAlphaPipeline",
        arguments="use_resolution_binning=False,  # the size as given",
    )

    def encode(self, model: DiffusionModel, text: str) -> dict[str, torch.Tensor]:
        from diffusers.utils import is_bs4_available, is_ftfy_available

        pipe = model.pipeline
        # The pipeline turns clean_caption off (warning each call) without bs4 and ftfy; so do we, quietly.
        clean_caption = call_default(pipe, "clean_caption") and is_bs4_available() and is_ftfy_available()
        prompt_embeds, mask, _, _ = pipe.encode_prompt(
            text,
            do_classifier_free_guidance=False,
            device=model.device,
            clean_caption=clean_caption,
            max_sequence_length=call_default(pipe, "max_sequence_length"),
        )
        return {"encoder_hidden_states": prompt_embeds, "encoder_attention_mask": mask}

    def micro_conditions(self, model: DiffusionModel, size: int, dtype: torch.dtype) -> dict[str, Any]:
        """The pipeline's ``added_cond_kwargs`` for a batch of ``size``."""
        return {"resolution": None, "aspect_ratio": None}

    def inputs(
        self, model: DiffusionModel, conditions: Conditions, settings: SamplingSettings, *, unconditional: bool
    ) -> dict[str, Any]:
        embeds = self.embeddings(conditions, unconditional=unconditional)
        dtype = embeds["encoder_hidden_states"].dtype
        return {**embeds, "added_cond_kwargs": self.micro_conditions(model, conditions.size, dtype)}


class PixArtAlphaFamily(PixArtFamily):
    """``PixArtAlphaPipeline``: resolution and aspect-ratio conditions for the 1024-pixel transformer."""

    name = "pixart-alpha"
    pipelines = ("PixArtAlphaPipeline",)

    def micro_conditions(self, model: DiffusionModel, size: int, dtype: torch.dtype) -> dict[str, Any]:
        if model.denoiser.config.sample_size != 128:  # the pipeline's own test
            return super().micro_conditions(model, size, dtype)
        height, width = self.image_size(model)
        resolution = torch.tensor([height, width]).repeat(size, 1).to(dtype=dtype, device=model.device)
        aspect_ratio = torch.tensor([float(height / width)]).repeat(size, 1).to(dtype=dtype, device=model.device)
        return {"resolution": resolution, "aspect_ratio": aspect_ratio}
