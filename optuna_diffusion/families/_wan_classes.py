"""A bare class-conditional ``WanTransformer3DModel`` on pixels (the bundled ``digits-video``).

diffusers' Wan transformer is text-conditioned: ``encoder_hidden_states`` ``(B, L, text_dim)`` pass
through its own text projection into every block's cross-attention. A class-conditional Wan without a
text encoder takes its label as one token, the one-hot vector of the label among ``text_dim`` classes
(:func:`class_tokens`): the projection turns it into a learned label embedding, and the folder stays a
plain diffusers model folder. The last class, ``text_dim - 1``, is the null class of classifier-free
guidance.

Samples are videos ``(C, F, H, W)``, the layout the transformer reads. A Wan transformer takes any
size its patches divide, so its config carries the size it was trained at, ``_sample_shape`` (diffusers
keeps ``_`` keys of a config silently). Decoded samples are frames ``(N, F, C, H, W)``, as the video
pipeline families decode them (:func:`optuna_diffusion.frames.frames_as_images` makes them images).

Guidance batches the conditional half first and the null class second (the order is free here: no
pipeline of the model's fixes one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError
from ._base import Conditions, ModelFamily, labels_of
from ._unet import check_class_labels

if TYPE_CHECKING:
    from ..protocols import ModelLike as DiffusionModel  # what a family reads of models.DiffusionModel
    from ..protocols import SettingsLike as SamplingSettings  # what it reads of generation.SamplingSettings

SAMPLE_SHAPE_KEY = "_sample_shape"
"""Config key of a class-conditional Wan transformer's ``[channels, frames, height, width]``."""


def class_tokens(labels: torch.Tensor, num_tokens: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Labels ``(B,)`` as ``encoder_hidden_states`` ``(B, 1, num_tokens)``: one one-hot token each."""
    return torch.nn.functional.one_hot(labels.long(), num_tokens).to(dtype).unsqueeze(1)


class WanClassFamily(ModelFamily):
    """``WanTransformer3DModel`` with class labels as one-hot text tokens; the null class is ``text_dim - 1``."""

    name = "wan-classes"
    denoisers = ("WanTransformer3DModel",)
    guidance_order = ("conditional", "unconditional")

    def sample_shape(self, model: DiffusionModel) -> tuple[int, ...]:
        config = model.denoiser.config
        shape = config.get(SAMPLE_SHAPE_KEY)
        if shape is None:
            raise ConfigError(
                f"{model.source} is a bare WanTransformer3DModel without its sample size: add "
                f'"{SAMPLE_SHAPE_KEY}": [channels, frames, height, width] to its config.json'
            )
        channels, frames, height, width = (int(n) for n in shape)
        patch = tuple(config.patch_size)
        if channels != config.in_channels or any(size % p for size, p in zip((frames, height, width), patch)):
            raise ConfigError(
                f"{model.source}: {SAMPLE_SHAPE_KEY} {list(shape)} must have in_channels = {config.in_channels} "
                f"channels and frames, height and width divisible by the patch size {list(patch)}"
            )
        return channels, frames, height, width

    def decode(self, model: DiffusionModel, x: torch.Tensor) -> torch.Tensor:
        """Frames ``(N, F, C, H, W)`` of final samples ``(N, C, F, H, W)``, in float32."""
        return x.float().transpose(1, 2)

    def check(self, model: DiffusionModel, settings: SamplingSettings, *, text: Any = None) -> None:
        tokens = int(model.denoiser.config.text_dim)
        if settings.num_classes is None:
            raise ConfigError(
                f"{model.source} is a class-conditional Wan transformer: set sampling.num_classes "
                f"(its text_dim {tokens} holds the classes and the null class)"
            )
        if settings.guidance_scale > 1.0 and settings.null_class != tokens - 1:
            raise ConfigError(f"this Wan transformer's null class is text_dim - 1 = {tokens - 1}: set sampling.null_class = {tokens - 1}")
        check_class_labels(model, settings, tokens, "one-hot label tokens (text_dim: its classes and the null class)")

    def inputs(
        self, model: DiffusionModel, conditions: Conditions, settings: SamplingSettings, *, unconditional: bool
    ) -> dict[str, Any]:
        labels = labels_of(conditions, settings, unconditional=unconditional)
        return {"encoder_hidden_states": class_tokens(labels, int(model.denoiser.config.text_dim), model.dtype)}

    def call(self, model: DiffusionModel, x, t, inputs: dict[str, Any]):
        timestep = t.reshape(-1)[:1].expand(len(x)).to(x.device)  # one time step per sample, as WanPipeline
        return model.denoiser(x, timestep=timestep, **inputs, return_dict=False)[0]

    def example_inputs(self, model: DiffusionModel, settings: SamplingSettings) -> dict[str, Any] | None:
        """The keyword arguments of one batch-1 call on a video of the model's sample shape (for MACs)."""
        label = torch.zeros(1, dtype=torch.long, device=model.device)
        return {
            "hidden_states": torch.zeros(1, *self.sample_shape(model), device=model.device, dtype=model.dtype),
            "timestep": torch.full((1,), 500.0, device=model.device),
            "encoder_hidden_states": class_tokens(label, int(model.denoiser.config.text_dim), model.dtype),
        }
