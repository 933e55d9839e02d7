"""Convert guided-diffusion (ADM) UNet checkpoints into diffusers ``UNet2DModel`` folders.

OpenAI's guided-diffusion ("Diffusion Models Beat GANs on Image Synthesis", the ADM model) ships its
UNets as plain ``torch.save``-d state dicts of ``guided_diffusion.unet.UNetModel``. This module maps
such a state dict, tensor by tensor, onto an equivalent diffusers ``UNet2DModel`` and writes a
folder that ``UNet2DModel.from_pretrained(out_dir / "unet")`` and
``DDPMScheduler.from_pretrained(out_dir / "scheduler")`` load without guided-diffusion installed.

**Which architecture.** The weights determine most flags (:func:`infer_adm_config`): ``num_channels``
(``time_embed.0``), ``channel_mult`` (the ResBlock widths per level), ``num_res_blocks`` (where the
``output_blocks`` up-sample), the attention levels (which blocks hold an ``AttentionBlock``),
``resblock_updown`` (ResBlock or conv samplers), ``use_scale_shift_norm`` (``emb_layers`` twice the
block width), ``learn_sigma`` (``out.2`` has 6 channels) and ``class_cond``/``num_classes``
(``label_emb``). They do not determine the attention head layout (``num_head_channels`` or
``num_heads``), the q/k/v order (``use_new_attention_order``), the noise schedule, the image size or
the dropout rate. Those come from ``arch`` (a preset name, a JSON file of :class:`ADMConfig` fields or
an :class:`ADMConfig`) or, without ``arch``, from the published checkpoint whose weight layout the
file has (:data:`ADM_PRESETS`, flags from guided-diffusion's README); a file that matches no
published layout is refused rather than guessed. An ``arch`` whose head split, q/k/v order or noise
schedule contradicts the published checkpoint of the file's layout is refused too (those weights would
compute another network), unless ``own_weights`` says the file is the user's own.

**What diffusers can express.** ``UNet2DModel`` has one ``attention_head_dim`` for every level, and
one width for the first level and the timestep sinusoid. So

* ``64x64_diffusion.pt`` (64 channels per head, new q/k/v order, cosine schedule),
  ``256x256_diffusion.pt``, ``256x256_diffusion_uncond.pt`` and the LSUN models (64 channels per head,
  legacy order, linear schedule) convert exactly;
* ``128x128_diffusion.pt`` is refused: ``num_heads=4`` gives heads of 128/192/256 channels at its
  512/768/1024-channel attention levels. ``UNet2DConditionModel`` takes one head width per level, but
  cannot hold the model either: its ``"UNetMidBlock2D"`` mid block is built with ``num_layers=0`` and
  no attention (ADM's is ResBlock, attention, ResBlock), and its attention levels always down/up-sample
  by conv (it passes no ``downsample_type``; ADM resamples by ResBlock);
* ``512x512_diffusion.pt`` is refused: ``channel_mult[0] = 0.5`` makes its first level 128 channels
  wide but its timestep sinusoid 256, which ``UNet2DModel`` ties together;
* the super-resolution models (6 input channels) are refused.

**The mapping** (ADM name -> diffusers name): ``time_embed.0/2`` -> ``time_embedding.linear_1/2``,
``label_emb`` -> ``class_embedding``; ``input_blocks.0.0`` -> ``conv_in``; the ResBlocks, attention
blocks and down-samplers of ``input_blocks`` -> ``down_blocks.{level}.resnets/attentions/downsamplers``;
``middle_block.0/1/2`` -> ``mid_block.resnets.0``, ``mid_block.attentions.0``, ``mid_block.resnets.1``;
``output_blocks`` -> ``up_blocks.{i}.resnets/attentions/upsamplers`` (deepest level first);
``out.0/out.2`` -> ``conv_norm_out``/``conv_out``. Inside blocks see
:mod:`optuna_diffusion.zoo.adm_checkpoint`. Every ADM tensor is used exactly once; a missing,
unexpected or mis-shaped tensor raises a one-line :class:`~optuna_diffusion.errors.ConversionError`.
The noise schedule (cosine or linear betas, learned-range variance, epsilon prediction, clipped
``x0``) is written as a ``DDPMScheduler``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import ConversionError
from .adm_checkpoint import (
    GROUPS,
    EncoderLayout,
    HeadLayout,
    Record,
    block_count,
    check_state_dict,
    convert_record,
    describe_differences,
    encoder_records,
    infer_encoder_layouts,
    keyed_shapes,
    load_adm_state_dict,
    map_state_dict,
    random_state_dict,
    record_shapes,
    resolve_arch,
    skip_widths,
)
from .adm_flags import IMAGE_CHANNELS, EncoderFlags

__all__ = [
    "ADM_PRESETS",
    "ADMConfig",
    "IMAGENET64_CONFIG",
    "adm_state_dict_shapes",
    "convert_adm_checkpoint",
    "convert_adm_state_dict",
    "diffusers_scheduler_config",
    "diffusers_unet_config",
    "infer_adm_config",
    "random_adm_state_dict",
    "unet2d_incompatibility",
]


@dataclass(frozen=True)
class ADMConfig(EncoderFlags):
    """The guided-diffusion model and diffusion flags of a checkpoint (``script_util`` flag names).

    The defaults are the flags of the published ImageNet 64x64 class-conditional checkpoint
    ``64x64_diffusion.pt``; :data:`ADM_PRESETS` holds every published UNet's.

    Attributes:
        image_size: Training resolution (square images); not stored in the weights.
        num_channels: Base channel count (``model_channels``; the timestep sinusoid width).
        num_res_blocks: Residual blocks per resolution in the encoder.
        attention_resolutions: Feature-map resolutions (not downsample rates) with attention,
            as in the ``--attention_resolutions 32,16,8`` flag.
        channel_mult: Channel multiplier of each resolution level (may be fractional, e.g. 0.5).
        num_head_channels: Channels per attention head, or -1 to use ``num_heads`` heads.
        num_heads: Heads per attention block when ``num_head_channels == -1`` (script default 4).
        learn_sigma: Whether the model also outputs the variance interpolation (6 channels).
        class_cond: Whether the model has a class embedding ``label_emb``.
        num_classes: Number of classes of ``label_emb`` when ``class_cond``.
        resblock_updown: Residual blocks (rather than convs) for up/downsampling.
        use_new_attention_order: q/k/v split before heads (``QKVAttention``) rather than after
            (``QKVAttentionLegacy``).
        use_scale_shift_norm: FiLM-like scale-shift conditioning of the residual blocks.
        noise_schedule: ``"cosine"`` or ``"linear"``.
        diffusion_steps: Number of training diffusion steps.
        dropout: Dropout rate of the residual blocks (inactive at inference).
    """

    image_size: int = 64
    num_channels: int = 192
    num_res_blocks: int = 3
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    channel_mult: tuple[float, ...] = (1, 2, 3, 4)
    num_head_channels: int = 64
    num_heads: int = 4
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
        """Normalise sequences to tuples and reject flags guided-diffusion itself would reject."""
        object.__setattr__(self, "attention_resolutions", tuple(self.attention_resolutions))
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        if not self.channel_mult or self.num_res_blocks < 1 or min(self.channel_mult) <= 0:
            raise ConversionError("ADMConfig needs a non-empty positive channel_mult and num_res_blocks >= 1")
        if self.noise_schedule not in ("cosine", "linear"):
            raise ConversionError(f"unknown noise_schedule {self.noise_schedule!r}; expected 'cosine' or 'linear'")
        if self.num_head_channels == 0 or self.num_head_channels < -1:
            raise ConversionError(
                f"num_head_channels must be positive or -1 (use num_heads), got {self.num_head_channels}"
            )
        for resolution in self.attention_resolutions:
            if resolution <= 0 or self.image_size % resolution:
                raise ConversionError(f"attention resolution {resolution} does not divide image_size={self.image_size}")
        for channels in self.level_channels:
            if channels % GROUPS:
                raise ConversionError(f"level width {channels} must be divisible by {GROUPS} groups")
        for level in (*self.attention_levels, len(self.channel_mult) - 1):  # the middle block has attention too
            self.heads.check(self.level_channels[level])

    @classmethod
    def imagenet64(cls) -> ADMConfig:
        """Flags of the published ImageNet 64x64 class-conditional checkpoint ``64x64_diffusion.pt``."""
        return cls()

    @property
    def out_channels(self) -> int:
        """Output channels: epsilon (3) plus the variance interpolation (3) when ``learn_sigma``."""
        return 2 * IMAGE_CHANNELS if self.learn_sigma else IMAGE_CHANNELS

    @property
    def time_embed_dim(self) -> int:
        """Width of the timestep (and class) embedding."""
        return 4 * self.num_channels

    @property
    def base_channels(self) -> int:
        """``num_channels``, the base width."""
        return self.num_channels

    def has_attention(self, level: int) -> bool:
        """Whether resolution ``level`` (0 = full resolution) has attention blocks."""
        return level in self.attention_levels

    @property
    def heads(self) -> HeadLayout:
        """The attention head layout (what the weights do not determine)."""
        return HeadLayout(self.num_head_channels, self.num_heads, self.use_new_attention_order)


IMAGENET64_CONFIG = ADMConfig.imagenet64()

_IMAGENET256 = dict(
    image_size=256,
    num_channels=256,
    num_res_blocks=2,
    channel_mult=(1, 1, 2, 2, 4, 4),
    use_new_attention_order=False,
    noise_schedule="linear",
    dropout=0.0,
)

#: The published guided-diffusion UNets, with the ``MODEL_FLAGS`` of guided-diffusion's README
#: (unset flags take ``script_util``'s defaults: ``use_new_attention_order=False``, ``dropout=0``,
#: ``channel_mult`` from the image size). ``lsun256`` covers lsun_bedroom/cat/horse.pt (and, but for
#: its dropout of 0, lsun_horse_nodropout.pt); it shares every weight shape with ``imagenet256-uncond``
#: and differs from it only in dropout, which inference does not use.
ADM_PRESETS: dict[str, ADMConfig] = {
    "imagenet64": IMAGENET64_CONFIG,
    "imagenet128": ADMConfig(
        image_size=128,
        num_channels=256,
        num_res_blocks=2,
        channel_mult=(1, 1, 2, 3, 4),
        num_head_channels=-1,
        num_heads=4,
        use_new_attention_order=False,
        noise_schedule="linear",
        dropout=0.0,
    ),
    "imagenet256": ADMConfig(**_IMAGENET256),
    "imagenet256-uncond": ADMConfig(**_IMAGENET256, class_cond=False),
    "lsun256": ADMConfig(**{**_IMAGENET256, "dropout": 0.1}, class_cond=False),
    "imagenet512": ADMConfig(**{**_IMAGENET256, "image_size": 512, "channel_mult": (0.5, 1, 1, 2, 2, 4, 4)}),
}


# --------------------------------------------------------------------------------------------
# Layout: one record per ADM sub-module, in guided-diffusion's construction order
# --------------------------------------------------------------------------------------------


def _decoder(cfg: ADMConfig) -> list[Record]:
    """``output_blocks`` (mirrors ``UNetModel.__init__``), deepest level first."""
    skips = skip_widths(cfg.layout)
    ch = cfg.level_channels[-1]
    records, idx = [], 0
    for i, level in enumerate(reversed(range(len(cfg.level_channels)))):
        width = cfg.level_channels[level]
        for k in range(cfg.num_res_blocks + 1):
            in_ch = ch + skips.pop()
            records.append(Record("resblock", f"output_blocks.{idx}.0", f"up_blocks.{i}.resnets.{k}", in_ch, width))
            ch = width
            sub = 1
            if cfg.has_attention(level):
                records.append(Record("attention", f"output_blocks.{idx}.1", f"up_blocks.{i}.attentions.{k}", ch, ch))
                sub = 2
            if level and k == cfg.num_res_blocks:
                sampler = f"up_blocks.{i}.upsamplers.0"
                if cfg.resblock_updown:
                    records.append(Record("resblock", f"output_blocks.{idx}.{sub}", sampler, ch, ch))
                else:
                    records.append(Record("conv", f"output_blocks.{idx}.{sub}.conv", f"{sampler}.conv", ch, ch))
            idx += 1
    return records


def _records(cfg: ADMConfig) -> list[Record]:
    """All ADM sub-modules with parameters, in ``UNetModel`` construction order."""
    records = encoder_records(cfg.layout)
    if cfg.class_cond:  # right after time_embed, as UNetModel registers it
        records.insert(2, Record("embedding", "label_emb", "class_embedding", cfg.num_classes, cfg.time_embed_dim))
    first = cfg.level_channels[0]
    return [
        *records,
        *_decoder(cfg),
        Record("norm", "out.0", "conv_norm_out", first, first),
        Record("conv", "out.2", "conv_out", first, cfg.out_channels),
    ]


def adm_state_dict_shapes(config: ADMConfig = IMAGENET64_CONFIG) -> dict[str, tuple[int, ...]]:
    """Key names and shapes of guided-diffusion's ``UNetModel.state_dict()`` for ``config``.

    Args:
        config: The checkpoint's model flags.

    Returns:
        Mapping from every ADM state-dict key to its tensor shape, in construction order.
    """
    layout = config.layout
    return keyed_shapes(_records(config), lambda record: record_shapes(record, layout))


def random_adm_state_dict(
    config: ADMConfig | str, seed: int = 0, dtype: torch.dtype = torch.float32
) -> dict[str, Tensor]:
    """A seeded random stand-in for a checkpoint of ``config`` (every tensor non-zero).

    A preset name gives a full-size stand-in of that published checkpoint, which the converter
    recognises without ``arch``. For a tiny stand-in of a preset, shrink it, e.g.
    ``dataclasses.replace(ADM_PRESETS["imagenet256"], num_channels=32, num_head_channels=32)``, and
    convert with that config as ``arch`` (tiny widths match no published checkpoint).

    Args:
        config: The flags of the stand-in, or a preset name of :data:`ADM_PRESETS`.
        seed: Seed of the tensors.
        dtype: Their dtype.

    Returns:
        A state dict with the keys and shapes of ``adm_state_dict_shapes(config)``.
    """
    if isinstance(config, str):
        config, _ = resolve_arch(config, ADM_PRESETS, ADMConfig, "ADM UNet")
    return random_state_dict(adm_state_dict_shapes(config), seed, dtype)


# --------------------------------------------------------------------------------------------
# diffusers configuration
# --------------------------------------------------------------------------------------------


def unet2d_incompatibility(config: ADMConfig) -> str | None:
    """Why ``UNet2DModel`` cannot reproduce ``config``'s network, or None when it can.

    Args:
        config: The checkpoint's flags.

    Returns:
        A one-line reason, or None.
    """
    widths = config.level_channels
    if widths[0] != config.num_channels:
        return (
            f"channel_mult[0]={config.channel_mult[0]} makes the first level {widths[0]} channels wide but the "
            f"timestep sinusoid {config.num_channels}; diffusers' UNet2DModel ties both to block_out_channels[0]"
        )
    levels = (*config.attention_levels, len(widths) - 1)  # the middle block has attention too
    head_widths = sorted({config.heads.head_width(widths[level]) for level in levels})
    if len(head_widths) > 1:
        return (
            f"num_heads={config.num_heads} makes the attention head width differ per level "
            f"({'/'.join(map(str, head_widths))} channels); diffusers' UNet2DModel has one attention_head_dim for "
            "all levels, and UNet2DConditionModel's per-level widths do not help (its UNetMidBlock2D mid block "
            "has no attention, its attention levels resample by conv)"
        )
    return None


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

    Raises:
        ConversionError: If ``UNet2DModel`` cannot express the network (:func:`unet2d_incompatibility`).
    """
    reason = unet2d_incompatibility(config)
    if reason:
        raise ConversionError(f"cannot convert to a diffusers UNet2DModel: {reason}")
    down_types, up_types = _block_types(config)
    sampler = "resnet" if config.resblock_updown else "conv"
    return dict(
        sample_size=config.image_size,
        in_channels=IMAGE_CHANNELS,
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
        attention_head_dim=config.heads.head_width(config.level_channels[-1]),
        norm_num_groups=GROUPS,
        # UNetMidBlock2D drops the attention group norm for "scale_shift" unless this is set.
        attn_norm_num_groups=GROUPS,
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
# Reading the architecture from a state dict
# --------------------------------------------------------------------------------------------


def _upsamples(state: Mapping[str, Tensor], idx: int) -> bool:
    """Whether ``output_blocks.{idx}`` ends with an up-sampler (a ResBlock or conv after the ResBlock)."""
    prefix = f"output_blocks.{idx}"
    parts = [key.split(".") for key in state if key.startswith(prefix + ".")]
    subs = {int(p[2]) for p in parts if len(p) > 3 and p[2].isdigit()}
    return 2 in subs or (1 in subs and f"{prefix}.1.qkv.weight" not in state)


def _structure(layout: EncoderLayout, learn_sigma: bool, num_classes: int | None) -> dict[str, Any]:
    return {**asdict(layout), "learn_sigma": learn_sigma, "num_classes": num_classes}


def _config_structure(config: ADMConfig) -> dict[str, Any]:
    return _structure(config.layout, config.learn_sigma, config.num_classes if config.class_cond else None)


def _checkpoint_structure(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """What the keys and shapes of a ``UNetModel`` state dict determine (see :func:`infer_adm_config`)."""
    if "out.2.positional_embedding" in state:
        raise ConversionError(
            "this is a guided-diffusion classifier (EncoderUNetModel), not a UNetModel: "
            "convert it with convert_adm_classifier_checkpoint"
        )
    required = ("time_embed.0.weight", "input_blocks.0.0.weight", "output_blocks.0.0.out_layers.3.weight")
    for key in (*required, "out.2.weight"):
        if key not in state:
            raise ConversionError(f"not a guided-diffusion UNetModel state dict: it has no {key!r}")
    in_channels = state["input_blocks.0.0.weight"].shape[1]
    if in_channels == 2 * IMAGE_CHANNELS:
        raise ConversionError(
            "this is a guided-diffusion super-resolution model (6 input channels: the noisy image and the "
            "up-sampled low-resolution one), which UNet2DModel pipelines cannot condition"
        )
    if in_channels != IMAGE_CHANNELS:
        raise ConversionError(f"input_blocks.0.0 takes {in_channels} channels; guided-diffusion UNets take 3")
    total = block_count(state, "output_blocks")
    num_res_blocks = next((idx for idx in range(total) if _upsamples(state, idx)), total - 1)
    layouts = infer_encoder_layouts(state, num_res_blocks) if num_res_blocks >= 1 else []
    if not layouts:
        raise ConversionError(
            f"the input_blocks of this checkpoint do not form a guided-diffusion encoder with "
            f"{num_res_blocks} ResBlocks per level (as its output_blocks have)"
        )
    out = state["out.2.weight"].shape[0]
    if out not in (IMAGE_CHANNELS, 2 * IMAGE_CHANNELS):
        raise ConversionError(f"out.2 has {out} output channels; guided-diffusion UNets have 3 or 6")
    label = state.get("label_emb.weight")
    return _structure(layouts[0], out == 2 * IMAGE_CHANNELS, None if label is None else label.shape[0])


def _unrecorded_flags(config: ADMConfig) -> dict[str, Any]:
    """The flags that change what the weights compute but are not in them: head split, q/k/v order, schedule."""
    levels = (*config.attention_levels, len(config.level_channels) - 1)  # the middle block has attention too
    heads = config.heads
    return {
        "heads": tuple(heads.heads(config.level_channels[level]) for level in levels),
        "use_new_attention_order": config.use_new_attention_order,
        "noise_schedule": config.noise_schedule,
    }


def _describe_unrecorded(config: ADMConfig, keys: list[str]) -> str:
    words = []
    for key in keys:
        if key == "heads":
            words.append(
                f"num_heads={config.num_heads}" if config.num_head_channels == -1
                else f"num_head_channels={config.num_head_channels}"
            )
        else:
            words.append(f"{key}={getattr(config, key)!r}")
    return ", ".join(words)


def _check_against_published(found: dict[str, Any], config: ADMConfig, label: str) -> None:
    """Refuse an ``arch`` that contradicts the published checkpoint whose weight layout ``found`` is.

    The weights of a published checkpoint fix its head split, q/k/v order and noise schedule as much as
    its shapes: another ``arch`` converts them, without error, into a network that computes something else.
    """
    published = {name: preset for name, preset in ADM_PRESETS.items() if _config_structure(preset) == found}
    if not published:
        return
    given = _unrecorded_flags(config)
    if any(_unrecorded_flags(preset) == given for preset in published.values()):
        return
    name, preset = next(iter(published.items()))
    differing = [key for key, value in _unrecorded_flags(preset).items() if given[key] != value]
    raise ConversionError(
        f"arch {label} sets {_describe_unrecorded(config, differing)}, but the weights have the layout of the "
        f"published {name} checkpoint, which uses {_describe_unrecorded(preset, differing)}: converted so, its "
        "weights would compute another network (for weights of your own, trained with these flags, pass "
        "own_weights=True; CLI: --own-weights)"
    )


def infer_adm_config(
    state: Mapping[str, Tensor], arch: str | Path | ADMConfig | None = None, *, own_weights: bool = False
) -> ADMConfig:
    """The flags of the ``UNetModel`` whose state dict is ``state``.

    The weight layout (see the module docstring) is read from the keys and shapes. With ``arch``, the
    arch's flags are returned once the weights fit them; without, the published checkpoint with the
    same weight layout supplies what the weights do not tell (head layout, attention order, noise
    schedule, image size, dropout). Where two presets share a weight layout (``imagenet256-uncond``
    and ``lsun256``) the first is returned; they differ only in dropout.

    An ``arch`` whose head split, q/k/v order or noise schedule contradicts the published checkpoint
    with the same weight layout is refused (its weights would compute another network), unless
    ``own_weights`` says the weights are not that checkpoint's.

    Args:
        state: A guided-diffusion ``UNetModel`` state dict.
        arch: A preset name of :data:`ADM_PRESETS`, a ``.json`` file of :class:`ADMConfig` fields,
            an :class:`ADMConfig`, or None to match the published checkpoints.
        own_weights: The weights are the user's own, trained with ``arch``'s flags, though shaped like
            a published checkpoint's.

    Returns:
        The checkpoint's flags.

    Raises:
        ConversionError: If ``state`` is not a UNetModel state dict, does not fit ``arch``, contradicts
            the published checkpoint of its layout, or (without ``arch``) matches no published checkpoint.
        ConfigError: If ``arch`` is neither a preset, a JSON file of ADMConfig fields nor an ADMConfig.
    """
    found = _checkpoint_structure(state)
    if arch is not None:
        config, label = resolve_arch(arch, ADM_PRESETS, ADMConfig, "ADM UNet")
        differences = describe_differences(found, _config_structure(config))
        if differences:
            raise ConversionError(f"the checkpoint does not fit arch {label}: {differences}")
        if not own_weights:
            _check_against_published(found, config, label)
        return config
    for config in ADM_PRESETS.values():
        if _config_structure(config) == found:
            return config
    layout = EncoderLayout(**{key: found[key] for key in asdict(IMAGENET64_CONFIG.layout)})
    raise ConversionError(
        f"the checkpoint's layout ({layout.describe()}, learn_sigma={found['learn_sigma']}, "
        f"num_classes={found['num_classes']}) matches no published guided-diffusion checkpoint "
        f"({', '.join(ADM_PRESETS)}); its attention head layout, attention order and noise schedule are not "
        "in the weights: pass arch (a JSON file or ADMConfig of its flags)"
    )


# --------------------------------------------------------------------------------------------
# State-dict conversion
# --------------------------------------------------------------------------------------------


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
        ConversionError: If ``UNet2DModel`` cannot express ``config``, or a key is missing,
            unexpected or used twice, or a shape does not match.
    """
    reason = unet2d_incompatibility(config)
    if reason:
        raise ConversionError(f"cannot convert to a diffusers UNet2DModel: {reason}")
    check_state_dict(adm_state_dict, adm_state_dict_shapes(config))
    layout, heads = config.layout, config.heads
    return map_state_dict(
        adm_state_dict, _records(config), lambda take, record: convert_record(take, record, layout, heads)
    )


# --------------------------------------------------------------------------------------------
# Checkpoint files
# --------------------------------------------------------------------------------------------


def convert_adm_checkpoint(
    checkpoint_path: str | Path,
    out_dir: str | Path,
    *,
    arch: str | Path | ADMConfig | None = None,
    own_weights: bool = False,
) -> Path:
    """Convert a guided-diffusion UNet checkpoint file into a diffusers folder.

    Writes ``out_dir/unet`` (``UNet2DModel``, float32 safetensors), ``out_dir/scheduler``
    (``DDPMScheduler`` with the checkpoint's noise schedule) and ``out_dir/adm_flags.json`` (the
    guided-diffusion flags used). Nothing is written when the checkpoint is refused.

    Args:
        checkpoint_path: The ``.pt`` file, e.g. ``64x64_diffusion.pt``.
        out_dir: Destination folder (created if needed).
        arch: A preset name (``"imagenet64"``, ``"imagenet256"``, ``"imagenet256-uncond"``,
            ``"lsun256"``, ...), a ``.json`` file of :class:`ADMConfig` fields, an :class:`ADMConfig`,
            or None to recognise a published checkpoint by its weight layout (:func:`infer_adm_config`).
        own_weights: The weights are the user's own, trained with ``arch``'s flags, though shaped like a
            published checkpoint's (else such an ``arch`` is refused where it contradicts that checkpoint).

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        MissingFileError: If ``checkpoint_path`` does not exist.
        ConversionError: If the file is not a UNetModel state dict, does not fit ``arch``, contradicts the
            published checkpoint of its layout, matches no published layout (without ``arch``), or is a
            layout ``UNet2DModel`` cannot express.
    """
    from diffusers import DDPMScheduler, UNet2DModel

    out_dir = Path(out_dir)
    state = load_adm_state_dict(checkpoint_path)
    config = infer_adm_config(state, arch, own_weights=own_weights)
    reason = unet2d_incompatibility(config)
    if reason:
        preset = next((f" (the layout of preset {name!r})" for name, c in ADM_PRESETS.items() if c is config), "")
        name = Path(checkpoint_path).name
        raise ConversionError(f"cannot convert {name}{preset} to a diffusers UNet2DModel: {reason}")
    converted = convert_adm_state_dict(state, config)
    del state
    unet = UNet2DModel(**diffusers_unet_config(config))
    unet.load_state_dict(converted, strict=True)
    del converted
    unet.save_pretrained(out_dir / "unet")
    DDPMScheduler(**diffusers_scheduler_config(config)).save_pretrained(out_dir / "scheduler")
    (out_dir / "adm_flags.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return out_dir
