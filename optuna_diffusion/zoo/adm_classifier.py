"""guided-diffusion's noisy-image classifier (ADM-G), rebuilt from diffusers blocks.

Classifier guidance in "Diffusion Models Beat GANs" uses a classifier of noisy images ``x_t``:
guided-diffusion's ``EncoderUNetModel`` with ``pool="attention"``, the encoder half of the UNet (the
timestep MLP, ``input_blocks`` and ``middle_block``) followed by a group norm, SiLU and an
``AttentionPool2d`` that reads ImageNet logits off a prepended mean token. :class:`ADMClassifier`
computes the same ``logits = classifier(x_t, t)`` from diffusers' ``Timesteps``,
``TimestepEmbedding``, down blocks (``AttnDownBlock2D``, ``ResnetDownsampleBlock2D``, ``DownBlock2D``,
whose ``ResnetBlock2D``/``Attention`` are ADM's ``ResBlock``/``AttentionBlock``) and ``UNetMidBlock2D``,
plus :class:`AttentionPool2d`, which diffusers has no block for.

The model is described by an :class:`ADMClassifierConfig` (the ``EncoderUNetModel`` arguments that
``script_util.create_classifier`` sets); :data:`CLASSIFIER_PRESETS` holds those of the published
``64x64_classifier.pt``, ``128x128_classifier.pt``, ``256x256_classifier.pt`` and
``512x512_classifier.pt``. ``save_pretrained`` writes ``config.json`` and ``model.safetensors``;
``from_pretrained`` reads them back strictly. Converting guided-diffusion's checkpoint files is
:mod:`optuna_diffusion.zoo.convert_adm_classifier`'s job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import ConfigError, MissingFileError, ModelLoadError, first_line
from .adm_checkpoint import GROUPS, HeadLayout
from .adm_flags import IMAGE_CHANNELS, EncoderFlags

__all__ = [
    "CLASSIFIER_PRESETS",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "ADMClassifier",
    "ADMClassifierConfig",
    "AttentionPool2d",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_CLASS_NAME = "ADMClassifier"


@dataclass(frozen=True)
class ADMClassifierConfig(EncoderFlags):
    """The ``EncoderUNetModel(pool="attention")`` arguments of a guided-diffusion classifier.

    The defaults are those of ``64x64_classifier.pt`` (``create_classifier`` with
    ``--classifier_depth 4`` and the other ``classifier_defaults``).

    Attributes:
        image_size: Input resolution (``--image_size``); fixes the pool's positional embedding.
        model_channels: Base width (``--classifier_width``; the timestep sinusoid width).
        num_res_blocks: ResBlocks per level (``--classifier_depth``).
        attention_resolutions: Resolutions with attention (``--classifier_attention_resolutions``).
        channel_mult: Width multiplier per level (``create_classifier`` picks it from the image size).
        num_head_channels: Channels per attention head, in the attention blocks and the pool
            (``create_classifier`` fixes 64).
        use_new_attention_order: ``QKVAttention`` rather than ``QKVAttentionLegacy`` in the attention
            blocks (``create_classifier`` leaves the legacy default; the pool always uses the new order).
        use_scale_shift_norm: ``--classifier_use_scale_shift_norm``.
        resblock_updown: ``--classifier_resblock_updown``.
        num_classes: Logits (``out_channels``; 1000 for ImageNet).
        dropout: Dropout of the ResBlocks (0 in ``create_classifier``; inactive at inference).
    """

    image_size: int = 64
    model_channels: int = 128
    num_res_blocks: int = 4
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    channel_mult: tuple[float, ...] = (1, 2, 3, 4)
    num_head_channels: int = 64
    use_new_attention_order: bool = False
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    num_classes: int = 1000
    dropout: float = 0.0

    def __post_init__(self) -> None:
        """Normalise sequences to tuples and reject flags guided-diffusion itself would reject."""
        object.__setattr__(self, "attention_resolutions", tuple(self.attention_resolutions))
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        if not self.channel_mult or min(self.channel_mult) <= 0 or self.num_res_blocks < 1:
            raise ConfigError("ADMClassifierConfig needs a non-empty positive channel_mult and num_res_blocks >= 1")
        if self.model_channels < 1 or self.num_classes < 1:
            raise ConfigError("ADMClassifierConfig needs positive model_channels and num_classes")
        if self.image_size % 2 ** (len(self.channel_mult) - 1):
            raise ConfigError(f"image_size={self.image_size} does not halve {len(self.channel_mult) - 1} times")
        for resolution in self.attention_resolutions:
            if resolution <= 0 or self.image_size % resolution:
                raise ConfigError(f"attention resolution {resolution} does not divide image_size={self.image_size}")
        if self.num_head_channels < 1:
            raise ConfigError("the attention pool needs num_head_channels >= 1 (EncoderUNetModel asserts it)")
        for width in self.level_channels:
            if width % GROUPS:
                raise ConfigError(f"level width {width} must be divisible by {GROUPS} groups")
        for level in (*self.attention_levels, len(self.channel_mult) - 1):  # middle block and pool attend too
            if self.level_channels[level] % self.num_head_channels:
                raise ConfigError(
                    f"attention width {self.level_channels[level]} is not a multiple of "
                    f"num_head_channels={self.num_head_channels}"
                )

    @property
    def in_channels(self) -> int:
        """Image channels (3)."""
        return IMAGE_CHANNELS

    @property
    def sample_size(self) -> int:
        """``image_size`` under diffusers' name (read by :func:`optuna_diffusion.macs.count_macs`)."""
        return self.image_size

    @property
    def base_channels(self) -> int:
        """``model_channels``, the base width."""
        return self.model_channels

    @property
    def pool_size(self) -> int:
        """Side of the feature map the attention pool reads (``image_size // 2**(levels - 1)``)."""
        return self.image_size // 2 ** (len(self.channel_mult) - 1)

    @property
    def heads(self) -> HeadLayout:
        """The attention blocks' head layout (what the weights do not determine)."""
        return HeadLayout(self.num_head_channels, 1, self.use_new_attention_order)


