"""TimestepSampler: stage 1 of AutoDiffusion -- an evolutionary search over sets of time steps."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import ConfigError, PlanError
from ..solvers import searched_solvers
from ..settings import check_argument, probability
from ..trial_plan import is_low_fidelity, stored_solver, stored_timesteps, timestep_genome_attrs
from ._base import (
    PlanSearchSampler,
    check_steps,
    check_schedule_kind,
    distinct_initial_genomes,
)
from ._child_generation import ChildGenerationStrategy
from ._parent_selection import ParentSelection
from ._timestep_genome import Genome
from ._solver_space import SolverSteps, SolverTimestepSpace
from ._timestep_space import TimestepSpace
from ._guided_space import GuidedTimestepSpace


class TimestepSampler(PlanSearchSampler):
    """Evolutionary search of K distinct time steps (AutoDiffusion stage 1), NSGA-II selection.

    Each trial gets a genome: K distinct time steps of ``[0, T - 1]``, sorted largest first, K in
    ``[k_min, k_max]`` and, when ``solvers`` are given, one of them (the plan's ``solver``, searched
    jointly: :class:`SolverTimestepSpace`). The objective reads it with
    :func:`~optuna_diffusion.samplers.timesteps_from_trial` or
    :func:`~optuna_diffusion.samplers.plan_from_trial` (or ``suggest_timesteps`` / ``suggest_plan``)
    and returns FID, or (FID, MACs).

    How the genome reaches the trial: in ``before_trial`` the sampler writes it as one system
    attribute, ``"optuna_diffusion:timesteps"``; ``timesteps_from_trial`` reads it, suggests the
    parameters ``"num_steps"`` and ``"t0"`` .. ``"t{K-1}"`` (answered here with the genome) and
    records the user attribute ``"timesteps"``, so the dashboard shows the steps and Optuna's plots
    have parameters (:mod:`optuna_diffusion.trial_plan`). Time steps do not fit Optuna's own
    search (varying length, distinct values), hence this route.

    A generation is ``population_size`` complete trials. Generation 0 holds ``initial_plans`` (e.g.
    :func:`optuna_diffusion.baselines.baseline_plans`), ``num_mutants`` of their mutants,
    and random genomes. Each later generation takes ``num_parents`` parents among ALL complete
    trials (default :class:`NSGA2ParentSelection`: non-dominated rank and crowding distance,
    constraints set with ``trial.set_constraint`` honoured; one objective reduces to FID order),
    then makes ``num_refinements`` refinements of the best parent (a trust-region GP proposal near it;
    over several K or solvers, near the best plan of a uniformly drawn K and solver), ``num_mutants``
    mutants, ``num_crossovers`` crossovers, ``num_proposals`` proposals of Optuna's TPE fitted on the
    evaluated plans of a uniformly drawn K and solver (:class:`GuidedTimestepSpace`) and random
    genomes for the rest (default :class:`ChildGeneration`).

    A genome that an evaluated or running trial of the study already has is never proposed again
    (bounded re-draws, see :class:`ChildGeneration`); a worker that finds, after writing, that a
    concurrent worker wrote the same genome draws again.

    Generations live in the storage (``BaseGASampler``, keyed by this class's name): workers on one
    storage share one sequence of generations, and a new sampler on a stored study continues it.

    Randomness: each trial's genome comes from ``numpy.random.default_rng([seed, trial.number])``.
    A seeded study is reproducible, and workers given the same seed still propose different
    children. ``reseed_rng`` draws a fresh seed.

    Args:
        k_min: fewest time steps.
        k_max: most time steps; default ``k_min`` (fixed K).
        num_train_timesteps: T of the model's noise schedule.
        schedule_kind: ``"ddpm"``, or ``"flow"`` for a flow-matching model (time steps of ``[1, T]``).
        solvers: names of :data:`~optuna_diffusion.solvers.SOLVERS` of that kind to search with the time
            steps; None: plans carry no solver (the objective's runs them).
        population_size: complete trials per generation.
        num_parents: parents kept for each generation (at least 2).
        num_mutants: mutants per generation.
        num_crossovers: crossovers per generation.
        num_refinements: refinements per generation after the first: the best parent (the
            selection's first) polished, by Optuna's GPSampler fitted on the evaluated plans around
            it (:meth:`GuidedTimestepSpace.refine`), or one step moved by 1 to 64 while few are known.
        num_proposals: TPE proposals per generation after the first; the rest of a generation is
            random. AutoDiffusion has neither; the studies' stage 1 fills its generations with
            refinements and proposals only (:func:`optuna_diffusion.population.stage_population`).
        mutation_prob: probability that a mutant changes each step (AutoDiffusion: 0.25).
        initial_plans: time steps to evaluate first (sequences of int or :class:`~optuna_diffusion.Plan`;
            with ``solvers``, a plan without a solver takes the first).
        seed: seed of the random number generators.
        parent_selection: how parents are chosen; default ``NSGA2ParentSelection(num_parents=...)``.
        child_generation: how a child's genome is made; default ``ChildGeneration(...)`` with the
            population split and ``mutation_prob`` above.
    """

    def __init__(
        self,
        *,
        k_min: int,
        k_max: int | None = None,
        num_train_timesteps: int = 1000,
        schedule_kind: str = "ddpm",
        solvers: Sequence[str] | None = None,
        population_size: int = 50,
        num_parents: int = 10,
        num_mutants: int = 25,
        num_crossovers: int = 15,
        num_refinements: int = 0,
        num_proposals: int = 0,
        mutation_prob: float = 0.25,
        initial_plans: Sequence[Iterable[int] | Any] | None = None,
        seed: int | None = None,
        parent_selection: ParentSelection | None = None,
        child_generation: ChildGenerationStrategy | None = None,
    ) -> None:
        k_min, k_max, num_train_timesteps = check_steps(k_min, k_max, num_train_timesteps)
        k_max = k_min if k_max is None else k_max
        mutation_prob = check_argument(mutation_prob, "mutation_prob", float, probability)
        steps = TimestepSpace(
            num_train_timesteps=num_train_timesteps, k_min=k_min, k_max=k_max, schedule_kind=check_schedule_kind(schedule_kind)
        )
        if isinstance(solvers, str):
            raise ConfigError(f"`solvers` must be a list of distinct solver names, got {solvers!r}")
        self._space: TimestepSpace | SolverTimestepSpace = (
            steps if solvers is None else SolverTimestepSpace(steps, searched_solvers(tuple(solvers), schedule_kind))
        )
        super().__init__(
            population_size=population_size,
            num_parents=num_parents,
            children={"num_refinements": num_refinements, "num_mutants": num_mutants,
                      "num_crossovers": num_crossovers, "num_proposals": num_proposals},
            mutation_prob=mutation_prob,
            refine_best=True,
            seed=seed,
            parent_selection=parent_selection,
            child_generation=child_generation,
        )
        self._initial = self._check_initial_plans(initial_plans, self._population_size)

    def _check_initial_plans(
        self, initial_plans: Sequence[Any] | None, population_size: int
    ) -> tuple[Genome | SolverSteps, ...]:
        if initial_plans is None:
            return ()
        if isinstance(initial_plans, (str, bytes)):
            raise ConfigError("`initial_plans` must be a list of time-step lists")
        space = self._space
        if isinstance(space, TimestepSpace):
            genomes = [space.check(getattr(plan, "timesteps", plan)) for plan in initial_plans]
            return distinct_initial_genomes(genomes, population_size, describe=list)
        try:
            solver_genomes = [
                space.check(getattr(plan, "timesteps", plan), getattr(plan, "solver", None) or space.solvers[0])
                for plan in initial_plans
            ]
        except PlanError as error:
            raise ConfigError(f"`initial_plans`: {error}") from None
        return distinct_initial_genomes(solver_genomes, population_size, describe=str)

    @property
    def space(self) -> TimestepSpace | SolverTimestepSpace:
        """The genomes searched: time steps, or (solver, time steps) pairs when solvers are searched."""
        return self._space

    def get_parent_population(self, study: optuna.Study, generation: int) -> list[FrozenTrial]:
        """The parents of ``generation``, best first: refinements polish the first.

        ``BaseGASampler`` returns the parents it cached in the storage in trial order; the parent
        selection ranks them again."""
        return self._parent_selection(study, super().get_parent_population(study, generation))

    def _genome(self, trial: FrozenTrial) -> Genome | SolverSteps | None:
        """The trial's genome when it belongs to this sampler's space."""
        genome = self._stored_genome(trial)
        return genome if genome is not None and self._space.contains(genome) else None

    def _stored_genome(self, trial: FrozenTrial) -> Genome | SolverSteps | None:
        steps = stored_timesteps(trial)
        if steps is None or isinstance(self._space, TimestepSpace):
            return steps
        solver = stored_solver(trial)
        return SolverSteps(solver, steps) if solver is not None else None

    def _generation_space(
        self, generation: int, parents: Sequence[Any], trials: Sequence[FrozenTrial]
    ) -> GuidedTimestepSpace:
        scored = [
            (genome, trial)
            for trial in trials
            if trial.state == TrialState.COMPLETE
            if (genome := self._genome(trial)) is not None and math.isfinite(trial.values[0])
        ]
        return GuidedTimestepSpace(
            self._space,
            evaluated=tuple((genome, trial.values[0]) for genome, trial in scored),
            estimated=frozenset(genome for genome, trial in scored if is_low_fidelity(trial)),
        )

    def _initial_genomes(self) -> tuple[Genome, ...]:
        return self._initial

    def _genome_attrs(self, genome: Any) -> dict[str, Any]:
        if isinstance(genome, SolverSteps):
            return timestep_genome_attrs(genome.timesteps, self._space.to_dict(), genome.solver)
        return timestep_genome_attrs(genome, self._space.to_dict())
