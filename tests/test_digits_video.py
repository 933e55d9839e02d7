"""digits-video: moving digits, their frame features, the class-conditional Wan family, training and the preset."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from optuna_diffusion.baselines import baseline_plan
from optuna_diffusion.errors import ConfigError, OptunaDiffusionError
from optuna_diffusion.families import WanClassFamily
from optuna_diffusion.families._wan_classes import SAMPLE_SHAPE_KEY, class_tokens
from optuna_diffusion.frames import frames_as_images
from optuna_diffusion.generation import ImageGenerator, SamplingSettings
from optuna_diffusion.models import DiffusionModel, load_diffusion_model
from optuna_diffusion.zoo import bundled_model_path
from optuna_diffusion.zoo.data import load_digits_images
from optuna_diffusion.zoo.frame_features import (
    InkWindowFeatures,
    ink_windows,
    motion_directions,
)
from optuna_diffusion.zoo.moving_digits import (
    DIRECTIONS,
    FIRST_START,
    FRAME_SIZE,
    LAST_START,
    NUM_FRAMES,
    VIDEO_NULL_CLASS,
    digit_of,
    direction_of,
    glide_corners,
    load_moving_digits,
    moving_digit,
    video_label,
)
from optuna_diffusion.zoo.video_training import (
    VideoTraining,
    save_video_model,
    train_digits_video,
)

TINY_TRAINING = dict(width=12, heads=2, layers=1, ffn=16, steps=2, batch_size=4, warmup_steps=1)
SETTINGS = SamplingSettings(solver="flow-euler", num_classes=40, null_class=40, batch_size=4)


def tiny_wan(frames: int = 4, size: int = 8) -> torch.nn.Module:
    """A random class-conditional Wan transformer of 4 frames of 8x8 pixels (41 one-hot label tokens)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=1, out_channels=1,
        text_dim=41, freq_dim=16, ffn_dim=16, num_layers=2, rope_max_seq_len=16,
    )
    model.register_to_config(**{SAMPLE_SHAPE_KEY: [1, frames, size, size]})
    return model.eval().requires_grad_(False)


def tiny_video_model() -> DiffusionModel:
    return DiffusionModel(tiny_wan(), {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000,
                                       "shift": 1.0}, "tiny-wan")


# Data ------------------------------------------------------------------------------------------------


def test_labels_hold_digit_and_direction():
    labels = video_label(torch.arange(10).repeat_interleave(4), torch.arange(4).repeat(10))
    assert labels.tolist() == list(range(40)) and VIDEO_NULL_CLASS == 40
    assert digit_of(labels).tolist() == torch.arange(10).repeat_interleave(4).tolist()
    assert direction_of(labels).tolist() == torch.arange(4).repeat(10).tolist()


@pytest.mark.parametrize(
    "direction, first, last", [(0, (3, -3), (3, 4)), (1, (3, 11), (3, 4)), (2, (-3, 3), (4, 3)), (3, (11, 3), (4, 3))]
)
def test_a_digit_glides_one_pixel_a_frame_staying_partly_in_view(direction, first, last):
    corners = glide_corners(direction, 3, FIRST_START)
    assert len(corners) == NUM_FRAMES and corners[0] == first and corners[-1] == last
    steps = [abs(a[0] - b[0]) + abs(a[1] - b[1]) for a, b in zip(corners, corners[1:])]
    assert set(steps) == {1}
    with pytest.raises(ValueError, match="start"):
        glide_corners(direction, 3, LAST_START + 1)


