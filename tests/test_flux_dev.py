"""A Flux-dev stand-in (guidance embedding, dynamic shifting) through the command line: optimize, show, export and
the exported ``plan.py`` run as written; its sigmas shifted by the ``mu`` diffusers' ``FluxPipeline`` computes."""

from __future__ import annotations

import json
import runpy

import numpy as np
import optuna
import pytest
import torch
from typer.testing import CliRunner

from optuna_diffusion.baselines import baseline_timesteps
from optuna_diffusion.cli import app
from optuna_diffusion.models import load_diffusion_model
from optuna_diffusion.pipelines import pipeline_schedule_kwargs
from optuna_diffusion.pipelines import scheduler_for_solver
from optuna_diffusion.plan import Plan
from optuna_diffusion.generation import ImageGenerator
from optuna_diffusion.study_config import load_study_config

from .tiny_pipelines import tiny_flux

SIZE = 32  # 32 x 32 latents (the stand-in's VAE does not downsample), 256 packed tokens; the default is 128 px

STUDY = """\
[model]
source = "{model}"
image_size = {size}

[sampling]
solver = "flow-euler"
guidance_scale = 3.5
seed = 2
batch_size = 2

[fitness]
metric = "teacher"
teacher_steps = 8

[timesteps]
k_min = 2
k_max = 3
n_trials = 4
num_samples = 4
population_size = 4

[architecture]
n_trials = 2
num_samples = 4
population_size = 2
probe_samples = 0
"""


@pytest.fixture(scope="module")
def flux_dev(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flux-dev") / "pipeline"
    tiny_flux(guidance_embeds=True, dynamic_shifting=True).save_pretrained(folder, safe_serialization=True)
    return folder


def test_mu_is_diffusers_calculate_shift_of_the_packed_tokens(flux_dev):
    from diffusers import FluxPipeline
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    model = load_diffusion_model(str(flux_dev), image_size=SIZE)
    pipe = FluxPipeline.from_pretrained(flux_dev)
    c = pipe.scheduler.config
    tokens = (SIZE // pipe.vae_scale_factor // 2) ** 2  # latents cut into 2 x 2 patches
    assert model.sample_shape[0] == tokens
    assert model.family.shift_mu(model) == calculate_shift(tokens, c.base_image_seq_len, c.max_image_seq_len,
                                                           c.base_shift, c.max_shift)
    # export checks the plan's sigmas with the same mu, read from the folder's configs
    from optuna_diffusion.export_call import shift_mu

    assert shift_mu(str(flux_dev), pipe.scheduler, SIZE, model.family.call_template.shift_patch) == model.family.shift_mu(model)
    # The scheduler baseline: the scheduler's own K steps, shifted by the mu of this image size.
    scheduler = pipe.scheduler
    scheduler.set_timesteps(4, mu=model.family.shift_mu(model))
    expected = tuple(int(round(float(s) * 1000)) for s in scheduler.sigmas[:4])
    assert baseline_timesteps("scheduler", 4, model.schedule, mu=model.family.shift_mu(model)) == expected


def test_the_study_samples_equal_the_pipelines_own_call(flux_dev):
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(flux_dev)
    pipe.set_progress_bar_config(disable=True)
    model = load_diffusion_model(str(flux_dev), image_size=SIZE)
    config = load_study_config("flux-schnell")
    settings = type(config.sampling)(solver="flow-euler", guidance_scale=3.5, seed=2, batch_size=2)
    plan = Plan((1000, 700, 350), schedule_kind="flow")
    prompts = config.prompts.load()
    with ImageGenerator(model, settings, prompts=prompts) as generator:
        ours = next(generator.batches(plan, 2))
    pipe.scheduler = scheduler_for_solver("flow-euler", pipe.scheduler)
    sigmas = pipeline_schedule_kwargs(plan.timesteps, pipe.scheduler, mu=model.family.shift_mu(model))["sigmas"]
    images = pipe(prompts.texts(0, 2), sigmas=sigmas, latents=model.family.initial_noise(model, 2, 0, 2), height=SIZE,
                  width=SIZE, guidance_scale=3.5, output_type="pt").images  # the pipeline computes mu itself
    assert float((ours.clamp(-1, 1) / 2 + 0.5 - images).abs().max()) <= 1e-5


def test_a_flux_dev_study_runs_through_optimize_show_export_and_plan_py(flux_dev, tmp_path, monkeypatch):
    study_file = tmp_path / "flux-dev.toml"
    study_file.write_text(STUDY.format(model=flux_dev, size=SIZE))
    storage = f"sqlite:///{tmp_path / 'flux-dev.db'}"
    common = ["--config", str(study_file), "--storage", storage]
    runner = CliRunner()

    optimized = runner.invoke(app, ["optimize", *common])
    assert optimized.exit_code == 0, optimized.output
    study = optuna.load_study(study_name="flux-dev-timesteps", storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4 and all(np.isfinite(t.values[0]) and t.values[1] > 0 for t in complete)
    assert len(optuna.load_study(study_name="flux-dev-architecture", storage=storage).trials) == 2

    shown = runner.invoke(app, ["show", *common])
    assert shown.exit_code == 0 and "flux-dev-timesteps: 4 trials" in shown.output, shown.output

    exported = runner.invoke(app, ["export", *common, "--stage", "timesteps", "--out", str(tmp_path / "plan.json")])
    assert exported.exit_code == 0, exported.output
    assert "-PSNR" in exported.output and "FID" not in exported.output  # the metric the study used
    chosen = json.loads((tmp_path / "plan.json").read_text())
    assert chosen["plan"]["solver"] == "flow-euler"  # every exported plan carries its solver

    monkeypatch.chdir(tmp_path)
    images = runpy.run_path(str(tmp_path / "plan.py"))["images"]
    plan = Plan.from_dict(chosen["plan"])
    model = load_diffusion_model(str(flux_dev), image_size=SIZE)
    config = load_study_config(None, config=study_file)
    with ImageGenerator(model, config.sampling, prompts=config.prompts.load()) as generator:
        ours = next(generator.batches(plan, config.timesteps.num_samples, stop=len(images)))
    ours = (ours.clamp(-1, 1) / 2 + 0.5).permute(0, 2, 3, 1).mul(255).round().to(torch.uint8).numpy()
    theirs = np.stack([np.asarray(image) for image in images])
    assert theirs.shape == (2, SIZE, SIZE, 3)  # the study's size and first batch
    assert np.abs(theirs.astype(int) - ours.astype(int)).max() <= 1
