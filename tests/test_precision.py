"""Reduced precision: the project's samples of a plan in bfloat16 equal diffusers' own pipeline call in
bfloat16 with the same inputs (the plan's time steps, the engine's initial latents cast to bfloat16), bit
for bit; the dtype setting reaches the model; noise does not depend on the device or dtype.

The solvers compared are those a pipeline runs through the same diffusers scheduler as the project
(DPM-Solver++(2M), Euler, flow Euler), so the same operations round the same way. The project's own
``ddim`` (float32 update, :func:`~optuna_diffusion.solvers.ddim_step`) is exported as DPM-Solver order 1,
which rounds differently in bfloat16; the float32 exactness tests (tests/test_pipelines.py) cover it.
"""

from __future__ import annotations

import pytest
import torch

from optuna_diffusion.apply import apply
from optuna_diffusion.models import model_from_pipeline
from optuna_diffusion.pipelines import pipeline_schedule_kwargs
from optuna_diffusion.pipelines import scheduler_for_solver
from optuna_diffusion.plan import Plan
from optuna_diffusion.prompts import PromptSet
from optuna_diffusion.generation import ImageGenerator, SamplingSettings

from .tiny_pipelines import tiny_flux, tiny_pixart, tiny_sd, tiny_sd3, tiny_sdxl

PROMPTS = ["a red bicycle leaning against a brick wall", "a cat asleep on a green sofa", "a bowl of tomato soup"]
DDPM_STEPS = (901, 651, 301, 51)
FLOW_STEPS = (1000, 750, 400, 100)
SHIFTED_FLOW_STEPS = (1000, 750, 400, 125)
"""Steps whose sigmas SD3's float32 shift (3.0) reaches exactly from some float32 sigma. For 100 (or 200) it
reaches only the neighbours of 0.1, so the pipeline feeds its model t = 100.0000076 where the plan says 100:
within 1e-5 in float32, but bfloat16 rounds the outputs apart. ``pipeline_schedule_kwargs`` finds the exact
pre-image where one exists (28 of the 40 steps 1000, 975, ..., 25; 21 without that search); the test checks
the pipeline's time steps first."""
BF16 = torch.bfloat16


def _ours(model, settings, plan, count, prompts):
    with ImageGenerator(model, settings, prompts=prompts) as generator:
        return torch.cat(list(generator.batches(plan, count)))


def _theirs(pipe, model, settings, plan, count, prompts, mu=None, **call):
    pipe.scheduler = scheduler_for_solver(settings.solver, pipe.scheduler)
    switch = apply(pipe, plan)
    try:
        return pipe(
            prompts.texts(0, count),
            guidance_scale=settings.guidance_scale,
            latents=model.family.initial_noise(model, settings.seed, 0, count).to(BF16),  # the engine's noise, cast
            output_type="pt",
            **pipeline_schedule_kwargs(plan.timesteps, pipe.scheduler, mu=mu),
            **call,
        ).images
    finally:
        switch.remove()


def _postprocessed(ours: torch.Tensor) -> torch.Tensor:
    """The project's images as the pipeline's ``output_type="pt"`` makes them from the same decode (in bfloat16)."""
    return (ours.to(BF16) * 0.5 + 0.5).clamp(0, 1)


