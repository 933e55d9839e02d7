"""What the two guided-diffusion (ADM) converters share: the encoder's layout, keys and tensors.

guided-diffusion's denoiser ``UNetModel`` and its noisy-image classifier ``EncoderUNetModel`` are built
from the same encoder: a timestep MLP ``time_embed``, the ``input_blocks`` (a 3x3 conv, then per
resolution level ``num_res_blocks`` ``ResBlock``s, each followed by an ``AttentionBlock`` at attention
levels, and a down-sampler between levels) and the ``middle_block`` (ResBlock, AttentionBlock,
ResBlock). This module

* reads that layout back from a state dict's keys and shapes (:func:`infer_encoder_layouts`);
* lists the encoder's ADM sub-modules with the diffusers module each becomes (:func:`encoder_records`)
  and their parameter shapes (:func:`record_shapes`);
* converts their tensors (:func:`convert_record`: ``ResBlock`` -> ``ResnetBlock2D``, ``AttentionBlock``
  -> ``Attention`` with ``qkv`` split into ``to_q``/``to_k``/``to_v``), using each tensor exactly once
  (:func:`map_state_dict`);
* loads checkpoint files safely and builds seeded random stand-in state dicts.

What the weights cannot tell is how an ``AttentionBlock``'s channels split into heads
(``num_head_channels`` or ``num_heads``) and in which order its ``qkv`` rows hold q, k and v (the new
order of ``QKVAttention`` or the legacy one of ``QKVAttentionLegacy``): every head layout gives the
same tensor shapes. That is :class:`HeadLayout`, which the converters take from a preset or the user.
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from ..errors import ConfigError, ConversionError, MissingFileError, first_line

__all__ = [
    "GROUPS",
    "EncoderLayout",
    "HeadLayout",
    "Record",
    "block_count",
    "check_state_dict",
    "config_from_dict",
    "convert_record",
    "describe_differences",
    "encoder_records",
    "infer_encoder_layouts",
    "keyed_shapes",
    "load_adm_state_dict",
    "map_state_dict",
    "qkv_rows_new_order",
    "random_state_dict",
    "record_shapes",
    "resolve_arch",
    "skip_widths",
]

GROUPS = 32  # guided-diffusion's normalization() is always GroupNorm32(32, channels)

Shapes = dict[str, tuple[int, ...]]
Take = Callable[[str], Tensor]


@dataclass(frozen=True)
class EncoderLayout:
    """The part of an ADM encoder's architecture that its weights determine.

    Attributes:
        in_channels: Image channels of ``input_blocks.0.0``.
        model_channels: Width of the sinusoidal timestep embedding (``num_channels`` /
            ``classifier_width``); the timestep MLP is ``4 * model_channels`` wide.
        level_channels: Channels of each resolution level (``int(mult * model_channels)``).
        num_res_blocks: ``ResBlock``s per level in ``input_blocks``.
        attention_levels: Levels (0 = full resolution) whose ResBlocks are followed by attention.
        resblock_updown: Down-sampling by ``ResBlock(down=True)`` rather than a strided conv
            (False when there is a single level, where nothing is down-sampled).
        use_scale_shift_norm: ``ResBlock`` conditioning by scale and shift (``emb_layers`` twice as
            wide as the block) rather than by addition.
    """

    in_channels: int
    model_channels: int
    level_channels: tuple[int, ...]
    num_res_blocks: int
    attention_levels: tuple[int, ...]
    resblock_updown: bool
    use_scale_shift_norm: bool

    @property
    def time_embed_dim(self) -> int:
        """Width of the timestep MLP's output (the ``emb`` every ResBlock receives)."""
        return 4 * self.model_channels

    def describe(self) -> str:
        """The layout as ``name=value`` pairs, for error messages."""
        mult = tuple(_mult(w, self.model_channels) for w in self.level_channels)
        return (
            f"num_channels={self.model_channels}, channel_mult={mult}, num_res_blocks={self.num_res_blocks}, "
            f"attention levels={self.attention_levels}, resblock_updown={self.resblock_updown}, "
            f"use_scale_shift_norm={self.use_scale_shift_norm}"
        )


def _mult(width: int, model_channels: int) -> int | float:
    return width // model_channels if width % model_channels == 0 else width / model_channels


