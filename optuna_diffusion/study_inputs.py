"""The image size, frame count and initial latents a study used, for a call of its pipeline that reproduces
its samples.

``export`` writes a ``plan.py`` that calls the pipeline on the study's first samples: their prompts
(or class labels), guidance scale, image size (:func:`study_image_size`: ``[model] image_size``, else the
pipeline's default), a video pipeline's frame count (:func:`study_num_frames`: ``[model] num_frames``, else
the pipeline's default) and initial noise (:func:`study_latents`: the engine's own rule, sample i's noise
drawn in fixed chunks from the study's seed, in the shape the pipeline's ``prepare_latents`` makes,
packed for Flux and LTX-Video).
"""

from __future__ import annotations

from typing import Any

import torch

from .errors import ConfigError
from .models import DiffusionModel, model_from_pipeline


def _model(pipe: Any, height: int | None, width: int | None, num_frames: int | None = None) -> DiffusionModel:
    if (height is None) != (width is None):
        raise ConfigError("give both height and width, or neither (the pipeline's default size)")
    size = None if height is None else (height, width)
    return model_from_pipeline(pipe, source=type(pipe).__name__, image_size=size, num_frames=num_frames)


def study_image_size(pipe: Any, image_size: int | None = None) -> tuple[int, int]:
    """``(height, width)`` of a study's images on ``pipe``: ``image_size`` square, or the pipeline's default."""
    model = _model(pipe, image_size, image_size)
    return model.family.image_size(model)


def study_num_frames(pipe: Any, num_frames: int | None = None) -> int:
    """The frame count of a study's videos on a video pipeline: ``num_frames``, or the pipeline's default (checked)."""
    model = _model(pipe, None, None, num_frames)
    return model.family.num_frames(model)


def study_latents(
    pipe: Any, *, seed: int, count: int, height: int | None = None, width: int | None = None,
    num_frames: int | None = None,
) -> torch.Tensor:
    """The initial latents a study drew for its samples ``0..count-1`` (pass them as ``latents=``).

    Args:
        pipe: the study's pipeline (its denoiser and VAE fix the latent shape).
        seed: the study's ``[sampling] seed``.
        count: how many of its first samples.
        height, width: the study's image size (None: the pipeline's default).
        num_frames: a video pipeline's frame count (None: the pipeline's default).

    Returns:
        ``(count, C, h, w)`` latents (Flux: packed ``(count, tokens, 4 C)``; videos: ``(count, C, f, h, w)``
        for Wan, ``(count, f, C, h, w)`` for CogVideoX, packed tokens for LTX-Video) on the pipeline's device,
        in its denoiser's dtype (as the pipeline's own ``prepare_latents`` makes them; drawn in float32).
    """
    model = _model(pipe, height, width, num_frames)
    return model.family.initial_noise(model, seed, 0, count).to(device=model.device, dtype=model.denoiser.dtype)
