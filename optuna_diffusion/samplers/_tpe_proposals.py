"""Model-guided children of the time-step search: Optuna's TPE fitted on the evaluated plans of one K.

Once a search has found good plans, a uniformly random genome (the exploration slots of the
AutoDiffusion recipe) almost never lands near them, and mutants and crossovers of a few parents stay
in the parents' basin. A proposal instead draws from a model of every evaluated plan: Optuna's
multivariate TPE over the sorted time steps ``t0 > t1 > ...`` of the plans with the proposal's K
(and their solver, when it is searched), fitted on their FID. It explores where good plans are dense
without giving up the genome, the generations and the seeded first population of the search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from ..baselines import strictly_decreasing
from ..plan import timestep_range
from ._solver_space import SolverSteps, SolverTimestepSpace
from ._timestep_genome import Genome
from ._timestep_space import TimestepSpace

# TPE needs this many evaluated plans of a K before it models them; fewer: the proposal is random.
MIN_EVALUATED = 10
_SOLVER = "solver"


@dataclass(frozen=True)
class GuidedTimestepSpace:
    """A time-step space bound to one generation: its operators, and proposals of TPE.

    Implements :class:`~optuna_diffusion.samplers.GenomeSpace` (``random``, ``mutate``, ``refine``,
    ``crossover`` are the space's) and ``propose``, the operator of
    :class:`~optuna_diffusion.samplers.ChildGeneration`'s proposal slots.

    Args:
        space: the searched genomes (time steps, or (solver, time steps)).
        evaluated: ``(genome, FID)`` of the evaluated plans (small-sample estimates of plans stopped
            at the low fidelity too: they sort among the worse plans, where they belong).
        parents: the generation's parents; a proposal takes the K of a random one.
    """

    space: TimestepSpace | SolverTimestepSpace
    evaluated: tuple[tuple[Genome | SolverSteps, float], ...]
    parents: tuple[Genome | SolverSteps, ...]

    def random(self, rng: np.random.Generator) -> Genome | SolverSteps:
        return self.space.random(rng)

    def mutate(self, genome: Any, rng: np.random.Generator, *, replace_prob: float = 0.25) -> Genome | SolverSteps:
        return self.space.mutate(genome, rng, replace_prob=replace_prob)

    def refine(self, genome: Any, rng: np.random.Generator) -> Genome | SolverSteps:
        return self.space.refine(genome, rng)

    def crossover(self, parent_a: Any, parent_b: Any, rng: np.random.Generator) -> Genome | SolverSteps:
        return self.space.crossover(parent_a, parent_b, rng)

    def propose(self, rng: np.random.Generator) -> Genome | SolverSteps:
        """A genome drawn by TPE at the K of a random parent; random while that K has fewer than
        ``MIN_EVALUATED`` evaluated plans."""
        if not self.parents:
            return self.space.random(rng)
        num_steps = len(_steps(self.parents[int(rng.integers(len(self.parents)))]))
        same_k = [(genome, fid) for genome, fid in self.evaluated if len(_steps(genome)) == num_steps]
        if len(same_k) < MIN_EVALUATED:
            return self.space.random(rng)
        distributions = self._distributions(num_steps)
        study = _proxy_study()
        study.add_trials(
            [create_trial(params=_params(genome), distributions=distributions, value=fid) for genome, fid in same_k]
        )
        tpe = optuna.samplers.TPESampler(
            multivariate=True, constant_liar=False,
            n_startup_trials=MIN_EVALUATED, seed=int(rng.integers(2**32)),
        )
        values = tpe.sample_relative(study, create_trial(state=TrialState.RUNNING), distributions)
        low, high = self._step_range
        # TPE draws each sorted position on its own: equal or crossing values are put back in order.
        steps = strictly_decreasing((values[f"t{i}"] for i in range(num_steps)), high - low + 1, lowest=low)
        if isinstance(self.space, SolverTimestepSpace):
            return SolverSteps(values[_SOLVER], steps)
        return steps

    @property
    def _step_range(self) -> tuple[int, int]:
        steps = self.space.steps if isinstance(self.space, SolverTimestepSpace) else self.space
        return timestep_range(steps.num_train_timesteps, steps.schedule_kind)

    def __str__(self) -> str:
        return str(self.space)

    def _distributions(self, num_steps: int) -> dict[str, BaseDistribution]:
        low, high = self._step_range
        distributions: dict[str, BaseDistribution] = {f"t{i}": IntDistribution(low, high) for i in range(num_steps)}
        if isinstance(self.space, SolverTimestepSpace):
            distributions[_SOLVER] = CategoricalDistribution(self.space.solvers)
        return distributions


def _steps(genome: Genome | SolverSteps) -> Genome:
    return genome.timesteps if isinstance(genome, SolverSteps) else genome


def _params(genome: Genome | SolverSteps) -> dict[str, object]:
    params: dict[str, object] = {f"t{i}": t for i, t in enumerate(_steps(genome))}
    if isinstance(genome, SolverSteps):
        params[_SOLVER] = genome.solver
    return params


def _proxy_study() -> optuna.Study:
    """An in-memory study to fit TPE on (``create_study`` would log one line per proposal)."""
    storage = optuna.storages.InMemoryStorage()
    study_id = storage.create_new_study(directions=[optuna.study.StudyDirection.MINIMIZE])
    return optuna.Study(study_name=storage.get_study_name_from_id(study_id), storage=storage)

