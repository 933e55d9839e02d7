"""What the lower layers read of a model and of the sampling settings, as typing protocols.

:class:`~optuna_diffusion.models.DiffusionModel` holds its family and its loader picks it, and
:class:`~optuna_diffusion.generation.SamplingSettings` sits beside the image generator that calls the
families; so the families (:mod:`optuna_diffusion.families`) and the pipeline helpers
(:mod:`optuna_diffusion.pipelines`) name them by these protocols instead of importing those modules,
and imports run one way (checked by ``tests/test_import_cycles.py``). Both real classes satisfy them.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn


class ModelLike(Protocol):
    """The attributes of a :class:`~optuna_diffusion.models.DiffusionModel` that families and pipelines read."""

    denoiser: nn.Module
    source: str
    family: Any
    vae: nn.Module | None
    pipeline: Any
    prompt_encoder: Any
    image_size: tuple[int, int] | None
    num_frames: int | None

    @property
    def device(self) -> torch.device: ...

    @property
    def num_class_embeds(self) -> int | None: ...


class SettingsLike(Protocol):
    """The fields of :class:`~optuna_diffusion.generation.SamplingSettings` that families and pipelines read."""

    guidance_scale: float
    num_classes: int | None
    null_class: int | None
