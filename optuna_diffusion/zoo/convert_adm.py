"""Convert guided-diffusion (ADM) UNet checkpoints into diffusers ``UNet2DModel`` folders.

OpenAI's guided-diffusion ("Diffusion Models Beat GANs on Image Synthesis", the ADM model) ships its
UNets as plain ``torch.save``-d state dicts of ``guided_diffusion.unet.UNetModel``. This module maps
such a state dict, tensor by tensor, onto an equivalent diffusers ``UNet2DModel`` and writes a
folder that ``UNet2DModel.from_pretrained(out_dir / "unet")`` and
``DDPMScheduler.from_pretrained(out_dir / "scheduler")`` load without guided-diffusion installed.

What is converted (ADM name -> diffusers name):

* ``time_embed.0/2`` -> ``time_embedding.linear_1/2`` and ``label_emb`` -> ``class_embedding``;
* ``input_blocks.0.0`` -> ``conv_in``; the residual blocks, attention blocks and residual
  down-samplers of ``input_blocks`` -> ``down_blocks.{level}.resnets/attentions/downsamplers``;
* ``middle_block.0/1/2`` -> ``mid_block.resnets.0``, ``mid_block.attentions.0``,
  ``mid_block.resnets.1``;
* ``output_blocks`` -> ``up_blocks.{i}.resnets/attentions/upsamplers`` (deepest level first);
* ``out.0/out.2`` -> ``conv_norm_out``/``conv_out``.

Inside a residual block ``in_layers.0/2``, ``emb_layers.1``, ``out_layers.0/3`` and
``skip_connection`` become ``norm1``, ``conv1``, ``time_emb_proj``, ``norm2``, ``conv2`` and
``conv_shortcut``. ADM's scale-shift norm (``scale, shift = chunk(emb_out, 2)``;
``norm(h) * (1 + scale) + shift``) uses the same half order as diffusers'
``time_embedding_norm="scale_shift"``, so ``time_emb_proj`` is copied unchanged. Inside an
attention block ``norm`` becomes ``group_norm``, the 1x1 ``Conv1d`` ``qkv`` (``3C x C x 1``) is
split into the ``to_q``/``to_k``/``to_v`` linear layers (for the new attention order q, k and v
are the three contiguous thirds; for the legacy order the rows are interleaved per head and are
regrouped first) and ``proj_out`` becomes ``to_out.0``.

Every ADM tensor is used exactly once; a missing, unexpected or mismatched tensor raises a
one-line :class:`ValueError`. The noise schedule of the checkpoint (cosine or linear betas,
learned-range variance, epsilon prediction, clipped ``x0``) is written as a ``DDPMScheduler``.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..errors import ConversionError, MissingFileError, first_line

__all__ = [
    "ADMConfig",
    "IMAGENET64_CONFIG",
    "adm_state_dict_shapes",
    "convert_adm_checkpoint",
    "convert_adm_state_dict",
    "diffusers_scheduler_config",
    "diffusers_unet_config",
]

_GROUPS = 32  # guided-diffusion's normalization() is always GroupNorm32(32, channels)
_IN_CHANNELS = 3


@dataclass(frozen=True)
class ADMConfig:
    """The guided-diffusion model and diffusion flags that determine a checkpoint's layout.

    The defaults are the flags of the published ImageNet 64x64 class-conditional checkpoint
    ``64x64_diffusion.pt`` (see :meth:`imagenet64`).

    Attributes:
        image_size: Training resolution (square images).
        num_channels: Base channel count (``model_channels``).
        num_res_blocks: Residual blocks per resolution in the encoder.
        attention_resolutions: Feature-map resolutions (not downsample rates) with attention,
            as in the ``--attention_resolutions 32,16,8`` flag.
        channel_mult: Channel multiplier of each resolution level.
        num_head_channels: Channels per attention head.
        learn_sigma: Whether the model also outputs the variance interpolation (6 channels).
        class_cond: Whether the model has a class embedding ``label_emb``.
        num_classes: Number of classes of ``label_emb`` when ``class_cond``.
        resblock_updown: Residual blocks (rather than plain convs) for up/downsampling.
        use_new_attention_order: q/k/v split before heads (``QKVAttention``) rather than after.
        use_scale_shift_norm: FiLM-like scale-shift conditioning of the residual blocks.
        noise_schedule: ``"cosine"`` or ``"linear"``.
        diffusion_steps: Number of training diffusion steps.
        dropout: Dropout rate of the residual blocks (inactive at inference).
    """

    image_size: int = 64
    num_channels: int = 192
    num_res_blocks: int = 3
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    num_head_channels: int = 64
    learn_sigma: bool = True
    class_cond: bool = True
    num_classes: int = 1000
    resblock_updown: bool = True
    use_new_attention_order: bool = True
    use_scale_shift_norm: bool = True
    noise_schedule: str = "cosine"
    diffusion_steps: int = 1000
    dropout: float = 0.1

    def __post_init__(self) -> None:
        """Normalise sequences to tuples and reject layouts UNet2DModel cannot express."""
        object.__setattr__(self, "attention_resolutions", tuple(self.attention_resolutions))
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        if not self.channel_mult or self.num_res_blocks < 1:
            raise ConversionError("ADMConfig needs a non-empty channel_mult and num_res_blocks >= 1")
        if self.noise_schedule not in ("cosine", "linear"):
            raise ConversionError(f"unknown noise_schedule {self.noise_schedule!r}; expected 'cosine' or 'linear'")
        if self.num_head_channels <= 0:
            raise ConversionError("num_head_channels must be positive: UNet2DModel uses one head width everywhere")
        for channels in self.level_channels:
            if channels % _GROUPS or channels % self.num_head_channels:
                raise ConversionError(
                    f"level width {channels} must be divisible by {_GROUPS} groups and "
                    f"num_head_channels={self.num_head_channels}"
                )
        for resolution in self.attention_resolutions:
            if resolution <= 0 or self.image_size % resolution:
                raise ConversionError(f"attention resolution {resolution} does not divide image_size={self.image_size}")

    @classmethod
    def imagenet64(cls) -> ADMConfig:
        """Flags of the published ImageNet 64x64 class-conditional checkpoint ``64x64_diffusion.pt``."""
        return cls()

    @property
    def out_channels(self) -> int:
        """Output channels: epsilon (3) plus the variance interpolation (3) when ``learn_sigma``."""
        return 2 * _IN_CHANNELS if self.learn_sigma else _IN_CHANNELS

    @property
    def time_embed_dim(self) -> int:
        """Width of the timestep (and class) embedding."""
        return 4 * self.num_channels

    @property
    def level_channels(self) -> tuple[int, ...]:
        """Channel count of each resolution level."""
        return tuple(int(mult * self.num_channels) for mult in self.channel_mult)

    def has_attention(self, level: int) -> bool:
        """Whether resolution ``level`` (0 = full resolution) has attention blocks."""
        return self.image_size // 2**level in self.attention_resolutions


IMAGENET64_CONFIG = ADMConfig.imagenet64()


# --------------------------------------------------------------------------------------------
# Layout: one record per ADM sub-module, in guided-diffusion's construction order
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Module:
    """One ADM sub-module and the diffusers module it becomes.

    Attributes:
        kind: ``"resblock"``, ``"attention"``, ``"conv"``, ``"linear"``, ``"norm"`` or ``"embedding"``.
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