@dataclass(frozen=True)
class HeadLayout:
    """How ADM's ``AttentionBlock``s split channels into heads: not recorded in the weights.

    Attributes:
        num_head_channels: Channels per head, or -1 to use ``num_heads`` heads at every width.
        num_heads: Heads per attention block when ``num_head_channels == -1``.
        new_order: ``qkv`` rows are ``[q | k | v]``, each head-major (``QKVAttention``), rather than
            head-major ``[q_h, k_h, v_h]`` triples (``QKVAttentionLegacy``).
    """

    num_head_channels: int
    num_heads: int
    new_order: bool

    def heads(self, channels: int) -> int:
        """Heads of an attention block of ``channels`` channels (``AttentionBlock.__init__``'s rule)."""
        return self.num_heads if self.num_head_channels == -1 else channels // self.num_head_channels

    def head_width(self, channels: int) -> int:
        """Channels per head of an attention block of ``channels`` channels."""
        return channels // self.heads(channels)

    def check(self, channels: int) -> None:
        """Raise :class:`ConversionError` when ``channels`` do not split into whole heads."""
        if self.num_head_channels == -1:
            if self.num_heads < 1 or channels % self.num_heads:
                raise ConversionError(
                    f"attention width {channels} does not split into num_heads={self.num_heads} heads"
                )
        elif self.num_head_channels < 1 or channels % self.num_head_channels:
            raise ConversionError(
                f"attention width {channels} is not a multiple of num_head_channels={self.num_head_channels}"
            )


# --------------------------------------------------------------------------------------------
# Layout records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One ADM sub-module with parameters and the diffusers module it becomes.

    Attributes:
        kind: ``"resblock"``, ``"attention"``, ``"conv"`` (3x3), ``"linear"``, ``"norm"``,
            ``"embedding"``, or a converter's own kind (the classifier's ``"pool"``).
        adm: ADM key prefix, e.g. ``"input_blocks.1.0"``.
        diffusers: diffusers key prefix, e.g. ``"down_blocks.0.resnets.0"``.
        in_ch: Input channels (rows of an embedding table).
        out_ch: Output channels (embedding width).
    """

    kind: str
    adm: str
    diffusers: str
    in_ch: int
    out_ch: int


def _input_blocks(layout: EncoderLayout) -> Iterable[Record]:
    """``input_blocks``, in ``UNetModel.__init__``'s order, with diffusers ``down_blocks`` names."""
    ch = layout.level_channels[0]
    yield Record("conv", "input_blocks.0.0", "conv_in", layout.in_channels, ch)
    idx = 1
    last = len(layout.level_channels) - 1
    for level, width in enumerate(layout.level_channels):
        for j in range(layout.num_res_blocks):
            yield Record("resblock", f"input_blocks.{idx}.0", f"down_blocks.{level}.resnets.{j}", ch, width)
            ch = width
            if level in layout.attention_levels:
                yield Record("attention", f"input_blocks.{idx}.1", f"down_blocks.{level}.attentions.{j}", ch, ch)
            idx += 1
        if level != last:
            sampler = f"down_blocks.{level}.downsamplers.0"
            if layout.resblock_updown:
                yield Record("resblock", f"input_blocks.{idx}.0", sampler, ch, ch)
            else:
                yield Record("conv", f"input_blocks.{idx}.0.op", f"{sampler}.conv", ch, ch)
            idx += 1


def encoder_records(layout: EncoderLayout) -> list[Record]:
    """The timestep MLP, ``input_blocks`` and ``middle_block`` of an ADM model, in construction order.

    The diffusers names are those of ``UNet2DModel`` (``time_embedding``, ``conv_in``,
    ``down_blocks.{level}.resnets/attentions/downsamplers``, ``mid_block``), which the classifier
    module reuses.
    """
    emb = layout.time_embed_dim
    ch = layout.level_channels[-1]
    return [
        Record("linear", "time_embed.0", "time_embedding.linear_1", layout.model_channels, emb),
        Record("linear", "time_embed.2", "time_embedding.linear_2", emb, emb),
        *_input_blocks(layout),
        Record("resblock", "middle_block.0", "mid_block.resnets.0", ch, ch),
        Record("attention", "middle_block.1", "mid_block.attentions.0", ch, ch),
        Record("resblock", "middle_block.2", "mid_block.resnets.1", ch, ch),
    ]


