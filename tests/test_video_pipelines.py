"""Video pipelines as models: exact against the pipelines themselves on tiny random stand-ins, skips equal to
hand-written hooks, MACs per component at the study's frame count, and the frame count checked.

Each ``test_exact_*`` runs a 4-step plan in the engine and in the pipeline's own call (the study's solver
as its scheduler, the plan's schedule, the engine's initial latents) and compares the frames to 1e-5.
"""

from __future__ import annotations

import pytest
import torch

from optuna_diffusion.apply import apply
from optuna_diffusion.blocks import find_blocks
from optuna_diffusion.errors import ConfigError
from optuna_diffusion.generation import ImageGenerator, SamplingSettings
from optuna_diffusion.macs import MacsTable
from optuna_diffusion.macs._fvcore import EXTRA_HANDLES
from optuna_diffusion.models import load_diffusion_model, model_from_pipeline
from optuna_diffusion.pipelines import (
    component_macs,
    pin_schedule,
    pipeline_schedule_kwargs,
    scheduler_for_solver,
    unpin_schedule,
)
from optuna_diffusion.plan import Plan
from optuna_diffusion.prompts import PromptSet

from .tiny_pipelines import tiny_sd3
from .tiny_video_pipelines import (
    COGVIDEOX_SIZE,
    LTX_SIZE,
    WAN_SIZE,
    save_cogvideox_2b,
    save_ltx_video,
    save_wan21_t2v,
    tiny_cogvideox,
    tiny_ltx,
    tiny_wan,
)

TOLERANCE = 1e-5
PROMPTS = ["a red kite over a beach", "a cat chasing a ball", "rain on a window"]
FLOW_STEPS = (1000, 750, 400, 100)
DDPM_STEPS = (901, 651, 301, 51)


def project_frames(model, settings, plan, count, prompts):
    """The project's frames ``(count, F, C, H, W)`` of samples 0..count-1, in [-1, 1]."""
    with ImageGenerator(model, settings, prompts=prompts) as generator:
        return torch.cat(list(generator.batches(plan, count)))


def difference(project, frames):
    """Largest difference between the project's frames and the pipeline's ``output_type="pt"`` ([0, 1])."""
    assert project.shape == frames.shape
    return float((project.clamp(-1, 1) / 2 + 0.5 - frames).abs().max())


def skipping(plan: Plan, denoiser) -> Plan:
    """``plan`` with a skip at every step after the first (whole blocks and sub-layers, in turn)."""
    names = [block.name for block in find_blocks(denoiser) if "skip" in block.actions]
    skips = [frozenset()] + [frozenset({names[i % len(names)]}) for i in range(plan.num_steps - 1)]
    return Plan(plan.timesteps, skips=tuple(skips), schedule_kind=plan.schedule_kind)


def test_a_pinned_schedule_ignores_what_the_pipeline_asks_until_unpinned():
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    schedule = pipeline_schedule_kwargs(FLOW_STEPS, scheduler)
    pin_schedule(scheduler, schedule)
    scheduler.set_timesteps(50, device="cpu", sigmas=[1.0, 0.5])  # what a pipeline might pass

    assert scheduler.timesteps.round().tolist() == list(FLOW_STEPS)
    unpin_schedule(scheduler)
    scheduler.set_timesteps(50)
    assert len(scheduler.timesteps) == 50
    with pytest.raises(ConfigError, match="holds timesteps or sigmas"):
        pin_schedule(scheduler, {"mu": 0.5})


# Wan ---------------------------------------------------------------------------------------------------


def wan_frames(pipe, model, settings, plan, count, prompts, **call):
    """``WanPipeline``'s own frames of samples 0..count-1 under ``plan`` (its call takes no sigmas: pinned)."""
    pipe.scheduler = scheduler_for_solver(settings.solver, pipe.scheduler)
    pin_schedule(pipe.scheduler, pipeline_schedule_kwargs(plan.timesteps, pipe.scheduler))
    height, width = model.family.image_size(model)
    switch = apply(pipe, plan)
    try:
        return pipe(
            prompts.texts(0, count), negative_prompt=prompts.negatives(0, count), height=height, width=width,
            num_frames=model.family.num_frames(model), num_inference_steps=plan.num_steps,
            guidance_scale=settings.guidance_scale, latents=model.family.initial_noise(model, settings.seed, 0, count),
            output_type="pt", **call,
        ).frames
    finally:
        switch.remove()
        unpin_schedule(pipe.scheduler)


