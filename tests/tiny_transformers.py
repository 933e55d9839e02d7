"""Tiny randomly initialised diffusers transformers (sizes in the spirit of diffusers' own model tests)."""

from __future__ import annotations

from typing import Any

import torch

TEXT_LENGTH = 5


def tiny_dit(seed: int = 0):
    """DiT: 3 AdaLN-zero blocks on 4x8x8 latents (2x2 patches), 8 classes."""
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(seed)
    return DiTTransformer2DModel(
        in_channels=4, out_channels=8, activation_fn="gelu-approximate", num_attention_heads=2, attention_head_dim=4,
        attention_bias=True, num_layers=3, norm_type="ada_norm_zero", num_embeds_ada_norm=8, patch_size=2,
        sample_size=8,
    ).eval()


def tiny_pixart(seed: int = 0):
    """PixArt: 3 blocks with cross-attention to 12-wide captions, resolution/aspect-ratio conditions."""
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(seed)
    return PixArtTransformer2DModel(
        sample_size=8, num_layers=3, patch_size=2, attention_head_dim=6, num_attention_heads=2, in_channels=4,
        cross_attention_dim=12, out_channels=8, attention_bias=True, activation_fn="gelu-approximate",
        num_embeds_ada_norm=8, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
        use_additional_conditions=True, caption_channels=12,
    ).eval()


def tiny_sd3(seed: int = 0):
    """SD3.5-like: 3 joint blocks (the first with dual attention, the last text-output-free), RMS qk-norm."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, num_layers=3, attention_head_dim=8, num_attention_heads=2,
        caption_projection_dim=16, joint_attention_dim=12, pooled_projection_dim=20, out_channels=4,
        pos_embed_max_size=8, dual_attention_layers=(0,), qk_norm="rms_norm",
    ).eval()


def tiny_flux(seed: int = 0):
    """Flux: 2 double-stream and 2 single-stream blocks, guidance embedding, 4-channel tokens."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=24, pooled_projection_dim=20, guidance_embeds=True, axes_dims_rope=[4, 4, 8],
    ).eval()


TINY_TRANSFORMERS = {"dit": tiny_dit, "pixart": tiny_pixart, "sd3": tiny_sd3, "flux": tiny_flux}

FLUX_TOKENS = 16


def call_kwargs(model: Any, t: int, *, batch: int = 2, seed: int = 0) -> dict[str, Any]:
    """Keyword arguments of a batched call at plan time step ``t``, as the model's pipeline would pass it."""
    name = type(model).__name__
    g = torch.Generator().manual_seed(seed)
    if name == "DiTTransformer2DModel":
        return {
            "hidden_states": torch.randn(batch, 4, 8, 8, generator=g),
            "timestep": torch.full((batch,), t),
            "class_labels": torch.arange(batch) % 8,
        }
    if name == "PixArtTransformer2DModel":
        return {
            "hidden_states": torch.randn(batch, 4, 8, 8, generator=g),
            "encoder_hidden_states": torch.randn(batch, TEXT_LENGTH, 12, generator=g),
            "timestep": torch.full((batch,), t),
            "added_cond_kwargs": {"resolution": torch.full((batch, 2), 64.0), "aspect_ratio": torch.ones(batch, 1)},
        }
    if name == "SD3Transformer2DModel":
        return {
            "hidden_states": torch.randn(batch, 4, 8, 8, generator=g),
            "encoder_hidden_states": torch.randn(batch, TEXT_LENGTH, 12, generator=g),
            "pooled_projections": torch.randn(batch, 20, generator=g),
            "timestep": torch.full((batch,), float(t)),
        }
    if name == "FluxTransformer2DModel":
        return {
            "hidden_states": torch.randn(batch, FLUX_TOKENS, 4, generator=g),
            "encoder_hidden_states": torch.randn(batch, TEXT_LENGTH, 24, generator=g),
            "pooled_projections": torch.randn(batch, 20, generator=g),
            "timestep": torch.full((batch,), t / 1000),  # as FluxPipeline passes it
            "img_ids": torch.randn(FLUX_TOKENS, 3, generator=g),
            "txt_ids": torch.zeros(TEXT_LENGTH, 3),
            "guidance": torch.full((batch,), 3.5),
        }
    raise ValueError(name)


def count_kwargs(model: Any) -> dict[str, Any]:
    """Arguments of :func:`~optuna_diffusion.macs.example_inputs` / ``MacsTable.for_model`` for a tiny model."""
    if type(model).__name__ == "FluxTransformer2DModel":
        return {"sample_shape": (FLUX_TOKENS, 4), "text_length": TEXT_LENGTH}
    if type(model).__name__ == "DiTTransformer2DModel":
        return {}
    return {"text_length": TEXT_LENGTH}


def run(model: Any, kwargs: dict[str, Any]) -> torch.Tensor:
    with torch.no_grad():
        return model(**kwargs, return_dict=False)[0]
