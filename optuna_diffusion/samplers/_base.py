"""What both plan searches share: storage-backed generations, per-trial randomness, no repeats."""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseGASampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

from .. import compat
from ..errors import ConfigError
from ..plan import SCHEDULE_KINDS
from ..settings import POPULATION_RULE, at_least, check_argument, one_of, positive
from ..trial_plan import RETRIED_FROM_KEY, fits, genome_plan, plan_params, stored_space
from ._child_generation import ChildGeneration, ChildGenerationStrategy
from ._genome_space import GenomeSpace
from ._parent_selection import NSGA2ParentSelection, ParentSelection

# Trials whose genome is not proposed again. FAIL is left out: a failure may be transient (memory,
# a lost worker), and drawing its genome again is harmless.
TAKEN_STATES = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED, TrialState.WAITING)
# Rounds of "write, then look for a concurrent worker that wrote the same genome".
MAX_WRITE_ROUNDS = 3


def check_steps(
    k_min: Any, k_max: Any, num_train_timesteps: Any, *, k_min_kind: Any = int
) -> tuple[int | None, int | None, int]:
    """``k_min``, ``k_max`` and ``num_train_timesteps`` checked: K in [k_min, k_max] of ``[1, num_train_timesteps]``,
    a bound None where its kind allows it (ConfigError names the wrong one)."""
    k_min = check_argument(k_min, "k_min", k_min_kind, positive)
    k_max = check_argument(k_max, "k_max", int | None, at_least(k_min or 1))
    num_train_timesteps = check_argument(num_train_timesteps, "num_train_timesteps", int, positive)
    if max(k_min or 0, k_max or 0) > num_train_timesteps:
        raise ConfigError(f"`k_min` and `k_max` must be <= num_train_timesteps = {num_train_timesteps}, got {k_min}, {k_max}")
    return k_min, k_max, num_train_timesteps


def check_schedule_kind(value: Any) -> str:
    return check_argument(value, "schedule_kind", str, one_of(SCHEDULE_KINDS))


