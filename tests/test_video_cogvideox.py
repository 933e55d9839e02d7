"""CogVideoX (``CogVideoXPipeline``) as a model: exact against the pipeline (its SNR-shifted schedule, 5B
rotary embeddings), a skip equal to a hand-written hook, MACs at the study's frame count.

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
from optuna_diffusion.generation import SamplingSettings
from optuna_diffusion.macs import MacsTable
from optuna_diffusion.models import load_diffusion_model, model_from_pipeline
from optuna_diffusion.pipelines import (
    component_macs,
    pipeline_schedule_kwargs,
    scheduler_for_solver,
)
from optuna_diffusion.plan import Plan
from optuna_diffusion.prompts import PromptSet

from .tiny_video_pipelines import COGVIDEOX_SIZE, save_cogvideox_2b, tiny_cogvideox
from .video_checks import (
    DDPM_STEPS,
    PROMPTS,
    TOLERANCE,
    difference,
    pipeline_frames,
    project_frames,
    skipping,
)


@pytest.mark.parametrize("solver, skips", [("ddim", False), ("ddim", True), ("dpmpp-2m", True)])
def test_exact_cogvideox(solver, skips):
    pipe = tiny_cogvideox()
    model = model_from_pipeline(pipe, source="tiny-cogvideox", **COGVIDEOX_SIZE)
    settings = SamplingSettings(solver=solver, guidance_scale=6.0, batch_size=2, seed=5)
    prompts = PromptSet(PROMPTS, negative_prompt="blurry")
    plan = Plan(DDPM_STEPS)
    plan = skipping(plan, pipe.transformer) if skips else plan
    ours = project_frames(model, settings, plan, 3, prompts)

    frames = pipeline_frames(pipe, model, settings, plan, 3, prompts, pin=False)

    assert ours.shape == (3, 9, 3, 16, 16)
    assert difference(ours, frames) <= TOLERANCE


def test_exact_cogvideox_with_rotary_embeddings_and_reuse():
    pipe = tiny_cogvideox(rotary=True)
    model = model_from_pipeline(pipe, source="tiny-cogvideox-5b", image_size=32, num_frames=9)
    settings = SamplingSettings(solver="ddim", guidance_scale=6.0, batch_size=3, seed=1)
    prompts = PromptSet(PROMPTS)
    reused = [frozenset(), frozenset({"blocks.1"}), frozenset({"blocks.0.attn"}), frozenset({"tail.0"})]
    plan = Plan(DDPM_STEPS, reuses=tuple(reused))
    ours = project_frames(model, settings, plan, 3, prompts)

    frames = pipeline_frames(pipe, model, settings, plan, 3, prompts, pin=False)

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


def test_cogvideox_refuses_an_even_latent_frame_count():
    model = model_from_pipeline(tiny_cogvideox(), source="tiny-cogvideox", image_size=16, num_frames=5)

    with pytest.raises(ConfigError, match="2 latent frames, which CogVideoX's VAE decodes to 8 frames"):
        model.family.check(model, SamplingSettings(solver="ddim"), text=model.prompt_encoder.bind(PromptSet(PROMPTS)))