def skip_widths(layout: EncoderLayout) -> list[int]:
    """Channel widths the UNet's ``input_blocks`` push onto the skip stack, in push order."""
    widths = [layout.level_channels[0]]
    for level, width in enumerate(layout.level_channels):
        widths += [width] * layout.num_res_blocks
        if level != len(layout.level_channels) - 1:
            widths.append(width)
    return widths


def _resblock_shapes(in_ch: int, out_ch: int, emb_dim: int, scale_shift: bool) -> Shapes:
    emb_out = 2 * out_ch if scale_shift else out_ch
    shapes: Shapes = {
        "in_layers.0.weight": (in_ch,),
        "in_layers.0.bias": (in_ch,),
        "in_layers.2.weight": (out_ch, in_ch, 3, 3),
        "in_layers.2.bias": (out_ch,),
        "emb_layers.1.weight": (emb_out, emb_dim),
        "emb_layers.1.bias": (emb_out,),
        "out_layers.0.weight": (out_ch,),
        "out_layers.0.bias": (out_ch,),
        "out_layers.3.weight": (out_ch, out_ch, 3, 3),
        "out_layers.3.bias": (out_ch,),
    }
    if in_ch != out_ch:
        shapes["skip_connection.weight"] = (out_ch, in_ch, 1, 1)
        shapes["skip_connection.bias"] = (out_ch,)
    return shapes


def _attention_shapes(ch: int) -> Shapes:
    return {
        "norm.weight": (ch,),
        "norm.bias": (ch,),
        "qkv.weight": (3 * ch, ch, 1),
        "qkv.bias": (3 * ch,),
        "proj_out.weight": (ch, ch, 1),
        "proj_out.bias": (ch,),
    }


def record_shapes(record: Record, layout: EncoderLayout) -> Shapes:
    """Local ADM parameter shapes of one record of a shared kind (not a converter's own kind)."""
    i, o = record.in_ch, record.out_ch
    if record.kind == "resblock":
        return _resblock_shapes(i, o, layout.time_embed_dim, layout.use_scale_shift_norm)
    if record.kind == "attention":
        return _attention_shapes(i)
    if record.kind == "conv":
        return {"weight": (o, i, 3, 3), "bias": (o,)}
    if record.kind == "linear":
        return {"weight": (o, i), "bias": (o,)}
    if record.kind == "norm":
        return {"weight": (o,), "bias": (o,)}
    if record.kind == "embedding":
        return {"weight": (i, o)}
    raise ConversionError(f"no shared shapes for ADM module kind {record.kind!r}")


# --------------------------------------------------------------------------------------------
# Tensor conversion
# --------------------------------------------------------------------------------------------

_RESBLOCK_NAMES = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    # ADM's scale-shift norm takes (scale, shift) = chunk(emb_out, 2), the order of diffusers'
    # time_embedding_norm="scale_shift", so the rows are copied unchanged.
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}


def _convert_resblock(take: Take, shapes: Shapes) -> dict[str, Tensor]:
    out = {}
    for name in shapes:
        module, param = name.rsplit(".", 1)
        out[f"{_RESBLOCK_NAMES[module]}.{param}"] = take(name)
    return out


def qkv_rows_new_order(qkv: Tensor, heads: int, new_order: bool) -> Tensor:
    """Reorder ``qkv`` rows (dim 0) to ``[q | k | v]`` with each third head-major.

    ``QKVAttentionLegacy`` reads the ``3 C`` rows as ``(heads, [q, k, v], head width)``;
    ``QKVAttention`` (and diffusers' ``to_q``/``to_k``/``to_v``) as ``([q, k, v], heads, head width)``.
    """
    if new_order:
        return qkv
    head_ch = qkv.shape[0] // (3 * heads)
    return qkv.reshape(heads, 3, head_ch, *qkv.shape[1:]).transpose(0, 1).reshape(qkv.shape)