@pytest.mark.parametrize("skips", [False, True], ids=["full", "skips"])
def test_exact_wan(skips):
    pipe = tiny_wan()
    model = model_from_pipeline(pipe, source="tiny-wan", **WAN_SIZE)
    settings = SamplingSettings(solver="flow-euler", guidance_scale=5.0, batch_size=2, seed=4)
    prompts = PromptSet(PROMPTS, negative_prompt="blurry")
    plan = Plan(FLOW_STEPS, schedule_kind="flow")
    plan = skipping(plan, pipe.transformer) if skips else plan
    ours = project_frames(model, settings, plan, 3, prompts)

    frames = wan_frames(pipe, model, settings, plan, 3, prompts)

    assert ours.shape == (3, 9, 3, 16, 16)
    assert difference(ours, frames) <= TOLERANCE


def test_exact_wan_reuse_without_guidance():
    pipe = tiny_wan()
    model = model_from_pipeline(pipe, source="tiny-wan", **WAN_SIZE)
    settings = SamplingSettings(solver="flow-euler", guidance_scale=1.0, batch_size=3, seed=2)
    prompts = PromptSet(PROMPTS)
    reused = [frozenset(), frozenset({"blocks.1"}), frozenset({"blocks.0.ff"}), frozenset({"tail.0"})]
    plan = Plan(FLOW_STEPS, reuses=tuple(reused), schedule_kind="flow")
    ours = project_frames(model, settings, plan, 3, prompts)

    frames = wan_frames(pipe, model, settings, plan, 3, prompts)

    assert difference(ours, frames) <= TOLERANCE


def test_wan_latents_and_blocks():
    pipe = tiny_wan()
    model = model_from_pipeline(pipe, source="tiny-wan", image_size=32, num_frames=13)

    assert model.sample_shape == (16, 4, 4, 4)  # (13 - 1) / 4 + 1 latent frames of 32 / 8
    names = [block.name for block in find_blocks(pipe.transformer)]
    assert names == ["blocks.0", "blocks.0.attn", "blocks.0.cross_attn", "blocks.0.ff",
                     "blocks.1", "blocks.1.attn", "blocks.1.cross_attn", "blocks.1.ff", "tail.0"]


def test_wan_skip_equals_a_hand_written_hook():
    pipe = tiny_wan()
    model = model_from_pipeline(pipe, source="tiny-wan", **WAN_SIZE)
    latents = model.family.initial_noise(model, 0, 0, 1)
    pipe.scheduler = scheduler_for_solver("flow-euler", pipe.scheduler)
    plan = Plan(FLOW_STEPS, skips=(frozenset(),) + (frozenset({"blocks.1.cross_attn", "blocks.0"}),) * 3,
                schedule_kind="flow")
    call = dict(height=16, width=16, num_frames=9, num_inference_steps=4, guidance_scale=1.0, output_type="latent")
    pin_schedule(pipe.scheduler, pipeline_schedule_kwargs(plan.timesteps, pipe.scheduler))

    switch = apply(pipe, plan)
    try:
        ours = pipe("a cat", latents=latents, **call).frames
    finally:
        switch.remove()
    first = {"step": True}

    def cross_attention_zeros(module, args, output):  # the skipped cross-attention adds nothing
        return output if first["step"] else torch.zeros_like(output)

    def block_identity(module, args, kwargs, output):  # the skipped block returns its input
        return output if first["step"] else args[0]

    def count_steps(module, args, kwargs):
        t = kwargs["timestep"]
        first["step"] = int(round(float(t.flatten()[0]))) == FLOW_STEPS[0]

    handles = [
        pipe.transformer.register_forward_pre_hook(count_steps, with_kwargs=True),
        pipe.transformer.blocks[1].attn2.register_forward_hook(cross_attention_zeros),
        pipe.transformer.blocks[0].register_forward_hook(block_identity, with_kwargs=True),
    ]
    try:
        theirs = pipe("a cat", latents=latents, **call).frames
    finally:
        for handle in handles:
            handle.remove()

    assert (ours - theirs).abs().max() <= TOLERANCE
    assert (ours - pipe("a cat", latents=latents, **call).frames).abs().max() > 1e-3  # the skips change the output