def _encoder(cfg: ADMConfig) -> Iterator[_Module]:
    """Yield ``input_blocks`` (mirrors ``UNetModel.__init__``)."""
    ch = cfg.level_channels[0]
    yield _Module("conv", "input_blocks.0.0", "conv_in", _IN_CHANNELS, ch)
    idx = 1
    for level, width in enumerate(cfg.level_channels):
        for j in range(cfg.num_res_blocks):
            yield _Module("resblock", f"input_blocks.{idx}.0", f"down_blocks.{level}.resnets.{j}", ch, width)
            ch = width
            if cfg.has_attention(level):
                yield _Module("attention", f"input_blocks.{idx}.1", f"down_blocks.{level}.attentions.{j}", ch, ch)
            idx += 1
        if level != len(cfg.level_channels) - 1:
            sampler = f"down_blocks.{level}.downsamplers.0"
            if cfg.resblock_updown:
                yield _Module("resblock", f"input_blocks.{idx}.0", sampler, ch, ch)
            else:
                yield _Module("conv", f"input_blocks.{idx}.0.op", f"{sampler}.conv", ch, ch)
            idx += 1


def _skip_widths(cfg: ADMConfig) -> list[int]:
    """Channel widths pushed onto the skip stack by ``input_blocks``, in push order."""
    widths = [cfg.level_channels[0]]
    for level, width in enumerate(cfg.level_channels):
        widths += [width] * cfg.num_res_blocks
        if level != len(cfg.level_channels) - 1:
            widths.append(width)
    return widths


