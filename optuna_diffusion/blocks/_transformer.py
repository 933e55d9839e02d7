"""Blocks of a diffusers transformer denoiser (DiT, PixArt, SD3, Flux, Wan, CogVideoX, LTX-Video), and their streams.

Every block of these models is residual: it maps its streams (the image tokens ``hidden_states`` and, in
SD3/Flux/CogVideoX joint blocks, the text tokens ``encoder_hidden_states``) to ``stream + f(streams)``, and
every sub-layer's output enters a stream only through a residual add (behind an AdaLN gate where
the model has one). Names, with k counting the blocks of ``transformer_blocks`` (Wan: ``blocks``) and j
those of Flux's ``single_transformer_blocks``:

* ``blocks.k``: a whole transformer block (kind ``"transformer"``).
* Its sub-layers, each one module: ``blocks.k.attn`` (self- or joint attention), ``blocks.k.cross_attn``
  (PixArt's, Wan's and LTX-Video's cross-attention to the text), ``blocks.k.attn2`` (SD3.5's second
  self-attention), ``blocks.k.ff`` (the image stream's feed-forward) and ``blocks.k.ff_context`` (the text stream's
  feed-forward of SD3/Flux joint blocks; SD3's last block has none). A joint attention is one
  sub-layer: it attends over both streams at once and writes both. The video models' attention runs over
  every frame at once (no separate spatial and temporal attention): Wan's and LTX-Video's ``blocks.k.attn``
  over the video tokens, CogVideoX's joint ``blocks.k.attn`` over text and video (its ``blocks.k.ff``
  feeds both too).
* ``single.j`` (Flux's single-stream blocks), with ``single.j.attn`` (attention) and ``single.j.mlp``
  (the ``proj_mlp`` up-projection of the parallel MLP; the ``proj_out`` both branches share always runs).
* ``tail.k`` / ``tail.single.j`` (kind ``"branch"``, reuse only): every block from ``blocks.k`` /
  ``single.j`` to the end of the network (for Flux, through the double-stream blocks and then all
  single-stream blocks). A tail spans at least two blocks; a one-block tail would be the block itself.

Skipped, a block returns its input streams (its residual branch is dropped) and a sub-layer returns
zeros of its output's shape, so it adds nothing to the stream (``gate * 0 = 0``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ._block import Block

Streams = dict[str, torch.Tensor]
"""A block's residual streams by argument name (``hidden_states``, ``encoder_hidden_states``)."""

HIDDEN, ENCODER = "hidden_states", "encoder_hidden_states"


def _supported_classes() -> tuple[type, ...]:
    from diffusers import (
        CogVideoXTransformer3DModel,
        DiTTransformer2DModel,
        FluxTransformer2DModel,
        LTXVideoTransformer3DModel,
        PixArtTransformer2DModel,
        SD3Transformer2DModel,
        WanTransformer3DModel,
    )

    return (
        DiTTransformer2DModel, PixArtTransformer2DModel, SD3Transformer2DModel, FluxTransformer2DModel,
        WanTransformer3DModel, CogVideoXTransformer3DModel, LTXVideoTransformer3DModel,
    )


def is_transformer(model: nn.Module) -> bool:
    """Whether ``model`` is one of the supported diffusers transformer denoisers (or a subclass)."""
    return isinstance(model, _supported_classes())


SUPPORTED = (
    "DiTTransformer2DModel, PixArtTransformer2DModel, SD3Transformer2DModel, FluxTransformer2DModel, "
    "WanTransformer3DModel, CogVideoXTransformer3DModel, LTXVideoTransformer3DModel"
)


# --------------------------------------------------------------------------------------------------
# Arguments and streams
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _positions(cls: type) -> dict[str, int]:
    """Positional index of every argument of ``cls.forward`` (``self`` excluded)."""
    names = list(inspect.signature(cls.forward).parameters)[1:]
    return {name: i for i, name in enumerate(names)}


def argument(module: nn.Module, name: str, args: tuple, kwargs: Mapping[str, Any]) -> Any:
    """The value of argument ``name`` in a call ``module(*args, **kwargs)`` (``None`` when not given)."""
    if name in kwargs:
        return kwargs[name]
    index = _positions(type(module)).get(name)
    return args[index] if index is not None and index < len(args) else None


