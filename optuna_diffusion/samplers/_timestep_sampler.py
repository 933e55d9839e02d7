"""TimestepSampler: stage 1 of AutoDiffusion -- an evolutionary search over sets of time steps."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, IntDistribution
from optuna.samplers import BaseGASampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

from ..errors import ConfigError
from ._child_generation import ChildGeneration
from ._genome import Genome, GenomeSpace
from ._selection import ParentSelection
from ._trial_plan import NUM_STEPS_PARAM, SPACE_KEY, TIMESTEPS_KEY, stored_timesteps

# Trials whose genome is not proposed again. FAIL is left out: a failure may be transient (memory,
# a lost worker), and drawing its genome again is harmless.
_TAKEN_STATES = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED, TrialState.WAITING)
# Rounds of "write, then look for a concurrent worker that wrote the same genome".
_MAX_WRITE_ROUNDS = 3


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"`{name}` must be an integer >= {minimum}, got {value!r}")
    return int(value)


class TimestepSampler(BaseGASampler):
    """Evolutionary search of K distinct time steps (AutoDiffusion stage 1), NSGA-II selection.

    Each trial gets a genome: K distinct time steps of ``[0, T - 1]``, sorted largest first, K in
    ``[k_min, k_max]``. The objective reads it with
    :func:`~optuna_diffusion.samplers.plan_from_trial` (or
    :func:`~optuna_diffusion.samplers.suggest_plan`) and returns FID, or (FID, MACs).

    How the genome reaches the trial: in ``before_trial`` the sampler writes it as one system
    attribute, ``"optuna_diffusion:timesteps"``; ``plan_from_trial`` reads it, suggests the
    parameter ``"num_steps"`` (answered here with K) and records the user attribute
    ``"timesteps"``, so the dashboard shows the steps and plots have a parameter. Time steps do not
    fit Optuna's distributions (varying length, distinct values), hence this route.

    A generation is ``population_size`` complete trials. Generation 0 holds ``initial_plans`` (e.g.
    :func:`uniform_timesteps` and :func:`quadratic_timesteps`), ``num_mutants`` of their mutants,
    and random genomes. Each later generation takes ``num_parents`` parents among ALL complete
    trials by non-dominated rank and crowding distance (constraints set with
    ``trial.set_constraint`` are honoured; one objective reduces to FID order), then makes
    ``num_mutants`` mutants, ``num_crossovers`` crossovers and random genomes for the rest.

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
        population_size: complete trials per generation.
        num_parents: parents kept for each generation (at least 2).
        num_mutants: mutants per generation.
        num_crossovers: crossovers per generation; the rest of a generation is random.
        mutation_prob: probability that a mutant changes each step (AutoDiffusion: 0.25).
        initial_plans: time steps to evaluate first (sequences of int or :class:`~optuna_diffusion.Plan`).
        seed: seed of the random number generators.
    """

    def __init__(
        self,
        *,
        k_min: int,
        k_max: int | None = None,
        num_train_timesteps: int = 1000,
        population_size: int = 50,
        num_parents: int = 10,
        num_mutants: int = 25,
        num_crossovers: int = 15,
        mutation_prob: float = 0.25,
        initial_plans: Sequence[Iterable[int] | Any] | None = None,
        seed: int | None = None,
    ) -> None:
        k_min = _check_int(k_min, "k_min", 1)
        k_max = k_min if k_max is None else _check_int(k_max, "k_max", k_min)
        num_train_timesteps = _check_int(num_train_timesteps, "num_train_timesteps", 1)
        if k_max > num_train_timesteps:
            raise ConfigError(f"`k_max` must be <= num_train_timesteps = {num_train_timesteps}, got {k_max}")
        population_size = _check_int(population_size, "population_size", 2)
        num_parents = _check_int(num_parents, "num_parents", 2)
        if num_parents > population_size:
            raise ConfigError(f"`num_parents` must be <= population_size = {population_size}, got {num_parents}")
        num_mutants = _check_int(num_mutants, "num_mutants", 0)
        num_crossovers = _check_int(num_crossovers, "num_crossovers", 0)
        if num_mutants + num_crossovers > population_size:
            raise ConfigError(
                f"`num_mutants` + `num_crossovers` must be <= population_size = {population_size}, "
                f"got {num_mutants} + {num_crossovers}"
            )
        is_number = isinstance(mutation_prob, (int, float)) and not isinstance(mutation_prob, bool)
        if not is_number or not 0 <= mutation_prob <= 1:
            raise ConfigError(f"`mutation_prob` must be in [0, 1], got {mutation_prob!r}")
        if seed is not None:
            seed = _check_int(seed, "seed", 0)

        self._space = GenomeSpace(num_train_timesteps=num_train_timesteps, k_min=k_min, k_max=k_max)
        plans = self._check_initial_plans(initial_plans, population_size)

        super().__init__(population_size=population_size)
        self._seed = self._fresh_seed() if seed is None else seed
        self._random_sampler = RandomSampler(seed=seed)
        self._parent_selection = ParentSelection(num_parents=num_parents)
        self._child_generation = ChildGeneration(
            space=self._space,
            population_size=population_size,
            num_mutants=num_mutants,
            num_crossovers=num_crossovers,
            mutation_prob=float(mutation_prob),
            initial_plans=plans,
        )

    def _check_initial_plans(self, initial_plans: Sequence[Any] | None, population_size: int) -> tuple[Genome, ...]:
        if initial_plans is None:
            return ()
        if isinstance(initial_plans, (str, bytes)):
            raise ConfigError("`initial_plans` must be a list of time-step lists")
        plans: list[Genome] = []
        for plan in initial_plans:
            genome = self._space.check(getattr(plan, "timesteps", plan))
            if genome in plans:
                raise ConfigError(f"`initial_plans` holds {list(genome)} twice")
            plans.append(genome)
        if len(plans) > population_size:
            raise ConfigError(
                f"`initial_plans` must hold at most population_size = {population_size} plans, got {len(plans)}"
            )
        return tuple(plans)

    @staticmethod
    def _fresh_seed() -> int:
        return int(np.random.SeedSequence().entropy)

    @property
    def space(self) -> GenomeSpace:
        """The genomes searched."""
        return self._space

    def reseed_rng(self) -> None:
        self._seed = self._fresh_seed()
        self._random_sampler.reseed_rng()

    def _genome(self, trial: FrozenTrial) -> Genome | None:
        """The trial's time steps when they belong to this sampler's space."""
        steps = stored_timesteps(trial)
        return steps if steps is not None and self._space.contains(list(steps)) else None

    def _taken(self, trials: Sequence[FrozenTrial], trial: FrozenTrial) -> set[Genome]:
        return {
            genome
            for other in trials
            if other.number != trial.number and other.state in _TAKEN_STATES
            if (genome := stored_timesteps(other)) is not None
        }

    def select_parent(self, study: optuna.Study, generation: int) -> list[FrozenTrial]:
        """Parents of ``generation``: NSGA-II elites among all complete trials with time steps."""
        trials = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)
        return self._parent_selection(study, [trial for trial in trials if self._genome(trial) is not None])

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Choose the trial's time steps and store them in its system attributes.

        The trial's generation and slot come from the storage; parents come from the storage's
        per-generation cache (``BaseGASampler``); the genome is re-drawn while another evaluated or
        running trial has it, also after writing, in case a concurrent worker wrote the same one.
        """
        generation = self.get_trial_generation(study, trial)
        parent_trials = self.get_parent_population(study, generation)
        parents = [genome for parent in parent_trials if (genome := self._genome(parent)) is not None]
        trials = study._get_trials(deepcopy=False, use_cache=True)
        key = self._get_generation_key()
        slot = sum(1 for other in trials if other.number < trial.number and other.system_attrs.get(key) == generation)
        rng = np.random.default_rng([self._seed, trial.number])
        taken = self._taken(trials, trial)
        storage = study._storage
        storage.set_trial_system_attr(trial._trial_id, SPACE_KEY, dataclasses.asdict(self._space))
        for _ in range(_MAX_WRITE_ROUNDS):
            genome = self._child_generation(rng, generation=generation, slot=slot, parents=parents, taken=taken)
            storage.set_trial_system_attr(trial._trial_id, TIMESTEPS_KEY, list(genome))
            if genome in taken:
                break  # the space is exhausted (ChildGeneration warned): nothing new to look for
            # Another worker may have written the same genome since `trials` was read.
            taken = self._taken(storage.get_all_trials(study._study_id, deepcopy=False), trial)
            if genome not in taken:
                break
        self._random_sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        """``"num_steps"`` is the genome's K; other parameters are drawn at random."""
        if param_name == NUM_STEPS_PARAM and isinstance(param_distribution, IntDistribution):
            steps = study._storage.get_trial_system_attrs(trial._trial_id).get(TIMESTEPS_KEY)
            low, high, step = param_distribution.low, param_distribution.high, param_distribution.step
            if steps is not None and low <= len(steps) <= high and (len(steps) - low) % step == 0:
                return len(steps)
        return self._random_sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._random_sampler.after_trial(study, trial, state, values)
