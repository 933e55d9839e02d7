"""Blocks of a diffusers UNet (``UNet2DModel``, ``UNet2DConditionModel``) and what a skipped one returns.

* ``down.1.resnet.0``, ``down.1.attn.0``, ``mid.resnet.1``, ``mid.attn.0``, ``up.0.resnet.2`` ...:
  single residual and attention blocks. Skipped, an attention block returns its input and a
  residual block returns its shortcut path (identity, or its 1x1 conv when channels change).
  Reused, either returns its output of the previous step.
* ``up.0``, ``up.1`` ...: a whole deep branch, as DeepCache caches it. Reusing ``up.i`` takes up
  block i's output of the previous step, so up blocks 0..i, the middle block and the down-path
  modules that feed only them are not computed at that step. The top level always runs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._block import Block


def is_unet(model: nn.Module) -> bool:
    """Whether ``model`` has a diffusers UNet's ``down_blocks`` and ``up_blocks``."""
    return hasattr(model, "down_blocks") and hasattr(model, "up_blocks")


def _block_list(block: nn.Module, attr: str) -> list[nn.Module | None]:
    modules = getattr(block, attr, None)
    return list(modules) if modules is not None else []


def _single_blocks(prefix: str, path: str, block: nn.Module) -> list[Block]:
    found = []
    for j, resnet in enumerate(_block_list(block, "resnets")):
        if hasattr(resnet, "conv_shortcut") and not getattr(resnet, "up", False) and not getattr(resnet, "down", False):
            found.append(Block(f"{prefix}.resnet.{j}", "resnet", (f"{path}.resnets.{j}",)))
    for j, attention in enumerate(_block_list(block, "attentions")):
        if attention is not None:
            found.append(Block(f"{prefix}.attn.{j}", "attention", (f"{path}.attentions.{j}",)))
    return found


def _down_path(unet: nn.Module) -> list[tuple[str, int]]:
    """Down-path modules in execution order, each with how many skip entries it pushes."""
    path: list[tuple[str, int]] = []
    for k, block in enumerate(unet.down_blocks):
        resnets = _block_list(block, "resnets")
        attentions = _block_list(block, "attentions")
        for j in range(len(resnets)):
            path.append((f"down_blocks.{k}.resnets.{j}", 0))
            if j < len(attentions) and attentions[j] is not None:
                path.append((f"down_blocks.{k}.attentions.{j}", 0))
            path[-1] = (path[-1][0], 1)
        for j, _ in enumerate(_block_list(block, "downsamplers")):
            path.append((f"down_blocks.{k}.downsamplers.{j}", 1))
    return path


def _branch_blocks(unet: nn.Module) -> list[Block]:
    """DeepCache-style branches ``up.i`` for every up block but the top one."""
    blocks = list(unet.down_blocks) + list(unet.up_blocks)
    if getattr(unet, "mid_block", None) is None or any(hasattr(b, "skip_conv") for b in blocks):
        return []
    down_path = _down_path(unet)
    entries = 1 + sum(pushed for _, pushed in down_path)  # conv_in pushes the first entry
    branches = []
    consumed = 0
    for i, up_block in enumerate(list(unet.up_blocks)[:-1]):
        consumed += len(up_block.resnets)
        needed = entries - consumed - 1  # entries still needed after conv_in's
        keep = 0  # how many down-path modules must run to produce the needed entries
        while needed > 0:
            needed -= down_path[keep][1]
            keep += 1
        deep = [module for module, _ in down_path[keep:]]
        members = _collapse_to_blocks(deep, unet)
        members += ["mid_block"] + [f"up_blocks.{u}" for u in range(i + 1)]
        branches.append(Block(f"up.{i}", "branch", tuple(members)))
    return branches


def _collapse_to_blocks(module_paths: list[str], unet: nn.Module) -> list[str]:
    """Replace the paths of every module of a down block by the block's own path when all are listed."""
    collapsed: list[str] = []
    for k in range(len(unet.down_blocks)):
        prefix = f"down_blocks.{k}."
        inside = [p for p in module_paths if p.startswith(prefix)]
        all_modules = [p for p, _ in _down_path(unet) if p.startswith(prefix)]
        if inside and inside == all_modules:
            collapsed.append(f"down_blocks.{k}")
        else:
            collapsed.extend(inside)
    return collapsed


def find_unet_blocks(unet: nn.Module) -> tuple[Block, ...]:
    """Every skippable or reusable block of a diffusers UNet: single blocks first, then branches."""
    found: list[Block] = []
    for k, block in enumerate(unet.down_blocks):
        found += _single_blocks(f"down.{k}", f"down_blocks.{k}", block)
    if getattr(unet, "mid_block", None) is not None:
        found += _single_blocks("mid", "mid_block", unet.mid_block)
    for k, block in enumerate(unet.up_blocks):
        found += _single_blocks(f"up.{k}", f"up_blocks.{k}", block)
    return tuple(found) + tuple(_branch_blocks(unet))


def attention_passthrough(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """A skipped UNet attention block: its input, in the block's own output format."""
    hidden_states = args[0] if args else kwargs["hidden_states"]
    from diffusers.models.attention_processor import Attention

    if isinstance(module, Attention):
        return hidden_states
    if kwargs.get("return_dict", True):
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        return Transformer2DModelOutput(sample=hidden_states)
    return (hidden_states,)


def resnet_shortcut(module: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
    """A skipped UNet residual block: its shortcut path (identity, or its 1x1 conv), scaled as the block does."""
    shortcut = args[0] if args else kwargs["input_tensor"]
    if module.conv_shortcut is not None:
        shortcut = module.conv_shortcut(shortcut.contiguous())
    return shortcut / module.output_scale_factor


SKIP_FORWARD = {"resnet": resnet_shortcut, "attention": attention_passthrough}
"""What a skipped UNet block returns, by block kind (a branch is never skipped)."""