#: The published classifiers: ``create_classifier`` with guided-diffusion's ``classifier_defaults``
#: (width 128, depth 2, attention at 32,16,8, scale-shift norm, ResBlock resampling, attention pool)
#: and the README's ``--classifier_depth 4`` for 64x64.
CLASSIFIER_PRESETS: dict[str, ADMClassifierConfig] = {
    "imagenet64": ADMClassifierConfig(),
    "imagenet128": ADMClassifierConfig(image_size=128, num_res_blocks=2, channel_mult=(1, 1, 2, 3, 4)),
    "imagenet256": ADMClassifierConfig(image_size=256, num_res_blocks=2, channel_mult=(1, 1, 2, 2, 4, 4)),
    "imagenet512": ADMClassifierConfig(image_size=512, num_res_blocks=2, channel_mult=(0.5, 1, 1, 2, 2, 4, 4)),
}


class AttentionPool2d(nn.Module):
    """guided-diffusion's ``AttentionPool2d`` (after CLIP's): one attention read-out of a feature map.

    The spatial tokens get their mean prepended and a learned positional embedding added; multi-head
    attention (q, k, v split before heads, scale ``1 / sqrt(head width)``) then pools them, and the
    output projection of the mean token's result is the output. Only that token's query is computed
    against the keys: the other rows of ADM's attention are discarded by ``x[:, :, 0]`` anyway.

    Args:
        spatial_size: Side of the input feature map.
        channels: Input channels.
        head_channels: Channels per head.
        out_features: Output width (the number of classes).
    """

    def __init__(self, spatial_size: int, channels: int, head_channels: int, out_features: int) -> None:
        super().__init__()
        self.spatial_size = spatial_size
        self.heads = channels // head_channels
        self.positional_embedding = nn.Parameter(torch.zeros(spatial_size**2 + 1, channels))
        self.qkv_proj = nn.Linear(channels, 3 * channels)
        self.c_proj = nn.Linear(channels, out_features)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, S, S)`` features -> ``(B, out_features)``."""
        if tuple(x.shape[-2:]) != (self.spatial_size, self.spatial_size):
            raise ConfigError(
                f"the attention pool reads {self.spatial_size}x{self.spatial_size} features, got "
                f"{x.shape[-2]}x{x.shape[-1]}: feed images of the classifier's image_size"
            )
        tokens = x.flatten(2).transpose(1, 2)  # (B, S*S, C)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        tokens = tokens + self.positional_embedding.to(tokens.dtype)
        q, k, v = self.qkv_proj(tokens).chunk(3, dim=-1)

        def split_heads(t: Tensor) -> Tensor:  # (B, L, C) -> (B, heads, L, C / heads), head-major channels
            return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        pooled = F.scaled_dot_product_attention(split_heads(q[:, :1]), split_heads(k), split_heads(v))
        return self.c_proj(pooled.transpose(1, 2).flatten(2)[:, 0])


class ADMClassifier(nn.Module):
    """guided-diffusion's ``EncoderUNetModel(pool="attention")``: ``logits = classifier(x_t, t)``.

    Module names follow diffusers' ``UNet2DModel`` (``time_embedding``, ``conv_in``,
    ``down_blocks``, ``mid_block``), then ``norm_out`` and ``pool``.

    Args:
        config: The classifier's architecture.
    """

    def __init__(self, config: ADMClassifierConfig) -> None:
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps
        from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block

        self.config = config
        widths = config.level_channels
        emb_dim = 4 * config.model_channels
        norm = "scale_shift" if config.use_scale_shift_norm else "default"
        self.time_proj = Timesteps(config.model_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(config.model_channels, emb_dim)
        self.conv_in = nn.Conv2d(IMAGE_CHANNELS, widths[0], kernel_size=3, padding=1)
        self.down_blocks = nn.ModuleList()
        in_channels = widths[0]
        for level, width in enumerate(widths):
            if level in config.attention_levels:
                block_type = "AttnDownBlock2D"
            else:
                block_type = "ResnetDownsampleBlock2D" if config.resblock_updown else "DownBlock2D"
            block = get_down_block(
                block_type,
                num_layers=config.num_res_blocks,
                in_channels=in_channels,
                out_channels=width,
                temb_channels=emb_dim,
                add_downsample=level != len(widths) - 1,
                resnet_eps=1e-5,
                resnet_act_fn="silu",
                resnet_groups=GROUPS,
                attention_head_dim=config.num_head_channels,
                downsample_padding=1,
                resnet_time_scale_shift=norm,
                downsample_type="resnet" if config.resblock_updown else "conv",
                dropout=config.dropout,
            )
            self.down_blocks.append(block)
            in_channels = width
        self.mid_block = UNetMidBlock2D(
            in_channels=widths[-1],
            temb_channels=emb_dim,
            dropout=config.dropout,
            resnet_eps=1e-5,
            resnet_time_scale_shift=norm,
            resnet_act_fn="silu",
            resnet_groups=GROUPS,
            attn_groups=GROUPS,  # else dropped under "scale_shift"; ADM's AttentionBlock always normalises
            attention_head_dim=config.num_head_channels,
        )
        self.norm_out = nn.GroupNorm(GROUPS, widths[-1], eps=1e-5)
        self.pool = AttentionPool2d(config.pool_size, widths[-1], config.num_head_channels, config.num_classes)

    def forward(
        self, sample: Tensor, timestep: Tensor | float | int, return_dict: bool = True
    ) -> Tensor | tuple[Tensor]:
        """Class logits of noisy images.

        Args:
            sample: ``(B, 3, image_size, image_size)`` noisy images ``x_t``.
            timestep: The diffusion step ``t`` on the 0..999 training scale, per image or shared.
            return_dict: False returns the one-tuple ``(logits,)``, the convention of diffusers
                models' ``return_dict=False``, so code written for them (e.g.
                :func:`optuna_diffusion.macs.count_macs`) runs the classifier unchanged.

        Returns:
            ``(B, num_classes)`` logits (or ``(logits,)``).
        """
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.reshape(-1).expand(sample.shape[0]) if t.numel() == 1 else t
        emb = self.time_embedding(self.time_proj(t).to(sample.dtype))
        h = self.conv_in(sample)
        for block in self.down_blocks:
            h, _ = block(h, emb)
        h = self.mid_block(h, emb)
        logits = self.pool(F.silu(self.norm_out(h)))
        return logits if return_dict else (logits,)

    def save_pretrained(self, save_directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (float32 or the model's dtype) to a folder.

        Returns:
            The folder as a :class:`~pathlib.Path`.
        """
        from safetensors.torch import save_file

        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"_class_name": _CLASS_NAME, **self.config.to_dict()}
        (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(folder / WEIGHTS_NAME))
        return folder

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> ADMClassifier:
        """Load a folder written by :meth:`save_pretrained`, strictly, in eval mode.

        Raises:
            MissingFileError: If the folder lacks ``config.json`` or ``model.safetensors``.
            ModelLoadError: If either cannot be read, or a weight is missing, unexpected or mis-shaped.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(directory)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (folder / name).is_file():
                raise MissingFileError(f"ADM classifier folder {folder} has no {name}")
        try:
            data = json.loads((folder / CONFIG_NAME).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"cannot read {folder / CONFIG_NAME}: {first_line(exc)}") from None
        if not isinstance(data, dict) or data.pop("_class_name", None) != _CLASS_NAME:
            raise ModelLoadError(f"{folder / CONFIG_NAME} is not an {_CLASS_NAME} config")
        try:
            model = cls(ADMClassifierConfig.from_dict(data))
        except ConfigError as exc:
            raise ModelLoadError(f"{folder / CONFIG_NAME}: {first_line(exc)}") from None
        try:
            weights = load_file(str(folder / WEIGHTS_NAME))
        except (OSError, SafetensorError) as exc:
            raise ModelLoadError(f"cannot read {folder / WEIGHTS_NAME}: {first_line(exc)}") from None
        expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        missing = [key for key in expected if key not in weights]
        unexpected = [key for key in weights if key not in expected]
        if missing or unexpected:
            what, keys = ("is missing", missing) if missing else ("has unexpected", unexpected)
            raise ModelLoadError(f"{folder / WEIGHTS_NAME} {what} {len(keys)} weight(s), first: {keys[0]!r}")
        for key, value in weights.items():
            if tuple(value.shape) != expected[key]:
                raise ModelLoadError(
                    f"{folder / WEIGHTS_NAME}: {key!r} has shape {tuple(value.shape)}, expected {expected[key]}"
                )
        model.load_state_dict(weights, strict=True)
        return model.eval()