def _middle(cfg: ADMConfig) -> Iterator[_Module]:
    """Yield ``middle_block``: ResBlock, AttentionBlock, ResBlock."""
    ch = cfg.level_channels[-1]
    yield _Module("resblock", "middle_block.0", "mid_block.resnets.0", ch, ch)
    yield _Module("attention", "middle_block.1", "mid_block.attentions.0", ch, ch)
    yield _Module("resblock", "middle_block.2", "mid_block.resnets.1", ch, ch)


def _decoder(cfg: ADMConfig) -> Iterator[_Module]:
    """Yield ``output_blocks`` (mirrors ``UNetModel.__init__``), deepest level first."""
    skips = _skip_widths(cfg)
    ch = cfg.level_channels[-1]
    idx = 0
    for i, level in enumerate(reversed(range(len(cfg.level_channels)))):
        width = cfg.level_channels[level]
        for k in range(cfg.num_res_blocks + 1):
            yield _Module("resblock", f"output_blocks.{idx}.0", f"up_blocks.{i}.resnets.{k}", ch + skips.pop(), width)
            ch = width
            sub = 1
            if cfg.has_attention(level):
                yield _Module("attention", f"output_blocks.{idx}.1", f"up_blocks.{i}.attentions.{k}", ch, ch)
                sub = 2
            if level and k == cfg.num_res_blocks:
                sampler = f"up_blocks.{i}.upsamplers.0"
                if cfg.resblock_updown:
                    yield _Module("resblock", f"output_blocks.{idx}.{sub}", sampler, ch, ch)
                else:
                    yield _Module("conv", f"output_blocks.{idx}.{sub}.conv", f"{sampler}.conv", ch, ch)
            idx += 1


def _layout(cfg: ADMConfig) -> list[_Module]:
    """All ADM sub-modules with parameters, in ``UNetModel`` construction order."""
    emb = cfg.time_embed_dim
    modules = [
        _Module("linear", "time_embed.0", "time_embedding.linear_1", cfg.num_channels, emb),
        _Module("linear", "time_embed.2", "time_embedding.linear_2", emb, emb),
    ]
    if cfg.class_cond:
        modules.append(_Module("embedding", "label_emb", "class_embedding", cfg.num_classes, emb))
    modules += [*_encoder(cfg), *_middle(cfg), *_decoder(cfg)]
    modules += [
        _Module("norm", "out.0", "conv_norm_out", cfg.level_channels[0], cfg.level_channels[0]),
        _Module("conv", "out.2", "conv_out", cfg.level_channels[0], cfg.out_channels),
    ]
    return modules


# --------------------------------------------------------------------------------------------
# ADM parameter shapes
# --------------------------------------------------------------------------------------------

Shapes = dict[str, tuple[int, ...]]