def test_wan_macs_follow_the_frame_count():
    pipe = tiny_wan()
    settings = SamplingSettings(solver="flow-euler", guidance_scale=5.0)
    short = model_from_pipeline(pipe, source="tiny-wan", image_size=16, num_frames=5)
    long = model_from_pipeline(pipe, source="tiny-wan", image_size=16, num_frames=13)

    tables = [MacsTable.for_model(m.denoiser, inputs=m.family.example_inputs(m, settings)) for m in (short, long)]
    parts = [component_macs(m, settings) for m in (short, long)]

    assert tables[0].sample_shape == (16, 2, 2, 2) and tables[1].sample_shape == (16, 4, 2, 2)
    # The feed-forward is linear in the tokens: twice the latent frames, twice its MACs.
    assert tables[1].skip_savings["blocks.0.ff"] == 2 * tables[0].skip_savings["blocks.0.ff"]
    assert tables[1].full > tables[0].full
    assert parts[1]["vae_decoder"] > parts[0]["vae_decoder"] > 0
    assert parts[0]["text_encoders"] == parts[1]["text_encoders"] > 0
    assert EXTRA_HANDLES  # the attention products are counted


@pytest.mark.parametrize("frames", [8, 10])
def test_wan_frame_count_the_vae_cannot_compress(frames):
    model = model_from_pipeline(tiny_wan(), source="tiny-wan", image_size=16, num_frames=frames)
    settings = SamplingSettings(solver="flow-euler")

    with pytest.raises(ConfigError, match=rf"num_frames = {frames} does not fit .* 1 \+ a multiple of 4"):
        model.family.check(model, settings, text=model.prompt_encoder.bind(PromptSet(PROMPTS)))


@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_bad_num_frames(value):
    with pytest.raises(ConfigError, match="num_frames must be a positive integer"):
        model_from_pipeline(tiny_wan(), source="tiny-wan", num_frames=value)


def test_num_frames_of_an_image_pipeline():
    with pytest.raises(ConfigError, match="num_frames applies to video pipelines; tiny-sd3 makes images"):
        model_from_pipeline(tiny_sd3(), source="tiny-sd3", num_frames=9)


def test_wan_loads_from_a_folder(tmp_path):
    folder = save_wan21_t2v(tmp_path / "wan")
    model = load_diffusion_model(str(folder), **WAN_SIZE)

    assert type(model.family).__name__ == "WanFamily"
    assert model.sample_shape == (16, 3, 2, 2)
    assert type(model.schedule).__name__ == "FlowSchedule" and model.schedule.shift == 3.0  # UniPC's flow_shift


# CogVideoX -----------------------------------------------------------------------------------------------


def cogvideox_frames(pipe, model, settings, plan, count, prompts, **call):
    """``CogVideoXPipeline``'s own frames of samples 0..count-1 under ``plan`` (its call takes ``timesteps=``)."""
    pipe.scheduler = scheduler_for_solver(settings.solver, pipe.scheduler)  # CogVideoX's levels as trained_betas
    height, width = model.family.image_size(model)
    negatives = prompts.negatives(0, count)
    switch = apply(pipe, plan)
    try:
        return pipe(
            prompts.texts(0, count), negative_prompt=None if set(negatives) == {None} else negatives,
            height=height, width=width, num_frames=model.family.num_frames(model), guidance_scale=settings.guidance_scale,
            latents=model.family.initial_noise(model, settings.seed, 0, count), output_type="pt",
            **pipeline_schedule_kwargs(plan.timesteps, pipe.scheduler), **call,
        ).frames
    finally:
        switch.remove()


@pytest.mark.parametrize("solver, skips", [("ddim", False), ("ddim", True), ("dpmpp-2m", True)])
def test_exact_cogvideox(solver, skips):
    pipe = tiny_cogvideox()
    model = model_from_pipeline(pipe, source="tiny-cogvideox", **COGVIDEOX_SIZE)
    settings = SamplingSettings(solver=solver, guidance_scale=6.0, batch_size=2, seed=5)
    prompts = PromptSet(PROMPTS, negative_prompt="blurry")
    plan = Plan(DDPM_STEPS)
    plan = skipping(plan, pipe.transformer) if skips else plan
    ours = project_frames(model, settings, plan, 3, prompts)

    frames = cogvideox_frames(pipe, model, settings, plan, 3, prompts)

    assert ours.shape == (3, 9, 3, 16, 16)
    assert difference(ours, frames) <= TOLERANCE


def test_exact_cogvideox_with_rotary_embeddings_and_reuse():
    pipe = tiny_cogvideox(rotary=True)
    model = model_from_pipeline(pipe, source="tiny-cogvideox-5b", image_size=32, num_frames=5)
    settings = SamplingSettings(solver="ddim", guidance_scale=6.0, batch_size=3, seed=1)
    prompts = PromptSet(PROMPTS)
    reused = [frozenset(), frozenset({"blocks.1"}), frozenset({"blocks.0.attn"}), frozenset({"tail.0"})]
    plan = Plan(DDPM_STEPS, reuses=tuple(reused))
    ours = project_frames(model, settings, plan, 3, prompts)

    frames = cogvideox_frames(pipe, model, settings, plan, 3, prompts)

    assert difference(ours, frames) <= TOLERANCE


