"""diffusers pipelines as models: exact against the pipelines themselves, prompts encoded once, component
MACs equal to direct fvcore counts, loading from folders (the presets' stand-ins).

The ``test_export_*`` tests run a plan in each family's pipeline itself (:func:`pipeline_images`: the
study's solver as its scheduler, the plan's blocks switched, the plan's time steps, the engine's initial
latents) and check that its images equal the project's to 1e-5. The call a user writes is
each family's :class:`~optuna_diffusion.pipelines.CallTemplate` (the reference page's snippets, ``tests/test_reference_snippets.py``).
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from optuna_diffusion.apply import apply
from optuna_diffusion.blocks import find_blocks
from optuna_diffusion.errors import ConfigError, ModelLoadError
from optuna_diffusion.families import (
    DiTPipelineFamily,
    FluxFamily,
    PixArtFamily,
    StableDiffusion3Family,
    StableDiffusionFamily,
    StableDiffusionXLFamily,
    TextConditioning,
)
from optuna_diffusion.macs import MacsTable
from optuna_diffusion.macs._fvcore import EXTRA_HANDLES
from optuna_diffusion.models import DiffusionModel, load_diffusion_model, model_from_pipeline
from optuna_diffusion.pipelines import pipeline_schedule_kwargs
from optuna_diffusion.pipelines import component_macs, scheduler_for_solver, text_encoder_macs, vae_decoder_macs
from optuna_diffusion.plan import Plan
from optuna_diffusion.prompts import Prompt, PromptSet
from optuna_diffusion.solvers import SOLVER_RECORDS
from optuna_diffusion.generation import ImageGenerator, SamplingSettings, class_labels

from .helpers import scheduler_config, tiny_text_unet
from .tiny_pipelines import (
    IMAGE_SIZES,
    STAND_INS,
    TINY_PIPELINES,
    tiny_dit,
    tiny_flux,
    tiny_pixart,
    tiny_sd,
    tiny_sd3,
    tiny_sdxl,
)

TOLERANCE = 1e-5
PROMPTS = ["a red bicycle leaning against a brick wall", "a cat asleep on a green sofa", "a bowl of tomato soup"]
DDPM_STEPS = (901, 651, 301, 51)
FLOW_STEPS = (1000, 750, 400, 100)


def project_images(model, settings, plan, count, prompts=None):
    """The project's images of samples 0..count-1, as a search scores them ([-1, 1], unclipped)."""
    with ImageGenerator(model, settings, prompts=prompts) as generator:
        return torch.cat(list(generator.batches(plan, count)))


def difference(project, pipeline_images):
    """Largest difference between the project's images and the pipeline's ``output_type="pt"`` ([0, 1])."""
    assert project.shape == pipeline_images.shape
    return float((project.clamp(-1, 1) / 2 + 0.5 - pipeline_images).abs().max())


def skipping(plan: Plan, denoiser) -> Plan:
    """``plan`` with a skip at every step after the first (the first skippable blocks, in turn)."""
    names = [block.name for block in find_blocks(denoiser) if "skip" in block.actions and block.kind != "transformer"]
    skips = [frozenset()] + [frozenset({names[i % len(names)]}) for i in range(plan.num_steps - 1)]
    return Plan(plan.timesteps, skips=tuple(skips), schedule_kind=plan.schedule_kind)


def pipeline_images(pipe, model, settings, plan, count, *args, mu=None, **call):
    """The pipeline's own images of samples 0..count-1 under ``plan`` (``output_type="pt"``, [0, 1]).

    The pipeline's scheduler runs the study's solver, its denoiser switches the plan's blocks, and the call
    gets the plan's time steps, the engine's initial latents and guidance scale, plus ``args``/``call``.
    """
    pipe.scheduler = scheduler_for_solver(settings.solver, pipe.scheduler)  # keeps betas, shift, prediction type
    switch = apply(pipe, plan)
    try:
        return pipe(
            *args,
            guidance_scale=settings.guidance_scale,
            latents=model.family.initial_noise(model, settings.seed, 0, count),
            output_type="pt",
            **pipeline_schedule_kwargs(plan.timesteps, pipe.scheduler, mu=mu),
            **call,
        ).images
    finally:
        switch.remove()


