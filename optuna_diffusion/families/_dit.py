"""``DiTTransformer2DModel``: class-conditional diffusion transformers (DiT), on pixels or on latents.

Guidance as diffusers' ``DiTPipeline`` does it: the conditional half first, the null class
(``num_embeds_ada_norm``, the label table's extra row) second; a model with learned variance returns
twice the channels, of which the first half is the prediction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ._base import Conditions, ModelFamily, labels_of
from ._unet import check_class_labels

if TYPE_CHECKING:
    from ..protocols import ModelLike as DiffusionModel  # what a family reads of models.DiffusionModel
    from ..protocols import SettingsLike as SamplingSettings  # what it reads of generation.SamplingSettings


class DiTFamily(ModelFamily):
    """``DiTTransformer2DModel``: class labels always given; the null class is ``num_embeds_ada_norm``."""

    name = "dit"
    denoisers = ("DiTTransformer2DModel",)
    guidance_order = ("conditional", "unconditional")

    def check(self, model: DiffusionModel, settings: SamplingSettings, *, text: Any = None) -> None:
        classes = model.denoiser.config.num_embeds_ada_norm
        if settings.num_classes is None:
            raise ConfigError(f"{model.source} is a class-conditional DiT: set sampling.num_classes (its {classes} classes)")
        if settings.guidance_scale > 1.0 and settings.null_class != classes:
            raise ConfigError(f"a DiT's null class is its num_embeds_ada_norm = {classes}: set sampling.null_class = {classes}")
        check_class_labels(model, settings, classes + 1, "label embeddings (its classes and the null class)")

    def inputs(
        self, model: DiffusionModel, conditions: Conditions, settings: SamplingSettings, *, unconditional: bool
    ) -> dict[str, Any]:
        return {"class_labels": labels_of(conditions, settings, unconditional=unconditional)}

    def call(self, model: DiffusionModel, x, t, inputs: dict[str, Any]):
        timestep = t.reshape(-1)[:1].expand(len(x))  # as DiTPipeline: one time step per sample
        output = model.denoiser(x, timestep=timestep, **inputs, return_dict=False)[0]
        return output[:, : x.shape[1]]