def test_cogvideox_schedule_is_its_schedulers():
    pipe = tiny_cogvideox()
    model = model_from_pipeline(pipe, source="tiny-cogvideox", **COGVIDEOX_SIZE)
    shifted = pipe.scheduler.alphas_cumprod.double()  # SNR shift 3, then zero terminal SNR

    assert torch.allclose(model.schedule.alphas_cumprod[:-1], shifted[:-1], rtol=1e-5)
    assert shifted[-1] == 0 and float(model.schedule.alphas_cumprod[-1]) == pytest.approx(2**-24, rel=1e-3)  # floored
    assert model.sample_shape == (3, 4, 2, 2)  # (f, C, h, w): frames before channels
    assert [b.name for b in find_blocks(pipe.transformer)][:3] == ["blocks.0", "blocks.0.attn", "blocks.0.ff"]


def test_cogvideox_defaults_and_macs():
    pipe = tiny_cogvideox()
    default = model_from_pipeline(pipe, source="tiny-cogvideox")
    settings = SamplingSettings(solver="ddim", guidance_scale=6.0)

    assert default.family.image_size(default) == (16, 16) and default.family.num_frames(default) == 9
    table = MacsTable.for_model(default.denoiser, inputs=default.family.example_inputs(default, settings))
    assert table.sample_shape == (3, 4, 2, 2) and table.skip_savings["blocks.0.ff"] > 0
    assert component_macs(default, settings)["vae_decoder"] > 0


def test_cogvideox_skip_equals_a_hand_written_hook():
    pipe = tiny_cogvideox()
    pipe.scheduler = scheduler_for_solver("ddim", pipe.scheduler)
    model = model_from_pipeline(pipe, source="tiny-cogvideox", **COGVIDEOX_SIZE)
    call = dict(height=16, width=16, num_frames=9, guidance_scale=1.0, output_type="latent",
                latents=model.family.initial_noise(model, 0, 0, 1), **pipeline_schedule_kwargs(DDPM_STEPS, pipe.scheduler))
    plan = Plan(DDPM_STEPS, skips=(frozenset({"blocks.1.attn"}),) * 4)

    switch = apply(pipe, plan)
    try:
        ours = pipe("a cat", **call).frames
    finally:
        switch.remove()
    joint_zeros = pipe.transformer.transformer_blocks[1].attn1.register_forward_hook(
        lambda module, args, output: tuple(torch.zeros_like(part) for part in output)  # adds nothing to either stream
    )
    try:
        theirs = pipe("a cat", **call).frames
    finally:
        joint_zeros.remove()

    assert (ours - theirs).abs().max() <= TOLERANCE
    assert (ours - pipe("a cat", **call).frames).abs().max() > 1e-3  # the skip changes the output


def test_cogvideox_loads_from_a_folder(tmp_path):
    model = load_diffusion_model(str(save_cogvideox_2b(tmp_path / "cogvideox")), **COGVIDEOX_SIZE)

    assert type(model.family).__name__ == "CogVideoXFamily"
    assert model.schedule.prediction_type == "v_prediction"


# LTX-Video -----------------------------------------------------------------------------------------------


def ltx_frames(pipe, model, settings, plan, count, prompts, **call):
    """``LTXPipeline``'s own frames of samples 0..count-1 under ``plan`` (it passes its own sigmas: pinned)."""
    pipe.scheduler = scheduler_for_solver(settings.solver, pipe.scheduler)  # keeps the dynamic shifting
    mu = model.family.shift_mu(model)
    pin_schedule(pipe.scheduler, {**pipeline_schedule_kwargs(plan.timesteps, pipe.scheduler, mu=mu), "mu": mu})
    height, width = model.family.image_size(model)
    negatives = prompts.negatives(0, count)
    switch = apply(pipe, plan)
    try:
        return pipe(
            prompts.texts(0, count), negative_prompt=None if set(negatives) == {None} else negatives,
            height=height, width=width, num_frames=model.family.num_frames(model), num_inference_steps=plan.num_steps,
            guidance_scale=settings.guidance_scale, latents=model.family.initial_noise(model, settings.seed, 0, count),
            output_type="pt", **call,
        ).frames
    finally:
        switch.remove()
        unpin_schedule(pipe.scheduler)


