"""The digits-t2i prompt language, its generated tokenizer and its training code (tiny runs only)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from optuna_diffusion.prompts import PromptSet
from optuna_diffusion.zoo.data import load_digits_images
from optuna_diffusion.zoo.digit_prompts import (
    DIGIT_WORDS,
    caption,
    digit_of_prompt,
    ink_mass,
    language_words,
    measure_attributes,
    prompt_lines,
    slant,
)

pytest.importorskip("transformers")
PROMPT_FILE = Path(__file__).resolve().parents[1] / "optuna_diffusion" / "prompt_sets" / "digits.txt"


def test_attributes_are_measured_within_each_digit():
    images, labels = load_digits_images()
    attributes = measure_attributes(images, labels)
    mass, lean = ink_mass(images), slant(images)
    for digit in range(10):
        index = [i for i in range(len(labels)) if labels[i] == digit]
        thin = [mass[i] for i in index if attributes[i].thickness == "thin"]
        thick = [mass[i] for i in index if attributes[i].thickness == "thick"]
        assert max(thin) < min(thick)
        left = [lean[i] for i in index if attributes[i].slant == "backslanted"]
        right = [lean[i] for i in index if attributes[i].slant == "slanted"]
        assert max(left) < min(right)


def test_slant_is_positive_when_the_top_leans_right():
    image = -torch.ones(1, 1, 8, 8)
    for row in range(8):
        image[0, 0, row, 7 - row] = 1.0  # a stroke from bottom left to top right
    assert slant(image).item() > 0


def test_captions_name_their_digit_and_the_prompt_file_is_drawn_from_the_language():
    rng = random.Random(0)
    images, labels = load_digits_images()
    attributes = measure_attributes(images, labels)
    for i in range(200):
        assert digit_of_prompt(caption(int(labels[i]), attributes[i], rng)) == int(labels[i])
    prompts = PromptSet.from_file(PROMPT_FILE)
    assert len(prompts) == 300 and [p.text for p in prompts] == prompt_lines(300)
    assert {digit_of_prompt(p.text) for p in prompts} == set(range(10))
    words = set(language_words())
    assert all(set(p.text.replace(",", " ,").split()) <= words for p in prompts)
    assert any("thin" in p.text for p in prompts) and any("slanted" in p.text for p in prompts)


def test_the_generated_tokenizer_has_no_unknown_tokens(tmp_path):
    from transformers import CLIPTokenizer

    from optuna_diffusion.zoo.clip_vocab import write_clip_tokenizer
    from optuna_diffusion.zoo.t2i_training import MAX_PROMPT_TOKENS

    write_clip_tokenizer(tmp_path, language_words(), MAX_PROMPT_TOKENS)
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path)
    for text in prompt_lines(300):
        ids = tokenizer(text).input_ids
        assert len(ids) <= MAX_PROMPT_TOKENS
        assert tokenizer.unk_token_id not in ids[1:-1], text
    for word in DIGIT_WORDS:
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1


@pytest.mark.slow
def test_a_tiny_training_run_writes_a_deterministic_stable_diffusion_pipeline(tmp_path):
    from diffusers import StableDiffusionPipeline

    from optuna_diffusion.zoo.t2i_training import T2ITraining, train_digits_t2i

    report = train_digits_t2i(tmp_path, T2ITraining(vae_steps=3, steps=3, batch_size=8, vae_batch_size=8), log=lambda _: None)
    assert report["settings"]["steps"] == 3 and report["seconds"] > 0
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path)
    assert pipe.vae.config.scaling_factor > 0 and pipe.unet.dtype == torch.float32

    def generate():
        return pipe(["a thin, slanted 7"] * 8, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                    output_type="pt").images

    first = generate()
    assert first.shape == (8, 1, 32, 32)
    assert torch.equal(first, generate())


def test_the_shipped_pipeline_loads_through_diffusers_and_generates_deterministically():
    from diffusers import StableDiffusionPipeline

    from optuna_diffusion.zoo import bundled_model_path

    pipe = StableDiffusionPipeline.from_pretrained(bundled_model_path("digits-t2i"))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.unet.dtype == pipe.text_encoder.dtype == torch.float32  # fp16 on disk, float32 loaded

    def generate():
        return pipe(["a thin, slanted 7", "the number 3"] * 4, num_inference_steps=2, guidance_scale=2.0,
                    generator=torch.Generator().manual_seed(0), output_type="pt").images

    first = generate()
    assert first.shape == (8, 1, 32, 32) and torch.isfinite(first).all()
    assert torch.equal(first, generate())


def test_the_preset_runs_the_shipped_pipeline_with_its_prompts_teacher_fitness_and_fid_rescoring():
    from optuna_diffusion.baselines import baseline_plan
    from optuna_diffusion.study import build_evaluator
    from optuna_diffusion.study_config import load_study_config, with_overrides

    config = load_study_config("digits-t2i")
    assert [p.text for p in config.prompts.load()] == prompt_lines(300)
    assert config.fitness.metric == "teacher" and config.fitness.rescore == "fid"
    evaluator = build_evaluator(with_overrides(config, batch_size=8))
    try:
        assert evaluator.model.family.name == "stable-diffusion" and evaluator.model.source == "digits-t2i"
        plan = baseline_plan("uniform", 2, evaluator.generator.schedule)
        teacher = evaluator.evaluate(plan, 8)
        fid = evaluator.evaluate(plan, 8, fitness=evaluator.rescore_fitness)
    finally:
        evaluator.close()
    assert teacher.ok and teacher.metric == "teacher" and fid.ok and fid.fid > 0


def test_the_digits_feature_net_reads_a_32x32_digit_as_its_8x8_original():
    from optuna_diffusion.fid import load_feature_extractor
    from optuna_diffusion.zoo.t2i_training import upscale

    net = load_feature_extractor("digits")
    digits = load_digits_images()[0][:16]
    shown = upscale(digits)
    assert torch.allclose(net(shown), net(digits), atol=1e-5)
    assert torch.allclose(net(shown.repeat(1, 3, 1, 1)), net(digits), atol=1e-5)  # colour averaged to grey


def test_the_exported_call_of_the_bundled_pipeline_runs_wherever_the_package_is_installed(tmp_path, monkeypatch):
    import json

    from optuna_diffusion.baselines import baseline_plan
    from optuna_diffusion.export_call import study_pipeline_call
    from optuna_diffusion.study import build_evaluator
    from optuna_diffusion.study_config import load_study_config

    config = load_study_config("digits-t2i")
    evaluator = build_evaluator(config)
    plan = baseline_plan("uniform", 2, evaluator.generator.schedule)
    evaluator.close()
    code = study_pipeline_call(config, plan, "plan.json")
    assert 'from_pretrained(bundled_model_path("digits-t2i"))' in code
    (tmp_path / "plan.json").write_text(json.dumps({"plan": plan.to_dict()}))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "plan.py", "exec"), namespace)  # the file export writes, run as a user would
    assert [image.size for image in namespace["images"]] == [(32, 32)] * 4  # the study's first 4 samples