def test_moving_digits_cover_every_digit_in_every_direction_with_the_digit_intact():
    videos, labels = load_moving_digits()
    again, _ = load_moving_digits()
    assert videos.shape == (7188, 1, NUM_FRAMES, FRAME_SIZE, FRAME_SIZE) and torch.equal(videos, again)
    assert videos.min() == -1 and videos.max() == 1
    assert sorted(set(labels.tolist())) == list(range(40))
    assert torch.equal(direction_of(labels), torch.arange(4).repeat(len(labels) // 4))
    # Every frame shows part of its digit, never more than the whole of it.
    images, _ = load_digits_images()
    ink = ((videos + 1) / 2).sum(dim=(-2, -1))[:, 0]
    whole = ((images + 1) / 2).sum(dim=(-3, -2, -1)).repeat_interleave(4)[:, None]
    assert (ink > 0).all() and (ink <= whole + 1e-4).all() and (ink == whole).any(dim=1).float().mean() > 0.5
    other, _ = load_moving_digits(seed=1)
    assert not torch.equal(videos, other)


def test_motion_direction_is_read_right_on_every_real_clip():
    videos, labels = load_moving_digits()
    assert torch.equal(motion_directions(videos.transpose(1, 2)), direction_of(labels))


def test_ink_window_cuts_a_centred_digit_out_of_any_place():
    digit = -torch.ones(1, 8, 8)
    digit[0, 2:6, 3:5] = 1.0  # centred ink
    for direction in range(len(DIRECTIONS)):
        frames = moving_digit(digit, direction, across=5, start=1).transpose(0, 1)  # (F, 1, 16, 16), digit whole
        assert torch.equal(ink_windows(frames), digit.expand(NUM_FRAMES, 1, 8, 8))
    blank = -torch.ones(2, 1, 16, 16)
    assert torch.equal(ink_windows(blank), -torch.ones(2, 1, 8, 8))


def test_frame_features_are_the_digits_net_on_the_ink_window():
    from optuna_diffusion.fid import load_feature_extractor

    features = load_feature_extractor("digits-frames")
    digits_net = load_feature_extractor("digits")
    assert isinstance(features, InkWindowFeatures) and features.num_features == digits_net.num_features
    frames = torch.rand(5, 1, 16, 16) * 2 - 1
    assert torch.allclose(features(frames), digits_net(ink_windows(frames)))


# Frames ----------------------------------------------------------------------------------------------


def test_videos_become_their_frames_video_by_video():
    videos = torch.arange(2 * 3 * 1 * 2 * 2, dtype=torch.float32).reshape(2, 3, 1, 2, 2)
    frames, per_video = frames_as_images(videos)
    assert frames.shape == (6, 1, 2, 2) and torch.equal(frames[4], videos[1, 1]) and per_video == 3
    again, one = frames_as_images(frames)
    assert again is frames and one == 1
    with pytest.raises(OptunaDiffusionError, match="videos"):
        frames_as_images(torch.zeros(2, 2, 2))


def test_fid_of_videos_is_the_fid_of_their_frames():
    from optuna_diffusion.fid import FIDMeter, load_feature_extractor
    from optuna_diffusion.reference_stats import reference_stats

    extractor = load_feature_extractor("digits-frames")
    videos, _ = load_moving_digits()
    real = videos[:400].transpose(1, 2)
    stats = reference_stats(real, extractor)
    assert stats.num_samples == 400 * NUM_FRAMES
    fake = real[:40].flip(-1)
    by_video, by_frame = FIDMeter(stats, extractor), FIDMeter(stats, extractor)
    by_video.update(fake)
    by_frame.update(frames_as_images(fake)[0])
    assert by_video.num_samples == 40 * NUM_FRAMES and by_video.compute() == by_frame.compute()


# Family ----------------------------------------------------------------------------------------------


def test_a_bare_wan_transformer_gets_the_class_family_and_its_video_shape():
    model = tiny_video_model()
    assert isinstance(model.family, WanClassFamily) and model.sample_shape == (1, 4, 8, 8)
    with ImageGenerator(model, SETTINGS) as generator:
        videos = torch.cat(list(generator.batches(baseline_plan("uniform", 2, model.schedule), 6)))
        raw = torch.cat(list(generator.batches(baseline_plan("uniform", 2, model.schedule), 6, decoded=False)))
    assert videos.shape == (6, 4, 1, 8, 8) and raw.shape == (6, 1, 4, 8, 8)
    assert torch.equal(videos, raw.transpose(1, 2))


def test_guidance_is_the_conditional_and_null_token_calls_combined():
    from optuna_diffusion.families import Conditions

    model = tiny_video_model()
    settings = dataclasses.replace(SETTINGS, guidance_scale=3.0)
    labels = torch.tensor([0, 17, 39])
    x = torch.randn(3, 1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor(700.0)
    guided = model.family.predict(model, x, t, Conditions(size=3, labels=labels), settings)
    call = lambda tokens: model.denoiser(x, timestep=t.expand(3), encoder_hidden_states=tokens, return_dict=False)[0]  # noqa: E731
    conditional = call(class_tokens(labels, 41))
    unconditional = call(class_tokens(torch.full_like(labels, 40), 41))
    assert torch.allclose(guided, unconditional + 3.0 * (conditional - unconditional), atol=1e-5)
    assert not torch.allclose(conditional, unconditional)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(num_classes=None, null_class=None), "num_classes"),
        (dict(guidance_scale=2.0, null_class=3), "null class is text_dim - 1 = 40"),
        (dict(num_classes=50), "one-hot label tokens"),
    ],
)
def test_settings_that_do_not_fit_the_label_tokens_are_one_line_errors(change, message):
    model = tiny_video_model()
    with pytest.raises(ConfigError, match=message):
        ImageGenerator(model, dataclasses.replace(SETTINGS, **change))


