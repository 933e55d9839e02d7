"""Wan 2.1 (``WanPipeline``) as a model: exact against the pipeline, skips equal to hand-written hooks,
MACs at the study's frame count, the frame count checked.

Each ``test_exact_*`` runs a 4-step plan in the engine and in the pipeline's own call (the study's solver as
its scheduler, the plan's schedule, the engine's initial latents) and compares the frames to 1e-5
(:mod:`tests.video_checks`).
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
)
from optuna_diffusion.plan import Plan
from optuna_diffusion.prompts import PromptSet

from .tiny_pipelines import tiny_sd3
from .tiny_video_pipelines import WAN_SIZE, save_wan21_t2v, tiny_wan
from .video_checks import (
    FLOW_STEPS,
    PROMPTS,
    TOLERANCE,
    difference,
    pipeline_frames,
    project_frames,
    skipping,
)


@pytest.mark.parametrize("skips", [False, True], ids=["full", "skips"])
def test_exact_wan(skips):
    pipe = tiny_wan()
    model = model_from_pipeline(pipe, source="tiny-wan", **WAN_SIZE)
    settings = SamplingSettings(solver="flow-euler", guidance_scale=5.0, batch_size=2, seed=4)
    prompts = PromptSet(PROMPTS, negative_prompt="blurry")
    plan = Plan(FLOW_STEPS, schedule_kind="flow")
    plan = skipping(plan, pipe.transformer) if skips else plan
    ours = project_frames(model, settings, plan, 3, prompts)

    frames = pipeline_frames(pipe, model, settings, plan, 3, prompts, pin=True)

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

    frames = pipeline_frames(pipe, model, settings, plan, 3, prompts, pin=True)

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


def test_bfloat16_wan_equals_the_pipelines_own_bfloat16_call():
    pipe = tiny_wan().to(torch.bfloat16)
    model = model_from_pipeline(pipe, source="tiny-wan", **WAN_SIZE)
    settings = SamplingSettings(solver="flow-euler", guidance_scale=4.0, batch_size=2, seed=3)
    plan = skipping(Plan(FLOW_STEPS, schedule_kind="flow"), pipe.transformer)
    with ImageGenerator(model, settings, prompts=PromptSet(PROMPTS)) as generator:
        ours = torch.cat(list(generator.batches(plan, 2, decoded=False)))

    # The pipeline keeps float32 latents until the first step casts them to the model output's dtype.
    latents = pipeline_frames(pipe, model, settings, plan, 2, PromptSet(PROMPTS), pin=True, output_type="latent",
                         latents=model.family.initial_noise(model, settings.seed, 0, 2).to(torch.bfloat16))

    assert ours.dtype == latents.dtype == torch.bfloat16 and torch.equal(ours, latents)


def test_study_inputs_of_a_video_pipeline():
    from optuna_diffusion.study_inputs import study_latents, study_num_frames

    pipe = tiny_wan()
    model = model_from_pipeline(pipe, source="tiny-wan", image_size=16, num_frames=13)

    assert study_num_frames(pipe) == 81 and study_num_frames(pipe, 13) == 13  # the pipeline's default, the study's
    latents = study_latents(pipe, seed=5, count=2, height=16, width=16, num_frames=13)
    assert latents.shape == (2, 16, 4, 2, 2) and torch.equal(latents, model.family.initial_noise(model, 5, 0, 2))
    with pytest.raises(ConfigError, match="num_frames = 12 does not fit"):
        study_num_frames(pipe, 12)


@pytest.mark.parametrize("wan22", ["boundary_ratio", "expand_timesteps"])
def test_wan22_pipelines_are_refused_in_one_line(wan22):
    pipe = tiny_wan()
    pipe.register_to_config(**{wan22: 0.875 if wan22 == "boundary_ratio" else True})
    model = model_from_pipeline(pipe, source="tiny-wan22", **WAN_SIZE)
    text = model.prompt_encoder.bind(PromptSet(PROMPTS))

    with pytest.raises(ConfigError, match="two-transformer Wan 2.2|a time step per token"):
        model.family.check(model, SamplingSettings(solver="flow-euler"), text=text)