def check_population(population_size: Any, num_parents: Any, **children: Any) -> tuple[int, int, dict[str, int]]:
    """Population size, parents and the children of each kind per generation (``num_mutants=...``),
    checked: the children must fit in the population (ConfigError names the wrong one)."""
    population_size = check_argument(population_size, "population_size", int, POPULATION_RULE)
    num_parents = check_argument(num_parents, "num_parents", int, POPULATION_RULE)
    if num_parents > population_size:
        raise ConfigError(f"`num_parents` must be <= population_size = {population_size}, got {num_parents}")
    counts = {name: check_argument(value, name, int, at_least(0)) for name, value in children.items()}
    if sum(counts.values()) > population_size:
        raise ConfigError(
            f"{' + '.join(f'`{name}`' for name in counts)} must be <= population_size = {population_size}, "
            f"got {' + '.join(str(count) for count in counts.values())}"
        )
    return population_size, num_parents, counts


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
    """Base of the plan samplers: a genome per trial, written as system attributes in ``before_trial``.

    A subclass says what its genome is (the hooks below); the parent selection and the child
    generation are strategies given to the constructor; this class runs the generation bookkeeping.
    Generations live in the storage, keyed by the concrete class's name (``BaseGASampler``), so
    parallel workers and resumed runs share one sequence.

    The trial's plan also appears as trial parameters (``num_steps``, ``t0``.., block choices; see
    :mod:`optuna_diffusion.trial_plan`): the objective suggests them and this sampler answers each
    with the genome's value.

    Each trial's genome comes from ``numpy.random.default_rng([seed, trial.number])``: a seeded
    study is reproducible, and workers given the same seed still propose different children.
    """

    def __init__(
        self,
        *,
        population_size: int,
        num_parents: int,
        children: dict[str, int],
        mutation_prob: float,
        refine_best: bool = False,
        seed: int | None,
        parent_selection: ParentSelection | None,
        child_generation: ChildGenerationStrategy | None,
    ) -> None:
        """Check the arguments every plan search shares and wire its strategies.

        ``children`` counts each kind of child per generation by its argument's name (``num_mutants``
        ...); the default strategies are ``NSGA2ParentSelection(num_parents=...)`` and
        ``ChildGeneration(...)`` with those counts, ``mutation_prob`` and ``refine_best``.
        """
        population_size, num_parents, counts = check_population(population_size, num_parents, **children)
        seed = check_argument(seed, "seed", int | None, at_least(0))
        super().__init__(population_size=population_size)
        self._num_parents = num_parents
        self._seed = self._fresh_seed() if seed is None else seed
        self._random_sampler = RandomSampler(seed=seed)
        self._parent_selection = parent_selection or NSGA2ParentSelection(num_parents=num_parents)
        self._child_generation = child_generation or ChildGeneration(
            population_size=population_size, mutation_prob=mutation_prob, refine_best=refine_best, **counts
        )
        # The plan parameters of each running trial of this process, so that answering them needs no
        # storage read (the FrozenTrial Optuna passes predates the genome's write).
        self._live_params: dict[int, dict[str, tuple[BaseDistribution, Any]]] = {}

    # Hooks -----------------------------------------------------------------------------------------

    @abc.abstractmethod
    def _genome(self, trial: FrozenTrial) -> Hashable | None:
        """The trial's genome when it belongs to this sampler's space (a candidate parent)."""

    @abc.abstractmethod
    def _stored_genome(self, trial: FrozenTrial) -> Hashable | None:
        """The genome any trial of the study carries (what counts as taken)."""

    @abc.abstractmethod
    def _generation_space(
        self, generation: int, parents: Sequence[Hashable], trials: Sequence[FrozenTrial]
    ) -> GenomeSpace:
        """The genome space whose operators make the children of ``generation`` (``trials``: the study's)."""

    @abc.abstractmethod
    def _initial_genomes(self) -> Sequence[Hashable]:
        """The genomes of generation 0."""

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
        """Parents of ``generation``: the parent selection among all complete trials with a genome."""
        trials = compat.cached_trials(study, states=(TrialState.COMPLETE,))
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
            compat.fail_trial(study, trial)
            raise
        generation = self.get_trial_generation(study, trial)
        parent_trials = self.get_parent_population(study, generation)
        parents = [genome for parent in parent_trials if (genome := self._genome(parent)) is not None]
        trials = compat.cached_trials(study)
        key = compat.generation_key(self)
        slot = sum(1 for other in trials if other.number < trial.number and other.system_attrs.get(key) == generation)
        rng = np.random.default_rng([self._seed, trial.number])
        space = self._generation_space(generation, parents, trials)
        taken = self._taken(trials, trial)
        for _ in range(MAX_WRITE_ROUNDS):
            genome = self._child_generation(
                rng, space=space, generation=generation, slot=slot, parents=parents,
                initial=self._initial_genomes(), taken=taken,
            )
            self._write(study, trial, genome)
            if genome in taken:
                break  # the space is exhausted (ChildGeneration warned): nothing new to look for
            # Another worker may have written the same genome since `trials` was read.
            taken = self._taken(compat.fresh_trials(study), trial)
            if genome not in taken:
                break
        self._random_sampler.before_trial(study, trial)

    def _write(self, study: optuna.Study, trial: FrozenTrial, genome: Hashable) -> None:
        """Store ``genome`` in the trial's system attributes and remember it to answer parameters."""
        attrs = self._genome_attrs(genome)
        for key, value in attrs.items():
            compat.set_trial_system_attr(study, trial, key, value)
        self._live_params[compat.trial_id_of(trial)] = self._plan_params(attrs)

    @staticmethod
    def _plan_params(system_attrs: dict[str, Any]) -> dict[str, tuple[BaseDistribution, Any]]:
        plan, space = genome_plan(system_attrs), stored_space(system_attrs)
        return plan_params(plan, space) if plan is not None and space is not None else {}

    def _is_unclaimed_retry(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        """Whether ``trial`` retries a failed trial whose genome no other trial has taken since."""
        genome = self._stored_genome(trial)
        if RETRIED_FROM_KEY not in trial.system_attrs or genome is None:
            return False
        return genome not in self._taken(compat.fresh_trials(study), trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        """The plan's parameters (``num_steps``, ``t0``.., block choices) come from the genome;
        any other parameter is drawn at random."""
        trial_id = compat.trial_id_of(trial)
        if trial_id not in self._live_params:  # a retry, or a trial another process wrote: read the storage
            system_attrs = compat.storage_of(study).get_trial_system_attrs(trial_id)
            self._live_params[trial_id] = self._plan_params(system_attrs)
        entry = self._live_params[trial_id].get(param_name)
        if entry is not None and fits(param_distribution, entry[1]):
            return entry[1]
        return self._random_sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._live_params.pop(compat.trial_id_of(trial), None)
        self._random_sampler.after_trial(study, trial, state, values)