# Export: the call per family, and exactness against it -------------------------------------------------


@pytest.mark.parametrize("skips", [False, True], ids=["full", "skips"])
@pytest.mark.parametrize("solver", ["ddim", "dpmpp-2m", "euler"])
def test_export_stable_diffusion(solver, skips):
    pipe = tiny_sd()
    model = model_from_pipeline(pipe, source="tiny-sd")
    settings = SamplingSettings(solver=solver, guidance_scale=7.5, batch_size=2, seed=3)
    prompts = PromptSet(PROMPTS, negative_prompt="blurry, dark")
    plan = Plan(DDPM_STEPS)
    plan = skipping(plan, pipe.unet) if skips else plan
    ours = project_images(model, settings, plan, 4, prompts)

    height, width = model.family.image_size(model)
    images = pipeline_images(pipe, model, settings, plan, 4, prompts.texts(0, 4),
                             negative_prompt=prompts.negatives(0, 4), height=height, width=width)

    assert difference(ours, images) <= TOLERANCE


def test_export_stable_diffusion_2_v_prediction():
    from diffusers import DDIMScheduler

    v_prediction = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                                 prediction_type="v_prediction", clip_sample=False, set_alpha_to_one=False)
    pipe = tiny_sd(scheduler=v_prediction)  # SD 2.x 768: the UNet predicts v
    model = model_from_pipeline(pipe, source="tiny-sd2")
    settings = SamplingSettings(solver="dpmpp-2m", guidance_scale=7.5, batch_size=3, seed=3)
    plan = Plan(DDPM_STEPS)
    ours = project_images(model, settings, plan, 3, PromptSet(PROMPTS))

    images = pipeline_images(pipe, model, settings, plan, 3, PROMPTS)  # the scheduler keeps prediction_type

    # v is turned into epsilon by the project and by the scheduler in different orders: float rounding only.
    assert difference(ours, images) <= TOLERANCE


def test_export_stable_diffusion_ddpm_with_the_same_generator():
    pipe = tiny_sd()
    model = model_from_pipeline(pipe, source="tiny-sd")
    settings = SamplingSettings(solver="ddpm", guidance_scale=3.0, batch_size=3, seed=5)
    plan = Plan(DDPM_STEPS)
    ours = project_images(model, settings, plan, 3, PromptSet(PROMPTS))

    images = pipeline_images(
        pipe, model, settings, plan, 3, PROMPTS,
        generator=torch.Generator().manual_seed(5 * 7 + 0),  # the engine's generator of the batch starting at 0
    )

    assert difference(ours, images) <= TOLERANCE


@pytest.mark.parametrize("negatives", ["none", "per-prompt"])
def test_export_stable_diffusion_xl(negatives):
    pipe = tiny_sdxl()
    model = model_from_pipeline(pipe, source="tiny-sdxl")
    settings = SamplingSettings(solver="euler", guidance_scale=5.0, batch_size=3, seed=1)
    if negatives == "none":  # SDXL's unconditional pass is then zeros (force_zeros_for_empty_prompt)
        prompts = PromptSet(PROMPTS)
    else:
        prompts = PromptSet([Prompt(text, negative) for text, negative in zip(PROMPTS, ["blurry", "", "low contrast"])])
    plan = Plan(DDPM_STEPS)
    ours = project_images(model, settings, plan, 3, prompts)

    height, width = model.family.image_size(model)
    images = pipeline_images(pipe, model, settings, plan, 3, prompts.texts(0, 3), height=height, width=width,
                             negative_prompt=None if negatives == "none" else prompts.negatives(0, 3))

    assert difference(ours, images) <= TOLERANCE


