"""A plan for an objective's trial under any Optuna sampler: :func:`suggest_plan`.

Under :class:`~optuna_diffusion.TimestepSampler` or :class:`~optuna_diffusion.ArchitectureSampler` the
plan is the sampler's genome (:func:`~optuna_diffusion.trial_plan.plan_from_trial`); under any other
sampler it is suggested as integer codes that always make a valid plan. The keys it writes are
:mod:`optuna_diffusion.trial_plan`'s.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Sequence

import optuna

from .compat import live_system_attrs
from .errors import PlanError
from .plan import Plan, timestep_range
from .trial_plan import (
    CODE_PARAM,
    NUM_STEPS_PARAM,
    PLAN_KEY,
    TIMESTEPS_KEY,
    record_live_plan,
    record_plan_attrs,
)


def _nth_free(used_ascending: Sequence[int], index: int) -> int:
    value = index
    for used in used_ascending:
        if used <= value:
            value += 1
        else:
            break
    return value


def suggest_plan(
    trial: optuna.trial.BaseTrial,
    *,
    k_min: int,
    k_max: int | None = None,
    num_train_timesteps: int = 1000,
    schedule_kind: str = "ddpm",
) -> Plan:
    """A plan for ``trial`` under any sampler.

    Under ``TimestepSampler`` or ``ArchitectureSampler`` this is :func:`plan_from_trial` (after
    checking that the sampler's time steps fit the bounds given here). Under any other sampler
    (RandomSampler, TPE, a baseline study) K is suggested as ``num_steps`` and the steps as K integer
    codes ``timestep_code_{i}`` of ``[0, T - 1 - i]``: code i picks the i-th step as the code-th value
    not yet chosen, so every draw is a valid plan and uniform codes give a uniform subset. The plan
    skips nothing; its ``timesteps`` user attribute is recorded.

    Args:
        trial: the objective's trial.
        k_min: fewest steps.
        k_max: most steps; default ``k_min`` (fixed K).
        num_train_timesteps: T.
        schedule_kind: ``"ddpm"`` (steps of ``[0, T - 1]``) or ``"flow"`` (``[1, T]``).
    """
    k_max = k_min if k_max is None else k_max
    if not 1 <= k_min <= k_max <= num_train_timesteps:
        raise PlanError(f"need 1 <= k_min <= k_max <= num_train_timesteps, got {k_min}, {k_max}, {num_train_timesteps}")
    system_attrs = live_system_attrs(trial) if isinstance(trial, optuna.Trial) else {}
    if PLAN_KEY in system_attrs or TIMESTEPS_KEY in system_attrs:
        plan = record_live_plan(trial, system_attrs)  # type: ignore[arg-type]
        fits_grid = plan.num_train_timesteps == num_train_timesteps and plan.schedule_kind == schedule_kind
        if not k_min <= plan.num_steps <= k_max or not fits_grid:
            raise PlanError(
                f"the sampler chose {list(plan.timesteps)}, which does not fit K in [{k_min}, {k_max}] "
                f"of T = {num_train_timesteps}"
            )
        return plan
    num_steps = trial.suggest_int(NUM_STEPS_PARAM, k_min, k_max)
    used: list[int] = []
    for i in range(num_steps):
        insort(used, _nth_free(used, trial.suggest_int(CODE_PARAM.format(index=i), 0, num_train_timesteps - 1 - i)))
    low, _ = timestep_range(num_train_timesteps, schedule_kind)
    plan = Plan(tuple(t + low for t in reversed(used)), num_train_timesteps=num_train_timesteps, schedule_kind=schedule_kind)
    record_plan_attrs(trial, plan)
    return plan


def suggest_timesteps(
    trial: optuna.trial.BaseTrial,
    *,
    k_min: int,
    k_max: int | None = None,
    num_train_timesteps: int = 1000,
    schedule_kind: str = "ddpm",
) -> tuple[int, ...]:
    """The time steps of :func:`suggest_plan` (stage-1 objectives)."""
    return suggest_plan(
        trial, k_min=k_min, k_max=k_max, num_train_timesteps=num_train_timesteps, schedule_kind=schedule_kind
    ).timesteps
