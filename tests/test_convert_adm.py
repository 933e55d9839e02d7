"""Tests of the guided-diffusion (ADM) -> diffusers ``UNet2DModel`` converter.

The numerical references below are written from guided-diffusion's ``unet.py`` formulas (ResBlock
with scale-shift norm, ``QKVAttention``/``QKVAttentionLegacy``, ``UNetModel.forward``), independent
of the converter's key mapping.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import pytest
import torch
from torch import Tensor
from torch.nn import functional as F

from optuna_diffusion.zoo.convert_adm import (
    IMAGENET64_CONFIG,
    ADMConfig,
    adm_state_dict_shapes,
    convert_adm_checkpoint,
    convert_adm_state_dict,
    diffusers_unet_config,
)

diffusers = pytest.importorskip("diffusers")
UNet2DModel = diffusers.UNet2DModel

SMALL = ADMConfig(
    image_size=16,
    num_channels=32,
    num_res_blocks=1,
    attention_resolutions=(8,),
    channel_mult=(1, 2),
    num_head_channels=16,
    num_classes=3,
)


def _random_adm_state_dict(cfg: ADMConfig, dtype: torch.dtype = torch.float32, seed: int = 0) -> dict[str, Tensor]:
    """Seeded random ADM weights with roughly unit-variance activations."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in adm_state_dict_shapes(cfg).items():
        values = torch.randn(shape, generator=gen, dtype=dtype)
        if len(shape) > 1:  # weights: fan-in scaling
            values /= math.sqrt(math.prod(shape[1:])) if not key.startswith("label_emb") else 1.0
        elif key.endswith("weight"):  # group-norm gains around 1
            values = 1.0 + 0.1 * values
        else:
            values *= 0.1
        state[key] = values
    return state


def _diffusers_unet(cfg: ADMConfig, adm_state: dict[str, Tensor]) -> UNet2DModel:
    unet = UNet2DModel(**diffusers_unet_config(cfg))
    unet.load_state_dict(convert_adm_state_dict(adm_state, cfg), strict=True)
    return unet.eval()


# --------------------------------------------------------------------------------------------
# Reference ADM forward (from guided_diffusion/unet.py), on a raw state dict
# --------------------------------------------------------------------------------------------


def _gn(p: dict[str, Tensor], key: str, x: Tensor) -> Tensor:
    return F.group_norm(x, 32, p[f"{key}.weight"], p[f"{key}.bias"], eps=1e-5)


def _adm_resblock(p, key: str, x: Tensor, emb: Tensor, scale_shift: bool, updown: str | None = None) -> Tensor:
    h = F.silu(_gn(p, f"{key}.in_layers.0", x))
    if updown == "down":
        h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
    elif updown == "up":
        h, x = F.interpolate(h, scale_factor=2, mode="nearest"), F.interpolate(x, scale_factor=2, mode="nearest")
    h = F.conv2d(h, p[f"{key}.in_layers.2.weight"], p[f"{key}.in_layers.2.bias"], padding=1)
    emb_out = F.linear(F.silu(emb), p[f"{key}.emb_layers.1.weight"], p[f"{key}.emb_layers.1.bias"])[..., None, None]
    if scale_shift:
        scale, shift = torch.chunk(emb_out, 2, dim=1)
        h = _gn(p, f"{key}.out_layers.0", h) * (1 + scale) + shift
    else:
        h = _gn(p, f"{key}.out_layers.0", h + emb_out)
    h = F.conv2d(F.silu(h), p[f"{key}.out_layers.3.weight"], p[f"{key}.out_layers.3.bias"], padding=1)
    if f"{key}.skip_connection.weight" in p:
        x = F.conv2d(x, p[f"{key}.skip_connection.weight"], p[f"{key}.skip_connection.bias"])
    return x + h


def _adm_attention(p, key: str, x: Tensor, head_ch: int, new_order: bool) -> Tensor:
    b, c, *spatial = x.shape
    x = x.reshape(b, c, -1)
    qkv = F.conv1d(_gn(p, f"{key}.norm", x), p[f"{key}.qkv.weight"], p[f"{key}.qkv.bias"])
    heads, length = c // head_ch, x.shape[-1]
    if new_order:  # QKVAttention: split q/k/v first, then heads
        q, k, v = (t.reshape(b * heads, head_ch, length) for t in qkv.chunk(3, dim=1))
    else:  # QKVAttentionLegacy: split heads first
        q, k, v = qkv.reshape(b * heads, 3 * head_ch, length).split(head_ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(head_ch))
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
    h = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, length)
    h = F.conv1d(h, p[f"{key}.proj_out.weight"], p[f"{key}.proj_out.bias"])
    return (x + h).reshape(b, c, *spatial)


