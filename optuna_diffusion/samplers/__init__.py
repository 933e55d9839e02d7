"""Optuna samplers that search diffusion sampling plans (AutoDiffusion's two stages).

:class:`TimestepSampler` searches the time steps with the full network (stage 1);
:class:`ArchitectureSampler` then searches time steps and skipped/reused blocks together, starting
from the Pareto set of a stage-1 study in the same storage (stage 2). Both are genetic samplers in
the shape of Optuna's ``NSGAIISampler``: they take their parent selection and child generation as
strategies (:class:`NSGA2ParentSelection`, :class:`ChildGeneration`) over a :class:`GenomeSpace`
(:class:`TimestepSpace`, :class:`SolverTimestepSpace`, :class:`ArchitectureSpace`), whose operators live in modules named for
them; stage 1's generations also draw children from Optuna's TPE and GP samplers (:class:`GuidedTimestepSpace`). An objective reads a trial's plan with :func:`plan_from_trial`, or with :func:`suggest_plan`,
which works under any sampler; :class:`~optuna_diffusion.objective.PlanObjective` does it for you::

    import optuna
    from optuna_diffusion import TimestepSampler
    from optuna_diffusion.samplers import timesteps_from_trial

    def objective(trial):
        timesteps = timesteps_from_trial(trial)
        return fid_of(timesteps), macs_of(timesteps)

    sampler = TimestepSampler(k_min=4, k_max=8, initial_plans=[(750, 500, 250, 0)], seed=0)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=500)
"""

from ..plan_suggestion import suggest_plan, suggest_timesteps
from ..trial_plan import plan_from_trial, stored_plan, timesteps_from_trial
from ._architecture_sampler import ArchitectureSampler, pareto_plans
from ._architecture_space import ArchitectureSpace
from ._child_generation import ChildGeneration, ChildGenerationStrategy
from ._genome_space import GenomeSpace
from ._parent_selection import NSGA2ParentSelection, ParentSelection
from ._solver_space import SolverSteps, SolverTimestepSpace
from ._timestep_crossover import crossover
from ._timestep_genome import check_genome, random_genome
from ._timestep_mutation import mutate
from ._timestep_sampler import TimestepSampler
from ._timestep_space import TimestepSpace
from ._guided_space import GuidedTimestepSpace

__all__ = [
    "ArchitectureSampler",
    "ArchitectureSpace",
    "ChildGeneration",
    "ChildGenerationStrategy",
    "GenomeSpace",
    "GuidedTimestepSpace",
    "NSGA2ParentSelection",
    "ParentSelection",
    "SolverSteps",
    "SolverTimestepSpace",
    "TimestepSampler",
    "TimestepSpace",
    "check_genome",
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