@pytest.mark.parametrize("skips", [False, True], ids=["full", "skips"])
def test_exact_ltx(skips):
    pipe = tiny_ltx()
    model = model_from_pipeline(pipe, source="tiny-ltx", **LTX_SIZE)
    settings = SamplingSettings(solver="flow-euler", guidance_scale=3.0, batch_size=2, seed=7)
    prompts = PromptSet(PROMPTS, negative_prompt="worst quality")
    plan = Plan(FLOW_STEPS, schedule_kind="flow")
    plan = skipping(plan, pipe.transformer) if skips else plan
    ours = project_frames(model, settings, plan, 3, prompts)

    frames = ltx_frames(pipe, model, settings, plan, 3, prompts)

    assert ours.shape == (3, 9, 3, 32, 32)
    assert difference(ours, frames) <= TOLERANCE


def test_exact_ltx_reuse():
    pipe = tiny_ltx()
    model = model_from_pipeline(pipe, source="tiny-ltx", **LTX_SIZE)
    settings = SamplingSettings(solver="flow-euler", guidance_scale=3.0, batch_size=3, seed=2)
    reused = [frozenset(), frozenset({"blocks.0"}), frozenset({"blocks.1.cross_attn"}), frozenset({"tail.0"})]
    plan = Plan(FLOW_STEPS, reuses=tuple(reused), schedule_kind="flow")
    ours = project_frames(model, settings, plan, 3, PromptSet(PROMPTS))

    frames = ltx_frames(pipe, model, settings, plan, 3, PromptSet(PROMPTS))

    assert difference(ours, frames) <= TOLERANCE


def test_ltx_tokens_shift_and_macs():
    pipe = tiny_ltx()
    model = model_from_pipeline(pipe, source="tiny-ltx", image_size=64, num_frames=17)
    settings = SamplingSettings(solver="flow-euler", guidance_scale=3.0)

    assert model.sample_shape == (5 * 16 * 16, 8)  # (17 - 1) / 4 + 1 latent frames of 64 / 4, one token each
    # The pipeline's mu: the line through (1024, 0.95) and (4096, 2.05) at 1280 tokens.
    assert model.family.shift_mu(model) == pytest.approx(0.95 + (2.05 - 0.95) * (1280 - 1024) / (4096 - 1024))
    table = MacsTable.for_model(model.denoiser, inputs=model.family.example_inputs(model, settings))
    assert table.sample_shape == (1280, 8) and table.skip_savings["blocks.1.cross_attn"] > 0
    assert component_macs(model, settings)["vae_decoder"] > 0
    with pytest.raises(ConfigError, match="must be a multiple of 32"):
        model_from_pipeline(pipe, source="tiny-ltx", image_size=48).family.image_size(model_from_pipeline(
            pipe, source="tiny-ltx", image_size=48))


def test_ltx_skip_equals_a_hand_written_hook():
    pipe = tiny_ltx()
    model = model_from_pipeline(pipe, source="tiny-ltx", **LTX_SIZE)
    pipe.scheduler = scheduler_for_solver("flow-euler", pipe.scheduler)
    mu = model.family.shift_mu(model)
    pin_schedule(pipe.scheduler, {**pipeline_schedule_kwargs(FLOW_STEPS, pipe.scheduler, mu=mu), "mu": mu})
    call = dict(height=32, width=32, num_frames=9, num_inference_steps=4, guidance_scale=1.0, output_type="latent",
                latents=model.family.initial_noise(model, 0, 0, 1))
    plan = Plan(FLOW_STEPS, skips=(frozenset({"blocks.0.cross_attn", "blocks.1"}),) * 4, schedule_kind="flow")

    switch = apply(pipe, plan)
    try:
        ours = pipe("a cat", **call).frames
    finally:
        switch.remove()
    handles = [
        pipe.transformer.transformer_blocks[0].attn2.register_forward_hook(lambda m, a, out: torch.zeros_like(out)),
        pipe.transformer.transformer_blocks[1].register_forward_hook(lambda m, a, kw, out: kw["hidden_states"],
                                                                      with_kwargs=True),
    ]
    try:
        theirs = pipe("a cat", **call).frames
    finally:
        for handle in handles:
            handle.remove()

    assert (ours - theirs).abs().max() <= TOLERANCE
    assert (ours - pipe("a cat", **call).frames).abs().max() > 1e-3  # the skips change the output


def test_ltx_loads_from_a_folder(tmp_path):
    model = load_diffusion_model(str(save_ltx_video(tmp_path / "ltx")), **LTX_SIZE)

    assert type(model.family).__name__ == "LTXFamily"
    assert model.schedule.use_dynamic_shifting
