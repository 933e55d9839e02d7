"""How a trial carries its plan, and the helpers an objective reads it with.

A plan does not fit Optuna's parameters: the number of time steps varies, the steps must be
distinct, and every step has its own set of skipped and reused blocks. So the samplers store the
whole genome as ONE trial system attribute, written in ``before_trial``, before the objective runs:

* :class:`~optuna_diffusion.samplers.TimestepSampler` (stage 1): ``"optuna_diffusion:timesteps"``,
  the time steps (list of int, largest first);
* :class:`~optuna_diffusion.samplers.ArchitectureSampler` (stage 2): ``"optuna_diffusion:plan"``,
  the whole :class:`~optuna_diffusion.plan.Plan` as :meth:`~optuna_diffusion.plan.Plan.to_dict`.

Both also store their space, ``"optuna_diffusion:genome_space"``. The objective reads the plan with
:func:`plan_from_trial` (a :class:`~optuna_diffusion.plan.Plan` under either sampler; time steps
alone give a plan that skips nothing) or, for a stage-1 objective, :func:`timesteps_from_trial`.
Both make the genome visible where people and plots look:

* user attributes ``"timesteps"`` (and, from :func:`plan_from_trial` when the plan skips or reuses
  any block, ``"skips"`` and ``"reuses"``, per step the sorted block names): dashboard trial table
  and detail page;
* parameter ``"num_steps"``: ``trial.suggest_int("num_steps", k_min, k_max)``, answered by the
  sampler with the genome's K, so slice, importance and Pareto plots have a parameter.

:func:`suggest_plan` is the sampler-agnostic variant: under these samplers it is
:func:`plan_from_trial`; under any other sampler (RandomSampler, TPE, a baseline study) it encodes a
K-subset as ``num_steps`` plus K integer parameters ``timestep_code_i`` of ``[0, T - 1 - i]``: code i
picks the i-th step as the code-th value not yet chosen, so every draw is a valid genome, and
uniform codes give a uniform subset. The same objective thus runs under every sampler.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial

from ..errors import PlanError
from ..plan import Plan
from ._genome import Genome, GenomeSpace, insort_free

TIMESTEPS_KEY = "optuna_diffusion:timesteps"
"""Trial system attribute holding the time steps TimestepSampler chose (list of int, largest first)."""
PLAN_KEY = "optuna_diffusion:plan"
"""Trial system attribute holding the plan ArchitectureSampler chose (``Plan.to_dict()``)."""
SPACE_KEY = "optuna_diffusion:genome_space"
"""Trial system attribute holding the sampler's space: ``{"num_train_timesteps", "k_min", "k_max"}``."""
NUM_STEPS_PARAM = "num_steps"
"""Parameter that records K."""
TIMESTEPS_USER_ATTR = "timesteps"
"""User attribute that shows the time steps."""
SKIPS_USER_ATTR = "skips"
"""User attribute that shows, per step, the skipped blocks."""
REUSES_USER_ATTR = "reuses"
"""User attribute that shows, per step, the reused blocks."""
CODE_PARAM_PREFIX = "timestep_code_"


def _system_attrs(trial: Any) -> dict[str, Any]:
    if isinstance(trial, FrozenTrial):
        return trial.system_attrs
    if isinstance(trial, optuna.Trial):
        return trial.storage.get_trial_system_attrs(trial._trial_id)
    return {}


def _is_int_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def stored_timesteps(trial: FrozenTrial) -> Genome | None:
    """The time steps a finished or running trial of the time-step search carries, or None.

    The sampler's system attribute first; else the ``"timesteps"`` user attribute that
    :func:`suggest_plan` records under other samplers, so such trials can seed a later search.
    """
    steps = trial.system_attrs.get(TIMESTEPS_KEY)
    if steps is None:
        steps = trial.user_attrs.get(TIMESTEPS_USER_ATTR)
    if not _is_int_list(steps):
        return None
    return tuple(steps)


