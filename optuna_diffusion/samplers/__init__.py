"""Optuna samplers that search diffusion sampling plans (AutoDiffusion's two stages).

:class:`TimestepSampler` searches the time steps with the full network (stage 1);
:class:`ArchitectureSampler` then searches time steps and skipped/reused blocks together, starting
from the Pareto set of a stage-1 study in the same storage (stage 2). An objective reads a trial's
plan with :func:`plan_from_trial` (a :class:`~optuna_diffusion.plan.Plan` under either sampler), or
with :func:`suggest_plan`, which works under any sampler;
:class:`~optuna_diffusion.objective.PlanObjective` does it for you::

    import optuna
    from optuna_diffusion.samplers import TimestepSampler, timesteps_from_trial

    def objective(trial):
        timesteps = timesteps_from_trial(trial)
        return fid_of(timesteps), macs_of(timesteps)

    sampler = TimestepSampler(k_min=4, k_max=8, initial_plans=[(750, 500, 250, 0)], seed=0)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=500)
"""

from ._architecture import ArchitectureSpace
from ._architecture_sampler import ArchitectureSampler, pareto_plans
from ._genome import GenomeSpace, crossover, mutate, random_genome
from ._timestep_sampler import TimestepSampler
from ._trial_plan import (
    NUM_STEPS_PARAM,
    PLAN_KEY,
    REUSES_USER_ATTR,
    SKIPS_USER_ATTR,
    TIMESTEPS_KEY,
    TIMESTEPS_USER_ATTR,
    plan_from_trial,
    stored_plan,
    suggest_plan,
    suggest_timesteps,
    timesteps_from_trial,
)

__all__ = [
    "ArchitectureSampler",
    "ArchitectureSpace",
    "GenomeSpace",
    "NUM_STEPS_PARAM",
    "PLAN_KEY",
    "REUSES_USER_ATTR",
    "SKIPS_USER_ATTR",
    "TIMESTEPS_KEY",
    "TIMESTEPS_USER_ATTR",
    "TimestepSampler",
    "crossover",
    "mutate",
    "pareto_plans",
    "plan_from_trial",
    "random_genome",
    "stored_plan",
    "suggest_plan",
    "suggest_timesteps",
    "timesteps_from_trial",
]
