"""Batch-1 example inputs of a denoiser call, built from the model's config, for counting MACs.

MACs depend on the shapes only: the image (or latent, or token) size and, for text-conditioned models,
the number of text tokens. Values are random or zero; the time step is 500 plan units by default.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch
from torch import nn

from ..blocks import timestep_scale
from ..errors import ConfigError

TextContext = torch.Tensor | Sequence[int] | None


def _config(model: nn.Module, name: str) -> Any:
    return getattr(getattr(model, "config", None), name, None)


def _reference(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    reference = next(model.parameters(), None)
    if reference is None:
        return torch.device("cpu"), torch.float32
    return reference.device, reference.dtype


def _positive_ints(shape: Sequence[Any]) -> bool:
    return all(not isinstance(n, bool) and isinstance(n, int) and n >= 1 for n in shape)


def _requires(model: nn.Module, argument: str) -> bool:
    parameters = inspect.signature(type(model).forward).parameters
    return argument in parameters and parameters[argument].default is inspect.Parameter.empty


def main_input_name(model: nn.Module) -> str:
    """``"sample"`` for UNets, ``"hidden_states"`` for transformers."""
    parameters = list(inspect.signature(type(model).forward).parameters)
    return parameters[1] if len(parameters) > 1 else "sample"


def _is_flux(model: nn.Module) -> bool:
    from diffusers import FluxTransformer2DModel

    return isinstance(model, FluxTransformer2DModel)


def sample_shape_of(model: nn.Module, sample_shape: Sequence[int] | None) -> tuple[int, ...]:
    """One sample's shape: ``(C, H, W)``, or ``(tokens, C)`` for Flux; default from the config."""
    if _is_flux(model):
        if sample_shape is None:
            raise ConfigError(
                f"{type(model).__name__} has no image size in its config; pass sample_shape=(image_tokens, "
                f"{_config(model, 'in_channels')}) (e.g. 4096 tokens for 1024x1024 images)"
            )
        shape = tuple(sample_shape)
        if len(shape) == 3 and shape[0] == 1:
            shape = shape[1:]
        if len(shape) != 2 or not _positive_ints(shape):
            raise ConfigError(
                f"sample_shape must be (image_tokens, channels) of positive integers, got {sample_shape!r}"
            )
        return shape
    if sample_shape is None:
        channels, size = _config(model, "in_channels"), _config(model, "sample_size")
        if channels is None or size is None:
            raise ConfigError(
                f"{type(model).__name__} has no in_channels/sample_size config; pass sample_shape=(C, H, W)"
            )
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        shape = (int(channels), int(height), int(width))
    else:
        shape = tuple(sample_shape)
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3 or not _positive_ints(shape):
        raise ConfigError(f"sample_shape must be (C, H, W) or (1, C, H, W) of positive integers, got {sample_shape!r}")
    return shape


def _class_labels(value: bool | int | torch.Tensor | None, default: bool, device: torch.device) -> torch.Tensor | None:
    if value is None:
        value = default
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ConfigError(f"class_labels must hold one label (batch 1), got shape {tuple(value.shape)}")
        return value.reshape(1).to(device)
    if value is True:
        return torch.zeros(1, dtype=torch.long, device=device)
    if isinstance(value, int) and not isinstance(value, bool):
        return torch.tensor([value], dtype=torch.long, device=device)
    if value is not False:
        raise ConfigError(f"class_labels must be True/False, an integer label or a tensor, got {value!r}")
    return None


