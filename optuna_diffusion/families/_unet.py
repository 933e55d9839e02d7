"""UNet denoisers: ``UNet2DModel`` (unconditional or class-conditional) and ``UNet2DConditionModel``
with fixed prompt embeddings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError
from ._base import Conditions, ModelFamily, labels_of

if TYPE_CHECKING:
    from ..protocols import ModelLike as DiffusionModel  # what a family reads of models.DiffusionModel
    from ..protocols import SettingsLike as SamplingSettings  # what it reads of generation.SamplingSettings


def check_class_labels(model: DiffusionModel, settings: SamplingSettings, embeds: int | None, what: str) -> None:
    """Class labels and a null class that fit a table of ``embeds`` class embeddings."""
    if settings.num_classes is not None and not embeds:
        raise ConfigError(f"num_classes = {settings.num_classes} but the model {model.source} is unconditional")
    if settings.num_classes is not None and settings.num_classes > embeds:
        raise ConfigError(f"num_classes = {settings.num_classes} but the model has {embeds} {what}")
    if settings.guidance_scale > 1.0:
        if settings.num_classes is None or settings.null_class is None:
            raise ConfigError(
                f"guidance_scale = {settings.guidance_scale} needs a class-conditional model with a null class "
                "(set num_classes and null_class, or guidance_scale = 1)"
            )
        if not 0 <= settings.null_class < embeds:
            raise ConfigError(f"null_class = {settings.null_class} is not a class of the model (0..{embeds - 1})")


class UNet2DFamily(ModelFamily):
    """``UNet2DModel`` on pixels; class labels through ``num_class_embeds``, guidance by a null class."""

    name = "unet2d"
    denoisers = ("UNet2DModel",)
    # The project's first searches guided with the conditional half first; kept, so their numbers stay.
    guidance_order = ("conditional", "unconditional")

    def check(self, model: DiffusionModel, settings: SamplingSettings, *, text: Any = None) -> None:
        check_class_labels(model, settings, model.num_class_embeds, "class embeddings")

    def inputs(
        self, model: DiffusionModel, conditions: Conditions, settings: SamplingSettings, *, unconditional: bool
    ) -> dict[str, Any]:
        if settings.num_classes is None:
            return {}
        return {"class_labels": labels_of(conditions, settings, unconditional=unconditional)}

    def example_inputs(self, model: DiffusionModel, settings: SamplingSettings) -> dict[str, Any] | None:
        return None  # the count's defaults: a label iff the UNet has a class embedding


@dataclass(frozen=True)
class TextConditioning:
    """Prompt embeddings for a ``UNet2DConditionModel``: ``(1, L, D)`` each, shared by the whole batch.

    ``negative_prompt_embeds`` (e.g. of the empty prompt) is the unconditional pass of guidance.
    """

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor | None = None


class UNet2DConditionFamily(ModelFamily):
    """``UNet2DConditionModel`` with one fixed prompt embedding for every sample (a model, not a pipeline).

    The image generator is given the embeddings (:class:`TextConditioning`); a pipeline with a prompt
    set has a family of its own.
    """

    name = "unet2d-condition"
    denoisers = ("UNet2DConditionModel",)
    guidance_order = ("conditional", "unconditional")

    def check(self, model: DiffusionModel, settings: SamplingSettings, *, text: Any = None) -> None:
        if text is None:
            raise ConfigError(f"{model.source} is a UNet2DConditionModel: give prompt embeddings (TextConditioning)")
        if settings.guidance_scale > 1.0 and text.negative_prompt_embeds is None:
            raise ConfigError("guidance on a UNet2DConditionModel needs negative_prompt_embeds (e.g. of the empty prompt)")

    def inputs(
        self, model: DiffusionModel, conditions: Conditions, settings: SamplingSettings, *, unconditional: bool
    ) -> dict[str, Any]:
        text = conditions.text
        embeds = text.negative_prompt_embeds if unconditional else text.prompt_embeds
        return {"encoder_hidden_states": embeds.expand(conditions.size, -1, -1)}

    def example_inputs(self, model: DiffusionModel, settings: SamplingSettings) -> dict[str, Any] | None:
        return None
