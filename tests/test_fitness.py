"""Fitness metrics: the [fitness] section, teacher distance (stored once, resumable), CLIP score, re-scoring."""

import math

import numpy as np
import optuna
import pytest
import torch

from optuna_diffusion.baselines import baseline_plan
from optuna_diffusion.errors import ConfigError, ModelLoadError
from optuna_diffusion.evaluation import PlanEvaluator
from optuna_diffusion.fidelity import FidelityPolicy
from optuna_diffusion.fitness import ClipScoreFitness, FitnessSettings, TeacherFitness, TeacherStore
from optuna_diffusion.fitness._teacher import CHUNK, distances
from optuna_diffusion.objective import PlanObjective
from optuna_diffusion.plan import Plan
from optuna_diffusion.generation import SamplingSettings
from optuna_diffusion.study_config import load_study_config, parse_study_config

SETTINGS = SamplingSettings(num_classes=10, batch_size=32)


def teacher_evaluator(model, distance="psnr", folder=None, steps=20, settings=SETTINGS):
    store = TeacherStore(folder) if folder is not None else None
    return PlanEvaluator(model, settings, fitness=TeacherFitness(distance, steps=steps, store=store))


# [fitness] ---------------------------------------------------------------------------------------------


def test_the_digits_study_keeps_fid():
    config = load_study_config("digits")
    assert config.fitness == FitnessSettings() and config.fitness.metrics == ("fid",)
    assert config.low_fidelity_samples("timesteps") == 125


@pytest.mark.parametrize("body, message", [
    ('metric = "lpips"', "line 3: fitness.metric must be one of fid, clip-score, teacher, got 'lpips'"),
    ('metric = "teacher"\nteacher_distance = "l1"', "line 4: fitness.teacher_distance must be one of psnr, ssim, mse"),
    ('metric = "teacher"\nrescore = "teacher"', "line 4: fitness.rescore = 'teacher' is the search metric itself"),
    ('metric = "clip-score"', "line 3: fitness: clip-score needs clip_model"),
    ('rescore_samples = 100', "line 3: fitness.rescore_samples needs fitness.rescore"),
    ('metric = "teacher"\nteacher_steps = 1', "line 4: fitness.teacher_steps must be >= 2"),
])
def test_bad_fitness_settings_are_one_line_errors_naming_file_and_line(body, message):
    with pytest.raises(ConfigError) as caught:
        parse_study_config(f"[model]\n[fitness]\n{body}\n", name="x", origin="x.toml")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_multi_fidelity_is_for_fid_only(tiny_model):
    config = parse_study_config('[fitness]\nmetric = "teacher"\n[timesteps]\nlow_fidelity_fraction = 0.25\n', name="x", origin="x")
    assert config.low_fidelity_samples("timesteps") is None
    evaluator = teacher_evaluator(tiny_model)
    with pytest.raises(ConfigError, match="needs the FID fitness"):
        PlanObjective(evaluator, num_samples=32, fidelity=FidelityPolicy(low_samples=8))
    evaluator.close()


# Teacher ------------------------------------------------------------------------------------------------


def test_teacher_outputs_are_stored_once_and_reused(tiny_model, tmp_path):
    evaluator = teacher_evaluator(tiny_model, folder=tmp_path)
    count = CHUNK + 28
    first = evaluator.evaluate(Plan([900, 500, 100]), count).fid
    teacher_work = count * 20 + count * 3
    assert evaluator.generator.image_evaluations == teacher_work
    (folder,) = tmp_path.glob("teacher-*")
    assert sorted(p.name for p in folder.iterdir()) == ["about.json", "chunk-00000000-00000100.pt", "chunk-00000100-00000128.pt"]
    evaluator.close()

    other = teacher_evaluator(tiny_model, folder=tmp_path)  # another worker sharing the folder
    assert other.evaluate(Plan([900, 500, 100]), count).fid == first
    assert other.generator.image_evaluations == count * 3  # no teacher generated
    other.close()


