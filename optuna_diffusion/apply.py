"""Make a diffusers denoiser (UNet or transformer) or pipeline run a Plan's block choices."""

from __future__ import annotations

from typing import Any

from .blocks import BlockSwitch, TimestepOf, installed_switch
from .errors import PlanError
from .pipelines import scheduler_for_solver
from .plan import Plan


def _denoiser(model_or_pipeline: Any) -> Any:
    """The pipeline's ``unet`` or ``transformer``, or the model itself."""
    for attribute in ("unet", "transformer"):
        denoiser = getattr(model_or_pipeline, attribute, None)
        if denoiser is not None:
            return denoiser
    if hasattr(model_or_pipeline, "forward"):
        return model_or_pipeline
    raise PlanError(f"{type(model_or_pipeline).__name__} has neither a unet nor a transformer to apply a plan to")


def apply(model_or_pipeline: Any, plan: Plan, *, timestep_of: TimestepOf | None = None) -> BlockSwitch:
    """Install ``plan``'s per-step skips and reuses on a denoiser (or a pipeline's ``unet``/``transformer``).

    The model then picks each call's choices from the time step it is called with, so sample with the
    plan's time steps, e.g. ``pipeline(..., timesteps=list(plan.timesteps))``. Call ``.remove()`` on
    the returned switch to restore the model; applying another plan replaces this one.

    On a pipeline, a plan that carries its solver (a study that searched solvers) also sets
    ``pipe.scheduler`` to the scheduler that runs it, keeping the pipeline's noise schedule
    (:func:`~optuna_diffusion.pipelines.scheduler_for_solver`; ``.remove()`` leaves it). A bare denoiser
    has no scheduler: give yours ``scheduler_for_solver(plan.solver, scheduler)``.

    Args:
        model_or_pipeline: a diffusers UNet or transformer (DiT, PixArt, SD3, Flux), or a pipeline holding one.
        plan: the plan to follow.
        timestep_of: how to read a call's time step in plan units (see
            :class:`~optuna_diffusion.blocks.BlockSwitch`); default: the ``timestep`` argument, times
            1000 for Flux.

    Returns:
        The installed :class:`~optuna_diffusion.blocks.BlockSwitch`.

    Raises:
        ConfigError: the plan's solver is one no diffusers scheduler runs on a plan's time steps.
    """
    model = _denoiser(model_or_pipeline)
    if plan.solver is not None and model is not model_or_pipeline and hasattr(model_or_pipeline, "scheduler"):
        model_or_pipeline.scheduler = scheduler_for_solver(plan.solver, model_or_pipeline.scheduler)
    previous = installed_switch(model)
    if previous is not None:
        previous.remove()
    return BlockSwitch(model, timestep_of=timestep_of).follow(plan)