def stored_num_steps(system_attrs: dict[str, Any]) -> int | None:
    """K of the genome a sampler stored in these system attributes, or None."""
    plan = system_attrs.get(PLAN_KEY)
    steps = plan.get("timesteps") if isinstance(plan, dict) else system_attrs.get(TIMESTEPS_KEY)
    return len(steps) if isinstance(steps, (list, tuple)) else None


def _num_train_timesteps(system_attrs: dict[str, Any]) -> int:
    space = system_attrs.get(SPACE_KEY)
    return int(space["num_train_timesteps"]) if isinstance(space, dict) and "num_train_timesteps" in space else 1000


def stored_plan(trial: FrozenTrial) -> Plan | None:
    """The plan a finished or running trial carries, or None when it carries none (or a broken one).

    Read from, in order: the plan of ``ArchitectureSampler``; the time steps of ``TimestepSampler``
    (a plan that skips nothing); the user attributes ``"timesteps"``, ``"skips"`` and ``"reuses"``
    that :func:`plan_from_trial` and :func:`suggest_plan` record under any sampler.
    """
    data = trial.system_attrs.get(PLAN_KEY)
    try:
        if data is not None:
            return Plan.from_dict(data)
        steps = stored_timesteps(trial)
        if steps is None:
            return None
        from_user_attrs = TIMESTEPS_KEY not in trial.system_attrs
        skips = trial.user_attrs.get(SKIPS_USER_ATTR) if from_user_attrs else None
        reuses = trial.user_attrs.get(REUSES_USER_ATTR) if from_user_attrs else None
        return Plan(steps, skips or (), reuses or (), _num_train_timesteps(trial.system_attrs))
    except PlanError:
        return None


def _record(trial: optuna.trial.BaseTrial, plan: Plan, *, blocks: bool) -> None:
    # Every attribute is its own storage transaction: leave out the empty skips of a full-network plan.
    trial.set_user_attr(TIMESTEPS_USER_ATTR, list(plan.timesteps))
    if blocks and not plan.is_full_network:
        data = plan.to_dict()
        trial.set_user_attr(SKIPS_USER_ATTR, data["skips"])
        trial.set_user_attr(REUSES_USER_ATTR, data["reuses"])


def _live_plan(trial: optuna.Trial, system_attrs: dict[str, Any] | None = None) -> Plan:
    """The plan a sampler stored on a live trial, after suggesting ``"num_steps"`` (answered with K).

    ``system_attrs``: the trial's system attributes when the caller has read them already.
    """
    if system_attrs is None:
        system_attrs = _system_attrs(trial)
    space = system_attrs.get(SPACE_KEY)
    if PLAN_KEY in system_attrs:
        plan = Plan.from_dict(system_attrs[PLAN_KEY])
    elif TIMESTEPS_KEY in system_attrs:
        plan = Plan(system_attrs[TIMESTEPS_KEY], num_train_timesteps=_num_train_timesteps(system_attrs))
    else:
        plan = None
    if plan is None or space is None:
        raise PlanError(
            f"trial {trial.number} carries no plan: create the study with sampler=TimestepSampler(...) or "
            "ArchitectureSampler(...), or call suggest_plan(trial, k_min=..., k_max=...), which works with any sampler"
        )
    num_steps = trial.suggest_int(NUM_STEPS_PARAM, space["k_min"], space["k_max"])
    if num_steps != plan.num_steps:
        raise PlanError(
            f"trial {trial.number} has parameter {NUM_STEPS_PARAM} = {num_steps} (fixed or enqueued?) "
            f"but the sampler chose {plan.num_steps} time steps {list(plan.timesteps)}"
        )
    return plan


