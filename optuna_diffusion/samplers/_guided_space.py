"""Model-guided children of the time-step search: Optuna's TPE and GP fitted on the evaluated plans.

Once a search has found good plans, a uniformly random genome (the exploration slots of the
AutoDiffusion recipe) almost never lands near them, and mutants and crossovers of a few parents stay
in the parents' basin. A *proposal* instead draws from a model of every evaluated plan: Optuna's
multivariate TPE over the sorted time steps ``t0 > t1 > ...`` of the plans with the proposal's K
(and their solver, when it is searched), fitted on their FID. A *refinement* polishes one plan:
Optuna's GPSampler fitted on the evaluated plans in a trust region around it (every step within
``TRUST_FRACTION`` of the step range), where FID is smooth enough for a Gaussian process to point at
the next better plan. Both keep the genome, the generations and the seeded first population of the
search.

In a search over several K both work at a K drawn uniformly: the front's selection favours the K
whose plans dominate and would leave the others to random plans.
"""

from __future__ import annotations

import warnings
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
# A refinement models the plans whose every step lies within TRUST_FRACTION of the step range (24 of
# 1,000 steps) of the refined plan's; with fewer than MIN_LOCAL of them it nudges one step instead.
TRUST_FRACTION = 0.024
MIN_LOCAL = 6
_SOLVER = "solver"