@dataclass(frozen=True)
class StreamLayout:
    """How a transformer block takes its streams and returns them.

    Attributes:
        inputs: argument names of the streams the block updates.
        outputs: names in the order of the output tuple; empty when the block returns ``hidden_states`` alone.
    """

    inputs: tuple[str, ...]
    outputs: tuple[str, ...] = ()

    def read(self, module: nn.Module, args: tuple, kwargs: Mapping[str, Any]) -> Streams:
        return {name: argument(module, name, args, kwargs) for name in self.inputs}

    def dropped(self, module: nn.Module) -> frozenset[str]:
        """Streams the block returns as ``None`` (SD3's last block drops the text stream)."""
        return frozenset({ENCODER}) if getattr(module, "context_pre_only", False) else frozenset()

    def pack(self, module: nn.Module, streams: Streams) -> Any:
        """The block's output holding ``streams``."""
        if not self.outputs:
            return streams[HIDDEN]
        dropped = self.dropped(module)
        return tuple(None if name in dropped else streams[name] for name in self.outputs)

    def unpack(self, output: Any) -> Streams:
        """The streams in a block's output (those it returns as ``None`` left out)."""
        if not self.outputs:
            return {HIDDEN: output}
        return {name: value for name, value in zip(self.outputs, output) if value is not None}


_SINGLE_STREAM = StreamLayout((HIDDEN,))
_TWO_STREAMS = StreamLayout((HIDDEN, ENCODER), (ENCODER, HIDDEN))
_VIDEO_FIRST = StreamLayout((HIDDEN, ENCODER), (HIDDEN, ENCODER))  # CogVideoX blocks return (video, text)


def plus(streams: Streams, residual: Streams) -> Streams:
    """``streams + residual``, stream by stream (a stream without a residual passes unchanged)."""
    return {name: value + residual[name] if name in residual else value for name, value in streams.items()}


def minus(output: Streams, streams: Streams) -> Streams:
    """The residual ``output - streams`` of every stream present in both."""
    return {name: output[name] - streams[name] for name in output if name in streams}


# --------------------------------------------------------------------------------------------------
# Sub-layers and their zero outputs
# --------------------------------------------------------------------------------------------------