def test_a_missing_chunk_is_generated_again_and_nothing_else(tiny_model, tmp_path):
    evaluator = teacher_evaluator(tiny_model, folder=tmp_path)
    count = 2 * CHUNK
    expected = evaluator.fitness.targets(count).clone()
    evaluator.close()
    (folder,) = tmp_path.glob("teacher-*")
    (folder / "chunk-00000100-00000200.pt").unlink()  # a worker stopped before writing it

    resumed = teacher_evaluator(tiny_model, folder=tmp_path)
    targets = resumed.fitness.targets(count)
    assert resumed.generator.image_evaluations == CHUNK * 20
    assert torch.equal(targets, expected)
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*"))
    resumed.close()


def test_a_worker_dying_mid_write_leaves_no_chunk_and_no_temporary_file(tiny_model, tmp_path, monkeypatch):
    evaluator = teacher_evaluator(tiny_model, folder=tmp_path)
    save = torch.save

    def dies_mid_write(obj, handle, *args, **kwargs):
        handle.write(b"half a chunk")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        evaluator.fitness.targets(8)
    monkeypatch.setattr(torch, "save", save)
    (folder,) = tmp_path.glob("teacher-*")
    assert sorted(p.name for p in folder.iterdir()) == ["about.json"]
    evaluator.close()

    again = teacher_evaluator(tiny_model, folder=tmp_path)
    assert again.fitness.targets(8).shape == (8, 1, 8, 8)
    assert sorted(p.name for p in folder.iterdir()) == ["about.json", "chunk-00000000-00000008.pt"]
    again.close()


def test_teacher_outputs_depend_on_the_seed(tiny_model, tmp_path):
    for seed in (0, 1):
        evaluator = teacher_evaluator(tiny_model, folder=tmp_path, settings=SamplingSettings(num_classes=10, batch_size=32, seed=seed))
        evaluator.fitness.targets(8)
        evaluator.close()
    assert len(list(tmp_path.glob("teacher-*"))) == 2


@pytest.mark.parametrize("distance", ["psnr", "ssim", "mse"])
def test_the_teacher_plan_is_at_distance_zero_and_more_steps_come_closer(tiny_model, distance):
    evaluator = teacher_evaluator(tiny_model, distance)
    teacher = evaluator.fitness.plan
    assert teacher.num_steps == 20 and teacher.is_full_network
    own = evaluator.evaluate(teacher, 40).fid
    assert own <= {"psnr": -60.0, "ssim": 1e-6, "mse": 1e-8}[distance]
    schedule = evaluator.generator.schedule
    few, more = (evaluator.evaluate(baseline_plan("uniform", k, schedule), 40).fid for k in (2, 10))
    assert own < more < few
    evaluator.close()


def test_distances_by_hand():
    target = torch.zeros(2, 1, 4, 4)
    samples = torch.stack([torch.zeros(1, 4, 4), torch.full((1, 4, 4), 0.5)])
    assert distances(samples, target, "mse").tolist() == [0.0, 0.25]
    # 8-bit pixels: 0 -> 128 and 0.5 -> 191, one step of 63/255 apart; identical images are capped at 100 dB.
    psnr = distances(samples, target, "psnr")
    assert psnr[0] == pytest.approx(-100.0) and psnr[1] == pytest.approx(-20 * math.log10(255 / 63), rel=1e-5)
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert distances(images, images, "ssim").tolist() == pytest.approx([0.0] * 3, abs=1e-3)
    assert (distances(images, images.roll(1, 0), "ssim") > 0.1).all()
    assert distances(samples, target, "ssim").shape == (2,)  # 4 x 4 images: a narrower window


@pytest.mark.parametrize("distance", ["psnr", "ssim"])
def test_a_video_is_scored_frame_by_frame(distance):
    generator = torch.Generator().manual_seed(1)
    videos = torch.rand(2, 3, 3, 8, 8, generator=generator) * 2 - 1  # (N, F, C, H, W)
    teacher = torch.rand(2, 3, 3, 8, 8, generator=generator) * 2 - 1
    teacher[0, 1] = videos[0, 1]  # one frame identical: PSNR capped, SSIM 1
    per_frame = torch.stack([distances(videos[:, f], teacher[:, f], distance) for f in range(3)], dim=1)

    scores = distances(videos, teacher, distance)

    assert scores.shape == (2,) and torch.allclose(scores, per_frame.mean(1))
    assert per_frame[0, 1] == pytest.approx(-100.0 if distance == "psnr" else 0.0, abs=1e-3)