def test_a_wan_transformer_without_its_sample_shape_says_how_to_give_it():
    model = tiny_video_model()
    model.denoiser.register_to_config(**{SAMPLE_SHAPE_KEY: None})
    with pytest.raises(ConfigError, match=f'"{SAMPLE_SHAPE_KEY}": \\[channels, frames, height, width\\]'):
        model.sample_shape
    model.denoiser.register_to_config(**{SAMPLE_SHAPE_KEY: [1, 4, 7, 8]})
    with pytest.raises(ConfigError, match="divisible by the patch size"):
        model.sample_shape


def test_macs_count_the_video_call():
    from optuna_diffusion.evaluation import PlanMacs

    model = tiny_video_model()
    macs = PlanMacs.for_model(model, SETTINGS)
    plan = baseline_plan("uniform", 3, model.schedule)
    assert macs.total(plan) == 3 * macs.table.full > 0


# Training and loading --------------------------------------------------------------------------------


def test_training_writes_a_folder_the_loader_reads(tmp_path):
    from safetensors import safe_open

    report = train_digits_video(tmp_path, VideoTraining(**TINY_TRAINING), log=lambda _: None)
    assert report["video"]["steps"] == 2 and report["threads"] == torch.get_num_threads()
    assert json.loads((tmp_path / "training.json").read_text()) == report
    with safe_open(str(tmp_path / "transformer" / "diffusion_pytorch_model.safetensors"), "pt") as stored:
        assert {stored.get_tensor(name).dtype for name in stored.keys()} == {torch.float16}
    model = load_diffusion_model(str(tmp_path))
    assert model.family.name == "wan-classes" and model.sample_shape == (1, NUM_FRAMES, FRAME_SIZE, FRAME_SIZE)
    assert {p.dtype for p in model.denoiser.parameters()} == {torch.float32} and model.schedule.kind == "flow"


def test_training_is_seeded(tmp_path):
    settings = VideoTraining(**TINY_TRAINING, weights_dtype="float32")
    train_digits_video(tmp_path / "a", settings, log=lambda _: None)
    train_digits_video(tmp_path / "b", settings, log=lambda _: None)
    a = load_diffusion_model(str(tmp_path / "a")).denoiser.state_dict()
    b = load_diffusion_model(str(tmp_path / "b")).denoiser.state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)


