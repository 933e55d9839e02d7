"""What both plan searches share: storage-backed generations, per-trial randomness, no repeats."""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, IntDistribution
from optuna.samplers import BaseGASampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

from ..errors import ConfigError
from ._child_generation import ChildGeneration
from ._selection import ParentSelection
from ._trial_plan import NUM_STEPS_PARAM, stored_num_steps

# Trials whose genome is not proposed again. FAIL is left out: a failure may be transient (memory,
# a lost worker), and drawing its genome again is harmless.
TAKEN_STATES = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED, TrialState.WAITING)
# Set by Optuna's retry callbacks on the retry of a failed trial.
RETRIED_FROM_KEY = "failed_trial"
# Rounds of "write, then look for a concurrent worker that wrote the same genome".
MAX_WRITE_ROUNDS = 3


def check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"`{name}` must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_probability(value: Any, name: str) -> float:
    is_number = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    if not is_number or not 0 <= value <= 1:
        raise ConfigError(f"`{name}` must be in [0, 1], got {value!r}")
    return float(value)


def check_population(
    population_size: Any, num_parents: Any, num_mutants: Any, num_crossovers: Any
) -> tuple[int, int, int, int]:
    """The four population sizes of a generation, checked (ConfigError names the wrong one)."""
    population_size = check_int(population_size, "population_size", 2)
    num_parents = check_int(num_parents, "num_parents", 2)
    if num_parents > population_size:
        raise ConfigError(f"`num_parents` must be <= population_size = {population_size}, got {num_parents}")
    num_mutants = check_int(num_mutants, "num_mutants", 0)
    num_crossovers = check_int(num_crossovers, "num_crossovers", 0)
    if num_mutants + num_crossovers > population_size:
        raise ConfigError(
            f"`num_mutants` + `num_crossovers` must be <= population_size = {population_size}, "
            f"got {num_mutants} + {num_crossovers}"
        )
    return population_size, num_parents, num_mutants, num_crossovers


def distinct_initial_genomes(
    genomes: Iterable[Hashable], population_size: int, describe: Callable[[Any], str] = str
) -> tuple[Hashable, ...]:
    """``initial_plans`` as checked genomes: no repeats, at most one population."""
    kept: list[Hashable] = []
    for genome in genomes:
        if genome in kept:
            raise ConfigError(f"`initial_plans` holds {describe(genome)} twice")
        kept.append(genome)
    if len(kept) > population_size:
        raise ConfigError(f"`initial_plans` must hold at most population_size = {population_size} plans, got {len(kept)}")
    return tuple(kept)


