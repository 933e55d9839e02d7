"""How the engine calls each kind of denoiser (see :class:`ModelFamily`), and which family a model has."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import ModelLoadError
from ._base import Conditions, ModelFamily, chunked_noise, labels_of, stack
from ._cogvideox import CogVideoXFamily
from ._dit import DiTFamily
from ._dit_pipeline import DiTPipelineFamily
from ._flux import FluxFamily
from ._ltx import LTXFamily
from ._pipeline import PipelineFamily
from ._pixart import PixArtAlphaFamily, PixArtFamily
from ._sd import StableDiffusionFamily, StableDiffusionXLFamily
from ._sd3 import StableDiffusion3Family
from ._unet import TextConditioning, UNet2DConditionFamily, UNet2DFamily
from ._video import VideoPipelineFamily
from ._wan import WanFamily
from ._wan_classes import WanClassFamily

FAMILIES: tuple[ModelFamily, ...] = (UNet2DFamily(), UNet2DConditionFamily(), DiTFamily(), WanClassFamily())
"""The families of bare denoisers (a model folder, not a pipeline)."""

PIPELINE_FAMILIES: dict[str, ModelFamily] = {
    name: family
    for family in (
        StableDiffusionFamily(),
        StableDiffusionXLFamily(),
        PixArtAlphaFamily(),
        PixArtFamily(),
        StableDiffusion3Family(),
        FluxFamily(),
        DiTPipelineFamily(),
        WanFamily(),
        CogVideoXFamily(),
        LTXFamily(),
    )
    for name in family.pipelines
}
"""The family of each diffusers pipeline class optuna-diffusion runs, by class name."""


def family_for(denoiser: nn.Module) -> ModelFamily:
    """The family of a bare denoiser, by its class (or a base class of it)."""
    names = {cls.__name__ for cls in type(denoiser).__mro__}
    for family in FAMILIES:
        if names & set(family.denoisers):
            return family
    known = ", ".join(name for family in FAMILIES for name in family.denoisers)
    raise ModelLoadError(f"optuna-diffusion cannot run a bare {type(denoiser).__name__}; it runs {known}")


def family_for_pipeline(pipeline: Any) -> ModelFamily:
    """The family of a diffusers pipeline, by its class (or a base class of it)."""
    for cls in type(pipeline).__mro__:
        if cls.__name__ in PIPELINE_FAMILIES:
            return PIPELINE_FAMILIES[cls.__name__]
    raise ModelLoadError(
        f"optuna-diffusion cannot run a {type(pipeline).__name__}; it runs {', '.join(PIPELINE_FAMILIES)}"
    )


__all__ = [
    "CogVideoXFamily",
    "Conditions",
    "DiTFamily",
    "DiTPipelineFamily",
    "FAMILIES",
    "FluxFamily",
    "LTXFamily",
    "ModelFamily",
    "PIPELINE_FAMILIES",
    "PipelineFamily",
    "PixArtAlphaFamily",
    "PixArtFamily",
    "StableDiffusion3Family",
    "StableDiffusionFamily",
    "StableDiffusionXLFamily",
    "TextConditioning",
    "UNet2DConditionFamily",
    "UNet2DFamily",
    "WanClassFamily",
    "VideoPipelineFamily",
    "WanFamily",
    "chunked_noise",
    "family_for",
    "family_for_pipeline",
    "labels_of",
    "stack",
]