def test_teacher_steps_beyond_the_schedule_are_an_error(tiny_model):
    with pytest.raises(ConfigError, match="teacher_steps = 2000 exceeds the model's 1000"):
        teacher_evaluator(tiny_model, steps=2000)
    teacher_evaluator(tiny_model).close()  # the block switch was removed


def test_default_teacher_steps_are_100(tiny_model):
    evaluator = teacher_evaluator(tiny_model, steps=None)
    assert evaluator.fitness.plan.num_steps == 100
    evaluator.close()


# CLIP score ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """A tiny random CLIPModel with a character-level tokenizer, saved as a local folder."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from .tiny_pipelines import tiny_clip_tokenizer

    torch.manual_seed(0)
    text = dict(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
                num_attention_heads=4, num_hidden_layers=2, vocab_size=1000, max_position_embeddings=77)
    vision = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=30, patch_size=6)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30})
    folder = tmp_path_factory.mktemp("tiny-clip")
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor, tokenizer=tiny_clip_tokenizer()).save_pretrained(folder)
    return folder


def test_clip_score_is_the_mean_clipped_cosine_of_images_and_prompts(clip_folder):
    from transformers import CLIPModel, CLIPProcessor

    from optuna_diffusion.models import model_from_pipeline
    from optuna_diffusion.prompts import PromptSet

    from .test_pipelines import DDPM_STEPS, PROMPTS
    from .tiny_pipelines import tiny_sd

    model = model_from_pipeline(tiny_sd(), source="tiny-sd")
    prompts = PromptSet(PROMPTS)
    evaluator = PlanEvaluator(model, SamplingSettings(solver="dpmpp-2m", batch_size=2), prompts=prompts,
                              fitness=ClipScoreFitness(clip_folder))
    plan = Plan(DDPM_STEPS)
    value = evaluator.evaluate(plan, 5).fid
    images = evaluator.samples(plan, 5)
    evaluator.close()

    # CLIP score by hand: max(100 cos(image embedding, prompt embedding), 0), averaged (Hessel et al. 2021).
    clip, processor = CLIPModel.from_pretrained(clip_folder), CLIPProcessor.from_pretrained(clip_folder)
    pixels = ((images + 1) * 127.5).round().to(torch.uint8)
    inputs = processor(text=prompts.texts(0, 5), images=list(pixels), return_tensors="pt", padding=True)
    with torch.no_grad():
        out = clip(**inputs)
    cosines = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds)
    assert value == pytest.approx(-float((100 * cosines).clamp_min(0).mean()), rel=1e-4, abs=1e-4)


def test_clip_score_needs_prompts_and_a_folder(tiny_model, clip_folder, tmp_path):
    with pytest.raises(ConfigError, match="clip-score needs a text-to-image pipeline with prompts; tiny has none"):
        PlanEvaluator(tiny_model, SETTINGS, fitness=ClipScoreFitness(clip_folder))
    with pytest.raises(ModelLoadError, match="does not exist"):
        ClipScoreFitness(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="cannot load a CLIP model") as caught:
        ClipScoreFitness(tmp_path / "empty")
    assert "\n" not in str(caught.value)


# A study on the teacher, its front re-scored by FID ---------------------------------------------------------

TEACHER_STUDY = """
[model]
source = "digits"
[sampling]
num_classes = 10
null_class = 10
[fitness]
metric = "teacher"
teacher_steps = 10
rescore = "fid"
rescore_samples = 32
[timesteps]
k_min = 3
k_max = 4
population_size = 4
"""


