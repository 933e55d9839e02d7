"""LTX-Video (``LTXPipeline``) as a model: exact against the pipeline (packed tokens, the shift of its
token count), skips equal to hand-written hooks, MACs at the study's frame count.

Each ``test_exact_*`` runs a 4-step plan in the engine and in the pipeline's own call (the study's solver as
its scheduler, the plan's schedule, the engine's initial latents) and compares the frames to 1e-5
(:mod:`tests.video_checks`).
"""

from __future__ import annotations

import pytest
import torch

from optuna_diffusion.apply import apply
from optuna_diffusion.errors import ConfigError
from optuna_diffusion.generation import SamplingSettings
from optuna_diffusion.macs import MacsTable
from optuna_diffusion.models import load_diffusion_model, model_from_pipeline
from optuna_diffusion.pipelines import (
    component_macs,
    pin_schedule,
    pipeline_schedule_kwargs,
    scheduler_for_solver,
)
from optuna_diffusion.plan import Plan
from optuna_diffusion.prompts import PromptSet

from .tiny_video_pipelines import LTX_SIZE, save_ltx_video, tiny_ltx
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
def test_exact_ltx(skips):
    pipe = tiny_ltx()
    model = model_from_pipeline(pipe, source="tiny-ltx", **LTX_SIZE)
    settings = SamplingSettings(solver="flow-euler", guidance_scale=3.0, batch_size=2, seed=7)
    prompts = PromptSet(PROMPTS, negative_prompt="worst quality")
    plan = Plan(FLOW_STEPS, schedule_kind="flow")
    plan = skipping(plan, pipe.transformer) if skips else plan
    ours = project_frames(model, settings, plan, 3, prompts)

    frames = pipeline_frames(pipe, model, settings, plan, 3, prompts, pin=True)

    assert ours.shape == (3, 9, 3, 32, 32)
    assert difference(ours, frames) <= TOLERANCE


def test_exact_ltx_reuse():
    pipe = tiny_ltx()
    model = model_from_pipeline(pipe, source="tiny-ltx", **LTX_SIZE)
    settings = SamplingSettings(solver="flow-euler", guidance_scale=3.0, batch_size=3, seed=2)
    reused = [frozenset(), frozenset({"blocks.0"}), frozenset({"blocks.1.cross_attn"}), frozenset({"tail.0"})]
    plan = Plan(FLOW_STEPS, reuses=tuple(reused), schedule_kind="flow")
    ours = project_frames(model, settings, plan, 3, PromptSet(PROMPTS))

    frames = pipeline_frames(pipe, model, settings, plan, 3, PromptSet(PROMPTS), pin=True)

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
