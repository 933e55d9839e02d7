"""Tests of :class:`ADMClassifier` and the guided-diffusion classifier converter.

The numerical reference is :mod:`tests.adm_reference` (``EncoderUNetModel.forward`` with
``AttentionPool2d``, written from guided-diffusion's ``unet.py``), on tiny random stand-ins.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from optuna_diffusion.errors import ConfigError, ConversionError, MissingFileError, ModelLoadError
from optuna_diffusion.zoo.adm_classifier import CLASSIFIER_PRESETS, WEIGHTS_NAME, ADMClassifier, ADMClassifierConfig
from optuna_diffusion.zoo.convert_adm import ADMConfig, random_adm_state_dict
from optuna_diffusion.zoo.convert_adm_classifier import (
    adm_classifier_state_dict_shapes,
    convert_adm_classifier_checkpoint,
    convert_adm_classifier_state_dict,
    infer_classifier_config,
    random_classifier_state_dict,
)

from . import adm_reference as ref

pytest.importorskip("diffusers")

#: Tiny stand-ins of the published flag sets, plus one exercising the other ADM options.
FLAG_SETS = {
    # 64x64_classifier.pt: channel_mult (1, 2, 3, ...), attention at three resolutions, legacy order
    "imagenet64-like": ADMClassifierConfig(
        image_size=16, model_channels=32, num_res_blocks=2, attention_resolutions=(8, 4),
        channel_mult=(1, 2, 3), num_head_channels=32, num_classes=7,
    ),
    # 128x128/256x256_classifier.pt: repeated level widths, depth 2, 64-channel heads (here 32, 16)
    "imagenet256-like": ADMClassifierConfig(
        image_size=32, model_channels=32, num_res_blocks=1, attention_resolutions=(8, 4),
        channel_mult=(1, 1, 2, 2), num_head_channels=16, num_classes=5,
    ),
    "new-order-conv-resample-plain-norm": ADMClassifierConfig(
        image_size=16, model_channels=32, num_res_blocks=1, attention_resolutions=(8,), channel_mult=(1, 2),
        num_head_channels=16, use_new_attention_order=True, use_scale_shift_norm=False, resblock_updown=False,
        num_classes=3,
    ),
}

# Parameter counts of guided-diffusion's own create_classifier(...) for the published flags
# (checked once against openai/guided-diffusion's unet.py).
_PUBLISHED_PARAMETERS = {
    "imagenet64": 65_438_568,
    "imagenet128": 42_568_040,
    "imagenet256": 54_096_360,
    "imagenet512": 54_448_360,
}


def _flags(cfg: ADMClassifierConfig) -> ref.Flags:
    return ref.Flags(
        image_size=cfg.image_size, model_channels=cfg.model_channels, channel_mult=cfg.channel_mult,
        num_res_blocks=cfg.num_res_blocks, attention_resolutions=cfg.attention_resolutions,
        num_head_channels=cfg.num_head_channels, num_heads=1, new_order=cfg.use_new_attention_order,
        scale_shift=cfg.use_scale_shift_norm, resblock_updown=cfg.resblock_updown,
    )


def _classifier(cfg: ADMClassifierConfig, state: dict[str, Tensor]) -> ADMClassifier:
    model = ADMClassifier(cfg)
    model.load_state_dict(convert_adm_classifier_state_dict(state, cfg), strict=True)
    return model.eval()


def _inputs(cfg: ADMClassifierConfig, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, cfg.image_size, cfg.image_size, generator=gen, dtype=dtype), torch.tensor([17, 901])


def _log_prob_gradient(forward, x: Tensor, y: Tensor) -> Tensor:
    """``grad_x log softmax(logits)[y]``, the gradient classifier guidance adds."""
    x = x.detach().requires_grad_(True)
    log_probs = torch.log_softmax(forward(x), dim=-1)
    return torch.autograd.grad(log_probs[range(len(y)), y].sum(), x)[0]


@pytest.mark.parametrize("name", list(FLAG_SETS))
def test_logits_and_guidance_gradient_match_adm_reference(name: str) -> None:
    cfg = FLAG_SETS[name]
    p = {k: v.double() for k, v in random_classifier_state_dict(cfg, seed=3).items()}
    model = _classifier(cfg, p).double()
    x, t = _inputs(cfg, torch.float64)
    with torch.no_grad():
        expected = ref.classifier_forward(p, _flags(cfg), x, t)
        got = model(x, t)
    assert got.shape == (2, cfg.num_classes)
    assert expected.std() > 0.05  # non-trivial logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)

    y = torch.tensor([0, cfg.num_classes - 1])
    expected_grad = _log_prob_gradient(lambda v: ref.classifier_forward(p, _flags(cfg), v, t), x, y)
    got_grad = _log_prob_gradient(lambda v: model(v, t), x, y)
    assert expected_grad.abs().max() > 1e-4
    torch.testing.assert_close(got_grad, expected_grad, rtol=0, atol=1e-10)


def test_legacy_attention_order_matters() -> None:
    cfg = FLAG_SETS["imagenet64-like"]
    p = {k: v.double() for k, v in random_classifier_state_dict(cfg, seed=3).items()}
    wrong_cfg = ADMClassifierConfig(**{**cfg.to_dict(), "use_new_attention_order": True})
    x, t = _inputs(cfg, torch.float64)
    with torch.no_grad():
        error = (_classifier(wrong_cfg, p).double()(x, t) - ref.classifier_forward(p, _flags(cfg), x, t)).abs().max()
    assert error > 1e-3


def test_timestep_broadcast_and_return_dict() -> None:
    cfg = FLAG_SETS["new-order-conv-resample-plain-norm"]
    model = _classifier(cfg, random_classifier_state_dict(cfg))
    x, _ = _inputs(cfg)
    with torch.no_grad():
        shared = model(x, 250)
        torch.testing.assert_close(shared, model(x, torch.tensor([250, 250])))
        (as_tuple,) = model(x, torch.tensor(250), return_dict=False)
    torch.testing.assert_close(as_tuple, shared)
    with pytest.raises(ConfigError, match="reads 8x8 features, got 4x4"):
        model(x[..., :8, :8], 250)


def test_macs_counter_runs_on_the_classifier() -> None:
    from optuna_diffusion.macs import count_macs

    cfg = FLAG_SETS["imagenet64-like"]
    model = _classifier(cfg, random_classifier_state_dict(cfg))
    macs = count_macs(model)
    conv_in = 16 * 16 * 32 * 3 * 9  # the first conv alone
    assert macs > 100 * conv_in


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def test_save_and_load_round_trip_is_strict(tmp_path) -> None:
    cfg = FLAG_SETS["imagenet256-like"]
    model = _classifier(cfg, random_classifier_state_dict(cfg))
    folder = model.save_pretrained(tmp_path / "clf")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["_class_name"] == "ADMClassifier" and config["num_res_blocks"] == 1

    loaded = ADMClassifier.from_pretrained(folder)
    assert loaded.config == cfg and not loaded.training
    x, t = _inputs(cfg)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t), model(x, t), rtol=0, atol=0)


def _load_error(folder, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match) as info:
        ADMClassifier.from_pretrained(folder)
    assert "\n" not in str(info.value)


def test_load_errors_are_one_line(tmp_path) -> None:
    cfg = FLAG_SETS["new-order-conv-resample-plain-norm"]
    folder = _classifier(cfg, random_classifier_state_dict(cfg)).save_pretrained(tmp_path / "clf")
    weights = load_file(str(folder / WEIGHTS_NAME))

    save_file({k: v for k, v in weights.items() if k != "pool.c_proj.bias"}, str(folder / WEIGHTS_NAME))
    _load_error(folder, ModelLoadError, "is missing 1 weight.*'pool.c_proj.bias'")
    save_file({**weights, "pool.extra": torch.zeros(1)}, str(folder / WEIGHTS_NAME))
    _load_error(folder, ModelLoadError, "has unexpected 1 weight.*'pool.extra'")
    save_file({**weights, "norm_out.weight": torch.zeros(5)}, str(folder / WEIGHTS_NAME))
    _load_error(folder, ModelLoadError, r"'norm_out.weight' has shape \(5,\), expected \(64,\)")
    (folder / WEIGHTS_NAME).write_bytes(b"not safetensors")
    _load_error(folder, ModelLoadError, "cannot read")

    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    _load_error(folder, ModelLoadError, "is not an ADMClassifier config")
    (folder / "config.json").write_text(json.dumps({"_class_name": "ADMClassifier", "width": 3}))
    _load_error(folder, ModelLoadError, "unknown ADMClassifierConfig field.*width")
    (folder / "config.json").unlink()
    _load_error(folder, MissingFileError, "has no config.json")


# --------------------------------------------------------------------------------------------
# Converting checkpoint files
# --------------------------------------------------------------------------------------------


def test_convert_checkpoint_file(tmp_path) -> None:
    cfg = FLAG_SETS["imagenet64-like"]
    p = random_classifier_state_dict(cfg)
    ckpt = tmp_path / "tiny_classifier.pt"
    torch.save(p, ckpt)
    out = convert_adm_classifier_checkpoint(ckpt, tmp_path / "converted", arch=cfg)
    assert out == tmp_path / "converted"
    model = ADMClassifier.from_pretrained(out)
    x, t = _inputs(cfg)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t), ref.classifier_forward(p, _flags(cfg), x, t), rtol=0, atol=1e-5)

    flags_file = tmp_path / "flags.json"
    flags_file.write_text(json.dumps(cfg.to_dict()))
    out = convert_adm_classifier_checkpoint(ckpt, tmp_path / "c2", arch=flags_file)
    assert ADMClassifier.from_pretrained(out).config == cfg


@pytest.mark.parametrize("name", list(CLASSIFIER_PRESETS))
def test_published_classifiers_are_recognised_and_convert(name: str) -> None:
    cfg = CLASSIFIER_PRESETS[name]
    shapes = adm_classifier_state_dict_shapes(cfg)
    assert sum(math.prod(s) for s in shapes.values()) == _PUBLISHED_PARAMETERS[name]
    state = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    assert infer_classifier_config(state) is cfg
    with torch.device("meta"):
        model = ADMClassifier(cfg)
    model.load_state_dict(convert_adm_classifier_state_dict(state, cfg), strict=True)
    assert model.pool.positional_embedding.shape == (65, cfg.level_channels[-1])  # 8x8 tokens + the mean
    assert model.mid_block.attentions[0].heads * 64 == cfg.level_channels[-1]


def test_full_size_stand_in_of_a_preset_is_recognised() -> None:
    state = random_classifier_state_dict("imagenet64", dtype=torch.float16)
    shapes = adm_classifier_state_dict_shapes(CLASSIFIER_PRESETS["imagenet64"])
    assert {k: tuple(v.shape) for k, v in state.items()} == shapes
    assert infer_classifier_config(state) is CLASSIFIER_PRESETS["imagenet64"]


def test_ambiguous_depth_is_settled_by_arch() -> None:
    # No attention in the encoder and equal widths: a down-sampling ResBlock looks like a plain one,
    # so depth 1 over 3 levels, depth 2 over 2 levels and depth 5 over 1 level all fit the keys.
    cfg = ADMClassifierConfig(
        image_size=16, model_channels=32, num_res_blocks=1, attention_resolutions=(), channel_mult=(1, 1, 1),
        num_head_channels=32, num_classes=3,
    )
    p = random_classifier_state_dict(cfg)
    assert infer_classifier_config(p, arch=cfg) is cfg
    other = ADMClassifierConfig(**{**cfg.to_dict(), "image_size": 8, "num_res_blocks": 2, "channel_mult": (1, 1)})
    assert infer_classifier_config(p, arch=other) is other  # the same weights read as another network
    with pytest.raises(ConversionError, match="matches no published guided-diffusion classifier"):
        infer_classifier_config(p)
    x, t = _inputs(cfg, torch.float64)
    p64 = {k: v.double() for k, v in p.items()}
    with torch.no_grad():
        torch.testing.assert_close(
            _classifier(cfg, p64).double()(x, t), ref.classifier_forward(p64, _flags(cfg), x, t), rtol=0, atol=1e-10
        )


def test_conversion_errors_are_one_line(tmp_path) -> None:
    cfg = FLAG_SETS["imagenet64-like"]
    p = random_classifier_state_dict(cfg)

    def fails(state: dict, match: str, arch=cfg) -> None:
        with pytest.raises(ConversionError, match=match) as info:
            infer_classifier_config(state, arch) if arch != "convert" else convert_adm_classifier_state_dict(state, cfg)
        assert "\n" not in str(info.value)

    missing = {k: v for k, v in p.items() if k != "middle_block.1.qkv.weight"}
    fails(missing, "missing 1 key.*middle_block.1.qkv.weight", arch="convert")
    fails({**p, "out.3.weight": torch.zeros(1)}, "unexpected key.*out.3.weight", arch="convert")
    fails({**p, "out.2.c_proj.bias": torch.zeros(3)}, r"shape \(3,\), expected \(7,\)", arch="convert")
    fails(random_adm_state_dict(ADMConfig(image_size=16, num_channels=32, num_res_blocks=1, attention_resolutions=(8,),
                                           channel_mult=(1, 2), num_head_channels=32, num_classes=3)),
          "UNetModel .it has output_blocks.*convert_adm_checkpoint")
    adaptive = {k: v for k, v in p.items() if not k.startswith("out.2.")}
    fails(adaptive, "no attention pool")
    fails(p, "does not fit arch 'imagenet64': model_channels is 32 in the checkpoint, 128 in the arch", "imagenet64")
    with pytest.raises(ConfigError, match="unknown ADM classifier arch 'imagenet1k'"):
        infer_classifier_config(p, "imagenet1k")

    with pytest.raises(MissingFileError, match="ADM classifier checkpoint not found"):
        convert_adm_classifier_checkpoint(tmp_path / "absent.pt", tmp_path / "out")
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint\n")
    with pytest.raises(ConversionError, match="not a loadable torch checkpoint"):
        convert_adm_classifier_checkpoint(garbage, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_config_validation() -> None:
    assert CLASSIFIER_PRESETS["imagenet64"] == ADMClassifierConfig()
    assert ADMClassifierConfig().pool_size == 8 and ADMClassifierConfig().attention_levels == (1, 2, 3)
    with pytest.raises(ConfigError, match="num_head_channels >= 1"):
        ADMClassifierConfig(num_head_channels=-1)
    with pytest.raises(ConfigError, match="not a multiple of num_head_channels=48"):
        ADMClassifierConfig(num_head_channels=48)
    with pytest.raises(ConfigError, match="does not halve"):
        ADMClassifierConfig(image_size=36)