@pytest.mark.parametrize(
    "bad, message",
    [(dict(width=16, heads=2), "multiple of 6"), (dict(patch_size=(3, 4, 4)), "patch_size"), (dict(steps=0), "`steps`"),
     (dict(label_dropout=1.0), "label_dropout"), (dict(weights_dtype="int8"), "weights_dtype")],
)
def test_training_settings_are_checked(bad, message):
    with pytest.raises(ValueError, match=message):
        VideoTraining(**bad)


def test_saved_weights_load_alike_through_the_loader(tmp_path):
    model = tiny_wan()
    save_video_model(model, tmp_path, "float32")
    loaded = load_diffusion_model(str(tmp_path)).denoiser
    assert all(torch.equal(value, loaded.state_dict()[name]) for name, value in model.state_dict().items())


# The bundled model and its preset ----------------------------------------------------------------------


def test_bundled_model_is_a_plain_diffusers_folder_under_3_mb():
    from diffusers import FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

    folder = bundled_model_path("digits-video")
    config = WanTransformer3DModel.load_config(folder, subfolder="transformer")
    assert config["text_dim"] == VIDEO_NULL_CLASS + 1 and config[SAMPLE_SHAPE_KEY] == [1, NUM_FRAMES, FRAME_SIZE, FRAME_SIZE]
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler")
    assert scheduler.config.num_train_timesteps == 1000 and scheduler.config.shift == 1.0
    weights = list(folder.rglob("*.safetensors"))
    assert [w.parent.name for w in weights] == ["transformer"] and weights[0].stat().st_size <= 3 * 1024 * 1024
    training = json.loads((folder / "training.json").read_text())["video"]
    # `zoo train digits-video` with its defaults trains the shipped model
    recorded = {key: training[key] for key in dataclasses.asdict(VideoTraining())}
    assert recorded == {**dataclasses.asdict(VideoTraining()), "patch_size": list(VideoTraining().patch_size)}
    assert training["seconds"] > 0


def test_bundled_model_two_step_videos_are_seeded():
    model = load_diffusion_model("digits-video")
    assert model.family.name == "wan-classes" and model.sample_shape == (1, NUM_FRAMES, FRAME_SIZE, FRAME_SIZE)
    plan = baseline_plan("uniform", 2, model.schedule)

    def videos(seed: int) -> torch.Tensor:
        with ImageGenerator(model, dataclasses.replace(SETTINGS, seed=seed)) as generator:
            return torch.cat(list(generator.batches(plan, 6)))

    first, again, other = videos(0), videos(0), videos(1)
    assert first.shape == (6, NUM_FRAMES, 1, FRAME_SIZE, FRAME_SIZE) and torch.isfinite(first).all()
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_preset_scores_a_plan_of_the_bundled_model_by_frame_fid():
    from optuna_diffusion.study import build_evaluator
    from optuna_diffusion.study_config import load_study_config

    config = load_study_config("digits-video")
    assert config.model.source == "digits-video" and config.fid.features == "digits-frames"
    config = dataclasses.replace(config, sampling=dataclasses.replace(config.sampling, batch_size=16, prefix_cache_mb=0))
    evaluator = build_evaluator(config)
    try:
        plan = baseline_plan("uniform", 2, evaluator.generator.schedule)
        result = evaluator.evaluate(plan, 16, keep_images=4)
    finally:
        evaluator.close()
    assert result.ok and result.fid > 0 and result.macs == 2 * evaluator.macs_table.full
    assert result.images.shape == (4, NUM_FRAMES, 1, FRAME_SIZE, FRAME_SIZE)


def test_zoo_train_digits_video_writes_a_loadable_model_folder(tmp_path):
    from typer.testing import CliRunner

    from optuna_diffusion.cli import app

    result = CliRunner().invoke(app, ["zoo", "train", "digits-video", "--out", str(tmp_path), "--steps", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "training.json").read_text())["video"]["steps"] == 1
    assert load_diffusion_model(str(tmp_path)).family.name == "wan-classes"