def _timestep_embedding(t: Tensor, dim: int) -> Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _adm_forward(p, cfg: ADMConfig, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
    """``UNetModel.forward`` of guided-diffusion, written against the raw state dict."""
    ss, new_order, hc = cfg.use_scale_shift_norm, cfg.use_new_attention_order, cfg.num_head_channels
    attn_ds = {cfg.image_size // r for r in cfg.attention_resolutions}
    emb = _timestep_embedding(t, cfg.num_channels).to(x.dtype)
    emb = F.silu(F.linear(emb, p["time_embed.0.weight"], p["time_embed.0.bias"]))
    emb = F.linear(emb, p["time_embed.2.weight"], p["time_embed.2.bias"])
    emb = emb + p["label_emb.weight"][y]
    h = F.conv2d(x, p["input_blocks.0.0.weight"], p["input_blocks.0.0.bias"], padding=1)
    hs, idx, ds = [h], 1, 1
    for level in range(len(cfg.channel_mult)):
        for _ in range(cfg.num_res_blocks):
            h = _adm_resblock(p, f"input_blocks.{idx}.0", h, emb, ss)
            if ds in attn_ds:
                h = _adm_attention(p, f"input_blocks.{idx}.1", h, hc, new_order)
            hs.append(h)
            idx += 1
        if level != len(cfg.channel_mult) - 1:
            if cfg.resblock_updown:
                h = _adm_resblock(p, f"input_blocks.{idx}.0", h, emb, ss, "down")
            else:
                key = f"input_blocks.{idx}.0.op"
                h = F.conv2d(h, p[f"{key}.weight"], p[f"{key}.bias"], stride=2, padding=1)
            hs.append(h)
            idx += 1
            ds *= 2
    h = _adm_resblock(p, "middle_block.0", h, emb, ss)
    h = _adm_attention(p, "middle_block.1", h, hc, new_order)
    h = _adm_resblock(p, "middle_block.2", h, emb, ss)
    idx = 0
    for level in reversed(range(len(cfg.channel_mult))):
        for i in range(cfg.num_res_blocks + 1):
            h = _adm_resblock(p, f"output_blocks.{idx}.0", torch.cat([h, hs.pop()], dim=1), emb, ss)
            sub = 1
            if ds in attn_ds:
                h = _adm_attention(p, f"output_blocks.{idx}.1", h, hc, new_order)
                sub = 2
            if level and i == cfg.num_res_blocks:
                key = f"output_blocks.{idx}.{sub}"
                if cfg.resblock_updown:
                    h = _adm_resblock(p, key, h, emb, ss, "up")
                else:
                    h = F.interpolate(h, scale_factor=2, mode="nearest")
                    h = F.conv2d(h, p[f"{key}.conv.weight"], p[f"{key}.conv.bias"], padding=1)
                ds //= 2
            idx += 1
    h = F.silu(_gn(p, "out.0", h))
    return F.conv2d(h, p["out.2.weight"], p["out.2.bias"], padding=1)


def _inputs(cfg: ADMConfig, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, cfg.image_size, cfg.image_size, generator=gen, dtype=dtype)
    return x, torch.tensor([17, 901]), torch.tensor([0, cfg.num_classes - 1])


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


class _CountingDict(dict):
    """A dict that counts ``__getitem__`` per key (``items()`` does not count)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reads: Counter[str] = Counter()

    def __getitem__(self, key: str) -> Tensor:
        self.reads[key] += 1
        return super().__getitem__(key)


def test_imagenet64_every_tensor_mapped_once_and_loads_strictly() -> None:
    cfg = IMAGENET64_CONFIG
    assert cfg == ADMConfig.imagenet64()
    assert (cfg.out_channels, cfg.num_classes, cfg.level_channels) == (6, 1000, (192, 384, 576, 768))
    shapes = adm_state_dict_shapes(cfg)
    assert shapes["label_emb.weight"] == (1000, 768)
    assert shapes["input_blocks.4.0.emb_layers.1.weight"] == (384, 768)  # level-0 resnet downsampler
    assert shapes["output_blocks.4.1.qkv.weight"] == (1728, 576, 1)  # first level-2 output block
    assert shapes["out.2.weight"] == (6, 192, 3, 3)

    source = _CountingDict(_random_adm_state_dict(cfg, dtype=torch.float16))
    converted = convert_adm_state_dict(source, cfg)
    assert set(source.reads) == set(shapes) and set(source.reads.values()) == {1}
    assert sum(t.numel() for t in converted.values()) == sum(t.numel() for t in source.values())
    del source

    unet = UNet2DModel(**diffusers_unet_config(cfg))
    assert len(converted) == len(unet.state_dict())
    unet.load_state_dict(converted, strict=True)
    assert sum(p.numel() for p in unet.parameters()) == sum(math.prod(s) for s in shapes.values()) == 295_904_454


def test_block_references_resblock_scale_shift_and_new_order_attention() -> None:
    cfg = SMALL
    p = _random_adm_state_dict(cfg)
    unet = _diffusers_unet(cfg, p)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 32, 8, 8, generator=gen)
    emb = torch.randn(2, cfg.time_embed_dim, generator=gen)
    with torch.no_grad():
        # input_blocks.3 = level 1: ResBlock 32 -> 64 (1x1 skip conv) + AttentionBlock(64, 4 heads)
        expected = _adm_resblock(p, "input_blocks.3.0", x, emb, scale_shift=True)
        got = unet.down_blocks[1].resnets[0](x, emb)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        expected = _adm_attention(p, "input_blocks.3.1", expected, 16, new_order=True)
        torch.testing.assert_close(unet.down_blocks[1].attentions[0](got), expected, rtol=0, atol=1e-5)
        # the level-0 residual downsampler
        expected = _adm_resblock(p, "input_blocks.2.0", x, emb, scale_shift=True, updown="down")
        torch.testing.assert_close(unet.down_blocks[0].downsamplers[0](x, emb), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "flags",
    [
        {},
        {"use_new_attention_order": False},
        {"use_scale_shift_norm": False, "resblock_updown": False},
    ],
    ids=["imagenet64-flags", "legacy-attention", "plain-norm-conv-resample"],
)
def test_full_forward_matches_adm_reference(flags: dict) -> None:
    cfg = dataclasses.replace(SMALL, num_res_blocks=2, **flags)
    p = {k: v.double() for k, v in _random_adm_state_dict(cfg).items()}
    unet = _diffusers_unet(cfg, p).double()
    x, t, y = _inputs(cfg, torch.float64)
    with torch.no_grad():
        expected = _adm_forward(p, cfg, x, t, y)
        got = unet(x, t, class_labels=y).sample
    assert got.shape == (2, 6, 16, 16)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-8)


def test_convert_checkpoint_round_trip(tmp_path) -> None:
    cfg = SMALL
    p = _random_adm_state_dict(cfg)
    ckpt = tmp_path / "small_adm.pt"
    torch.save(p, ckpt)
    out = convert_adm_checkpoint(ckpt, tmp_path / "converted", cfg)
    assert out == tmp_path / "converted"

    unet = UNet2DModel.from_pretrained(out / "unet").eval()
    x, t, y = _inputs(cfg)
    with torch.no_grad():
        got = unet(x, t, class_labels=y).sample
    assert got.shape == (2, 6, 16, 16)
    torch.testing.assert_close(got, _adm_forward(p, cfg, x, t, y), rtol=1e-4, atol=1e-4)

    scheduler = diffusers.DDPMScheduler.from_pretrained(out / "scheduler")
    assert scheduler.config.beta_schedule == "squaredcos_cap_v2"
    assert scheduler.config.variance_type == "learned_range"
    assert (scheduler.config.prediction_type, scheduler.config.clip_sample) == ("epsilon", True)
    # guided-diffusion's cosine schedule: betas_for_alpha_bar(..., max_beta=0.999)
    alpha_bar = [math.cos((i / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(1001)]
    betas = torch.tensor([min(1 - alpha_bar[i + 1] / alpha_bar[i], 0.999) for i in range(1000)])
    torch.testing.assert_close(scheduler.betas, betas.float())


def _one_line_value_error(state: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        convert_adm_state_dict(state, SMALL)
    assert "\n" not in str(info.value)


def test_state_dict_errors_are_one_line() -> None:
    p = _random_adm_state_dict(SMALL)
    missing = dict(p)
    del missing["middle_block.1.qkv.weight"]
    _one_line_value_error(missing, "missing 1 key.*middle_block.1.qkv.weight")
    _one_line_value_error({**p, "input_blocks.99.0.weight": torch.zeros(1)}, "unexpected.*input_blocks.99.0.weight")
    wrong_shape = {**p, "out.2.weight": torch.zeros(3, 32, 3, 3)}
    _one_line_value_error(wrong_shape, r"shape \(3, 32, 3, 3\), expected \(6, 32, 3, 3\)")
    with pytest.raises(ValueError, match="missing 414 key"):  # a small checkpoint is not ImageNet64
        convert_adm_state_dict(p, IMAGENET64_CONFIG)


def test_checkpoint_file_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        convert_adm_checkpoint(tmp_path / "absent.pt", tmp_path / "out", SMALL)
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match="not a loadable torch checkpoint") as info:
        convert_adm_checkpoint(garbage, tmp_path / "out", SMALL)
    assert "\n" not in str(info.value)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"model": {"x": torch.zeros(1)}}, wrapped)
    with pytest.raises(ValueError, match="does not hold an ADM state dict"):
        convert_adm_checkpoint(wrapped, tmp_path / "out", SMALL)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="num_head_channels"):
        ADMConfig(num_head_channels=-1)
    with pytest.raises(ValueError, match="noise_schedule"):
        ADMConfig(noise_schedule="sqrt")
    assert ADMConfig(attention_resolutions=[32, 16]).attention_resolutions == (32, 16)