@pytest.mark.parametrize("skips", [False, True], ids=["full", "skips"])
@pytest.mark.parametrize("alpha", [False, True], ids=["sigma", "alpha"])
def test_export_pixart(alpha, skips):
    pipe = tiny_pixart(alpha=alpha)
    model = model_from_pipeline(pipe, source="tiny-pixart", image_size=16 if alpha else None)
    settings = SamplingSettings(solver="dpmpp-2m", guidance_scale=4.5, batch_size=3, seed=2)
    prompts = PromptSet(PROMPTS)
    plan = Plan(DDPM_STEPS)
    plan = skipping(plan, pipe.transformer) if skips else plan
    ours = project_images(model, settings, plan, 3, prompts)

    height, width = model.family.image_size(model)
    images = pipeline_images(
        pipe, model, settings, plan, 3, prompts.texts(0, 3), height=height, width=width,
        negative_prompt="",  # PixArt's default unconditional prompt
        use_resolution_binning=False,  # the image size as given
    )

    assert difference(ours, images) <= TOLERANCE


@pytest.mark.parametrize("skips", [False, True], ids=["full", "skips"])
def test_export_stable_diffusion_3(skips):
    pipe = tiny_sd3(shift=3.0)
    model = model_from_pipeline(pipe, source="tiny-sd3")
    settings = SamplingSettings(solver="flow-euler", guidance_scale=5.0, batch_size=2, seed=4)
    prompts = PromptSet(PROMPTS, negative_prompt="noisy")
    plan = Plan(FLOW_STEPS, schedule_kind="flow")
    plan = skipping(plan, pipe.transformer) if skips else plan
    ours = project_images(model, settings, plan, 3, prompts)

    height, width = model.family.image_size(model)
    # The scheduler keeps the shift of 3; the exported sigmas are those the shift maps onto the plan's.
    images = pipeline_images(pipe, model, settings, plan, 3, prompts.texts(0, 3),
                             negative_prompt=prompts.negatives(0, 3), height=height, width=width)

    assert difference(ours, images) <= TOLERANCE


@pytest.mark.parametrize("variant", ["schnell", "dev-dynamic-shift"])
def test_export_flux(variant):
    dev = variant != "schnell"
    pipe = tiny_flux(guidance_embeds=dev, dynamic_shifting=dev)
    model = model_from_pipeline(pipe, source="tiny-flux", image_size=16)
    settings = SamplingSettings(solver="flow-euler", guidance_scale=3.5 if dev else 0.0, batch_size=3, seed=6)
    prompts = PromptSet(PROMPTS)
    plan = skipping(Plan(FLOW_STEPS, schedule_kind="flow"), pipe.transformer)
    ours = project_images(model, settings, plan, 3, prompts)

    height, width = model.family.image_size(model)
    image_tokens = model.sample_shape[0]  # Flux computes mu from the number of image tokens
    # guidance_scale is the guidance embedding (dev; schnell ignores it); the latents are packed, as Flux takes them.
    images = pipeline_images(pipe, model, settings, plan, 3, prompts.texts(0, 3), height=height, width=width,
                             mu=model.schedule.mu_for(image_tokens))

    assert difference(ours, images) <= TOLERANCE


def test_export_dit():
    pipe = tiny_dit()
    pipe.scheduler = scheduler_for_solver("dpmpp-2m", pipe.scheduler)
    model = model_from_pipeline(pipe, source="tiny-dit")
    # DiTPipeline takes neither time steps nor latents: the plan is its scheduler's own spacing, and the
    # generator draws the engine's noise of samples 0..63 (its first chunk, seeded seed * 1_000_003).
    steps = 4
    spacing = scheduler_for_solver("dpmpp-2m", pipe.scheduler)
    spacing.set_timesteps(steps)
    plan = Plan(tuple(int(t) for t in spacing.timesteps))
    seed, count = 2, 64
    settings = SamplingSettings(solver="dpmpp-2m", guidance_scale=4.0, num_classes=1000, null_class=1000,
                                batch_size=32, seed=seed)
    ours = project_images(model, settings, plan, count)

    switch = apply(pipe, plan)
    images = pipe(
        class_labels(seed, count, 1000, settings.labels).tolist(),
        guidance_scale=settings.guidance_scale,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(seed * 1_000_003),
        output_type="pt",
    ).images
    switch.remove()

    assert difference(ours, images) <= TOLERANCE