CASES = {
    "sd-dpmpp-2m": (lambda: tiny_sd(), "dpmpp-2m", 7.5, DDPM_STEPS, "ddpm", {}),
    "sdxl-euler": (lambda: tiny_sdxl(), "euler", 5.0, DDPM_STEPS, "ddpm", {}),
    "pixart-dpmpp-2m": (lambda: tiny_pixart(), "dpmpp-2m", 4.5, DDPM_STEPS, "ddpm",
                        {"negative_prompt": "", "use_resolution_binning": False}),
    "sd3-flow-euler": (lambda: tiny_sd3(shift=3.0), "flow-euler", 5.0, SHIFTED_FLOW_STEPS, "flow", {}),
    "flux-schnell-flow-euler": (lambda: tiny_flux(), "flow-euler", 0.0, FLOW_STEPS, "flow", {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bfloat16_samples_equal_the_pipelines_own_bfloat16_call(case):
    make, solver, guidance, steps, kind, call = CASES[case]
    pipe = make().to(BF16)
    image_size = 16 if case.startswith("flux") else None
    model = model_from_pipeline(pipe, source=case, image_size=image_size)
    assert model.dtype == BF16
    settings = SamplingSettings(solver=solver, guidance_scale=guidance, batch_size=3, seed=3)
    prompts = PromptSet(PROMPTS)
    plan = Plan(steps, schedule_kind=kind)
    ours = _ours(model, settings, plan, 3, prompts)
    assert ours.dtype == torch.float32  # images leave the generator in float32 (FID features, previews)

    height, width = model.family.image_size(model)
    mu = model.schedule.mu_for(model.sample_shape[0]) if case.startswith("flux") else None
    exported = scheduler_for_solver(solver, pipe.scheduler)
    exported.set_timesteps(**pipeline_schedule_kwargs(plan.timesteps, exported, mu=mu))
    if kind == "flow":  # the model sees the same time steps as in the project's solver: sigma * T in float32
        assert torch.equal(exported.timesteps, torch.tensor(model.schedule.sigmas(steps), dtype=torch.float32) * 1000)
    theirs = _theirs(pipe, model, settings, plan, 3, prompts, mu=mu, height=height, width=width, **call)

    assert theirs.dtype == BF16
    assert torch.equal(_postprocessed(ours), theirs)


def test_the_noise_is_drawn_in_float32_and_cast():
    pipe = tiny_sd().to(BF16)
    model = model_from_pipeline(pipe, source="tiny-sd")
    settings = SamplingSettings(solver="dpmpp-2m", batch_size=2, seed=4)
    noise = model.family.initial_noise(model, 4, 0, 2)
    assert noise.dtype == torch.float32 and noise.device.type == "cpu"
    seen = []
    with ImageGenerator(model, settings, prompts=PromptSet(PROMPTS)) as generator:
        original = generator.model.family.predict

        def spy(model_, x, t, conditions, settings_):
            seen.append(x.clone())
            return original(model_, x, t, conditions, settings_)

        generator.model.family.predict = spy  # instance attribute: only this generator's model family object
        try:
            list(generator.batches(Plan(DDPM_STEPS), 2, decoded=False))
        finally:
            del generator.model.family.predict
    assert torch.equal(seen[0], noise.to(BF16))


def test_bfloat16_dit_equals_the_dit_pipelines_own_bfloat16_call():
    from optuna_diffusion.generation import class_labels

    from .tiny_pipelines import tiny_dit

    pipe = tiny_dit().to(BF16)
    pipe.scheduler = scheduler_for_solver("dpmpp-2m", pipe.scheduler)
    model = model_from_pipeline(pipe, source="tiny-dit")
    # DiTPipeline takes neither time steps nor latents: the plan is its scheduler's own spacing, and its
    # generator draws the noise of samples 0..63 directly in bfloat16, which equals the engine's float32 draw cast.
    spacing = scheduler_for_solver("dpmpp-2m", pipe.scheduler)
    spacing.set_timesteps(4)
    plan = Plan(tuple(int(t) for t in spacing.timesteps))
    seed, count = 2, 64
    settings = SamplingSettings(solver="dpmpp-2m", guidance_scale=4.0, num_classes=1000, null_class=1000,
                                batch_size=64, seed=seed)
    ours = _ours(model, settings, plan, count, None)

    switch = apply(pipe, plan)
    try:
        theirs = pipe(class_labels(seed, count, 1000, settings.labels).tolist(), guidance_scale=settings.guidance_scale,
                      num_inference_steps=4, generator=torch.Generator().manual_seed(seed * 1_000_003),
                      output_type="pt").images
    finally:
        switch.remove()

    assert torch.equal(_postprocessed(ours), theirs.to(BF16))


@pytest.mark.parametrize("solver", ["dpmpp-2m", "euler"])
def test_bfloat16_bare_unet_equals_a_diffusers_loop_in_bfloat16(solver):
    """A bare class-conditional UNet2DModel (digits, ADM): the same as diffusers' scheduler loop over it."""
    from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler

    from optuna_diffusion.models import DiffusionModel
    from optuna_diffusion.generation import class_labels

    from .conftest import scheduler_config, tiny_unet

    unet = tiny_unet().requires_grad_(False).to(BF16)
    model = DiffusionModel(unet, scheduler_config(), "tiny")
    settings = SamplingSettings(solver=solver, guidance_scale=2.0, num_classes=10, null_class=10, batch_size=5, seed=1)
    plan = Plan(DDPM_STEPS)
    ours = _ours(model, settings, plan, 5, None)

    if solver == "euler":
        scheduler = EulerDiscreteScheduler.from_config(scheduler_config(), final_sigmas_type="zero", timestep_spacing="linspace")
    else:
        scheduler = DPMSolverMultistepScheduler.from_config(scheduler_config(), algorithm_type="dpmsolver++",
                                                            solver_order=2, final_sigmas_type="zero")
    scheduler.set_timesteps(timesteps=list(plan.timesteps))
    labels = class_labels(1, 5, 10)
    x = model.family.initial_noise(model, 1, 0, 5).to(BF16) * scheduler.init_noise_sigma
    with torch.no_grad():
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(x, t)
            both = unet(torch.cat([model_input] * 2), t, class_labels=torch.cat([labels, torch.full_like(labels, 10)]))
            conditional, unconditional = both.sample[:, :1].chunk(2)
            x = scheduler.step(unconditional + 2.0 * (conditional - unconditional), t, x).prev_sample

    assert x.dtype == BF16
    assert torch.equal(ours, x.float())


def test_a_pipeline_folder_loads_in_the_asked_dtype(tmp_path):
    """Every component in the study's dtype (diffusers 0.42 without accelerate would leave its models in float32)."""
    from optuna_diffusion.models import load_diffusion_model

    from .tiny_pipelines import STAND_INS

    folder = STAND_INS["sd3-medium"](tmp_path / "sd3")
    model = load_diffusion_model(str(folder), dtype=BF16, image_size=32)
    dtypes = {name: next(module.parameters()).dtype for name, module in model.pipeline.components.items()
              if isinstance(module, torch.nn.Module)}
    assert set(dtypes.values()) == {BF16}, dtypes


def test_trials_record_device_and_dtype_and_show_warns_about_mixed_settings(tmp_path):
    """``optimize --dtype bfloat16`` runs the digits study; every trial records where and in what precision
    it ran, and ``show`` says so, warning when a resumed run changed the dtype."""
    import optuna
    from typer.testing import CliRunner

    from optuna_diffusion.cli import app

    storage = f"sqlite:///{tmp_path / 'mixed.db'}"
    common = ["--study", "digits", "--storage", storage]
    fast = ["--stage", "timesteps", "--num-samples", "16", "--batch-size", "16"]
    runner = CliRunner()
    first = runner.invoke(app, ["optimize", *common, *fast, "--n-trials", "2", "--dtype", "bfloat16", "--device", "auto"])
    assert first.exit_code == 0, first.output
    shown = runner.invoke(app, ["show", *common])
    assert "ran on: 2 trials on cpu in bfloat16" in shown.output and "warning" not in shown.output

    resumed = runner.invoke(app, ["optimize", *common, *fast, "--n-trials", "3", "--dtype", "float32"])
    assert resumed.exit_code == 0, resumed.output
    trials = optuna.load_study(study_name="digits-timesteps", storage=storage).get_trials()
    assert [t.user_attrs["dtype"] for t in trials] == ["bfloat16", "bfloat16", "float32"]
    assert all(t.user_attrs["device"] == "cpu" and "peak_memory_bytes" not in t.user_attrs for t in trials)
    shown = runner.invoke(app, ["show", *common])
    assert "2 trials on cpu in bfloat16, 1 trials on cpu in float32" in shown.output
    assert "warning: these trials ran under mixed devices or dtypes" in shown.output


def test_offload_on_a_cpu_only_machine_is_one_line(tmp_path):
    """diffusers' enable_model_cpu_offload refuses to run without an accelerator; the study says so first."""
    from typer.testing import CliRunner

    from optuna_diffusion.cli import app

    study = tmp_path / "offload.toml"
    study.write_text('[model]\nsource = "digits-t2i"\noffload = true\n')
    result = CliRunner().invoke(app, ["optimize", "--config", str(study), "--storage", f"sqlite:///{tmp_path / 'o.db'}",
                                      "--device", "cpu"])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "model.offload" in result.output and "CPU" in result.output
    assert not (tmp_path / "o.db").exists()