def _text_width(model: nn.Module) -> int | None:
    """The width D of the encoder_hidden_states the model takes."""
    for name in ("caption_channels", "joint_attention_dim", "cross_attention_dim"):
        value = _config(model, name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _text(
    model: nn.Module,
    encoder_hidden_states: TextContext,
    text_length: int | None,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """A (1, L, D) text context from a tensor, its shape (L, D), or ``text_length`` and the config's D."""
    if isinstance(encoder_hidden_states, torch.Tensor):
        if encoder_hidden_states.dim() == 2:
            encoder_hidden_states = encoder_hidden_states[None]
        if encoder_hidden_states.dim() != 3 or encoder_hidden_states.shape[0] != 1:
            raise ConfigError(
                f"encoder_hidden_states must be (1, L, D) (batch 1), got {tuple(encoder_hidden_states.shape)}"
            )
        return encoder_hidden_states.to(device=device, dtype=dtype)
    if encoder_hidden_states is not None:
        shape = tuple(encoder_hidden_states)
        if len(shape) == 3 and shape[0] == 1:
            shape = shape[1:]
        if len(shape) != 2 or not _positive_ints(shape):
            raise ConfigError(f"encoder_hidden_states shape must be (L, D), got {encoder_hidden_states!r}")
        return torch.zeros(1, *shape, device=device, dtype=dtype)
    width = _text_width(model)
    if isinstance(text_length, bool) or not isinstance(text_length, int) or text_length < 1 or width is None:
        raise ConfigError(
            f"{type(model).__name__} needs encoder_hidden_states: pass a (1, L, D) tensor or its shape (L, D)"
            + (", or text_length=L" if width is not None else "")
        )
    return torch.zeros(1, text_length, width, device=device, dtype=dtype)


def _flux_ids(tokens: int, text_length: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Flux's position ids: a near-square grid for the image tokens, zeros for the text."""
    rows = max(r for r in range(1, int(tokens**0.5) + 1) if tokens % r == 0)
    grid = torch.stack(torch.meshgrid(torch.arange(rows), torch.arange(tokens // rows), indexing="ij"), dim=-1)
    img_ids = torch.cat([torch.zeros(tokens, 1), grid.reshape(tokens, 2).float()], dim=1)
    return img_ids.to(device=device, dtype=dtype), torch.zeros(text_length, 3, device=device, dtype=dtype)


def example_inputs(
    model: nn.Module,
    sample_shape: Sequence[int] | None = None,
    *,
    class_labels: bool | int | torch.Tensor | None = None,
    encoder_hidden_states: TextContext = None,
    text_length: int | None = None,
    timestep: int = 500,
) -> dict[str, Any]:
    """Keyword arguments of one batch-1 call of a diffusers UNet or transformer denoiser.

    Args:
        model: ``UNet2DModel``, ``UNet2DConditionModel``, ``DiTTransformer2DModel``,
            ``PixArtTransformer2DModel``, ``SD3Transformer2DModel`` or ``FluxTransformer2DModel``.
        sample_shape: one sample's ``(C, H, W)`` (default from the config's ``in_channels`` and
            ``sample_size``); for Flux, ``(image_tokens, in_channels)``, required.
        class_labels: ``True`` passes label 0, an integer or one-element tensor that label, ``False``
            none; default: a label iff the model has a class embedding (DiT always takes one).
        encoder_hidden_states: a ``(1, L, D)`` tensor or its shape ``(L, D)``, for text-conditioned models.
        text_length: instead, the number of text tokens L (D comes from the config).
        timestep: the call's time step in plan units (Flux gets ``timestep / 1000``, as from its pipeline).
    """
    device, dtype = _reference(model)
    shape = sample_shape_of(model, sample_shape)
    inputs: dict[str, Any] = {main_input_name(model): torch.randn(1, *shape, device=device, dtype=dtype)}
    from diffusers import DiTTransformer2DModel, PixArtTransformer2DModel, SD3Transformer2DModel

    if isinstance(model, DiTTransformer2DModel):
        inputs["timestep"] = torch.tensor([timestep], device=device)
        inputs["class_labels"] = _class_labels(class_labels, True, device)
        return inputs
    if isinstance(model, PixArtTransformer2DModel):
        inputs["encoder_hidden_states"] = _text(model, encoder_hidden_states, text_length, device, dtype)
        inputs["timestep"] = torch.tensor([timestep], device=device)
        if getattr(model, "use_additional_conditions", False):
            size = torch.tensor([[shape[1] * 8.0, shape[2] * 8.0]], device=device, dtype=dtype)  # pixels (any value)
            aspect_ratio = torch.ones(1, 1, device=device, dtype=dtype)
            inputs["added_cond_kwargs"] = {"resolution": size, "aspect_ratio": aspect_ratio}
        else:
            inputs["added_cond_kwargs"] = {"resolution": None, "aspect_ratio": None}
        return inputs
    if isinstance(model, SD3Transformer2DModel) or _is_flux(model):
        context = _text(model, encoder_hidden_states, text_length, device, dtype)
        inputs["encoder_hidden_states"] = context
        width = _config(model, "pooled_projection_dim")
        inputs["pooled_projections"] = torch.zeros(1, width, device=device, dtype=dtype)
        inputs["timestep"] = torch.tensor([timestep / timestep_scale(model)], device=device, dtype=dtype)
        if _is_flux(model):
            inputs["img_ids"], inputs["txt_ids"] = _flux_ids(shape[0], context.shape[1], device, dtype)
            if _config(model, "guidance_embeds"):
                inputs["guidance"] = torch.tensor([3.5], device=device, dtype=dtype)
        return inputs
    # UNets
    inputs["timestep"] = torch.tensor([timestep], device=device)
    labels = _class_labels(class_labels, getattr(model, "class_embedding", None) is not None, device)
    if labels is not None:
        inputs["class_labels"] = labels
    if encoder_hidden_states is not None or text_length is not None or _requires(model, "encoder_hidden_states"):
        inputs["encoder_hidden_states"] = _text(model, encoder_hidden_states, text_length, device, dtype)
    added = _added_conditions(model, shape, device, dtype)
    if added is not None:
        inputs["added_cond_kwargs"] = added
    return inputs


_SDXL_TIME_IDS = 6
"""SDXL's micro-conditioning: original size, crop corner and target size (the refiner's 5 add an aesthetic score)."""


def _added_conditions(
    model: nn.Module, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor] | None:
    """SDXL's ``added_cond_kwargs`` (pooled ``text_embeds`` and 6 ``time_ids``, widths from the config), or None."""
    kind = _config(model, "addition_embed_type")
    if kind is None:
        return None
    total, per_id = _config(model, "projection_class_embeddings_input_dim"), _config(model, "addition_time_embed_dim")
    pooled = total - _SDXL_TIME_IDS * per_id if kind == "text_time" and total and per_id else 0
    if pooled <= 0:
        raise ConfigError(
            f"{type(model).__name__} with addition_embed_type {kind!r} needs added_cond_kwargs that cannot be built "
            "from its config: count it through its pipeline's model (count_macs of the family's example_inputs)"
        )
    height, width = shape[1] * 8.0, shape[2] * 8.0  # pixels (the values do not change the MACs)
    time_ids = torch.tensor([[height, width, 0.0, 0.0, height, width]], device=device, dtype=dtype)
    return {"text_embeds": torch.zeros(1, pooled, device=device, dtype=dtype), "time_ids": time_ids}
