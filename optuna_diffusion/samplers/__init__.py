"""Optuna samplers that search diffusion sampling plans.

:class:`TimestepSampler` searches the time steps (AutoDiffusion stage 1). An objective reads a
trial's time steps with :func:`plan_from_trial`, or with :func:`suggest_plan`, which works under
any sampler::

    import optuna
    from optuna_diffusion.samplers import TimestepSampler, plan_from_trial, uniform_timesteps

    def objective(trial):
        timesteps = plan_from_trial(trial)
        return fid_of(timesteps), macs_of(timesteps)

    sampler = TimestepSampler(k_min=4, k_max=8, initial_plans=[uniform_timesteps(4)], seed=0)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=500)
"""

from ._genome import GenomeSpace, crossover, mutate, quadratic_timesteps, random_genome, uniform_timesteps
from ._timestep_sampler import TimestepSampler
from ._trial_plan import NUM_STEPS_PARAM, TIMESTEPS_KEY, TIMESTEPS_USER_ATTR, plan_from_trial, suggest_plan

__all__ = [
    "GenomeSpace",
    "NUM_STEPS_PARAM",
    "TIMESTEPS_KEY",
    "TIMESTEPS_USER_ATTR",
    "TimestepSampler",
    "crossover",
    "mutate",
    "plan_from_trial",
    "quadratic_timesteps",
    "random_genome",
    "suggest_plan",
    "uniform_timesteps",
]