def test_a_teacher_search_stores_its_teacher_beside_the_study_and_rescores_its_front_by_fid(tmp_path):
    from typer.testing import CliRunner

    from optuna_diffusion.cli import app
    from optuna_diffusion.rescore import stored_rescore
    from optuna_diffusion.study import build_evaluator
    from optuna_diffusion.study_config import load_study_config
    from optuna_diffusion.trial_plan import stored_plan

    study_file = tmp_path / "tiny-teacher.toml"
    study_file.write_text(TEACHER_STUDY)
    storage = f"sqlite:///{tmp_path / 'tiny.db'}"
    common = ["--config", str(study_file), "--storage", storage]
    result = CliRunner().invoke(app, ["optimize", *common, "--stage", "timesteps", "--n-trials", "5", "--num-samples", "16",
                                      "--batch-size", "16"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "tiny-teacher-artifacts" / "teacher").glob("teacher-*/chunk-*.pt"))) == 1

    study = optuna.load_study(study_name="tiny-teacher-timesteps", storage=storage)
    assert study.metric_names == ["-PSNR", "MACs"]
    assert all(t.user_attrs["metric"] == "teacher" and t.user_attrs["batch_size"] == 16 for t in study.trials)
    assert all("fidelity" not in t.user_attrs for t in study.trials)  # multi-fidelity is FID's
    label, values = stored_rescore(study)
    assert label == "FID@32" and values
    config = load_study_config(config=study_file)
    fid_config = config.__class__.from_dict({**config.to_dict(), "fitness": {}})
    evaluator = build_evaluator(fid_config)
    for number, value in values.items():
        assert value == pytest.approx(evaluator.evaluate(stored_plan(study.trials[int(number)]), 32).fid, rel=1e-6)
    evaluator.close()

    shown = CliRunner().invoke(app, ["show", *common, "--stage", "timesteps"])
    assert shown.exit_code == 0, shown.output
    assert "-PSNR" in shown.output and "FID@32" in shown.output
    assert f"{next(iter(values.values())):12.3f}" in shown.output


# FID against a folder of real images --------------------------------------------------------------------


def test_fid_against_an_image_folder_equals_fid_against_the_same_images(tmp_path):
    from PIL import Image

    from optuna_diffusion.fid import load_feature_extractor
    from optuna_diffusion.reference_stats import reference_stats
    from optuna_diffusion.image_folder import load_image_folder
    from optuna_diffusion.study import make_fitness
    from optuna_diffusion.zoo.data import load_digits_images

    images, _ = load_digits_images()
    pixels = ((images[:40] + 1) * 127.5).round().to(torch.uint8)
    folder = tmp_path / "real"
    folder.mkdir()
    for i, image in enumerate(pixels):
        Image.fromarray(image[0].numpy(), mode="L").save(folder / f"{i:03d}.png")
    loaded = load_image_folder(folder)
    assert loaded.shape == (40, 1, 8, 8) and torch.equal(loaded, pixels.float() / 127.5 - 1)

    config = parse_study_config(f'[fid]\nreference = "{folder}"\n', name="x", origin="x")
    meter = make_fitness("fid", config)
    expected = reference_stats(loaded, load_feature_extractor("digits"))
    assert np.allclose(meter.meter.stats.mu, expected.mu) and np.allclose(meter.meter.stats.sigma, expected.sigma)


def test_an_image_folder_of_mixed_sizes_is_a_one_line_error(tmp_path):
    from PIL import Image

    from optuna_diffusion.image_folder import load_image_folder

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (9, 8)).save(tmp_path / "b.png")
    with pytest.raises(ConfigError, match="images of 2 sizes"):
        load_image_folder(tmp_path)
    (tmp_path / "b.png").unlink()
    with pytest.raises(ConfigError, match="holds 1 images"):
        load_image_folder(tmp_path)


def test_fid_and_clip_score_of_videos_are_over_their_frames(tmp_path, clip_folder):
    from optuna_diffusion.fid import load_feature_extractor
    from optuna_diffusion.fitness import FIDFitness
    from optuna_diffusion.prompts import PromptSet
    from optuna_diffusion.reference_stats import load_reference_npz

    from .stand_ins import stand_in_features

    features, reference = stand_in_features(tmp_path, 8)
    videos = torch.rand(4, 3, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1  # (N, F, C, H, W)
    frames = videos.flatten(0, 1)
    prompts = PromptSet(["a red kite", "a green door"])

    def fid(samples):
        meter = FIDFitness(load_reference_npz(reference), load_feature_extractor(features))
        meter.begin(len(samples))
        meter.update(samples, 0, len(samples))
        return meter.compute()

    def clip(samples, texts):
        meter = ClipScoreFitness(clip_folder)
        meter.prompts = texts  # what bind() takes from the evaluator's generator
        meter.begin(len(samples))
        meter.update(samples, 0, len(samples))
        return meter.compute()

    assert fid(videos) == pytest.approx(fid(frames), rel=1e-9)
    per_frame_prompts = PromptSet([text for text in prompts.texts(0, 4) for _ in range(3)])
    assert clip(videos, prompts) == pytest.approx(clip(frames, per_frame_prompts), rel=1e-6)