class PlanSearchSampler(BaseGASampler, abc.ABC):
    """Base of the plan samplers: a genome per trial, written as a system attribute in ``before_trial``.

    A subclass says what its genome is and how children are made (the hooks below); this class
    runs the generation bookkeeping. Generations live in the storage, keyed by the concrete class's
    name (``BaseGASampler``), so parallel workers and resumed runs share one sequence.

    Each trial's genome comes from ``numpy.random.default_rng([seed, trial.number])``: a seeded
    study is reproducible, and workers given the same seed still propose different children.
    """

    def __init__(self, *, population_size: int, num_parents: int, seed: int | None) -> None:
        super().__init__(population_size=population_size)
        self._seed = self._fresh_seed() if seed is None else check_int(seed, "seed", 0)
        self._random_sampler = RandomSampler(seed=seed)
        self._parent_selection = ParentSelection(num_parents=num_parents)
        # K of the genome written for each running trial of this process, so that answering
        # "num_steps" needs no storage read (the FrozenTrial Optuna passes predates the write).
        self._num_steps: dict[int, int] = {}

    # Hooks -----------------------------------------------------------------------------------------

    @abc.abstractmethod
    def _genome(self, trial: FrozenTrial) -> Hashable | None:
        """The trial's genome when it belongs to this sampler's space (a candidate parent)."""

    @abc.abstractmethod
    def _stored_genome(self, trial: FrozenTrial) -> Hashable | None:
        """The genome any trial of the study carries (what counts as taken)."""

    @abc.abstractmethod
    def _children(self, study: optuna.Study, generation: int, parents: Sequence[Hashable]) -> ChildGeneration:
        """The child generation of ``generation``."""

    @abc.abstractmethod
    def _genome_attrs(self, genome: Hashable) -> dict[str, Any]:
        """The trial system attributes that store ``genome`` (and the sampler's space)."""

    def _prepare(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Work to do before the first child (e.g. read another study); may raise ConfigError."""

    # Sampler ---------------------------------------------------------------------------------------

    @staticmethod
    def _fresh_seed() -> int:
        return int(np.random.SeedSequence().entropy)

    def reseed_rng(self) -> None:
        self._seed = self._fresh_seed()
        self._random_sampler.reseed_rng()

    def _taken(self, trials: Sequence[FrozenTrial], trial: FrozenTrial) -> set[Hashable]:
        return {
            genome
            for other in trials
            if other.number != trial.number and other.state in TAKEN_STATES
            if (genome := self._stored_genome(other)) is not None
        }

    def select_parent(self, study: optuna.Study, generation: int) -> list[FrozenTrial]:
        """Parents of ``generation``: NSGA-II elites among all complete trials with a genome."""
        trials = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)
        return self._parent_selection(study, [trial for trial in trials if self._genome(trial) is not None])

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Choose the trial's genome and store it in its system attributes.

        The trial's generation and slot come from the storage; parents come from the storage's
        per-generation cache (``BaseGASampler``); the genome is re-drawn while another evaluated or
        running trial has it, also after writing, in case a concurrent worker wrote the same one.
        """
        if self._is_unclaimed_retry(study, trial):
            # A heartbeat retry (``RetryHeartbeatStaleTrialCallback``) copies the failed trial's
            # system attributes: it evaluates the same genome, in the same generation.
            self._random_sampler.before_trial(study, trial)
            return
        try:
            self._prepare(study, trial)
        except ConfigError:
            # ``study.ask`` has created the trial already: do not leave it RUNNING forever.
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            raise
        generation = self.get_trial_generation(study, trial)
        parent_trials = self.get_parent_population(study, generation)
        parents = [genome for parent in parent_trials if (genome := self._genome(parent)) is not None]
        trials = study._get_trials(deepcopy=False, use_cache=True)
        key = self._get_generation_key()
        slot = sum(1 for other in trials if other.number < trial.number and other.system_attrs.get(key) == generation)
        rng = np.random.default_rng([self._seed, trial.number])
        children = self._children(study, generation, parents)
        taken = self._taken(trials, trial)
        for _ in range(MAX_WRITE_ROUNDS):
            genome = children(rng, generation=generation, slot=slot, parents=parents, taken=taken)
            self._write(study, trial, genome)
            if genome in taken:
                break  # the space is exhausted (ChildGeneration warned): nothing new to look for
            # Another worker may have written the same genome since `trials` was read.
            taken = self._taken(study._storage.get_all_trials(study._study_id, deepcopy=False), trial)
            if genome not in taken:
                break
        self._random_sampler.before_trial(study, trial)

    def _write(self, study: optuna.Study, trial: FrozenTrial, genome: Hashable) -> None:
        """Store ``genome`` in the trial's system attributes and remember its K for ``"num_steps"``."""
        attrs = self._genome_attrs(genome)
        for key, value in attrs.items():
            study._storage.set_trial_system_attr(trial._trial_id, key, value)
        num_steps = stored_num_steps(attrs)
        if num_steps is not None:
            self._num_steps[trial._trial_id] = num_steps

    def _is_unclaimed_retry(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        """Whether ``trial`` retries a failed trial whose genome no other trial has taken since."""
        genome = self._stored_genome(trial)
        if RETRIED_FROM_KEY not in trial.system_attrs or genome is None:
            return False
        return genome not in self._taken(study._storage.get_all_trials(study._study_id, deepcopy=False), trial)

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
            num_steps = self._num_steps.get(trial._trial_id) or stored_num_steps(trial.system_attrs)
            if num_steps is None:
                num_steps = stored_num_steps(study._storage.get_trial_system_attrs(trial._trial_id))
            low, high, step = param_distribution.low, param_distribution.high, param_distribution.step
            if num_steps is not None and low <= num_steps <= high and (num_steps - low) % step == 0:
                return num_steps
        return self._random_sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._num_steps.pop(trial._trial_id, None)
        self._random_sampler.after_trial(study, trial, state, values)
