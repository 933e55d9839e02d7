"""What the flags of a guided-diffusion UNet (:class:`~optuna_diffusion.zoo.convert_adm.ADMConfig`) and of
its noisy-image classifier (:class:`~optuna_diffusion.zoo.adm_classifier.ADMClassifierConfig`) share: both
build the same encoder from the same kind of flags."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from .adm_checkpoint import EncoderLayout, config_from_dict

__all__ = ["IMAGE_CHANNELS", "EncoderFlags"]

IMAGE_CHANNELS = 3
"""The RGB input of every guided-diffusion UNet and classifier."""


class EncoderFlags:
    """What the flags of a guided-diffusion UNet and of a classifier share: the width of each level, the
    levels with attention, the encoder they build, and their JSON round trip.

    A subclass is a frozen dataclass with ``image_size``, ``channel_mult``, ``attention_resolutions``,
    ``num_res_blocks``, ``resblock_updown`` and ``use_scale_shift_norm``, and says which flag is its
    base width (:attr:`base_channels`).
    """

    image_size: int
    channel_mult: tuple[float, ...]
    attention_resolutions: tuple[int, ...]
    num_res_blocks: int
    resblock_updown: bool
    use_scale_shift_norm: bool

    @property
    def base_channels(self) -> int:
        """The base width (``model_channels``; the timestep sinusoid width)."""
        raise NotImplementedError

    @property
    def level_channels(self) -> tuple[int, ...]:
        """Channels of each resolution level (``int(mult * model_channels)``, as ADM computes them)."""
        return tuple(int(mult * self.base_channels) for mult in self.channel_mult)

    @property
    def attention_levels(self) -> tuple[int, ...]:
        """Levels (0 = full resolution) with attention: downsample rate ``2**level`` in ADM's ``attention_ds``."""
        rates = {self.image_size // resolution for resolution in self.attention_resolutions}
        return tuple(level for level in range(len(self.channel_mult)) if 2**level in rates)

    @property
    def layout(self) -> EncoderLayout:
        """The encoder architecture these flags build (what the weights determine)."""
        return EncoderLayout(
            in_channels=IMAGE_CHANNELS,
            model_channels=self.base_channels,
            level_channels=self.level_channels,
            num_res_blocks=self.num_res_blocks,
            attention_levels=self.attention_levels,
            resblock_updown=self.resblock_updown and len(self.channel_mult) > 1,
            use_scale_shift_norm=self.use_scale_shift_norm,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        """Inverse of :meth:`to_dict` (JSON lists become tuples); unknown fields raise ``ConfigError``."""
        return config_from_dict(cls, data, cls.__name__)

    def to_dict(self) -> dict[str, Any]:
        """The flags as a JSON-ready dict."""
        return asdict(self)  # type: ignore[call-overload]