def attention_zeros(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """Zeros in the shape of an attention module's output: one tensor, or (image, text) for a joint attention."""
    hidden = argument(module, HIDDEN, args, kwargs)
    encoder = argument(module, ENCODER, args, kwargs)
    if getattr(module, "pre_only", False):  # Flux single: no to_out
        width = module.inner_dim
    else:  # Wan's attention has no out_dim
        width = getattr(module, "out_dim", None) or module.to_out[0].out_features
    zeros = hidden.new_zeros(*hidden.shape[:-1], width)
    if encoder is None or getattr(module, "added_kv_proj_dim", None) is None:
        return zeros
    if module.context_pre_only:  # the text output is the raw attention, without to_add_out
        context_width = module.inner_dim
    else:
        context_width = getattr(module, "out_context_dim", module.query_dim)
    return zeros, encoder.new_zeros(*encoder.shape[:-1], context_width)


def joint_attention_zeros(module: nn.Module, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeros in the shape of CogVideoX's joint attention output: (video, text), each of the attention's width."""
    hidden = argument(module, HIDDEN, args, kwargs)
    encoder = argument(module, ENCODER, args, kwargs)
    return hidden.new_zeros(*hidden.shape[:-1], module.out_dim), encoder.new_zeros(*encoder.shape[:-1], module.out_dim)


def _last_linear(module: nn.Module) -> nn.Linear:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return linears[-1]


def linear_zeros(module: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
    """Zeros in the shape of a feed-forward's (or a linear layer's) output."""
    hidden = args[0] if args else next(iter(kwargs.values()))
    return hidden.new_zeros(*hidden.shape[:-1], _last_linear(module).out_features)


SkipOutput = Callable[..., Any]


@dataclass(frozen=True)
class SubLayer:
    """A skippable sub-layer of a transformer block: one module, named ``<block>.<suffix>``."""

    suffix: str
    attribute: str
    kind: str
    zeros: SkipOutput


def _sub_layers(block: nn.Module) -> list[SubLayer]:
    """The sub-layers of one block, in execution order (only those the block has)."""
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.transformers.transformer_wan import WanTransformerBlock

    from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXBlock
    from diffusers.models.transformers.transformer_ltx import LTXVideoTransformerBlock

    found = []
    if isinstance(block, CogVideoXBlock):  # joint attention over text and video, feed-forward over both
        return [
            SubLayer("attn", "attn1", "attention", joint_attention_zeros),
            SubLayer("ff", "ff", "feedforward", linear_zeros),
        ]
    if isinstance(block, (WanTransformerBlock, LTXVideoTransformerBlock)):  # self- (all frames), cross-attention, FF
        return [
            SubLayer("attn", "attn1", "attention", attention_zeros),
            SubLayer("cross_attn", "attn2", "attention", attention_zeros),
            SubLayer("ff", "ffn" if isinstance(block, WanTransformerBlock) else "ff", "feedforward", linear_zeros),
        ]
    if isinstance(block, BasicTransformerBlock):
        found.append(SubLayer("attn", "attn1", "attention", attention_zeros))
        if block.attn2 is not None:
            suffix = "cross_attn" if block.attn2.is_cross_attention else "attn2"
            found.append(SubLayer(suffix, "attn2", "attention", attention_zeros))
        found.append(SubLayer("ff", "ff", "feedforward", linear_zeros))
        return found
    if hasattr(block, "proj_mlp"):  # Flux single-stream block: attention and MLP in parallel
        return [
            SubLayer("attn", "attn", "attention", attention_zeros),
            SubLayer("mlp", "proj_mlp", "feedforward", linear_zeros),
        ]
    found.append(SubLayer("attn", "attn", "attention", attention_zeros))
    if getattr(block, "attn2", None) is not None:  # SD3.5 dual attention: a second self-attention
        found.append(SubLayer("attn2", "attn2", "attention", attention_zeros))
    found.append(SubLayer("ff", "ff", "feedforward", linear_zeros))
    if getattr(block, "ff_context", None) is not None:
        found.append(SubLayer("ff_context", "ff_context", "feedforward", linear_zeros))
    return found


# --------------------------------------------------------------------------------------------------
# Stacks and block names
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransformerUnit:
    """One hookable piece of a transformer: a whole block or a sub-layer, with what the switch needs."""

    block: Block
    module: nn.Module
    layout: StreamLayout | None = None  # whole blocks only
    zeros: SkipOutput | None = None  # sub-layers only


@dataclass(frozen=True)
class TransformerLayout:
    """The blocks of one transformer model.

    Attributes:
        blocks: every :class:`Block` (whole blocks with their sub-layers, then the tails).
        units: per block or sub-layer name, the module to hook and how.
        sequence: names of the whole blocks in execution order (double-stream, then single-stream).
        tails: per tail name, the index in ``sequence`` of its first block.
    """

    blocks: tuple[Block, ...]
    units: dict[str, TransformerUnit]
    sequence: tuple[str, ...]
    tails: dict[str, int]


def _stacks(model: nn.Module) -> list[tuple[str, str]]:
    """(name prefix, module path) of each block stack, in execution order."""
    if getattr(model, "transformer_blocks", None) is None:  # Wan's stack is model.blocks
        return [("blocks", "blocks")]
    stacks = [("blocks", "transformer_blocks")]
    if getattr(model, "single_transformer_blocks", None) is not None:
        stacks.append(("single", "single_transformer_blocks"))
    return stacks


def transformer_layout(model: nn.Module) -> TransformerLayout:
    """Blocks, sub-layers and tails of a supported transformer denoiser."""
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXBlock
    from diffusers.models.transformers.transformer_ltx import LTXVideoTransformerBlock
    from diffusers.models.transformers.transformer_wan import WanTransformerBlock

    single_stream = (BasicTransformerBlock, WanTransformerBlock, LTXVideoTransformerBlock)
    blocks: list[Block] = []
    units: dict[str, TransformerUnit] = {}
    sequence: list[tuple[str, str]] = []  # (block name, module path)
    for prefix, stack_path in _stacks(model):
        for k, module in enumerate(getattr(model, stack_path)):
            name, path = f"{prefix}.{k}", f"{stack_path}.{k}"
            # A BasicTransformerBlock reads the text only as cross-attention context; joint blocks update it.
            layout = (_SINGLE_STREAM if isinstance(module, single_stream)
                      else _VIDEO_FIRST if isinstance(module, CogVideoXBlock) else _TWO_STREAMS)
            whole = Block(name, "transformer", (path,))
            blocks.append(whole)
            units[name] = TransformerUnit(whole, module, layout=layout)
            sequence.append((name, path))
            for sub in _sub_layers(module):
                block = Block(f"{name}.{sub.suffix}", sub.kind, (f"{path}.{sub.attribute}",))  # type: ignore[arg-type]
                blocks.append(block)
                units[block.name] = TransformerUnit(block, getattr(module, sub.attribute), zeros=sub.zeros)
    tails: dict[str, int] = {}
    for start, (name, _) in enumerate(sequence[:-1]):  # a tail spans at least two blocks
        tail = Block(f"tail.{name.removeprefix('blocks.')}", "branch", tuple(path for _, path in sequence[start:]))
        blocks.append(tail)
        tails[tail.name] = start
    return TransformerLayout(tuple(blocks), units, tuple(name for name, _ in sequence), tails)
