"""How the engine calls each kind of denoiser (see :class:`ModelFamily`), and which family a model has."""

from __future__ import annotations

from torch import nn

from ..errors import ModelLoadError
from ._base import Conditions, ModelFamily, chunked_noise, labels_of, stack
from ._dit import DiTFamily
from ._unet import TextConditioning, UNet2DConditionFamily, UNet2DFamily

FAMILIES: tuple[ModelFamily, ...] = (UNet2DFamily(), UNet2DConditionFamily(), DiTFamily())
"""The families of bare denoisers (a model folder, not a pipeline)."""


def family_for(denoiser: nn.Module) -> ModelFamily:
    """The family of a bare denoiser, by its class (or a base class of it)."""
    names = {cls.__name__ for cls in type(denoiser).__mro__}
    for family in FAMILIES:
        if names & set(family.denoisers):
            return family
    known = ", ".join(name for family in FAMILIES for name in family.denoisers)
    raise ModelLoadError(f"optuna-diffusion cannot run a bare {type(denoiser).__name__}; it runs {known}")


__all__ = [
    "Conditions",
    "DiTFamily",
    "FAMILIES",
    "ModelFamily",
    "TextConditioning",
    "UNet2DConditionFamily",
    "UNet2DFamily",
    "chunked_noise",
    "family_for",
    "labels_of",
    "stack",
]
