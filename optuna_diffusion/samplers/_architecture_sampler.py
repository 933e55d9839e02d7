"""ArchitectureSampler: stage 2 of AutoDiffusion -- time steps and skipped/reused blocks searched together."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.samplers import RandomSampler
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from .. import compat
from ..blocks import Block, check_plan_blocks
from ..errors import ConfigError, PlanError
from ..plan import Plan
from ..sensitivity import Sensitivity
from ..settings import at_least, check_argument, probability
from ..trial_plan import finite_values, is_low_fidelity, plan_genome_attrs, stored_plan
from ._architecture_space import ArchitectureSpace, check_blocks
from ._base import (
    PlanSearchSampler,
    check_schedule_kind,
    check_steps,
    distinct_initial_genomes,
)
from ._bound_architecture_space import BoundArchitectureSpace
from ._child_generation import ChildGenerationStrategy
from ._parent_selection import ParentSelection
from ._timestep_space import TimestepSpace

_logger = optuna.logging.get_logger(__name__)


def pareto_plans(storage: BaseStorage, study_name: str) -> list[Plan]:
    """The plans of the Pareto set (``study.best_trials``) of a study in ``storage``.

    Only complete trials with finite values and a plan count (a failed evaluation scores FID inf and
    may still sit on the front of MACs). Trials sampled by ``TimestepSampler`` give plans that skip
    nothing. In trial-number order, without repeats.

    Raises:
        ConfigError: no study of that name is in ``storage`` (the message lists the studies there).
    """
    names = [summary.study_name for summary in storage.get_all_studies()]
    if study_name not in names:
        listed = ", ".join(repr(name) for name in names) or "none"
        raise ConfigError(f"source study {study_name!r} is not in the storage; its studies are: {listed}")
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=RandomSampler(seed=0))
    plans: list[Plan] = []
    for trial in sorted(study.best_trials, key=lambda t: t.number):
        plan = stored_plan(trial)
        if plan is not None and all(math.isfinite(v) for v in trial.values) and plan not in plans:
            plans.append(plan)
    return plans


def best_values_by_steps(storage: BaseStorage, study_name: str) -> dict[int, float]:
    """The lowest first value of the full-fidelity complete trials of a study in ``storage``, per number of steps."""
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=RandomSampler(seed=0))
    best: dict[int, float] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        plan = stored_plan(trial)
        if plan is not None and finite_values(trial) and not is_low_fidelity(trial):
            best[plan.num_steps] = min(best.get(plan.num_steps, math.inf), trial.values[0])
    return best


class ArchitectureSampler(PlanSearchSampler):
    """Evolutionary search of time steps and per-step block choices (AutoDiffusion stage 2), NSGA-II selection.

    Each trial gets a genome: a whole :class:`~optuna_diffusion.plan.Plan` -- K time steps and, per
    step, the blocks of ``blocks`` that are skipped or reused. The sampler writes it in
    ``before_trial`` as the trial system attribute ``"optuna_diffusion:plan"``
    (``Plan.to_dict()``); the objective reads it with
    :func:`~optuna_diffusion.samplers.plan_from_trial`, which suggests the plan's parameters
    (``"num_steps"``, ``"t0"``.., and ``"step{i}/{block}"`` for every block choice, answered here
    with the genome) and records the user attributes ``"timesteps"``, ``"skips"`` and ``"reuses"``.
    :class:`~optuna_diffusion.objective.PlanObjective` does all of that::

        source = optuna.create_study(study_name="steps", storage=storage, directions=["minimize"] * 2,
                                     sampler=TimestepSampler(k_min=4, k_max=6))
        source.optimize(PlanObjective(evaluator, num_samples=5000), n_trials=500)
        sampler = ArchitectureSampler(source_study="steps", blocks=find_blocks(model.denoiser), k_max=8)
        study = optuna.create_study(study_name="joint", storage=storage, directions=["minimize"] * 2,
                                    sampler=sampler)
        study.set_metric_names(["FID", "MACs"])
        study.optimize(PlanObjective(evaluator, num_samples=1000, macs_budget=budget), n_trials=500)

    Generation 0 holds the Pareto set of the source study (a study of the SAME storage, usually the
    stage-1 study: its plans skip nothing) and ``initial_plans``, then ``num_mutants`` mutants of
    them (which add skips and reuses), then random block choices on their time steps. Each later
    generation takes ``num_parents`` parents among ALL complete trials by non-dominated rank and
    crowding distance over (FID, MACs) -- constraints the objective sets (a MACs budget) rank
    infeasible trials after feasible ones; a trial whose FID is above ``max_parent_ratio`` times the
    source study's best at its number of steps is a parent only when too few others are -- and makes
    ``num_refinements`` refinements (one choice of
    a parent toggled), ``num_mutants`` mutants, ``num_crossovers`` crossovers and random children for
    the rest (see :class:`ArchitectureSpace` for the operators).

    The allowed skip ratio (not-run (step, block) pairs over ``K * len(blocks)``) grows linearly
    from ``max_skip_ratio_start`` in generation 0 to ``max_skip_ratio_end`` in generation
    ``ratio_generations``, as the method's growing skip ratio: the search first keeps what stage 1
    found and removes ever more of the network later. ``initial_plans`` and source plans are
    evaluated as they are; every child fits its generation's ratio. With ``k_max`` above the source
    plans' K, time-step mutations may add a step: skipping blocks can pay for more steps.

    Children are valid by construction (``check_plan_blocks`` passes, no loops). A plan that an
    evaluated or running trial of THIS study already has is not proposed again (the bounded re-draws
    of stage 1). Generations live in the storage, keyed by this class's name, so workers on one
    storage share one sequence of generations. One sampler serves one study: the source plans are
    read at its first trial.

    Args:
        source_study: name of the study (in the same storage as the optimised one) whose Pareto set
            seeds generation 0, or None.
        blocks: the searchable blocks, from :func:`~optuna_diffusion.blocks.find_blocks`.
        population_size: complete trials per generation.
        num_parents: parents kept for each generation (at least 2).
        num_mutants: mutants per generation.
        num_crossovers: crossovers per generation; the rest of a generation is random.
        skip_prob: probability that a mutation toggles each (step, block) choice.
        num_refinements: refinements per generation after the first: one block choice of a parent
            toggled, the local search that polishes the front.
        max_skip_ratio_start: allowed skip ratio of generation 0.
        max_skip_ratio_end: allowed skip ratio from generation ``ratio_generations`` on.
        ratio_generations: generations over which the ratio grows (0: the end ratio at once).
        timestep_mutation_prob: probability that a mutant (or a random child) also moves its time
            steps with the stage-1 mutation, which may add or drop a step within ``[k_min, k_max]``.
        k_min: fewest time steps; default the fewest of the source and initial plans.
        k_max: most time steps; default the most of the source and initial plans.
        num_train_timesteps: T of the model's noise schedule.
        schedule_kind: ``"ddpm"``, or ``"flow"`` for a flow-matching model (time steps of ``[1, T]``).
        initial_plans: plans to evaluate in generation 0 besides the source Pareto set.
        max_parent_ratio: plans whose first value (FID) is above this multiple of the source study's best
            at their number of steps are parents only when fewer than ``num_parents`` others are: the
            front's cheap end holds plans many times worse than stage 1's, and their children spend
            the budget on plans no one would use. None: no bound. Applies where that best is positive
            (not to a negated score).
        sensitivity: probes of single changes (:func:`~optuna_diffusion.sensitivity.probe_sensitivity`);
            mutants and random children then propose a change with its measured acceptance, so
            the budget is not spent on changes known to be catastrophic. None: every change alike.
        seed: seed of the random number generators.
        parent_selection: how parents are chosen; default ``NSGA2ParentSelection(num_parents=...)``.
        child_generation: how a child's plan is made; default ``ChildGeneration(...)`` with the
            population split and ``skip_prob`` above.
    """

    def __init__(
        self,
        *,
        source_study: str | None,
        blocks: Sequence[Block],
        population_size: int = 50,
        num_parents: int = 10,
        num_mutants: int = 25,
        num_crossovers: int = 15,
        skip_prob: float = 0.1,
        num_refinements: int = 0,
        max_skip_ratio_start: float = 0.1,
        max_skip_ratio_end: float = 0.5,
        ratio_generations: int = 10,
        timestep_mutation_prob: float = 0.2,
        k_min: int | None = None,
        k_max: int | None = None,
        num_train_timesteps: int = 1000,
        schedule_kind: str = "ddpm",
        initial_plans: Sequence[Plan] | None = None,
        max_parent_ratio: float | None = 2.0,
        sensitivity: Sensitivity | None = None,
        seed: int | None = None,
        parent_selection: ParentSelection | None = None,
        child_generation: ChildGenerationStrategy | None = None,
    ) -> None:
        if source_study is not None and (not isinstance(source_study, str) or not source_study):
            raise ConfigError(f"`source_study` must be a study name or None, got {source_study!r}")
        self._blocks = check_blocks(blocks)
        self._skip_prob = check_argument(skip_prob, "skip_prob", float, probability)
        ratio_start = check_argument(max_skip_ratio_start, "max_skip_ratio_start", float, probability)
        ratio_end = check_argument(max_skip_ratio_end, "max_skip_ratio_end", float, probability)
        if ratio_end < ratio_start:
            raise ConfigError(f"`max_skip_ratio_end` must be >= max_skip_ratio_start = {ratio_start}, got {ratio_end}")
        self._ratio = (ratio_start, ratio_end, check_argument(ratio_generations, "ratio_generations", int, at_least(0)))
        self._timestep_mutation_prob = check_argument(timestep_mutation_prob, "timestep_mutation_prob", float, probability)
        self._schedule_kind = check_schedule_kind(schedule_kind)
        self._k_min, self._k_max, self._num_train_timesteps = check_steps(
            k_min, k_max, num_train_timesteps, k_min_kind=int | None  # None: K from the source study or initial plans
        )
        super().__init__(
            population_size=population_size,
            num_parents=num_parents,
            children={"num_refinements": num_refinements, "num_mutants": num_mutants, "num_crossovers": num_crossovers},
            mutation_prob=self._skip_prob,
            seed=seed,
            parent_selection=parent_selection,
            child_generation=child_generation,
        )
        self._initial_plans = self._check_initial_plans(initial_plans, self._population_size)
        if source_study is None and not self._initial_plans and self._k_min is None:
            raise ConfigError(
                "give `source_study`, `initial_plans` or `k_min`: nothing tells how many time steps to search"
            )
        self._max_parent_ratio = check_argument(max_parent_ratio, "max_parent_ratio", float | None, at_least(1))
        self._source_best: dict[int, float] = {}
        if sensitivity is not None and not isinstance(sensitivity, Sensitivity):
            raise ConfigError(f"`sensitivity` must be a Sensitivity or None, got {type(sensitivity).__name__}")
        self._sensitivity = sensitivity
        self._source_study = source_study
        self._space: ArchitectureSpace | None = None
        self._initial: tuple[Plan, ...] = ()

    def _check_plan(self, plan: Any, what: str) -> Plan:
        if not isinstance(plan, Plan):
            raise ConfigError(f"{what} must be Plan objects, got {plan!r}")
        if plan.schedule_kind != self._schedule_kind:
            raise ConfigError(f"{what} holds {plan} of a {plan.schedule_kind} schedule, but schedule_kind = {self._schedule_kind!r}")
        if plan.num_train_timesteps != self._num_train_timesteps:
            raise ConfigError(
                f"{what} holds {plan} of T = {plan.num_train_timesteps}, "
                f"but num_train_timesteps = {self._num_train_timesteps}"
            )
        try:
            check_plan_blocks(plan, self._blocks)
        except PlanError as error:
            raise ConfigError(f"{what} holds a plan that does not fit `blocks`: {error}") from None
        return plan

    def _check_initial_plans(self, initial_plans: Sequence[Plan] | None, population_size: int) -> tuple[Plan, ...]:
        if initial_plans is None:
            return ()
        if isinstance(initial_plans, (str, bytes, Plan)) or not isinstance(initial_plans, Sequence):
            raise ConfigError("`initial_plans` must be a list of Plan")
        low, high = self._k_min or 1, self._k_max or self._num_train_timesteps

        def checked(plan: Plan) -> Plan:
            plan = self._check_plan(plan, "`initial_plans`")
            if not low <= plan.num_steps <= high:
                raise ConfigError(f"`initial_plans` holds {plan}, outside the allowed [{low}, {high}] steps")
            return plan

        return distinct_initial_genomes(map(checked, initial_plans), population_size)

    # What the search is --------------------------------------------------------------------------

    @property
    def space(self) -> ArchitectureSpace | None:
        """The plans searched; None until the first trial has read the source study."""
        return self._space

    @property
    def initial_plans(self) -> tuple[Plan, ...]:
        """The plans of generation 0: the source Pareto set, then ``initial_plans`` (after the first trial)."""
        return self._initial

    def max_skip_ratio(self, generation: int) -> float:
        """The skip ratio children of ``generation`` may have."""
        start, end, generations = self._ratio
        if generations == 0:
            return end
        return start + (end - start) * min(1.0, generation / generations)

    def _prepare(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Read the source study's Pareto set once, and fix the range of K."""
        if self._space is not None:
            return
        source: list[Plan] = []
        if self._source_study is not None:
            for plan in pareto_plans(compat.storage_of(study), self._source_study):
                source.append(self._check_plan(plan, f"the Pareto set of source study {self._source_study!r}"))
            self._source_best = best_values_by_steps(compat.storage_of(study), self._source_study)
        plans = list(dict.fromkeys([*source, *self._initial_plans]))
        sizes = [plan.num_steps for plan in plans]
        if self._k_min is None and not sizes:
            raise ConfigError(
                f"source study {self._source_study!r} has no complete trial with a plan; "
                "give `k_min` (and `k_max`) or `initial_plans`"
            )
        if self._k_min is not None:
            k_min = self._k_min
        else:
            k_min = min(sizes) if self._k_max is None else min(min(sizes), self._k_max)
        k_max = self._k_max if self._k_max is not None else max([k_min, *sizes])
        outside = [plan for plan in plans if not k_min <= plan.num_steps <= k_max]
        if outside:
            _logger.warning(f"{len(outside)} source plans have a number of steps outside [{k_min}, {k_max}]: left out.")
            plans = [plan for plan in plans if plan not in outside]
        population_size = self.population_size or 0
        if len(plans) > population_size:
            _logger.warning(
                f"The source study has {len(plans)} Pareto plans; generation 0 holds the first {population_size}."
            )
            plans = plans[:population_size]
        self._initial = tuple(plans)
        timestep_space = TimestepSpace(
            num_train_timesteps=self._num_train_timesteps, k_min=k_min, k_max=k_max, schedule_kind=self._schedule_kind
        )
        self._space = ArchitectureSpace(blocks=self._blocks, timestep_space=timestep_space, sensitivity=self._sensitivity)

    def _near_the_source(self, value: float, num_steps: int) -> bool:
        """Whether ``value`` is within ``max_parent_ratio`` of the source study's best at ``num_steps`` steps."""
        best = self._source_best.get(num_steps, math.nan)
        return self._max_parent_ratio is None or not best > 0 or value <= self._max_parent_ratio * best

    def select_parent(self, study: optuna.Study, generation: int) -> list[FrozenTrial]:
        """Parents of ``generation``: the parent selection among the trials near the source study's best
        (``max_parent_ratio``), topped up from the others when too few are."""
        near: list[FrozenTrial] = []
        far: list[FrozenTrial] = []
        for trial in compat.cached_trials(study, states=(TrialState.COMPLETE,)):
            plan = self._genome(trial)
            if plan is not None:
                (near if self._near_the_source(trial.values[0], plan.num_steps) else far).append(trial)
        parents = self._parent_selection(study, near)
        missing = self._num_parents - len(parents)
        return parents + self._parent_selection(study, far)[:missing] if missing > 0 else parents

    # Hooks of PlanSearchSampler -------------------------------------------------------------------

    def _genome(self, trial: FrozenTrial) -> Plan | None:
        """The trial's plan when it belongs to this sampler's space."""
        plan = stored_plan(trial)
        return plan if self._space is not None and self._space.contains(plan) else None

    def _stored_genome(self, trial: FrozenTrial) -> Plan | None:
        return stored_plan(trial)

    def _generation_space(
        self, generation: int, parents: Sequence[Any], trials: Sequence[FrozenTrial]
    ) -> BoundArchitectureSpace:
        assert self._space is not None  # set by _prepare
        return BoundArchitectureSpace(
            self._space,
            max_ratio=self.max_skip_ratio(generation),
            pool=parents if generation > 0 and parents else self._initial,
            timestep_mutation_prob=self._timestep_mutation_prob,
        )

    def _initial_genomes(self) -> tuple[Plan, ...]:
        return self._initial

    def _genome_attrs(self, genome: Any) -> dict[str, Any]:
        assert self._space is not None
        return plan_genome_attrs(genome, self._space.to_dict())