# Prompts: encoded once, per sample, through the generator --------------------------------------------------


def test_text_encoders_run_once_per_distinct_prompt_and_negative_prompt():
    pipe = tiny_sd3()
    calls = {"clip": 0, "t5": 0}
    pipe.text_encoder.register_forward_hook(lambda *a: calls.__setitem__("clip", calls["clip"] + 1))
    pipe.text_encoder_3.register_forward_hook(lambda *a: calls.__setitem__("t5", calls["t5"] + 1))
    model = model_from_pipeline(pipe, source="tiny-sd3")
    prompts = PromptSet([Prompt("a", "x"), Prompt("b", "x"), Prompt("c")])
    settings = SamplingSettings(solver="flow-euler", guidance_scale=4.0, batch_size=2, seed=0)
    plan = Plan((1000, 500), schedule_kind="flow")
    first = project_images(model, settings, plan, 7, prompts)  # samples use prompts a b c a b c a
    assert model.prompt_encoder.encoder_calls == 3 + 2  # three prompts, negative prompts "x" and the default
    assert calls == {"clip": 5, "t5": 5}
    second = project_images(model, settings, Plan((1000, 300), schedule_kind="flow"), 7, prompts)
    assert model.prompt_encoder.encoder_calls == 5 and calls == {"clip": 5, "t5": 5}
    assert not torch.equal(first, second)


def test_images_do_not_depend_on_the_batch_size_and_follow_prompt_i_mod_n():
    model = model_from_pipeline(tiny_sd3(), source="tiny-sd3")
    plan = Plan((1000, 600, 200), schedule_kind="flow")
    prompts = PromptSet(PROMPTS)
    settings = SamplingSettings(solver="flow-euler", guidance_scale=3.0, batch_size=5, seed=9)
    whole = project_images(model, settings, plan, 5, prompts)
    pieces = project_images(model, SamplingSettings(**{**settings.to_dict(), "batch_size": 2}), plan, 5, prompts)
    torch.testing.assert_close(whole, pieces, atol=1e-5, rtol=0)
    # Sample 3 uses prompt 3 mod 3 = 0 with its own noise: a set of prompt 0 alone gives it the same image.
    alone = project_images(model, settings, plan, 5, PromptSet(PROMPTS[:1]))
    torch.testing.assert_close(alone[3], whole[3], atol=1e-5, rtol=0)
    assert not torch.allclose(alone[1], whole[1])  # prompt 0 instead of prompt 1
    assert not torch.allclose(whole[0], whole[3], atol=1e-3)  # same prompt, other noise


def test_prefix_cache_serves_pipeline_models_exactly():
    from optuna_diffusion.prefix_cache import PrefixCache

    model = model_from_pipeline(tiny_sd3(), source="tiny-sd3")
    settings = SamplingSettings(solver="flow-euler", guidance_scale=3.0, batch_size=2, seed=1)
    prompts = PromptSet(PROMPTS)
    first, second = Plan((1000, 700, 300), schedule_kind="flow"), Plan((1000, 700, 200), schedule_kind="flow")
    cache = PrefixCache(64 * 2**20)
    with ImageGenerator(model, settings, prompts=prompts, prefix_cache=cache) as generator:
        list(generator.batches(first, 3))
        before = generator.forward_passes
        cached = torch.cat(list(generator.batches(second, 3)))
        assert generator.forward_passes - before == 2  # one batch of 2 and one of 1: only the last step ran
    torch.testing.assert_close(cached, project_images(model, settings, second, 3, prompts), atol=0, rtol=0)


