"""Tests of the guided-diffusion (ADM) -> diffusers ``UNet2DModel`` converter.

The numerical reference is :mod:`tests.adm_reference`, written from guided-diffusion's ``unet.py``
independently of the converter's key mapping. Tiny random stand-ins cover each published layout
family; full-size layouts are checked on the meta device (shapes only, no memory).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter

import pytest
import torch
from torch import Tensor

from optuna_diffusion.errors import ConfigError, ConversionError, MissingFileError
from optuna_diffusion.zoo.convert_adm import (
    ADM_PRESETS,
    IMAGENET64_CONFIG,
    ADMConfig,
    adm_state_dict_shapes,
    convert_adm_checkpoint,
    convert_adm_state_dict,
    diffusers_scheduler_config,
    diffusers_unet_config,
    infer_adm_config,
    random_adm_state_dict,
    unet2d_incompatibility,
)

from . import adm_reference as ref

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

#: Tiny stand-ins of each published layout family (same structural flags, few channels).
FAMILIES = {
    # 64x64_diffusion.pt: head width 64 (here 32), new q/k/v order, cosine schedule, three levels of attention
    "imagenet64-like": ADMConfig(
        image_size=16, num_channels=32, num_res_blocks=2, attention_resolutions=(8, 4), channel_mult=(1, 2, 3),
        num_head_channels=32, num_classes=5,
    ),
    # 256x256_diffusion.pt: repeated level widths, legacy order, linear schedule
    "imagenet256-like": ADMConfig(
        image_size=16, num_channels=32, num_res_blocks=2, attention_resolutions=(4, 2), channel_mult=(1, 1, 2, 2),
        num_head_channels=32, use_new_attention_order=False, noise_schedule="linear", dropout=0.0, num_classes=4,
    ),
    # 256x256_diffusion_uncond.pt / lsun_*.pt: as above without classes
    "lsun256-like": ADMConfig(
        image_size=16, num_channels=32, num_res_blocks=1, attention_resolutions=(8, 4), channel_mult=(1, 1, 2),
        num_head_channels=32, use_new_attention_order=False, noise_schedule="linear", class_cond=False,
    ),
    # num_heads whose head width happens to be one width (attention only at the deepest level): converts
    "num-heads-one-width": ADMConfig(
        image_size=16, num_channels=32, num_res_blocks=1, attention_resolutions=(8,), channel_mult=(1, 2),
        num_head_channels=-1, num_heads=2, use_new_attention_order=False, noise_schedule="linear",
    ),
    "plain-norm-conv-resample": dataclasses.replace(
        SMALL, num_res_blocks=2, use_scale_shift_norm=False, resblock_updown=False
    ),
}

#: 128x128_diffusion.pt's family: num_heads=4 over levels of different widths.
IMAGENET128_LIKE = ADMConfig(
    image_size=16, num_channels=32, num_res_blocks=1, attention_resolutions=(8, 4), channel_mult=(1, 2, 4),
    num_head_channels=-1, num_heads=2, use_new_attention_order=False, noise_schedule="linear",
)


def _flags(cfg: ADMConfig) -> ref.Flags:
    return ref.Flags(
        image_size=cfg.image_size, model_channels=cfg.num_channels, channel_mult=cfg.channel_mult,
        num_res_blocks=cfg.num_res_blocks, attention_resolutions=cfg.attention_resolutions,
        num_head_channels=cfg.num_head_channels, num_heads=cfg.num_heads, new_order=cfg.use_new_attention_order,
        scale_shift=cfg.use_scale_shift_norm, resblock_updown=cfg.resblock_updown,
    )


def _diffusers_unet(cfg: ADMConfig, adm_state: dict[str, Tensor]) -> UNet2DModel:
    unet = UNet2DModel(**diffusers_unet_config(cfg))
    unet.load_state_dict(convert_adm_state_dict(adm_state, cfg), strict=True)
    return unet.eval()


def _inputs(cfg: ADMConfig, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor | None]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, cfg.image_size, cfg.image_size, generator=gen, dtype=dtype)
    y = torch.tensor([0, cfg.num_classes - 1]) if cfg.class_cond else None
    return x, torch.tensor([17, 901]), y


def _meta_state(cfg: ADMConfig) -> dict[str, Tensor]:
    """A full-size state dict of the right keys and shapes on the meta device (no memory)."""
    return {key: torch.empty(shape, device="meta") for key, shape in adm_state_dict_shapes(cfg).items()}


# --------------------------------------------------------------------------------------------
# Key mapping
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
    assert cfg == ADMConfig.imagenet64() == ADM_PRESETS["imagenet64"]
    assert (cfg.out_channels, cfg.num_classes, cfg.level_channels) == (6, 1000, (192, 384, 576, 768))
    shapes = adm_state_dict_shapes(cfg)
    assert shapes["label_emb.weight"] == (1000, 768)
    assert shapes["input_blocks.4.0.emb_layers.1.weight"] == (384, 768)  # level-0 resnet downsampler
    assert shapes["output_blocks.4.1.qkv.weight"] == (1728, 576, 1)  # first level-2 output block
    assert shapes["out.2.weight"] == (6, 192, 3, 3)

    source = _CountingDict(_meta_state(cfg))
    converted = convert_adm_state_dict(source, cfg)
    assert set(source.reads) == set(shapes) and set(source.reads.values()) == {1}
    assert sum(t.numel() for t in converted.values()) == sum(t.numel() for t in source.values())
    del source

    with torch.device("meta"):
        unet = UNet2DModel(**diffusers_unet_config(cfg))
    assert len(converted) == len(unet.state_dict())
    unet.load_state_dict(converted, strict=True)
    assert sum(p.numel() for p in unet.parameters()) == sum(math.prod(s) for s in shapes.values()) == 295_904_454


# Parameter counts of guided-diffusion's own UNetModel for the README flags (checked once against
# openai/guided-diffusion's unet.py + script_util.create_model).
_PUBLISHED_PARAMETERS = {
    "imagenet64": 295_904_454,
    "imagenet128": 421_529_606,
    "imagenet256": 553_838_086,
    "imagenet256-uncond": 552_814_086,
    "lsun256": 552_814_086,
    "imagenet512": 558_997_638,
}


@pytest.mark.parametrize("name", list(ADM_PRESETS))
def test_published_layouts_are_recognised_and_convert_or_are_refused(name: str) -> None:
    cfg = ADM_PRESETS[name]
    shapes = adm_state_dict_shapes(cfg)
    assert sum(math.prod(s) for s in shapes.values()) == _PUBLISHED_PARAMETERS[name]
    state = _meta_state(cfg)
    recognised = infer_adm_config(state)
    assert recognised == (ADM_PRESETS["imagenet256-uncond"] if name == "lsun256" else cfg)
    assert infer_adm_config(state, arch=name) is cfg

    if name in ("imagenet128", "imagenet512"):
        expected = "(128/192/256 channels)" if name == "imagenet128" else "channel_mult[0]=0.5"
        assert expected in unet2d_incompatibility(cfg)
        with pytest.raises(ConversionError, match="cannot convert to a diffusers UNet2DModel") as info:
            convert_adm_state_dict(state, cfg)
        assert "\n" not in str(info.value)
        return
    assert unet2d_incompatibility(cfg) is None
    converted = convert_adm_state_dict(state, cfg)
    with torch.device("meta"):
        unet = UNet2DModel(**diffusers_unet_config(cfg))
    unet.load_state_dict(converted, strict=True)
    assert sum(p.numel() for p in unet.parameters()) == _PUBLISHED_PARAMETERS[name]
    attention = unet.mid_block.attentions[0]
    assert attention.heads * 64 == cfg.level_channels[-1]  # 64 channels per head, as published


def test_128_refusal_names_the_reason() -> None:
    reason = unet2d_incompatibility(ADM_PRESETS["imagenet128"])
    assert reason.startswith("num_heads=4 makes the attention head width differ per level (128/192/256 channels)")
    assert "\n" not in reason
    assert "64/96/128" not in reason and unet2d_incompatibility(IMAGENET128_LIKE).startswith(
        "num_heads=2 makes the attention head width differ per level (32/64 channels)"
    )


def test_unet2d_condition_model_cannot_hold_an_adm_mid_block() -> None:
    # Why 128x128 is refused rather than converted to UNet2DConditionModel (per-level head widths):
    # its "UNetMidBlock2D" mid block is built with num_layers=0 and no attention.
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=3, out_channels=6, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2D", attention_head_dim=(16, 32), cross_attention_dim=32,
        resnet_time_scale_shift="scale_shift", num_class_embeds=3,
    )
    assert len(unet.mid_block.resnets) == 1
    assert all(a is None for a in unet.mid_block.attentions)
    assert unet.down_blocks[0].downsamplers[0].__class__.__name__ == "Downsample2D"  # conv, not a ResBlock


# --------------------------------------------------------------------------------------------
# Exactness against the reference forward
# --------------------------------------------------------------------------------------------


def test_block_references_resblock_scale_shift_and_new_order_attention() -> None:
    cfg = SMALL
    p = random_adm_state_dict(cfg)
    unet = _diffusers_unet(cfg, p)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 32, 8, 8, generator=gen)
    emb = torch.randn(2, cfg.time_embed_dim, generator=gen)
    with torch.no_grad():
        # input_blocks.3 = level 1: ResBlock 32 -> 64 (1x1 skip conv) + AttentionBlock(64, 4 heads)
        expected = ref.resblock(p, "input_blocks.3.0", x, emb, scale_shift=True)
        got = unet.down_blocks[1].resnets[0](x, emb)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        expected = ref.attention(p, "input_blocks.3.1", expected, heads=4, new_order=True)
        torch.testing.assert_close(unet.down_blocks[1].attentions[0](got), expected, rtol=0, atol=1e-5)
        # the level-0 residual downsampler
        expected = ref.resblock(p, "input_blocks.2.0", x, emb, scale_shift=True, updown="down")
        torch.testing.assert_close(unet.down_blocks[0].downsamplers[0](x, emb), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_full_forward_matches_adm_reference(family: str) -> None:
    cfg = FAMILIES[family]
    p = {k: v.double() for k, v in random_adm_state_dict(cfg, seed=3).items()}
    unet = _diffusers_unet(cfg, p).double()
    x, t, y = _inputs(cfg, torch.float64)
    with torch.no_grad():
        expected = ref.unet_forward(p, _flags(cfg), x, t, y)
        got = unet(x, t, class_labels=y).sample
    assert got.shape == (2, 6, 16, 16)
    assert expected.abs().mean() > 0.1  # a non-trivial output
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", ["imagenet64", "imagenet256", "lsun256"])
def test_tiny_stand_in_of_a_preset_converts_exactly(name: str) -> None:
    # The published flags at 32 channels (32 per head), run on 32x32 inputs: the UNet is convolutional,
    # and attention sits at the same levels whatever the input size.
    cfg = dataclasses.replace(ADM_PRESETS[name], num_channels=32, num_head_channels=32, num_classes=10)
    p = {k: v.double() for k, v in random_adm_state_dict(cfg, seed=4).items()}
    unet = _diffusers_unet(cfg, p).double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 32, 32, generator=gen, dtype=torch.float64)
    t, y = torch.tensor([500]), (torch.tensor([7]) if cfg.class_cond else None)
    with torch.no_grad():
        expected = ref.unet_forward(p, _flags(cfg), x, t, y)
        torch.testing.assert_close(unet(x, t, class_labels=y).sample, expected, rtol=0, atol=1e-8)


def test_legacy_order_matters() -> None:
    # Converting a legacy-order checkpoint as if it had the new order gives a different network.
    cfg = FAMILIES["imagenet256-like"]
    p = {k: v.double() for k, v in random_adm_state_dict(cfg, seed=3).items()}
    wrong = _diffusers_unet(dataclasses.replace(cfg, use_new_attention_order=True), p).double()
    x, t, y = _inputs(cfg, torch.float64)
    with torch.no_grad():
        error = (wrong(x, t, class_labels=y).sample - ref.unet_forward(p, _flags(cfg), x, t, y)).abs().max()
    assert error > 1e-3


def test_convert_checkpoint_round_trip(tmp_path) -> None:
    cfg = FAMILIES["imagenet256-like"]
    p = random_adm_state_dict(cfg)
    ckpt = tmp_path / "small_adm.pt"
    torch.save(p, ckpt)
    out = convert_adm_checkpoint(ckpt, tmp_path / "converted", arch=cfg)
    assert out == tmp_path / "converted"
    assert ADMConfig.from_dict(json.loads((out / "adm_flags.json").read_text())) == cfg

    unet = UNet2DModel.from_pretrained(out / "unet").eval()
    x, t, y = _inputs(cfg)
    with torch.no_grad():
        got = unet(x, t, class_labels=y).sample
    assert got.shape == (2, 6, 16, 16)
    torch.testing.assert_close(got, ref.unet_forward(p, _flags(cfg), x, t, y), rtol=0, atol=1e-5)

    scheduler = diffusers.DDPMScheduler.from_pretrained(out / "scheduler")
    assert (scheduler.config.beta_schedule, scheduler.config.variance_type) == ("linear", "learned_range")
    torch.testing.assert_close(scheduler.betas, torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64).float())


def test_arch_as_json_file(tmp_path) -> None:
    cfg = FAMILIES["lsun256-like"]
    ckpt = tmp_path / "lsun_like.pt"
    torch.save(random_adm_state_dict(cfg), ckpt)
    flags = tmp_path / "flags.json"
    flags.write_text(json.dumps(cfg.to_dict()))
    out = convert_adm_checkpoint(ckpt, tmp_path / "out", arch=flags)
    assert UNet2DModel.from_pretrained(out / "unet").config.num_class_embeds is None


def test_cosine_schedule_of_imagenet64() -> None:
    scheduler = diffusers.DDPMScheduler(**diffusers_scheduler_config(IMAGENET64_CONFIG))
    assert scheduler.config.beta_schedule == "squaredcos_cap_v2"
    assert (scheduler.config.prediction_type, scheduler.config.clip_sample) == ("epsilon", True)
    # guided-diffusion's cosine schedule: betas_for_alpha_bar(..., max_beta=0.999)
    alpha_bar = [math.cos((i / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(1001)]
    betas = torch.tensor([min(1 - alpha_bar[i + 1] / alpha_bar[i], 0.999) for i in range(1000)])
    torch.testing.assert_close(scheduler.betas, betas.float())


# --------------------------------------------------------------------------------------------
# Inference and refusals
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", [*FAMILIES, "imagenet128-like"])
def test_inferred_layout_fits_only_its_own_flags(family: str) -> None:
    cfg = FAMILIES.get(family, IMAGENET128_LIKE)
    state = random_adm_state_dict(cfg)
    assert infer_adm_config(state, arch=cfg) is cfg
    with pytest.raises(ConversionError, match="matches no published guided-diffusion checkpoint") as info:
        infer_adm_config(state)  # tiny widths: never assumed to be a published model
    assert "\n" not in str(info.value)
    other = dataclasses.replace(cfg, num_res_blocks=cfg.num_res_blocks + 1)
    n = cfg.num_res_blocks
    with pytest.raises(ConversionError, match=f"num_res_blocks is {n} in the checkpoint, {n + 1} in the arch"):
        infer_adm_config(state, arch=other)


def test_128_like_checkpoint_is_refused_not_converted(tmp_path) -> None:
    ckpt = tmp_path / "like128.pt"
    torch.save(random_adm_state_dict(IMAGENET128_LIKE), ckpt)
    match = "cannot convert like128.pt to a diffusers UNet2DModel: num_heads=2 makes the attention head width"
    with pytest.raises(ConversionError, match=match) as info:
        convert_adm_checkpoint(ckpt, tmp_path / "out", arch=IMAGENET128_LIKE)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_wrong_arch_and_unknown_arch(tmp_path) -> None:
    ckpt = tmp_path / "small.pt"
    torch.save(random_adm_state_dict(SMALL), ckpt)
    match = "does not fit arch 'imagenet64': model_channels is 32 in the checkpoint, 192 in the arch"
    with pytest.raises(ConversionError, match=match):
        convert_adm_checkpoint(ckpt, tmp_path / "out", arch="imagenet64")
    with pytest.raises(ConfigError, match="unknown ADM UNet arch 'imagenet65'; use a preset"):
        convert_adm_checkpoint(ckpt, tmp_path / "out", arch="imagenet65")
    with pytest.raises(MissingFileError, match="arch file not found"):
        convert_adm_checkpoint(ckpt, tmp_path / "out", arch=tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"num_channels": 32, "heads": 4}))
    with pytest.raises(ConfigError, match="unknown ADMConfig field.*heads"):
        convert_adm_checkpoint(ckpt, tmp_path / "out", arch=bad)


def test_super_resolution_and_classifier_checkpoints_are_refused() -> None:
    state = random_adm_state_dict(SMALL)
    state["input_blocks.0.0.weight"] = torch.zeros(32, 6, 3, 3)
    with pytest.raises(ConversionError, match="super-resolution model"):
        infer_adm_config(state)
    with pytest.raises(ConversionError, match="classifier .EncoderUNetModel.*convert_adm_classifier_checkpoint"):
        infer_adm_config({"out.2.positional_embedding": torch.zeros(64, 65), **random_adm_state_dict(SMALL)})
    with pytest.raises(ConversionError, match="no 'time_embed.0.weight'"):
        infer_adm_config({"model.weight": torch.zeros(1)})


def _one_line_error(state: dict, match: str) -> None:
    with pytest.raises(ConversionError, match=match) as info:
        convert_adm_state_dict(state, SMALL)
    assert "\n" not in str(info.value)


def test_state_dict_errors_are_one_line() -> None:
    p = random_adm_state_dict(SMALL)
    missing = dict(p)
    del missing["middle_block.1.qkv.weight"]
    _one_line_error(missing, "missing 1 key.*middle_block.1.qkv.weight")
    _one_line_error({**p, "input_blocks.99.0.weight": torch.zeros(1)}, "unexpected.*input_blocks.99.0.weight")
    wrong_shape = {**p, "out.2.weight": torch.zeros(3, 32, 3, 3)}
    _one_line_error(wrong_shape, r"shape \(3, 32, 3, 3\), expected \(6, 32, 3, 3\)")
    with pytest.raises(ValueError, match="missing 414 key"):  # a small checkpoint is not ImageNet64
        convert_adm_state_dict(p, IMAGENET64_CONFIG)


def test_checkpoint_file_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        convert_adm_checkpoint(tmp_path / "absent.pt", tmp_path / "out", arch=SMALL)
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match="not a loadable torch checkpoint") as info:
        convert_adm_checkpoint(garbage, tmp_path / "out", arch=SMALL)
    assert "\n" not in str(info.value)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"model": {"x": torch.zeros(1)}}, wrapped)
    with pytest.raises(ValueError, match="does not hold an ADM state dict"):
        convert_adm_checkpoint(wrapped, tmp_path / "out", arch=SMALL)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="num_head_channels"):
        ADMConfig(num_head_channels=0)
    with pytest.raises(ValueError, match="does not split into num_heads=5 heads"):
        ADMConfig(num_head_channels=-1, num_heads=5)
    with pytest.raises(ValueError, match="not a multiple of num_head_channels=128"):
        ADMConfig(num_head_channels=128)  # the 576-channel level has attention
    with pytest.raises(ValueError, match="noise_schedule"):
        ADMConfig(noise_schedule="sqrt")
    assert ADMConfig(attention_resolutions=[32, 16]).attention_resolutions == (32, 16)
    assert ADMConfig(attention_resolutions=[32, 16]).attention_levels == (1, 2)


# --------------------------------------------------------------------------------------------
# An arch that contradicts the published checkpoint of the weights' layout
# --------------------------------------------------------------------------------------------


def test_an_arch_contradicting_the_published_checkpoint_of_the_layout_is_refused() -> None:
    published = ADM_PRESETS["imagenet128"]
    state = _meta_state(published)
    fixed_heads = dataclasses.replace(published, num_head_channels=64)  # what studies/imagenet128.toml must not invite
    with pytest.raises(ConversionError) as info:
        infer_adm_config(state, arch=fixed_heads)
    assert str(info.value).startswith(
        "arch the given config sets num_head_channels=64, but the weights have the layout of the published "
        "imagenet128 checkpoint, which uses num_heads=4: converted so, its weights would compute another network"
    )
    assert "\n" not in str(info.value) and "--own-weights" in str(info.value)
    assert infer_adm_config(state, arch=fixed_heads, own_weights=True) is fixed_heads

    imagenet64 = ADM_PRESETS["imagenet64"]
    legacy = dataclasses.replace(imagenet64, use_new_attention_order=False, noise_schedule="linear")
    match = "sets use_new_attention_order=False, noise_schedule='linear', .* which uses use_new_attention_order=True, noise_schedule='cosine'"
    with pytest.raises(ConversionError, match=match):
        infer_adm_config(_meta_state(imagenet64), arch=legacy)
    # Flags that leave the computation alone pass: dropout, or a head split giving the same heads.
    same = dataclasses.replace(imagenet64, dropout=0.1, num_heads=7)
    assert infer_adm_config(_meta_state(imagenet64), arch=same) is same
    # imagenet256-uncond and lsun256 share the layout: either preset's flags fit its weights.
    assert infer_adm_config(_meta_state(ADM_PRESETS["imagenet256-uncond"]), arch="lsun256") is ADM_PRESETS["lsun256"]


def test_cli_refuses_the_128x128_checkpoint_with_a_head_width_arch(tmp_path) -> None:
    from typer.testing import CliRunner

    from optuna_diffusion.cli import app

    # The published 128x128 layout, every tensor a view of one zero (a file of a few hundred kB).
    zero = torch.zeros(())
    shapes = adm_state_dict_shapes(ADM_PRESETS["imagenet128"])
    ckpt = tmp_path / "128x128_diffusion.pt"
    torch.save({key: zero.expand(shape) for key, shape in shapes.items()}, ckpt)
    flags = tmp_path / "flags.json"
    flags.write_text(json.dumps({**ADM_PRESETS["imagenet128"].to_dict(), "num_head_channels": 64}))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["zoo", "convert-adm", str(ckpt), "--out", str(out), "--arch", str(flags)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: arch {flags} sets num_head_channels=64, but the weights")
    assert not out.exists()
