"""The one place that relies on diffusers internals, each use with the public alternative it lacks.

Checked against diffusers 0.42.1. ``tests/test_private_api.py`` checks every assumption below against
the installed diffusers and fails, naming it, when a release changes one; the helpers themselves raise
instead of guessing where a check is cheap.

* **Hook chains** (:class:`~diffusers.hooks.HookRegistry`): ``register_hook`` chains hooks through each
  hook's ``fn_ref`` (a ``HookFunctionReference``); a hook with ``new_forward`` gets
  ``fn_ref.forward = partial(new_forward, module)`` and ``fn_ref.original_forward`` = the forward below.
  ``remove_hook`` re-links the next hook by overwriting its ``fn_ref.forward``, which drops a
  ``new_forward`` hook from the chain, and leaves an empty registry on the module. Public alternative
  lacking: a ``remove_hook`` that re-links a ``new_forward`` hook, and a call that detaches a registry.
* **Scheduler state**: a multistep scheduler (DPM-Solver, UniPC) steps through its ``timesteps`` and
  ``sigmas`` attributes by ``step_index``; ``set_timesteps`` takes custom time steps or sigmas only for
  some schedulers and never both, so the plan's exact pair is written into them. Public alternative
  lacking: ``set_timesteps(timesteps=..., sigmas=...)`` on every multistep scheduler.
* **Flux packing**: ``FluxPipeline._pack_latents``, ``_unpack_latents`` and ``_prepare_latent_image_ids``
  are private static methods; the engine re-implements them here (same layout, checked equal to them).
  Public alternative lacking: a public packing API of the Flux pipeline or transformer.
* **Models that keep modules in float32** (``ModelMixin._keep_in_fp32_modules``, e.g. ``WanTransformer3DModel``):
  ``from_pretrained`` loads them only with ``low_cpu_mem_usage=True``, which needs ``accelerate``; without it
  :func:`load_float32_keeping_model` builds the model from its config and loads its one safetensors file.
  Public alternative lacking: a ``from_pretrained`` that loads such a model without accelerate.
* **LTX-Video packing**: ``LTXPipeline._pack_latents`` / ``_unpack_latents`` are private static methods; the
  engine re-implements them (same layout, checked equal to them).
* **CogVideoX rotary embeddings**: ``CogVideoXPipeline._prepare_rotary_positional_embeddings(height, width,
  latent_frames, device)`` makes the 5B transformers' ``image_rotary_emb``; called as the pipeline calls it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME
from torch import nn

# Hook chains --------------------------------------------------------------------------------------


def forward_below(hook: ModelHook) -> Callable[..., Any]:
    """The forward the chain calls below ``hook`` (``fn_ref.original_forward`` of a ``new_forward`` hook)."""
    fn_ref = hook.fn_ref
    return fn_ref.original_forward if fn_ref.original_forward is not None else fn_ref.forward


def dropped_from_chain(hook: ModelHook) -> bool:
    """Whether removing a hook registered before ``hook`` dropped ``hook`` (a ``new_forward`` one) from the chain."""
    return hasattr(hook, "new_forward") and getattr(hook.fn_ref.forward, "func", None) != hook.new_forward


def relink_replacing_hook(module: nn.Module, hook: ModelHook, below: Callable[..., Any]) -> None:
    """Put back a hook registered after a removed one that replaces the forward (``new_forward``).

    ``HookRegistry.remove_hook`` re-links the next hook by setting its ``fn_ref.forward`` to the
    forward below the removed hook. For a hook with ``new_forward`` (FirstBlockCache's, a user's ...)
    ``fn_ref.forward`` *is* that new_forward, so it falls out of the chain, and its
    ``fn_ref.original_forward`` still calls the removed hook. This restores what ``register_hook`` sets
    up for such a hook.
    """
    if not hasattr(hook, "new_forward"):
        return  # for a plain pre/post hook, fn_ref.forward = the forward below is right
    hook.fn_ref.original_forward = below
    hook.fn_ref.forward = functools.update_wrapper(functools.partial(hook.new_forward, module), hook.new_forward)


def forget_registry(module: nn.Module, registry: HookRegistry) -> None:
    """Leave ``module`` as it was before its (now empty) registry was created.

    ``HookRegistry.remove_hook`` leaves the registry on the module and the module's own bound
    ``forward`` as an instance attribute. Both are dropped here, the registry found by identity (not
    by its attribute name).
    """
    for attribute in [name for name, value in vars(module).items() if value is registry]:
        delattr(module, attribute)
    forward = vars(module).get("forward")
    if getattr(forward, "__self__", None) is module and getattr(forward, "__func__", None) is type(module).forward:
        del module.forward


# Scheduler state ----------------------------------------------------------------------------------


def install_schedule(scheduler: Any, timesteps: Sequence[int], sigmas: Sequence[float] | None = None) -> None:
    """Make a multistep scheduler (DPM-Solver, UniPC) step through exactly ``timesteps`` and ``sigmas``.

    ``set_timesteps`` has been called with ``len(timesteps)`` steps, so its per-run state (step index,
    model-output history, warm-up counter) is reset for that many steps; this replaces only its
    ``timesteps`` and, when given, the ``sigmas`` before the final sigma 0 that diffusers appended.
    Both attributes are read by ``step()`` through ``step_index``; a diffusers version that changes
    that fails here, loudly, rather than sampling on the wrong schedule.
    """
    if len(scheduler.timesteps) != len(timesteps) or len(scheduler.sigmas) != len(timesteps) + 1:
        raise RuntimeError(
            f"internal error: {type(scheduler).__name__} holds {len(scheduler.timesteps)} time steps and "
            f"{len(scheduler.sigmas)} sigmas after set_timesteps({len(timesteps)}); cannot install the plan's schedule"
        )
    if float(scheduler.sigmas[-1]) != 0.0:
        raise RuntimeError(f"internal error: {type(scheduler).__name__} does not end at sigma 0")
    device = scheduler.timesteps.device
    scheduler.timesteps = torch.tensor(list(timesteps), dtype=torch.int64, device=device)
    if sigmas is not None:
        scheduler.sigmas = torch.tensor([*sigmas, 0.0], dtype=torch.float32)


# Flux packing -------------------------------------------------------------------------------------


def flux_pack(latents: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` latents as ``(B, h/2 * w/2, 4 C)`` tokens of 2x2 patches (``FluxPipeline._pack_latents``)."""
    batch, channels, height, width = latents.shape
    patches = latents.view(batch, channels, height // 2, 2, width // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(batch, (height // 2) * (width // 2), channels * 4)


def flux_unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of :func:`flux_pack` for latents of ``height x width`` (``FluxPipeline._unpack_latents``)."""
    batch, _, width_channels = tokens.shape
    channels = width_channels // 4
    patches = tokens.view(batch, height // 2, width // 2, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(batch, channels, height, width)


def flux_image_ids(rows: int, columns: int) -> torch.Tensor:
    """``img_ids``: ``(0, row, column)`` of every 2x2 patch, row by row (``FluxPipeline._prepare_latent_image_ids``)."""
    ids = torch.zeros(rows, columns, 3)
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(columns)[None, :]
    return ids.reshape(rows * columns, 3)


# Models that keep modules in float32 ---------------------------------------------------------------


def keeps_float32_modules(model_class: type) -> bool:
    """Whether diffusers' ``from_pretrained`` loads ``model_class`` only with accelerate (``_keep_in_fp32_modules``)."""
    return bool(getattr(model_class, "_keep_in_fp32_modules", None))


def load_float32_keeping_model(model_class: type, folder: Path) -> nn.Module:
    """``model_class`` from a local folder (``config.json``, ``diffusion_pytorch_model.safetensors``) in float32.

    What ``from_pretrained`` does for such a folder, without accelerate: the model built from its config
    (its ``_`` keys kept, as ``from_pretrained`` keeps them), then its weights, every one of them.
    """
    from safetensors.torch import load_file

    model = model_class.from_config(model_class.load_config(folder))
    model.load_state_dict({name: tensor.float() for name, tensor in load_file(str(folder / SAFETENSORS_WEIGHTS_NAME)).items()})
    return model


# CogVideoX rotary embeddings ----------------------------------------------------------------------


def cogvideox_rotary_embeddings(pipeline: Any, height: int, width: int, latent_frames: int, device: Any) -> Any:
    """``image_rotary_emb`` of a CogVideoX 5B-style transformer (``CogVideoXPipeline._prepare_rotary_positional_embeddings``).

    The pipeline builds the 3D rotary embedding of the video's grid in a private method (crop region of the
    transformer's base grid, then ``get_3d_rotary_pos_embed``); it is called as the pipeline calls it.
    Public alternative lacking: the embedding computed by the transformer itself.
    """
    return pipeline._prepare_rotary_positional_embeddings(height, width, latent_frames, device)


# LTX-Video packing --------------------------------------------------------------------------------


def ltx_pack(latents: torch.Tensor, patch: int = 1, patch_t: int = 1) -> torch.Tensor:
    """``(N, C, F, H, W)`` latents as ``(N, tokens, C * patch_t * patch**2)`` tokens (``LTXPipeline._pack_latents``)."""
    n, c, f, h, w = latents.shape
    latents = latents.reshape(n, c, f // patch_t, patch_t, h // patch, patch, w // patch, patch)
    return latents.permute(0, 2, 4, 6, 1, 3, 5, 7).flatten(4, 7).flatten(1, 3)


def ltx_unpack(tokens: torch.Tensor, frames: int, height: int, width: int, patch: int = 1, patch_t: int = 1) -> torch.Tensor:
    """The inverse of :func:`ltx_pack` for a ``frames x height x width`` grid of patches (``_unpack_latents``)."""
    latents = tokens.reshape(tokens.size(0), frames, height, width, -1, patch_t, patch, patch)
    return latents.permute(0, 4, 1, 5, 2, 6, 3, 7).flatten(6, 7).flatten(4, 5).flatten(2, 3)