def test_generator_arguments_are_checked():
    model = model_from_pipeline(tiny_sd3(), source="tiny-sd3")
    settings = SamplingSettings(solver="flow-euler")
    with pytest.raises(ConfigError, match="prompts=PromptSet, not text"):
        ImageGenerator(model, settings, TextConditioning(torch.zeros(1, 2, 3)))
    with pytest.raises(ConfigError, match="prompts must be a PromptSet"):
        ImageGenerator(model, settings, prompts=["a"])
    with pytest.raises(ConfigError, match="unset sampling.num_classes"):
        ImageGenerator(model, SamplingSettings(solver="flow-euler", num_classes=3))
    bare = DiffusionModel(tiny_text_unet(), scheduler_config(), "bare")
    with pytest.raises(ConfigError, match="takes no prompt set"):
        ImageGenerator(bare, SamplingSettings(), TextConditioning(torch.zeros(1, 3, 16)), prompts=PromptSet(["a"]))


def test_a_bare_text_unet_with_fixed_embeddings_still_runs():
    bare = DiffusionModel(tiny_text_unet(), scheduler_config(), "bare")
    assert bare.prompt_encoder is None and bare.pipeline is None
    text = TextConditioning(torch.randn(1, 3, 16), torch.zeros(1, 3, 16))
    with ImageGenerator(bare, SamplingSettings(guidance_scale=2.0, batch_size=2), text) as generator:
        images = torch.cat(list(generator.batches(Plan((800, 400)), 3)))
    assert images.shape == (3, 4, 8, 8) and torch.isfinite(images).all()


def test_the_shipped_prompts_are_the_default():
    model = model_from_pipeline(tiny_sd3(), source="tiny-sd3")
    generator = ImageGenerator(model, SamplingSettings(solver="flow-euler"))
    assert len(generator.prompts) >= 300
    generator.close()


def test_image_size_is_checked():
    with pytest.raises(ConfigError, match="must be a multiple of 2"):
        ImageGenerator(model_from_pipeline(tiny_flux(), image_size=(16, 17)), SamplingSettings(solver="flow-euler"))
    with pytest.raises(ConfigError, match="image_size must be a positive integer"):
        model_from_pipeline(tiny_flux(), image_size=(16, 0))
    model = model_from_pipeline(tiny_sd(), image_size=(24, 40))
    assert model.sample_shape == (4, 12, 20)
    with ImageGenerator(model, SamplingSettings(solver="euler", batch_size=2)) as generator:
        assert next(generator.batches(Plan((700, 300)), 2)).shape == (2, 3, 24, 40)


def test_apply_sets_the_scheduler_of_a_plan_that_carries_its_solver():
    pipe = tiny_sd()
    model = model_from_pipeline(pipe, source="tiny-sd")
    settings = SamplingSettings(solver="euler", guidance_scale=7.5, batch_size=2, seed=3)  # the study's default
    prompts = PromptSet(PROMPTS)
    plan = Plan(DDPM_STEPS, solver="dpmpp-2m")
    ours = project_images(model, settings, plan, 2, prompts)

    switch = apply(pipe, plan)
    try:
        assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler" and pipe.scheduler.config.solver_order == 2
        height, width = model.family.image_size(model)
        images = pipe(prompts.texts(0, 2), guidance_scale=7.5, latents=model.family.initial_noise(model, 3, 0, 2),
                      output_type="pt", height=height, width=width,
                      **pipeline_schedule_kwargs(plan.timesteps, pipe.scheduler)).images
    finally:
        switch.remove()
    assert difference(ours, images) <= TOLERANCE
    with pytest.raises(ConfigError, match="no diffusers scheduler runs solver 'unipc'"):
        apply(pipe, Plan(DDPM_STEPS, solver="unipc"))


