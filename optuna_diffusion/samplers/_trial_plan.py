"""How a trial carries its time steps, and the helpers an objective reads them with.

A set of time steps does not fit Optuna's parameters: its length varies and its values must be
distinct. So :class:`~optuna_diffusion.samplers.TimestepSampler` stores the whole genome as ONE
trial system attribute, ``"optuna_diffusion:timesteps"`` (a list, largest first), written in
``before_trial``, before the objective runs. The objective reads it with :func:`plan_from_trial`,
which also makes it visible where people and plots look:

* user attribute ``"timesteps"``: the list (dashboard trial table and detail page);
* parameter ``"num_steps"``: ``trial.suggest_int("num_steps", k_min, k_max)``, answered by the
  sampler with the genome's K, so slice, importance and Pareto plots have a parameter.

:func:`suggest_plan` is the sampler-agnostic variant: under ``TimestepSampler`` it is
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
from ._genome import Genome, GenomeSpace, insort_free

TIMESTEPS_KEY = "optuna_diffusion:timesteps"
"""Trial system attribute holding the genome the sampler chose (list of int, largest first)."""
SPACE_KEY = "optuna_diffusion:genome_space"
"""Trial system attribute holding the sampler's space: ``{"num_train_timesteps", "k_min", "k_max"}``."""
NUM_STEPS_PARAM = "num_steps"
"""Parameter that records K."""
TIMESTEPS_USER_ATTR = "timesteps"
"""User attribute that shows the time steps."""
CODE_PARAM_PREFIX = "timestep_code_"


def _system_attrs(trial: Any) -> dict[str, Any]:
    if isinstance(trial, FrozenTrial):
        return trial.system_attrs
    if isinstance(trial, optuna.Trial):
        return trial.storage.get_trial_system_attrs(trial._trial_id)
    return {}


def stored_timesteps(trial: FrozenTrial) -> Genome | None:
    """The time steps a finished or running trial carries, or None.

    The sampler's system attribute first; else the ``"timesteps"`` user attribute that
    :func:`suggest_plan` records under other samplers, so such trials can seed a later search.
    """
    steps = trial.system_attrs.get(TIMESTEPS_KEY)
    if steps is None:
        steps = trial.user_attrs.get(TIMESTEPS_USER_ATTR)
    if not isinstance(steps, (list, tuple)) or not all(isinstance(t, int) and not isinstance(t, bool) for t in steps):
        return None
    return tuple(steps)


def plan_from_trial(trial: optuna.Trial | FrozenTrial) -> Genome:
    """The time steps :class:`~optuna_diffusion.samplers.TimestepSampler` chose for ``trial``.

    On a live trial this also suggests ``"num_steps"`` (the sampler answers with K) and sets the
    user attribute ``"timesteps"``; on a :class:`~optuna.trial.FrozenTrial` it only reads.

    Args:
        trial: the objective's trial, or a finished one.

    Returns:
        The time steps, strictly decreasing.

    Raises:
        PlanError: the trial was not sampled by ``TimestepSampler``, or ``"num_steps"`` was fixed
            (enqueued) to another K.
    """
    if isinstance(trial, FrozenTrial):
        steps = stored_timesteps(trial)
        if steps is None:
            raise PlanError(f"trial {trial.number} carries no time steps")
        return steps
    system_attrs = _system_attrs(trial)
    steps = system_attrs.get(TIMESTEPS_KEY)
    space = system_attrs.get(SPACE_KEY)
    if steps is None or space is None:
        raise PlanError(
            f"trial {trial.number} carries no time steps: create the study with sampler=TimestepSampler(...), "
            "or call suggest_plan(trial, k_min=..., k_max=...), which works with any sampler"
        )
    steps = tuple(int(t) for t in steps)
    num_steps = trial.suggest_int(NUM_STEPS_PARAM, space["k_min"], space["k_max"])
    if num_steps != len(steps):
        raise PlanError(
            f"trial {trial.number} has parameter {NUM_STEPS_PARAM} = {num_steps} (fixed or enqueued?) "
            f"but the sampler chose {len(steps)} time steps {list(steps)}"
        )
    trial.set_user_attr(TIMESTEPS_USER_ATTR, list(steps))
    return steps


def suggest_plan(
    trial: optuna.trial.BaseTrial,
    *,
    k_min: int,
    k_max: int | None = None,
    num_train_timesteps: int = 1000,
) -> Genome:
    """Time steps for ``trial`` under any sampler.

    Under ``TimestepSampler`` this is :func:`plan_from_trial` (after checking that the sampler's
    genome fits the bounds given here). Under any other sampler, K and the steps are suggested as
    integer parameters (see the module docstring) and the result is recorded as the user
    attribute ``"timesteps"``.

    Args:
        trial: the objective's trial.
        k_min: fewest steps.
        k_max: most steps; default ``k_min`` (fixed K).
        num_train_timesteps: T.

    Returns:
        K distinct time steps of ``[0, T - 1]``, strictly decreasing.
    """
    space = GenomeSpace(num_train_timesteps=num_train_timesteps, k_min=k_min, k_max=k_min if k_max is None else k_max)
    if TIMESTEPS_KEY in _system_attrs(trial):
        steps = plan_from_trial(trial)  # type: ignore[arg-type]
        if not space.contains(list(steps)):
            raise PlanError(f"the sampler chose {list(steps)}, which does not fit {space}")
        return steps
    num_steps = trial.suggest_int(NUM_STEPS_PARAM, space.k_min, space.k_max)
    used: list[int] = []
    for i in range(num_steps):
        insort_free(used, trial.suggest_int(f"{CODE_PARAM_PREFIX}{i}", 0, space.num_train_timesteps - 1 - i))
    steps = tuple(reversed(used))
    trial.set_user_attr(TIMESTEPS_USER_ATTR, list(steps))
    return steps
