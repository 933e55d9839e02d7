"""The plan step of a denoiser call, read from the call's ``timestep`` argument.

Plans count time steps in integer *plan units*: the scheduler's training time steps, and for
flow-matching models ``sigma * num_train_timesteps`` (the values of the pipeline's ``timesteps``).
Pipelines hand them to the model in different units: the UNet, DiT, PixArt and SD3 pipelines pass
them as they are (SD3: ``sigma * 1000``), Flux's pipeline passes ``timestep / 1000`` (the model
multiplies by 1000 again). :func:`default_timestep_of` undoes that by a per-class scale; pass your own
``timestep_of(args, kwargs)`` to :class:`~optuna_diffusion.blocks.BlockSwitch` for other callers.

A call matches the plan step whose time step equals its rounded value; otherwise the one within the
precision of the call's timestep dtype (bfloat16 holds 999 as 1000), when exactly one is.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..errors import PlanError
from ..plan import Plan

TimestepOf = Callable[[tuple, Mapping[str, Any]], Any]
"""``timestep_of(args, kwargs)``: the plan-unit time step of a call (a number or a tensor)."""


def timestep_scale(model: nn.Module) -> float:
    """Plan units per unit of the model's ``timestep`` argument: 1000 for Flux, 1 otherwise."""
    from diffusers import FluxTransformer2DModel

    return 1000.0 if isinstance(model, FluxTransformer2DModel) else 1.0


def default_timestep_of(model: nn.Module) -> TimestepOf:
    """Read the ``timestep`` argument of a call of ``model`` and scale it to plan units."""
    parameters = list(inspect.signature(type(model).forward).parameters)[1:]
    if "timestep" not in parameters:
        raise PlanError(f"{type(model).__name__}.forward has no timestep argument; pass timestep_of=...")
    index = parameters.index("timestep")
    scale = timestep_scale(model)
    name = type(model).__name__

    def timestep_of(args: tuple, kwargs: Mapping[str, Any]) -> Any:
        value = kwargs["timestep"] if "timestep" in kwargs else args[index] if index < len(args) else None
        if value is None:
            raise PlanError(f"the {name} was called without a timestep, so no plan step can be chosen")
        value = torch.as_tensor(value).flatten()[0]
        return value if scale == 1.0 else value * scale  # in the call's dtype, whose precision plan_step allows for

    return timestep_of


def _value_and_precision(value: Any) -> tuple[float, float]:
    if isinstance(value, torch.Tensor):
        precision = torch.finfo(value.dtype).eps if value.is_floating_point() else 0.0
        return float(value.flatten()[0]), precision
    return float(value), 0.0


def plan_step(plan: Plan, value: Any, model_name: str) -> int:
    """Index of the plan step a call at ``value`` (plan units) belongs to, or :class:`PlanError`."""
    t, precision = _value_and_precision(value)
    rounded = int(round(t))
    if rounded in plan.timesteps:
        return plan.timesteps.index(rounded)
    tolerance = 0.5 + abs(t) * precision
    near = [i for i, step in enumerate(plan.timesteps) if abs(step - t) <= tolerance]
    if len(near) == 1:
        return near[0]
    if near:
        raise PlanError(
            f"the {model_name} was called at t={t:g}, within the precision of its timestep of plan steps "
            f"{[plan.timesteps[i] for i in near]}; use time steps further apart or a finer timestep dtype"
        )
    raise PlanError(
        f"the {model_name} was called at t={t:g}, which is not a time step of the plan; "
        f"sample with timesteps={list(plan.timesteps)}"
    )