def plan_from_trial(trial: optuna.Trial | FrozenTrial) -> Plan:
    """The plan :class:`TimestepSampler` or :class:`ArchitectureSampler` chose for ``trial``.

    On a live trial this also suggests ``"num_steps"`` (the sampler answers with K) and sets the
    user attributes ``"timesteps"`` and, when the plan skips or reuses any block, ``"skips"`` and
    ``"reuses"``; on a :class:`~optuna.trial.FrozenTrial` it only reads (see :func:`stored_plan`).

    Args:
        trial: the objective's trial, or a finished one.

    Returns:
        The plan; a time-step genome of stage 1 gives a plan that skips and reuses nothing.

    Raises:
        PlanError: the trial carries no plan, or ``"num_steps"`` was fixed (enqueued) to another K.
    """
    if isinstance(trial, FrozenTrial):
        plan = stored_plan(trial)
        if plan is None:
            raise PlanError(f"trial {trial.number} carries no plan")
        return plan
    return record_live_plan(trial)


def record_live_plan(trial: optuna.Trial, system_attrs: dict[str, Any] | None = None) -> Plan:
    """:func:`plan_from_trial` of a live trial, given its system attributes if already read."""
    plan = _live_plan(trial, system_attrs)
    _record(trial, plan, blocks=True)
    return plan


def timesteps_from_trial(trial: optuna.Trial | FrozenTrial) -> Genome:
    """The time steps of the plan a sampler chose for ``trial`` (the stage-1 genome).

    Like :func:`plan_from_trial`, but returns only the time steps and, on a live trial, records
    only the user attribute ``"timesteps"``.
    """
    if isinstance(trial, FrozenTrial):
        return plan_from_trial(trial).timesteps
    plan = _live_plan(trial)
    _record(trial, plan, blocks=False)
    return plan.timesteps


def _suggest(trial: optuna.trial.BaseTrial, space: GenomeSpace, *, blocks: bool) -> Plan:
    system_attrs = _system_attrs(trial)
    if PLAN_KEY in system_attrs or TIMESTEPS_KEY in system_attrs:
        plan = _live_plan(trial, system_attrs)  # type: ignore[arg-type]
        _record(trial, plan, blocks=blocks)
        if not space.contains(list(plan.timesteps)) or plan.num_train_timesteps != space.num_train_timesteps:
            raise PlanError(f"the sampler chose {list(plan.timesteps)}, which does not fit {space}")
        return plan
    num_steps = trial.suggest_int(NUM_STEPS_PARAM, space.k_min, space.k_max)
    used: list[int] = []
    for i in range(num_steps):
        insort_free(used, trial.suggest_int(f"{CODE_PARAM_PREFIX}{i}", 0, space.num_train_timesteps - 1 - i))
    plan = Plan(tuple(reversed(used)), num_train_timesteps=space.num_train_timesteps)
    _record(trial, plan, blocks=blocks)
    return plan


def suggest_plan(
    trial: optuna.trial.BaseTrial,
    *,
    k_min: int,
    k_max: int | None = None,
    num_train_timesteps: int = 1000,
) -> Plan:
    """A plan for ``trial`` under any sampler.

    Under ``TimestepSampler`` or ``ArchitectureSampler`` this is :func:`plan_from_trial` (after
    checking that the sampler's time steps fit the bounds given here). Under any other sampler, K
    and the steps are suggested as integer parameters (see the module docstring); the plan skips
    nothing. The user attributes are recorded as by :func:`plan_from_trial`.

    Args:
        trial: the objective's trial.
        k_min: fewest steps.
        k_max: most steps; default ``k_min`` (fixed K).
        num_train_timesteps: T.

    Returns:
        A plan of K distinct time steps of ``[0, T - 1]``, strictly decreasing.
    """
    space = GenomeSpace(num_train_timesteps=num_train_timesteps, k_min=k_min, k_max=k_min if k_max is None else k_max)
    return _suggest(trial, space, blocks=True)


def suggest_timesteps(
    trial: optuna.trial.BaseTrial,
    *,
    k_min: int,
    k_max: int | None = None,
    num_train_timesteps: int = 1000,
) -> Genome:
    """Time steps for ``trial`` under any sampler: :func:`suggest_plan`'s time steps.

    Records only the user attribute ``"timesteps"``.
    """
    space = GenomeSpace(num_train_timesteps=num_train_timesteps, k_min=k_min, k_max=k_min if k_max is None else k_max)
    return _suggest(trial, space, blocks=False).timesteps