@dataclass(frozen=True)
class GuidedTimestepSpace:
    """A time-step space bound to one generation: its operators, TPE proposals and GP refinements.

    Implements :class:`~optuna_diffusion.samplers.GenomeSpace` (``random``, ``mutate`` and
    ``crossover`` are the space's; ``refine`` is model-guided) and ``propose``, the operator of
    :class:`~optuna_diffusion.samplers.ChildGeneration`'s proposal slots.

    Args:
        space: the searched genomes (time steps, or (solver, time steps)).
        evaluated: ``(genome, FID)`` of the evaluated plans (small-sample estimates of plans stopped
            at the low fidelity too: they sort among the worse plans, where they belong).
    """

    space: TimestepSpace | SolverTimestepSpace
    evaluated: tuple[tuple[Genome | SolverSteps, float], ...]

    def random(self, rng: np.random.Generator) -> Genome | SolverSteps:
        return self.space.random(rng)

    def mutate(self, genome: Any, rng: np.random.Generator, *, replace_prob: float = 0.25) -> Genome | SolverSteps:
        return self.space.mutate(genome, rng, replace_prob=replace_prob)

    def refine(self, genome: Any, rng: np.random.Generator) -> Genome | SolverSteps:
        """A plan near ``genome`` drawn by Optuna's GPSampler fitted on the evaluated plans of its K
        in its trust region (every step within ``trust_radius`` of its own); while fewer than
        ``MIN_LOCAL`` lie there, the space's refinement (one step nudged). In a space of several K
        the plan refined is the best evaluated one of a uniformly drawn K (``genome`` while that K
        has none)."""
        if self._spans_several_k:
            genome = self._best_of_k(self._random_k(rng)) or genome
        steps, radius = _steps(genome), self.trust_radius
        local = [
            (other, fid) for other, fid in self.evaluated
            if len(_steps(other)) == len(steps) and max(abs(a - b) for a, b in zip(_steps(other), steps)) <= radius
        ]
        if len(local) < MIN_LOCAL:
            return self.space.refine(genome, rng)
        low, high = self._step_range
        region = [(max(low, t - radius), min(high, t + radius)) for t in steps]
        with warnings.catch_warnings():  # deterministic_objective is experimental; the choice is ours, not the user's
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # FID under common random numbers is deterministic: a plan evaluated once need not be drawn again.
            gp = optuna.samplers.GPSampler(
                n_startup_trials=MIN_LOCAL, deterministic_objective=True, seed=int(rng.integers(2**32))
            )
        return self._draw(gp, local, region)

    def crossover(self, parent_a: Any, parent_b: Any, rng: np.random.Generator) -> Genome | SolverSteps:
        return self.space.crossover(parent_a, parent_b, rng)

    def propose(self, rng: np.random.Generator) -> Genome | SolverSteps:
        """A genome drawn by TPE at a uniformly drawn K; random while that K has fewer than
        ``MIN_EVALUATED`` evaluated plans."""
        num_steps = self._random_k(rng)
        same_k = self._evaluated_of_k(num_steps)
        if len(same_k) < MIN_EVALUATED:
            return self.space.random(rng)
        tpe = optuna.samplers.TPESampler(
            multivariate=True, constant_liar=False,
            n_startup_trials=MIN_EVALUATED, seed=int(rng.integers(2**32)),
        )
        return self._draw(tpe, same_k, [self._step_range] * num_steps)

    def _draw(
        self, sampler: optuna.samplers.BaseSampler, plans: list[tuple[Genome | SolverSteps, float]],
        bounds: list[tuple[int, int]],
    ) -> Genome | SolverSteps:
        """A genome drawn by ``sampler`` (its public ``sample_relative``) fitted on ``plans``: sorted
        step ``i`` within ``bounds[i]``, and the solver when it is searched."""
        distributions: dict[str, BaseDistribution] = {f"t{i}": IntDistribution(*bound) for i, bound in enumerate(bounds)}
        if isinstance(self.space, SolverTimestepSpace):
            distributions[_SOLVER] = CategoricalDistribution(self.space.solvers)
        storage = optuna.storages.InMemoryStorage()
        study_id = storage.create_new_study(directions=[optuna.study.StudyDirection.MINIMIZE])
        # An in-memory study to fit the model on (``create_study`` would log one line per child).
        study = optuna.Study(study_name=storage.get_study_name_from_id(study_id), storage=storage)
        study.add_trials(
            [create_trial(params=_params(genome), distributions=distributions, value=fid) for genome, fid in plans]
        )
        pending = storage.get_trial(storage.create_new_trial(study_id, template_trial=create_trial(state=TrialState.RUNNING)))
        values = sampler.sample_relative(study, pending, distributions)
        low, high = self._step_range
        # The model draws each sorted position on its own: equal or crossing values are put back in order.
        steps = strictly_decreasing((values[f"t{i}"] for i in range(len(bounds))), high - low + 1, lowest=low)
        if isinstance(self.space, SolverTimestepSpace):
            return SolverSteps(values[_SOLVER], steps)
        return steps

    def _random_k(self, rng: np.random.Generator) -> int:
        k_min, k_max = self._steps_space.k_range
        return k_min if k_min == k_max else int(rng.integers(k_min, k_max + 1))

    def _evaluated_of_k(self, num_steps: int) -> list[tuple[Genome | SolverSteps, float]]:
        return [(genome, fid) for genome, fid in self.evaluated if len(_steps(genome)) == num_steps]

    def _best_of_k(self, num_steps: int) -> Genome | SolverSteps | None:
        same_k = self._evaluated_of_k(num_steps)
        return min(same_k, key=lambda plan: plan[1])[0] if same_k else None

    @property
    def _spans_several_k(self) -> bool:
        k_min, k_max = self._steps_space.k_range
        return k_min < k_max

    @property
    def _steps_space(self) -> TimestepSpace:
        return self.space.steps if isinstance(self.space, SolverTimestepSpace) else self.space

    @property
    def trust_radius(self) -> int:
        """How far (in time steps) a refinement may move each step: ``TRUST_FRACTION`` of the range."""
        low, high = self._step_range
        return max(1, round(TRUST_FRACTION * (high - low + 1)))

    @property
    def _step_range(self) -> tuple[int, int]:
        steps = self._steps_space
        return timestep_range(steps.num_train_timesteps, steps.schedule_kind)

    def __str__(self) -> str:
        return str(self.space)


def _steps(genome: Genome | SolverSteps) -> Genome:
    return genome.timesteps if isinstance(genome, SolverSteps) else genome


def _params(genome: Genome | SolverSteps) -> dict[str, object]:
    params: dict[str, object] = {f"t{i}": t for i, t in enumerate(_steps(genome))}
    if isinstance(genome, SolverSteps):
        params[_SOLVER] = genome.solver
    return params