@pytest.mark.parametrize("first", [901, 750, 500])
@pytest.mark.parametrize("solver", ["euler", "ddim"])
def test_apply_makes_the_readmes_short_form_reproduce_the_study_on_sdxls_own_euler_scheduler(solver, first):
    """``apply(pipe, plan); pipe(prompt, timesteps=list(plan.timesteps))`` with SDXL's stock scheduler
    (Euler, leading spacing): an exported plan carries its solver, so apply swaps in the scheduler that runs it."""
    pipe = tiny_sdxl()
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler" and pipe.scheduler.config.timestep_spacing == "leading"
    model = model_from_pipeline(pipe, source="tiny-sdxl")
    settings = SamplingSettings(solver=solver, guidance_scale=5.0, batch_size=2, seed=1)
    plan = Plan((first, first * 2 // 3, first // 3, 20), solver=solver)
    ours = project_images(model, settings, plan, 2, PromptSet(PROMPTS[:2]))
    height, width = model.family.image_size(model)

    def short_form(plan):
        switch = apply(pipe, plan)
        try:
            return pipe(PROMPTS[:2], timesteps=list(plan.timesteps), guidance_scale=5.0, height=height, width=width,
                        latents=model.family.initial_noise(model, 1, 0, 2), output_type="pt").images
        finally:
            switch.remove()

    stock = pipe.scheduler
    assert difference(ours, short_form(plan)) <= TOLERANCE
    pipe.scheduler = stock  # a plan without its solver leaves SDXL's own scheduler, which is not the study's
    unsolved = short_form(dataclasses.replace(plan, solver=None))
    if solver == "euler":  # leading spacing scales the first noise by sqrt(sigma^2 + 1), linspace by sigma
        assert difference(ours, unsolved) > 1e-3


def test_scheduler_export_builds_each_records_scheduler_with_its_settings():
    pipe_schedulers = {"ddpm": tiny_sd().scheduler, "flow": FlowMatchEulerDiscreteScheduler(shift=3.0)}
    exportable = [name for name, record in SOLVER_RECORDS.items() if record.exportable]
    assert exportable == ["ddim", "dpmpp-2m", "euler", "ddpm", "flow-euler"]
    for name in exportable:
        record = SOLVER_RECORDS[name]
        stock = pipe_schedulers[record.kind]
        exported = scheduler_for_solver(name, stock)
        assert type(exported).__name__ == record.scheduler
        assert {key: exported.config[key] for key in record.scheduler_settings} == dict(record.scheduler_settings)
        kept = "shift" if record.kind == "flow" else "beta_schedule"
        assert exported.config[kept] == stock.config[kept]  # the pipeline's own schedule stays


def test_scheduler_export_refuses_solvers_no_pipeline_scheduler_runs():
    pipe = tiny_sd()
    for solver in ("unipc", "flow-unipc", "flow-dpmpp-2m"):
        with pytest.raises(ConfigError, match="no diffusers scheduler runs solver"):
            scheduler_for_solver(solver, pipe.scheduler)
    with pytest.raises(ConfigError, match="unknown solver"):
        scheduler_for_solver("heun", pipe.scheduler)


# MACs per component ------------------------------------------------------------------------------------------


def _direct(module, *args) -> int:
    """fvcore on ``module(*args)``, with the project's handles for attention, and nothing else of the project."""
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(module, args)
    for name, handle in EXTRA_HANDLES.items():
        analysis.set_op_handle(name, handle)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return int(analysis.total())


class _Decode(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latents):
        return self.vae.decode(latents).sample


TEXT_LENGTHS = {"pixart-sigma": 300, "sd3": 256, "flux-schnell": 512}  # T5 lengths: the pipelines' defaults


SLOW_MACS = ("sdxl", "sd3", "flux-schnell")  # 8-15 s: several text encoders traced twice


@pytest.mark.parametrize(
    "name", ["sd", "pixart-sigma", "dit", *(pytest.param(name, marks=pytest.mark.slow) for name in SLOW_MACS)]
)
def test_component_macs_equal_direct_counts_of_the_components(name):
    pipe = TINY_PIPELINES[name]()
    model = model_from_pipeline(pipe, source=name, image_size=IMAGE_SIZES.get(name))
    classes = {"num_classes": 1000, "null_class": 1000} if name == "dit" else {}
    unguided = component_macs(model, SamplingSettings(guidance_scale=1.0, **classes))
    guided = component_macs(model, SamplingSettings(guidance_scale=5.0, **classes))

    latents = torch.zeros(1, *model.family.latent_shape(model)) if name != "dit" else torch.zeros(1, 4, 8, 8)
    decoder = _direct(_Decode(pipe.vae), latents)
    assert unguided["vae_decoder"] == guided["vae_decoder"] == vae_decoder_macs(model) == decoder
    if name == "dit":
        assert unguided["text_encoders"] == guided["text_encoders"] == 0
        return
    direct = {}
    for encoder in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        module = getattr(pipe, encoder, None)
        if module is not None:
            length = 77 if "CLIP" in type(module).__name__ else TEXT_LENGTHS[name]
            direct[encoder] = _direct(module, torch.zeros(1, length, dtype=torch.long))
    assert text_encoder_macs(model) == direct
    assert unguided["text_encoders"] == sum(direct.values())
    # Under guidance the negative prompt is encoded too; SDXL's default unconditional pass is zeros, Flux has none.
    expected = 1 if name in ("sdxl", "flux-schnell") else 2
    assert guided["text_encoders"] == expected * sum(direct.values())


def test_sdxl_negative_prompts_cost_an_encoding():
    model = model_from_pipeline(tiny_sdxl(), source="tiny-sdxl")
    settings = SamplingSettings(guidance_scale=5.0)
    one = sum(text_encoder_macs(model).values())
    assert component_macs(model, settings, prompts=PromptSet(["a"]))["text_encoders"] == one
    assert component_macs(model, settings, prompts=PromptSet(["a"], negative_prompt=""))["text_encoders"] == 2 * one
    assert text_encoder_macs(model, unconditional=True) == {"text_encoder": 0, "text_encoder_2": 0}


@pytest.mark.parametrize("name", ["sd", "sdxl", "pixart-alpha", "sd3", "flux-dev", "dit"])
def test_denoiser_macs_table_takes_the_familys_example_call(name):
    pipe = TINY_PIPELINES[name]()
    model = model_from_pipeline(pipe, source=name, image_size=IMAGE_SIZES.get(name))
    classes = {"num_classes": 1000, "null_class": 1000} if name == "dit" else {}
    inputs = model.family.example_inputs(model, SamplingSettings(**classes))
    table = MacsTable.for_model(model.denoiser, inputs=inputs) if inputs else MacsTable.for_model(model.denoiser)
    assert table.sample_shape == model.sample_shape and table.full > 0


def test_count_macs_of_a_bare_sdxl_unet_builds_its_added_conditions():
    from optuna_diffusion.macs import count_macs

    pipe = tiny_sdxl()
    model = model_from_pipeline(pipe, source="sdxl")
    inputs = model.family.example_inputs(model, SamplingSettings())  # the pipeline's own text_embeds and time_ids
    length = inputs["encoder_hidden_states"].shape[1]
    assert count_macs(pipe.unet, text_length=length) == count_macs(pipe.unet, inputs=inputs) > 0
    pipe.unet.register_to_config(addition_time_embed_dim=10_000)  # no room for pooled text embeddings left
    with pytest.raises(ConfigError, match="needs added_cond_kwargs that cannot be built from its config"):
        count_macs(pipe.unet, text_length=length)


# Loading pipelines from folders (the presets' stand-ins) -----------------------------------------------------

FAMILY_OF_PRESET = {
    "sd15": StableDiffusionFamily,
    "sdxl": StableDiffusionXLFamily,
    "pixart-sigma": PixArtFamily,
    "sd3-medium": StableDiffusion3Family,
    "flux-schnell": FluxFamily,
    "dit-xl-256": DiTPipelineFamily,
}


@pytest.mark.parametrize(
    "preset",
    # Flux runs at its pipeline's default size, 128 pixels: 4096 image tokens, about 10 s.
    [pytest.param(name, marks=pytest.mark.slow) if name == "flux-schnell" else name for name in STAND_INS],
)
def test_stand_in_folders_load_and_make_finite_images(tmp_path, preset):
    folder = STAND_INS[preset](tmp_path / preset)
    assert (folder / "model_index.json").is_file()
    model = load_diffusion_model(str(folder))
    assert type(model.family) is FAMILY_OF_PRESET[preset] and model.pipeline is not None and model.vae is not None
    flow = model.schedule.kind == "flow"
    classes = {"num_classes": 1000, "null_class": 1000} if preset == "dit-xl-256" else {}
    solver = "flow-euler" if flow else "dpmpp-2m"
    settings = SamplingSettings(solver=solver, guidance_scale=4.0, batch_size=2, **classes)
    plan = Plan((1000, 500) if flow else (999, 499), schedule_kind=model.schedule.kind)
    images = project_images(model, settings, plan, 3, None if preset == "dit-xl-256" else PromptSet(PROMPTS))
    height, width = model.family.image_size(model) if preset != "dit-xl-256" else (8, 8)
    assert images.shape == (3, 3, height, width) and torch.isfinite(images).all()


def test_a_loaded_pipeline_equals_the_pipeline_it_was_saved_from(tmp_path):
    folder = STAND_INS["sd3-medium"](tmp_path / "sd3")
    loaded = load_diffusion_model(str(folder), image_size=8)
    assert loaded.image_size == (8, 8) and loaded.source == str(folder)
    assert loaded.scheduler_config["_class_name"] == "FlowMatchEulerDiscreteScheduler"
    assert loaded.scheduler_config["shift"] == 3.0
    original = model_from_pipeline(tiny_sd3(), image_size=8)
    settings = SamplingSettings(solver="flow-euler", guidance_scale=2.0, batch_size=2)
    plan = Plan((1000, 400), schedule_kind="flow")
    prompts = PromptSet(PROMPTS)
    torch.testing.assert_close(
        project_images(loaded, settings, plan, 2, prompts), project_images(original, settings, plan, 2, prompts)
    )


def _break(folder, relative):
    path = folder / relative
    if path.is_dir():
        for child in path.iterdir():
            child.unlink()
        path.rmdir()
    else:
        path.unlink()


@pytest.mark.parametrize(
    "relative, message",
    [
        ("text_encoder_3", "has no text_encoder_3/"),
        ("text_encoder_2/model.safetensors", "text_encoder_2/ has no weights file (.safetensors or .bin) (its CLIPTextModelWithProjection)"),
        ("vae/diffusion_pytorch_model.safetensors", "vae/ has no weights file (.safetensors or .bin) (its AutoencoderKL)"),
        ("transformer/config.json", "transformer/ has no config.json"),
        ("tokenizer_3", "has no tokenizer_3/"),
        ("scheduler/scheduler_config.json", "scheduler/ has no scheduler_config.json"),
    ],
)
def test_a_pipeline_folder_missing_a_component_is_a_one_line_error(tmp_path, relative, message):
    folder = STAND_INS["sd3-medium"](tmp_path / "sd3")
    _break(folder, relative)
    with pytest.raises(ModelLoadError) as error:
        load_diffusion_model(str(folder))
    assert message in str(error.value) and str(folder) in str(error.value) and "\n" not in str(error.value)


def test_a_pipeline_folder_with_a_broken_component_is_a_one_line_error(tmp_path):
    folder = STAND_INS["sd15"](tmp_path / "sd")
    (folder / "text_encoder" / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelLoadError) as error:
        load_diffusion_model(str(folder))
    assert "cannot load the pipeline" in str(error.value) and "\n" not in str(error.value)


def test_image_size_is_for_pipelines_only(tmp_path):
    with pytest.raises(ConfigError, match="image_size applies to pipelines"):
        load_diffusion_model("digits", image_size=8)


def test_a_pipeline_in_the_hub_cache_loads_offline(monkeypatch, tmp_path):
    import huggingface_hub.constants as constants

    repo = tmp_path / "hub" / "models--someone--tiny-pixart"
    STAND_INS["pixart-sigma"](repo / "snapshots" / ("b" * 40))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("b" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model = load_diffusion_model("someone/tiny-pixart", local_files_only=True)
    assert type(model.family) is PixArtFamily and model.source == "someone/tiny-pixart"
    index = json.loads((repo / "snapshots" / ("b" * 40) / "model_index.json").read_text())
    assert index["_class_name"] == "PixArtSigmaPipeline"
