"""The ``plan.py`` that ``export`` writes, run as written, makes the study's own first samples, per family.

Each case saves a tiny random pipeline of a family (its stock scheduler, e.g. SD's PNDM, SDXL's Euler
with leading spacing), sets up a study on it (image size, solver, guidance, seed, prompts or class
labels), writes the plan and its ``plan.py`` as ``export`` does, runs ``plan.py`` unchanged, and compares
its images with the project's images of the same samples (as the search scored them), to one level of
8 bits (the pipeline's output is a PIL image).
"""

from __future__ import annotations

import dataclasses
import json
import runpy

import numpy as np
import pytest
import torch

from optuna_diffusion.models import load_diffusion_model
from optuna_diffusion.export_call import study_pipeline_call
from optuna_diffusion.plan import Plan
from optuna_diffusion.generation import ImageGenerator
from optuna_diffusion.study_config import load_study_config, with_overrides

from .tiny_pipelines import tiny_dit, tiny_flux, tiny_pixart, tiny_sd, tiny_sd3, tiny_sdxl

DDPM = (901, 651, 301, 51)
FLOW = (1000, 750, 400, 100)

# case: (preset, stand-in, overrides, sampling changes, plan steps)
CASES = {
    "sd at twice its default size": ("sd15", tiny_sd, dict(image_size=64), {}, DDPM),
    "sd ddpm (the first batch's generator)": ("sd15", tiny_sd, dict(image_size=32, solver="ddpm", batch_size=3), {}, DDPM),
    "sdxl euler": ("sdxl", tiny_sdxl, dict(image_size=32), {}, (750, 500, 250, 40)),
    "pixart-sigma": ("pixart-sigma", tiny_pixart, dict(image_size=16), {}, DDPM),
    "pixart-alpha": ("pixart-sigma", lambda: tiny_pixart(alpha=True), dict(image_size=16), {}, DDPM),
    "sd3": ("sd3-medium", tiny_sd3, dict(image_size=16), {}, FLOW),
    "flux-schnell": ("flux-schnell", tiny_flux, dict(image_size=16), {}, FLOW),
    "flux-dev": ("flux-schnell", lambda: tiny_flux(guidance_embeds=True, dynamic_shifting=True), dict(image_size=32),
                 {"guidance_scale": 3.5}, FLOW),
    "dit (the study's random labels)": ("dit-xl-256", tiny_dit, {}, {}, DDPM),
}


def study_config(preset, folder, overrides, sampling):
    config = with_overrides(load_study_config(preset), model=str(folder), num_samples=16, **overrides)
    config = dataclasses.replace(config, sampling=dataclasses.replace(config.sampling, seed=3, **sampling))
    if preset == "dit-xl-256":
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, image_size=None))
    return config


def project_images(config, plan, count):
    model = load_diffusion_model(config.model.source, image_size=config.model.image_size)
    prompts = config.prompts.load() if model.prompt_encoder is not None else None
    with ImageGenerator(model, config.sampling, prompts=prompts) as generator:
        batches = generator.batches(plan, config.timesteps.num_samples, stop=count, batch_size=config.sampling.batch_size)
        return torch.cat(list(batches))


def as_bytes(images: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1] as the pipelines' PIL images hold them (uint8, HWC)."""
    return (images.clamp(-1, 1) / 2 + 0.5).permute(0, 2, 3, 1).mul(255).round().to(torch.uint8).numpy()


@pytest.mark.parametrize("case", list(CASES))
def test_plan_py_as_written_makes_the_studys_first_samples(case, tmp_path, monkeypatch):
    preset, stand_in, overrides, sampling, steps = CASES[case]
    folder = tmp_path / "pipeline"
    stand_in().save_pretrained(folder, safe_serialization=True)
    config = study_config(preset, folder, overrides, sampling)
    kind = "flow" if steps == FLOW else "ddpm"
    solver = config.sampling.solvers(kind)[0]
    plan = Plan(steps, schedule_kind=kind, solver=solver)  # an exported plan carries its study's solver
    (tmp_path / "plan.json").write_text(json.dumps({"plan": plan.to_dict()}))
    call = study_pipeline_call(config, plan, "plan.json", stage="timesteps")
    (tmp_path / "plan.py").write_text(call)

    monkeypatch.chdir(tmp_path)
    images = runpy.run_path(str(tmp_path / "plan.py"))["images"]

    ours = as_bytes(project_images(config, plan, len(images)))
    theirs = np.stack([np.asarray(image) for image in images])
    assert theirs.shape == ours.shape  # the study's image size
    first_batch = min(config.sampling.batch_size, config.timesteps.num_samples)
    assert len(images) == (first_batch if solver == "ddpm" else min(first_batch, 4))  # all of it under ddpm
    assert np.abs(theirs.astype(int) - ours.astype(int)).max() <= 1


def test_plan_py_of_a_dit_study_writes_its_drawn_labels(tmp_path):
    from optuna_diffusion.generation import class_labels

    folder = tmp_path / "pipeline"
    tiny_dit().save_pretrained(folder, safe_serialization=True)
    config = study_config("dit-xl-256", folder, {}, {})
    call = study_pipeline_call(config, Plan(DDPM, solver="dpmpp-2m"), "plan.json")
    labels = class_labels(3, 16, 1000, "random")[:4].tolist()
    assert f"labels = {labels}" in call and labels != [0, 0, 0, 0]


def test_no_plan_py_for_a_dit_ddpm_study(tmp_path):
    from optuna_diffusion.errors import ConfigError

    folder = tmp_path / "pipeline"
    tiny_dit().save_pretrained(folder, safe_serialization=True)
    config = study_config("dit-xl-256", folder, {"solver": "ddpm"}, {})
    with pytest.raises(ConfigError, match="no call of it makes a ddpm study's samples"):
        study_pipeline_call(config, Plan(DDPM, solver="ddpm"), "plan.json")
