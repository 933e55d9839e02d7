"""What the video pipeline tests share: the project's frames of a plan, their distance to a pipeline's, a
plan with skips, and the prompts and 4-step plans they run."""

from __future__ import annotations

import torch

from optuna_diffusion.apply import apply
from optuna_diffusion.blocks import find_blocks
from optuna_diffusion.generation import ImageGenerator
from optuna_diffusion.pipelines import (
    pin_schedule,
    pipeline_schedule_kwargs,
    scheduler_for_solver,
    unpin_schedule,
)
from optuna_diffusion.plan import Plan

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


def pipeline_frames(pipe, model, settings, plan, count, prompts, *, pin: bool, **call):
    """A pipeline's own frames of samples 0..count-1 under ``plan``, the study solver's scheduler in place.

    The plan's schedule goes as the call's ``timesteps=``/``sigmas=`` (CogVideoX), or, for pipelines whose call
    takes none (``pin``: Wan takes no sigmas, LTX passes its own), is pinned on the scheduler, with the ``mu`` of
    the pipeline's dynamic shifting where it has one (LTX).
    """
    pipe.scheduler = scheduler_for_solver(settings.solver, pipe.scheduler)  # keeps a dynamic shifting
    mu = model.family.shift_mu(model)
    schedule = pipeline_schedule_kwargs(plan.timesteps, pipe.scheduler, **({} if mu is None else {"mu": mu}))
    if pin:
        pin_schedule(pipe.scheduler, schedule if mu is None else {**schedule, "mu": mu})
        schedule = {"num_inference_steps": plan.num_steps}
    height, width = model.family.image_size(model)
    negatives = prompts.negatives(0, count)
    switch = apply(pipe, plan)
    try:
        return pipe(
            prompts.texts(0, count), negative_prompt=None if set(negatives) == {None} else negatives,
            height=height, width=width, num_frames=model.family.num_frames(model), guidance_scale=settings.guidance_scale,
            **{"latents": model.family.initial_noise(model, settings.seed, 0, count), "output_type": "pt", **schedule, **call},
        ).frames
    finally:
        switch.remove()
        unpin_schedule(pipe.scheduler)
