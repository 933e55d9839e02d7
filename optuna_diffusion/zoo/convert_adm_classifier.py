"""Convert guided-diffusion's noisy-image classifier checkpoints into :class:`ADMClassifier` folders.

``64x64_classifier.pt`` and its siblings are ``torch.save``-d state dicts of guided-diffusion's
``EncoderUNetModel(pool="attention")``. The encoder tensors map as in the UNet converter
(``time_embed`` -> ``time_embedding``, ``input_blocks`` -> ``conv_in``/``down_blocks``,
``middle_block`` -> ``mid_block``; see :mod:`optuna_diffusion.zoo.adm_checkpoint`); the head maps
``out.0`` -> ``norm_out`` and the ``AttentionPool2d`` ``out.2`` -> ``pool`` (its 1x1 ``Conv1d``
projections become linear layers, its ``(C, S*S + 1)`` positional embedding is stored token-major).

**Which architecture.** The weights determine the encoder layout (``model_channels``,
``channel_mult``, ``num_res_blocks``, attention levels, ``resblock_updown``,
``use_scale_shift_norm``), the number of classes and, through the pool's positional embedding,
the image size. They do not determine the attention blocks' head width and q/k/v order: those come
from ``arch`` or, without it, from the published classifier with the same weight layout
(:data:`~optuna_diffusion.zoo.adm_classifier.CLASSIFIER_PRESETS`: 64 channels per head, legacy order).
A classifier's ``input_blocks`` alone can leave ``num_res_blocks`` ambiguous (a down-sampling
ResBlock has the keys of a plain one); every reading consistent with the keys is tried against
``arch`` or the presets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import ConversionError
from .adm_checkpoint import (
    Record,
    Take,
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
)
from .adm_classifier import CLASSIFIER_PRESETS, ADMClassifier, ADMClassifierConfig

__all__ = [
    "adm_classifier_state_dict_shapes",
    "convert_adm_classifier_checkpoint",
    "convert_adm_classifier_state_dict",
    "infer_classifier_config",
    "random_classifier_state_dict",
]

_POOL = "out.2"


def _records(config: ADMClassifierConfig) -> list[Record]:
    width = config.level_channels[-1]
    return [
        *encoder_records(config.layout),
        Record("norm", "out.0", "norm_out", width, width),
        Record("pool", _POOL, "pool", width, config.num_classes),
    ]


def _record_shapes(config: ADMClassifierConfig, record: Record) -> dict[str, tuple[int, ...]]:
    if record.kind != "pool":
        return record_shapes(record, config.layout)
    ch, classes = record.in_ch, record.out_ch
    return {
        "positional_embedding": (ch, config.pool_size**2 + 1),
        "qkv_proj.weight": (3 * ch, ch, 1),
        "qkv_proj.bias": (3 * ch,),
        "c_proj.weight": (classes, ch, 1),
        "c_proj.bias": (classes,),
    }


def adm_classifier_state_dict_shapes(config: ADMClassifierConfig) -> dict[str, tuple[int, ...]]:
    """Key names and shapes of guided-diffusion's ``EncoderUNetModel.state_dict()`` for ``config``.

    Args:
        config: The classifier's architecture.

    Returns:
        Every ADM key and its shape, in construction order.
    """
    return keyed_shapes(_records(config), lambda record: _record_shapes(config, record))


def random_classifier_state_dict(
    config: ADMClassifierConfig | str, seed: int = 0, dtype: torch.dtype = torch.float32
) -> dict[str, Tensor]:
    """A seeded random stand-in for a classifier checkpoint of ``config`` (every tensor non-zero).

    A preset name gives a full-size stand-in of that published classifier; for a tiny one pass a
    config with a small ``model_channels`` (and ``num_head_channels``).

    Args:
        config: The classifier's architecture, or a preset name of ``CLASSIFIER_PRESETS``.
        seed: Seed of the tensors.
        dtype: Their dtype.

    Returns:
        A state dict with the keys and shapes of ``adm_classifier_state_dict_shapes(config)``.
    """
    if isinstance(config, str):
        config, _ = resolve_arch(config, CLASSIFIER_PRESETS, ADMClassifierConfig, "ADM classifier")
    return random_state_dict(adm_classifier_state_dict_shapes(config), seed, dtype)


def _convert_pool(take: Take) -> dict[str, Tensor]:
    # AttentionPool2d always uses QKVAttention (q/k/v split before heads): no row regrouping.
    return {
        "positional_embedding": take("positional_embedding").t(),
        "qkv_proj.weight": take("qkv_proj.weight").squeeze(-1),
        "qkv_proj.bias": take("qkv_proj.bias"),
        "c_proj.weight": take("c_proj.weight").squeeze(-1),
        "c_proj.bias": take("c_proj.bias"),
    }


def convert_adm_classifier_state_dict(
    state: Mapping[str, Tensor], config: ADMClassifierConfig
) -> dict[str, Tensor]:
    """Map an ``EncoderUNetModel`` state dict onto ``ADMClassifier(config)``'s names.

    Args:
        state: guided-diffusion classifier state dict.
        config: Its architecture.

    Returns:
        The :class:`ADMClassifier` state dict, loadable with ``load_state_dict(..., strict=True)``.

    Raises:
        ConversionError: If a key is missing, unexpected or used twice, or a shape does not match.
    """
    check_state_dict(state, adm_classifier_state_dict_shapes(config), "ADM classifier state dict")
    layout, heads = config.layout, config.heads

    def convert(take: Take, record: Record) -> dict[str, Tensor]:
        return _convert_pool(take) if record.kind == "pool" else convert_record(take, record, layout, heads)

    return map_state_dict(state, _records(config), convert)


# --------------------------------------------------------------------------------------------
# Reading the architecture from a state dict
# --------------------------------------------------------------------------------------------


def _config_structure(config: ADMClassifierConfig) -> dict[str, Any]:
    return {**asdict(config.layout), "image_size": config.image_size, "num_classes": config.num_classes}


def _checkpoint_structures(state: Mapping[str, Tensor]) -> list[dict[str, Any]]:
    """Every architecture (as :func:`_config_structure`) consistent with the keys and shapes of ``state``."""
    if any(key.startswith("output_blocks.") for key in state):
        raise ConversionError(
            "this is a guided-diffusion UNetModel (it has output_blocks), not a classifier: "
            "convert it with convert_adm_checkpoint"
        )
    names = ("positional_embedding", "qkv_proj.weight", "c_proj.weight")
    if not all(f"{_POOL}.{name}" in state for name in names):
        heads = sorted({".".join(key.split(".")[:2]) for key in state if key.startswith("out.")})
        raise ConversionError(
            f"this classifier has no attention pool ({_POOL}.positional_embedding; its head: {heads or 'none'}); "
            "only pool='attention' classifiers, as guided-diffusion publishes, are supported"
        )
    positional = state[f"{_POOL}.positional_embedding"]
    side = math.isqrt(max(positional.shape[-1] - 1, 0)) if positional.dim() == 2 else 0
    if side < 1 or side * side + 1 != positional.shape[-1]:
        raise ConversionError(f"{_POOL}.positional_embedding has shape {tuple(positional.shape)}, not (C, S*S + 1)")
    structures = []
    for layout in infer_encoder_layouts(state):
        if layout.level_channels[-1] == positional.shape[0]:
            image_size = side * 2 ** (len(layout.level_channels) - 1)
            num_classes = state[f"{_POOL}.c_proj.weight"].shape[0]
            structures.append({**asdict(layout), "image_size": image_size, "num_classes": num_classes})
    if not structures:
        raise ConversionError("the input_blocks of this checkpoint do not form a guided-diffusion classifier encoder")
    return structures


def infer_classifier_config(
    state: Mapping[str, Tensor], arch: str | Path | ADMClassifierConfig | None = None
) -> ADMClassifierConfig:
    """The architecture of the classifier whose state dict is ``state``.

    Args:
        state: A guided-diffusion ``EncoderUNetModel(pool="attention")`` state dict.
        arch: A preset name of ``CLASSIFIER_PRESETS`` (``"imagenet64"``, ``"imagenet128"``,
            ``"imagenet256"``, ``"imagenet512"``), a ``.json`` file of :class:`ADMClassifierConfig`
            fields, an :class:`ADMClassifierConfig`, or None to match the published classifiers.

    Returns:
        The classifier's configuration.

    Raises:
        ConversionError: If ``state`` is not an attention-pooled classifier, does not fit ``arch``, or
            (without ``arch``) matches no published classifier.
        ConfigError: If ``arch`` is not a preset, a JSON file of config fields or a config.
    """
    found = _checkpoint_structures(state)
    if arch is not None:
        config, label = resolve_arch(arch, CLASSIFIER_PRESETS, ADMClassifierConfig, "ADM classifier")
        expected = _config_structure(config)
        if expected not in found:
            differences = describe_differences(found[0], expected)
            raise ConversionError(f"the checkpoint does not fit arch {label}: {differences}")
        return config
    for config in CLASSIFIER_PRESETS.values():
        if _config_structure(config) in found:
            return config
    first = found[0]
    raise ConversionError(
        f"the classifier's layout (model_channels={first['model_channels']}, level widths={first['level_channels']}, "
        f"num_res_blocks={first['num_res_blocks']}, image_size={first['image_size']}) matches no published "
        f"guided-diffusion classifier ({', '.join(CLASSIFIER_PRESETS)}); its head width and attention order are "
        "not in the weights: pass arch (a JSON file or ADMClassifierConfig)"
    )


def convert_adm_classifier_checkpoint(
    checkpoint: str | Path, out_dir: str | Path, *, arch: str | Path | ADMClassifierConfig | None = None
) -> Path:
    """Convert a guided-diffusion classifier checkpoint into an :class:`ADMClassifier` folder.

    Writes ``out_dir/config.json`` and ``out_dir/model.safetensors`` (float32), which
    ``ADMClassifier.from_pretrained(out_dir)`` loads. Nothing is written when the file is refused.

    Args:
        checkpoint: The ``.pt`` file, e.g. ``64x64_classifier.pt``.
        out_dir: Destination folder (created if needed).
        arch: See :func:`infer_classifier_config`; None recognises a published classifier.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        MissingFileError: If ``checkpoint`` does not exist.
        ConversionError: If the file is not an attention-pooled classifier state dict, does not fit
            ``arch``, or (without ``arch``) matches no published classifier.
    """
    state = load_adm_state_dict(checkpoint, "ADM classifier checkpoint")
    config = infer_classifier_config(state, arch)
    converted = convert_adm_classifier_state_dict(state, config)
    del state
    model = ADMClassifier(config)
    model.load_state_dict(converted, strict=True)
    return model.save_pretrained(out_dir)