def _convert_attention(take: Take, ch: int, heads: HeadLayout) -> dict[str, Tensor]:
    heads.check(ch)
    n = heads.heads(ch)
    weight = qkv_rows_new_order(take("qkv.weight").squeeze(-1), n, heads.new_order)
    bias = qkv_rows_new_order(take("qkv.bias"), n, heads.new_order)
    out = {"group_norm.weight": take("norm.weight"), "group_norm.bias": take("norm.bias")}
    for name, w, b in zip(("to_q", "to_k", "to_v"), weight.chunk(3), bias.chunk(3)):
        out[f"{name}.weight"] = w.clone()  # clone: no storage shared between saved tensors
        out[f"{name}.bias"] = b.clone()
    out["to_out.0.weight"] = take("proj_out.weight").squeeze(-1)
    out["to_out.0.bias"] = take("proj_out.bias")
    return out


def convert_record(take: Take, record: Record, layout: EncoderLayout, heads: HeadLayout) -> dict[str, Tensor]:
    """Convert one record of a shared kind to local diffusers names (``take`` reads local ADM names)."""
    if record.kind == "resblock":
        return _convert_resblock(take, record_shapes(record, layout))
    if record.kind == "attention":
        return _convert_attention(take, record.in_ch, heads)
    return {name: take(name) for name in record_shapes(record, layout)}


def keyed_shapes(records: Iterable[Record], shapes_of: Callable[[Record], Shapes]) -> Shapes:
    """Every ADM state-dict key of ``records`` (``record.adm`` + ``.`` + tensor name) with its shape, in order."""
    return {f"{record.adm}.{name}": shape for record in records for name, shape in shapes_of(record).items()}


