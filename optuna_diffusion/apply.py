"""Make a diffusers UNet or pipeline run a Plan's block choices."""

from __future__ import annotations

from typing import Any

from .blocks import BlockSwitch
from .plan import Plan


def apply(unet_or_pipeline: Any, plan: Plan) -> BlockSwitch:
    """Install ``plan``'s per-step skips and reuses on a diffusers UNet (or a pipeline's ``unet``).

    The UNet then picks each call's choices from the time step it is called with, so sample with the
    plan's time steps, e.g. ``pipeline(..., timesteps=list(plan.timesteps))``. Call ``.remove()`` on
    the returned switch to restore the model; applying another plan replaces this one.

    Returns:
        The installed :class:`~optuna_diffusion.blocks.BlockSwitch`.
    """
    unet = getattr(unet_or_pipeline, "unet", unet_or_pipeline)
    previous = getattr(unet, "_optuna_diffusion_switch", None)
    if previous is not None:
        previous.remove()
    switch = BlockSwitch(unet).follow(plan)
    unet._optuna_diffusion_switch = switch
    return switch
