"""Text encoders run once per prompt set and are then freed: nothing of them stays reachable, results unchanged."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from optuna_diffusion.errors import ConfigError
from optuna_diffusion.models import model_from_pipeline
from optuna_diffusion.pipelines import TEXT_ENCODERS
from optuna_diffusion.plan import Plan
from optuna_diffusion.prompts import PromptSet
from optuna_diffusion.generation import ImageGenerator, SamplingSettings

from .tiny_pipelines import tiny_sd3

PROMPTS = ["a red bicycle leaning against a brick wall", "a cat asleep on a green sofa", "a bowl of tomato soup"]
PLAN = Plan((1000, 750, 400, 100), schedule_kind="flow")
SETTINGS = SamplingSettings(solver="flow-euler", guidance_scale=5.0, batch_size=2, seed=4)


def _images(generator: ImageGenerator) -> torch.Tensor:
    return torch.cat(list(generator.batches(PLAN, 3)))


def test_freed_text_encoders_are_unreachable_and_the_images_unchanged():
    prompts = PromptSet(PROMPTS, negative_prompt="noisy")
    with ImageGenerator(model_from_pipeline(tiny_sd3(), source="tiny-sd3"), SETTINGS, prompts=prompts) as generator:
        kept = _images(generator)

    model = model_from_pipeline(tiny_sd3(), source="tiny-sd3")
    encoders = [weakref.ref(getattr(model.pipeline, name)) for name in TEXT_ENCODERS]
    with ImageGenerator(model, SETTINGS, prompts=prompts) as generator:
        model.prompt_encoder.encode_all(prompts, negatives=True)
        calls = model.prompt_encoder.encoder_calls
        dropped = model.prompt_encoder.release()
        gc.collect()

        assert set(TEXT_ENCODERS) <= set(dropped)
        assert all(encoder() is None for encoder in encoders)  # no reference left anywhere, the generator's included
        freed = _images(generator)
        assert model.prompt_encoder.encoder_calls == calls  # every batch took cached embeddings
        with pytest.raises(ConfigError, match="were freed after encoding"):
            model.prompt_encoder.positive("a prompt the study never had")

    assert torch.equal(freed, kept)


def test_a_study_frees_its_text_encoders_before_the_search(tmp_path, monkeypatch):
    import optuna_diffusion.study as study
    from optuna_diffusion.study import build_evaluator
    from optuna_diffusion.study_config import load_study_config, with_overrides

    loaded = []
    load = study.load_diffusion_model

    def load_and_watch(*args, **kwargs):
        model = load(*args, **kwargs)
        loaded.extend(weakref.ref(getattr(model.pipeline, name)) for name in TEXT_ENCODERS
                      if getattr(model.pipeline, name, None) is not None)
        return model

    monkeypatch.setattr(study, "load_diffusion_model", load_and_watch)  # the name build_evaluator calls
    config = with_overrides(load_study_config("digits-t2i"), num_samples=8, batch_size=8)
    evaluator = build_evaluator(config, device="cpu", teacher_dir=tmp_path)
    try:
        gc.collect()
        assert loaded and all(encoder() is None for encoder in loaded)
        assert evaluator.per_image_macs["text_encoders"] > 0  # counted before they were freed
        assert evaluator.evaluate(Plan((900, 600, 300, 50)), 8).ok
    finally:
        evaluator.close()