def check_state_dict(state: Mapping[str, Tensor], expected: Shapes, what: str = "ADM state dict") -> None:
    """Raise a one-line :class:`ConversionError` for missing, unexpected or mis-shaped tensors.

    Values are read through ``items()`` so that the mapping itself indexes each key once.
    """
    missing = [key for key in expected if key not in state]
    if missing:
        raise ConversionError(f"{what} is missing {len(missing)} key(s), first: {missing[0]!r}")
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        raise ConversionError(f"{what} has {len(unexpected)} unexpected key(s), first: {unexpected[0]!r}")
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise ConversionError(f"{what} entry {key!r} is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != expected[key]:
            raise ConversionError(f"{what} tensor {key!r} has shape {tuple(value.shape)}, expected {expected[key]}")


def map_state_dict(
    state: Mapping[str, Tensor],
    records: Iterable[Record],
    convert: Callable[[Take, Record], dict[str, Tensor]],
) -> dict[str, Tensor]:
    """Convert every record's tensors, checking that each ADM tensor is read and each name written once.

    Args:
        state: The ADM state dict, already checked with :func:`check_state_dict`.
        records: The model's records.
        convert: ``convert(take, record)`` -> local diffusers names and tensors.

    Returns:
        The diffusers state dict.
    """
    used: set[str] = set()
    converted: dict[str, Tensor] = {}
    for record in records:

        def take(name: str, prefix: str = record.adm) -> Tensor:
            key = f"{prefix}.{name}"
            if key in used:
                raise ConversionError(f"ADM tensor {key!r} would be mapped twice")
            used.add(key)
            return state[key]

        for name, tensor in convert(take, record).items():
            key = f"{record.diffusers}.{name}"
            if key in converted:
                raise ConversionError(f"diffusers key {key!r} would be written twice")
            converted[key] = tensor
    unused = [key for key in state if key not in used]
    if unused:
        raise ConversionError(f"{len(unused)} ADM tensor(s) were not mapped, first: {unused[0]!r}")
    return converted


# --------------------------------------------------------------------------------------------
# Reading the layout from a state dict
# --------------------------------------------------------------------------------------------


def block_count(state: Mapping[str, Tensor], prefix: str) -> int:
    """Number of blocks ``{prefix}.{i}.*`` (``i`` must run 0, 1, ... without gaps)."""
    indices = set()
    for key in state:
        parts = key.split(".")
        if parts[0] == prefix and len(parts) > 2:
            if not parts[1].isdigit():
                raise ConversionError(f"unexpected ADM key {key!r}")
            indices.add(int(parts[1]))
    if indices != set(range(len(indices))):
        raise ConversionError(f"the {prefix} of this checkpoint are not numbered 0..{len(indices) - 1}")
    return len(indices)


def _has_prefix(state: Mapping[str, Tensor], prefix: str) -> bool:
    return any(key.startswith(prefix + ".") for key in state)


def _resblock_widths(state: Mapping[str, Tensor], prefix: str) -> tuple[int, int, int] | None:
    """``(in, out, emb_layers width)`` of the ResBlock at ``prefix``, or None when there is none."""
    names = ("in_layers.2.weight", "emb_layers.1.weight", "out_layers.3.weight")
    if not all(f"{prefix}.{name}" in state for name in names):
        return None
    conv = state[f"{prefix}.in_layers.2.weight"]
    if conv.dim() != 4:
        return None
    return conv.shape[1], conv.shape[0], state[f"{prefix}.emb_layers.1.weight"].shape[0]


def _try_encoder(state: Mapping[str, Tensor], n: int, total: int) -> EncoderLayout | None:
    """The encoder layout with ``n`` ResBlocks per level, or None when the keys contradict it."""
    conv_in = state["input_blocks.0.0.weight"]
    ch = conv_in.shape[0]
    levels = total // (n + 1)
    widths, attention, updown, scale_shift = [], [], set(), set()
    for level in range(levels):
        first = 1 + level * (n + 1)
        level_attention = set()
        for idx in range(first, first + n):
            found = _resblock_widths(state, f"input_blocks.{idx}.0")
            if found is None or found[0] != ch or (idx > first and found[1] != ch):
                return None
            ch = found[1]
            if found[2] not in (ch, 2 * ch) or _has_prefix(state, f"input_blocks.{idx}.2"):
                return None
            scale_shift.add(found[2] == 2 * ch)
            level_attention.add(f"input_blocks.{idx}.1.qkv.weight" in state)
        if len(level_attention) != 1:
            return None
        widths.append(ch)
        if level_attention.pop():
            attention.append(level)
        if level != levels - 1:
            prefix = f"input_blocks.{first + n}.0"
            if _has_prefix(state, f"input_blocks.{first + n}.1"):
                return None
            if f"{prefix}.op.weight" in state:
                updown.add(False)
            else:
                found = _resblock_widths(state, prefix)
                if found is None or found[:2] != (ch, ch):
                    return None
                updown.add(True)
    if len(updown) > 1 or len(scale_shift) != 1:
        return None
    return EncoderLayout(
        in_channels=conv_in.shape[1],
        model_channels=state["time_embed.0.weight"].shape[1],
        level_channels=tuple(widths),
        num_res_blocks=n,
        attention_levels=tuple(attention),
        resblock_updown=updown == {True},
        use_scale_shift_norm=scale_shift.pop(),
    )


def infer_encoder_layouts(state: Mapping[str, Tensor], num_res_blocks: int | None = None) -> list[EncoderLayout]:
    """Every encoder layout consistent with the keys and shapes of ``state``'s ``input_blocks``.

    ``input_blocks`` hold ``levels * (num_res_blocks + 1)`` blocks, so each divisor is a candidate
    ``num_res_blocks``; a candidate survives when every level's first ResBlock alone changes the
    width, every level has attention after all or none of its ResBlocks, and every down-sampler keeps
    the width and has no attention. A ``ResBlock(down=True)`` has the keys of a plain ResBlock, so two
    candidates can survive when neighbouring levels share a width and have no attention; the UNet
    converter settles ``num_res_blocks`` from its ``output_blocks`` instead.

    Args:
        state: An ADM ``UNetModel`` or ``EncoderUNetModel`` state dict.
        num_res_blocks: Only try this many ResBlocks per level.

    Returns:
        The consistent layouts, fewest ResBlocks per level first (possibly none).

    Raises:
        ConversionError: If ``state`` has no ``time_embed.0.weight`` or ``input_blocks.0.0.weight``.
    """
    for key in ("time_embed.0.weight", "input_blocks.0.0.weight"):
        if key not in state:
            raise ConversionError(f"not a guided-diffusion model state dict: it has no {key!r}")
    total = block_count(state, "input_blocks")
    candidates = range(1, total) if num_res_blocks is None else [num_res_blocks]
    layouts = []
    for n in candidates:
        if n >= 1 and total % (n + 1) == 0:
            layout = _try_encoder(state, n, total)
            if layout is not None:
                layouts.append(layout)
    return layouts


# --------------------------------------------------------------------------------------------
# Files and stand-ins
# --------------------------------------------------------------------------------------------


def load_adm_state_dict(checkpoint_path: str | Path, what: str = "ADM checkpoint") -> dict[str, Tensor]:
    """Load a ``torch.save``-d state dict safely (``weights_only=True``) onto the CPU.

    Raises:
        MissingFileError: If the file does not exist.
        ConversionError: If it is not a loadable torch file holding a flat name -> tensor mapping.
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        raise MissingFileError(f"{what} not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise ConversionError(f"{path} is not a loadable torch checkpoint: {first_line(exc)}") from None
    flat = isinstance(state, Mapping) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items())
    if not flat:
        raise ConversionError(f"{path} does not hold an ADM state dict (a flat mapping of name -> tensor)")
    return dict(state)


def random_state_dict(shapes: Shapes, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """Seeded random tensors of ``shapes`` with roughly unit-variance activations.

    Weights are scaled by their fan-in, norm gains are ``1 + 0.1 N(0, 1)``, biases ``0.1 N(0, 1)``;
    embedding tables (``label_emb``) stay ``N(0, 1)``. Unlike ADM's initialisation nothing is zero
    (ADM zeroes every ResBlock's last conv and every attention output projection), so a stand-in
    exercises every tensor.
    """
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        values = torch.randn(shape, generator=gen, dtype=torch.float32)
        if key.startswith("label_emb"):
            pass
        elif key.endswith("positional_embedding"):
            values /= math.sqrt(shape[0])
        elif len(shape) > 1:
            values /= math.sqrt(math.prod(shape[1:]))
        elif key.endswith("weight"):
            values = 1.0 + 0.1 * values
        else:
            values *= 0.1
        state[key] = values.to(dtype)
    return state


# --------------------------------------------------------------------------------------------
# Architecture arguments
# --------------------------------------------------------------------------------------------

ConfigT = TypeVar("ConfigT")


def config_from_dict(config_type: type[ConfigT], data: Any, source: str) -> ConfigT:
    """Build a config dataclass from a mapping of its field names, with one-line errors."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a JSON object of {config_type.__name__} fields")
    names = {f.name for f in fields(config_type)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown {config_type.__name__} field(s): {', '.join(map(str, unknown))}")
    try:
        return config_type(**data)
    except TypeError as exc:
        raise ConfigError(f"{source}: {first_line(exc)}") from None


def resolve_arch(
    arch: Any, presets: Mapping[str, ConfigT], config_type: type[ConfigT], what: str
) -> tuple[ConfigT, str]:
    """Turn an ``arch`` argument into a config and a label for messages.

    Args:
        arch: A ``config_type`` instance, a preset name, or the path of a ``.json`` file of
            ``config_type`` fields.
        presets: Preset name -> config.
        config_type: The config dataclass.
        what: What the config describes, for messages (e.g. ``"ADM UNet"``).

    Returns:
        ``(config, label)``, the label naming the preset or file.
    """
    if isinstance(arch, config_type):
        return arch, "the given config"
    if isinstance(arch, (str, Path)):
        name = str(arch)
        if name in presets:
            return presets[name], repr(name)
        path = Path(name)
        if path.suffix == ".json":
            if not path.is_file():
                raise MissingFileError(f"{what} arch file not found: {path}")
            try:
                data = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ConfigError(f"{path} is not a readable JSON file: {first_line(exc)}") from None
            return config_from_dict(config_type, data, str(path)), str(path)
    raise ConfigError(
        f"unknown {what} arch {arch!r}; use a preset ({', '.join(presets)}) "
        f"or a .json file of {config_type.__name__} fields"
    )


def describe_differences(found: Mapping[str, Any], expected: Mapping[str, Any]) -> str:
    """``"name is X in the checkpoint, Y in the arch; ..."`` for every differing entry."""
    return "; ".join(
        f"{key} is {found.get(key)!r} in the checkpoint, {value!r} in the arch"
        for key, value in expected.items()
        if found.get(key) != value
    )