def _resblock_shapes(cfg: ADMConfig, in_ch: int, out_ch: int) -> Shapes:
    """Local parameter shapes of an ADM ``ResBlock``."""
    emb_out = 2 * out_ch if cfg.use_scale_shift_norm else out_ch
    shapes: Shapes = {
        "in_layers.0.weight": (in_ch,),
        "in_layers.0.bias": (in_ch,),
        "in_layers.2.weight": (out_ch, in_ch, 3, 3),
        "in_layers.2.bias": (out_ch,),
        "emb_layers.1.weight": (emb_out, cfg.time_embed_dim),
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
    """Local parameter shapes of an ADM ``AttentionBlock`` (1x1 ``Conv1d`` projections)."""
    return {
        "norm.weight": (ch,),
        "norm.bias": (ch,),
        "qkv.weight": (3 * ch, ch, 1),
        "qkv.bias": (3 * ch,),
        "proj_out.weight": (ch, ch, 1),
        "proj_out.bias": (ch,),
    }


def _module_shapes(cfg: ADMConfig, module: _Module) -> Shapes:
    """Local parameter shapes of one layout record."""
    i, o = module.in_ch, module.out_ch
    if module.kind == "resblock":
        return _resblock_shapes(cfg, i, o)
    if module.kind == "attention":
        return _attention_shapes(i)
    if module.kind == "conv":
        return {"weight": (o, i, 3, 3), "bias": (o,)}
    if module.kind == "linear":
        return {"weight": (o, i), "bias": (o,)}
    if module.kind == "norm":
        return {"weight": (o,), "bias": (o,)}
    return {"weight": (i, o)}  # embedding: (num_classes, time_embed_dim)


def adm_state_dict_shapes(config: ADMConfig = IMAGENET64_CONFIG) -> dict[str, tuple[int, ...]]:
    """Key names and shapes of guided-diffusion's ``UNetModel.state_dict()`` for ``config``.

    Args:
        config: The checkpoint's model flags.

    Returns:
        Mapping from every ADM state-dict key to its tensor shape, in construction order.
    """
    shapes: Shapes = {}
    for module in _layout(config):
        for name, shape in _module_shapes(config, module).items():
            shapes[f"{module.adm}.{name}"] = shape
    return shapes


# --------------------------------------------------------------------------------------------
# diffusers configuration
# --------------------------------------------------------------------------------------------


def _block_types(cfg: ADMConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """diffusers down and up block type names reproducing ADM's levels."""
    down, up = [], []
    for level in range(len(cfg.channel_mult)):
        if cfg.has_attention(level):
            down.append("AttnDownBlock2D")
            up.append("AttnUpBlock2D")
        elif cfg.resblock_updown:
            down.append("ResnetDownsampleBlock2D")
            up.append("ResnetUpsampleBlock2D")
        else:
            down.append("DownBlock2D")
            up.append("UpBlock2D")
    return tuple(down), tuple(reversed(up))


def diffusers_unet_config(config: ADMConfig = IMAGENET64_CONFIG) -> dict:
    """``UNet2DModel(**...)`` arguments whose architecture is identical to the ADM ``UNetModel``.

    Args:
        config: The checkpoint's model flags.

    Returns:
        Keyword arguments for :class:`diffusers.UNet2DModel`.
    """
    down_types, up_types = _block_types(config)
    sampler = "resnet" if config.resblock_updown else "conv"
    return dict(
        sample_size=config.image_size,
        in_channels=_IN_CHANNELS,
        out_channels=config.out_channels,
        time_embedding_type="positional",
        flip_sin_to_cos=True,  # ADM's timestep_embedding is cat([cos, sin])
        freq_shift=0,
        down_block_types=down_types,
        mid_block_type="UNetMidBlock2D",
        up_block_types=up_types,
        block_out_channels=config.level_channels,
        layers_per_block=config.num_res_blocks,
        downsample_padding=1,
        downsample_type=sampler,
        upsample_type=sampler,
        dropout=config.dropout,
        act_fn="silu",
        attention_head_dim=config.num_head_channels,
        norm_num_groups=_GROUPS,
        # UNetMidBlock2D drops the attention group norm for "scale_shift" unless this is set.
        attn_norm_num_groups=_GROUPS,
        norm_eps=1e-5,
        resnet_time_scale_shift="scale_shift" if config.use_scale_shift_norm else "default",
        add_attention=True,
        class_embed_type=None,
        num_class_embeds=config.num_classes if config.class_cond else None,
    )


def diffusers_scheduler_config(config: ADMConfig = IMAGENET64_CONFIG) -> dict:
    """``DDPMScheduler(**...)`` arguments matching the checkpoint's ``GaussianDiffusion``.

    Args:
        config: The checkpoint's diffusion flags.

    Returns:
        Keyword arguments for :class:`diffusers.DDPMScheduler`.
    """
    schedule: dict = {"beta_schedule": "squaredcos_cap_v2"}
    if config.noise_schedule == "linear":  # ADM scales the linear betas to the number of steps
        scale = 1000 / config.diffusion_steps
        schedule = {"beta_schedule": "linear", "beta_start": scale * 1e-4, "beta_end": scale * 0.02}
    return dict(
        num_train_timesteps=config.diffusion_steps,
        **schedule,
        prediction_type="epsilon",
        variance_type="learned_range" if config.learn_sigma else "fixed_large",
        clip_sample=True,
    )


# --------------------------------------------------------------------------------------------
# State-dict conversion
# --------------------------------------------------------------------------------------------

_RESBLOCK_NAMES = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",  # same (scale, shift) half order as diffusers: no row swap
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}

Take = Callable[[str], Tensor]


def _convert_resblock(take: Take, shapes: Shapes) -> dict[str, Tensor]:
    """Rename an ADM ``ResBlock``'s tensors to ``ResnetBlock2D`` names."""
    out = {}
    for name in shapes:
        module, param = name.rsplit(".", 1)
        out[f"{_RESBLOCK_NAMES[module]}.{param}"] = take(name)
    return out


def _qkv_new_order(qkv: Tensor, ch: int, num_heads: int, legacy: bool) -> Tensor:
    """Reorder ``qkv`` rows to ``[q | k | v]`` with each third head-major (``QKVAttention``)."""
    if not legacy:
        return qkv
    # QKVAttentionLegacy reads the rows as (heads, [q, k, v], head_ch).
    head_ch = ch // num_heads
    return qkv.reshape(num_heads, 3, head_ch, *qkv.shape[1:]).transpose(0, 1).reshape(qkv.shape)


def _convert_attention(take: Take, cfg: ADMConfig, ch: int) -> dict[str, Tensor]:
    """Split an ADM ``AttentionBlock`` into diffusers ``Attention`` projections."""
    heads = ch // cfg.num_head_channels
    legacy = not cfg.use_new_attention_order
    weight = _qkv_new_order(take("qkv.weight").squeeze(-1), ch, heads, legacy)
    bias = _qkv_new_order(take("qkv.bias"), ch, heads, legacy)
    out = {"group_norm.weight": take("norm.weight"), "group_norm.bias": take("norm.bias")}
    for name, w, b in zip(("to_q", "to_k", "to_v"), weight.chunk(3), bias.chunk(3)):
        out[f"{name}.weight"] = w.clone()  # clone: no storage shared between saved tensors
        out[f"{name}.bias"] = b.clone()
    out["to_out.0.weight"] = take("proj_out.weight").squeeze(-1)
    out["to_out.0.bias"] = take("proj_out.bias")
    return out


def _convert_module(take: Take, cfg: ADMConfig, module: _Module) -> dict[str, Tensor]:
    """Convert one layout record's tensors to local diffusers names."""
    if module.kind == "resblock":
        return _convert_resblock(take, _resblock_shapes(cfg, module.in_ch, module.out_ch))
    if module.kind == "attention":
        return _convert_attention(take, cfg, module.in_ch)
    return {name: take(name) for name in _module_shapes(cfg, module)}


def _check_keys(adm_state_dict: Mapping[str, Tensor], expected: Shapes) -> None:
    """Raise a one-line ``ValueError`` for missing, unexpected or mis-shaped ADM tensors.

    Values are inspected through ``items()`` so that the mapping itself indexes each key once.
    """
    missing = [key for key in expected if key not in adm_state_dict]
    if missing:
        raise ConversionError(f"ADM state dict is missing {len(missing)} key(s), first: {missing[0]!r}")
    unexpected = [key for key in adm_state_dict if key not in expected]
    if unexpected:
        raise ConversionError(f"ADM state dict has {len(unexpected)} unexpected key(s), first: {unexpected[0]!r}")
    for key, value in adm_state_dict.items():
        if not isinstance(value, Tensor):
            raise ConversionError(f"ADM state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != expected[key]:
            raise ConversionError(f"ADM tensor {key!r} has shape {tuple(value.shape)}, expected {expected[key]}")


def convert_adm_state_dict(
    adm_state_dict: Mapping[str, Tensor], config: ADMConfig = IMAGENET64_CONFIG
) -> dict[str, Tensor]:
    """Map an ADM ``UNetModel`` state dict onto ``UNet2DModel(**diffusers_unet_config(config))``.

    Tensors keep their dtype; most outputs are views of the inputs (the q/k/v splits are copies).

    Args:
        adm_state_dict: guided-diffusion ``UNetModel.state_dict()``.
        config: The checkpoint's model flags.

    Returns:
        The diffusers state dict, loadable with ``load_state_dict(..., strict=True)``.

    Raises:
        ValueError: If a key is missing, unexpected or used twice, or a shape does not match.
    """
    _check_keys(adm_state_dict, adm_state_dict_shapes(config))
    used: set[str] = set()
    converted: dict[str, Tensor] = {}
    for module in _layout(config):

        def take(name: str, prefix: str = module.adm) -> Tensor:
            key = f"{prefix}.{name}"
            if key in used:
                raise ConversionError(f"ADM tensor {key!r} would be mapped twice")
            used.add(key)
            return adm_state_dict[key]

        for name, tensor in _convert_module(take, config, module).items():
            key = f"{module.diffusers}.{name}"
            if key in converted:
                raise ConversionError(f"diffusers key {key!r} would be written twice")
            converted[key] = tensor
    unused = [key for key in adm_state_dict if key not in used]
    if unused:
        raise ConversionError(f"{len(unused)} ADM tensor(s) were not mapped, first: {unused[0]!r}")
    return converted


# --------------------------------------------------------------------------------------------
# Checkpoint files
# --------------------------------------------------------------------------------------------


def _load_adm_state_dict(checkpoint_path: Path) -> dict[str, Tensor]:
    """Load a ``torch.save``-d ADM state dict safely (``weights_only=True``) onto the CPU."""
    if not checkpoint_path.is_file():
        raise MissingFileError(f"ADM checkpoint not found: {checkpoint_path}")
    try:
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise ConversionError(f"{checkpoint_path} is not a loadable torch checkpoint: {first_line(exc)}") from None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise ConversionError(f"{checkpoint_path} does not hold an ADM state dict (a flat mapping of name -> tensor)")
    return dict(state)


def convert_adm_checkpoint(
    checkpoint_path: str | Path, out_dir: str | Path, config: ADMConfig = IMAGENET64_CONFIG
) -> Path:
    """Convert a guided-diffusion checkpoint file into a diffusers folder.

    Writes ``out_dir/unet`` (``UNet2DModel``, float32 safetensors) and ``out_dir/scheduler``
    (``DDPMScheduler`` with the checkpoint's noise schedule).

    Args:
        checkpoint_path: The ``.pt`` file, e.g. ``64x64_diffusion.pt``.
        out_dir: Destination folder (created if needed).
        config: The checkpoint's flags; defaults to the ImageNet 64x64 conditional model.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        FileNotFoundError: If ``checkpoint_path`` does not exist.
        ValueError: If the file is not an ADM state dict matching ``config``.
    """
    from diffusers import DDPMScheduler, UNet2DModel

    out_dir = Path(out_dir)
    converted = convert_adm_state_dict(_load_adm_state_dict(Path(checkpoint_path)), config)
    unet = UNet2DModel(**diffusers_unet_config(config))
    unet.load_state_dict(converted, strict=True)
    del converted
    unet.save_pretrained(out_dir / "unet")
    DDPMScheduler(**diffusers_scheduler_config(config)).save_pretrained(out_dir / "scheduler")
    return out_dir
