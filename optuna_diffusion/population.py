"""The population recipe: how each stage's sampler splits a generation, and the sampler a study runs a stage with."""

from __future__ import annotations

import dataclasses

import optuna

from .baselines import baseline_names, baseline_plan
from .evaluation import PlanEvaluator
from .plan import Plan
from .samplers import ArchitectureSampler, TimestepSampler
from .sensitivity import Sensitivity
from .study_config import StudyConfig
from .trial_plan import TIMESTEP_STAGE


def population_split(population: int) -> dict[str, int]:
    """Parents, mutants and crossovers in the method's proportions (10/25/15 of 50)."""
    return {
        "population_size": population,
        "num_parents": max(2, population // 5),
        "num_mutants": population // 2,
        "num_crossovers": population * 3 // 10,
    }


def stage_population(stage: str, population: int, step_counts: int = 1) -> dict[str, int]:
    """The population split a stage's sampler and its multi-fidelity policy use.

    Stage 1, after generation 0 (the hand-designed schedules and random plans), fills each generation
    with refinements (Optuna's GPSampler fitted in a trust region around the best plan, one step
    nudged while few plans are known there) and proposals of Optuna's TPE fitted on the evaluated
    plans (once a K's best plan has stopped improving, long moves of it, and half of its refinements
    polish the best plan of another basin): half refinements at one K, seven tenths over several K,
    where a refinement also starts a K from its neighbours' best plans (a step inserted or removed) and
    TPE, fitted on the few dozen plans of each K, explores less well (``benchmarks/front_coverage.py``).
    Each child works on the plans of one uniformly drawn K and, when stage 1 also searches the solver,
    solver (:class:`~optuna_diffusion.samplers.GuidedTimestepSpace`). The method's mutants and crossovers
    searched worse at one K, over several K and with the solver (``benchmarks/search_quality.py``,
    ``benchmarks/search_front.py``, ``benchmarks/per_solver.py``; figures in benchmarks/README.md).
    Stage 2 keeps the method's split with half of its mutants as refinements (one block choice of a
    parent toggled): its genome is large -- a mutant toggles about one in ten of K x blocks
    choices -- so without single toggles the search cannot polish a plan that is one change from better.
    """
    split = population_split(population)
    if stage == TIMESTEP_STAGE:
        refinements = population // 2 if step_counts == 1 else population * 7 // 10
        return {**split, "num_mutants": 0, "num_crossovers": 0, "num_refinements": refinements,
                "num_proposals": population - refinements}
    refinements = split["num_mutants"] // 2
    return {**split, "num_mutants": split["num_mutants"] - refinements, "num_refinements": refinements}


def study_population(stage: str, config: StudyConfig) -> dict[str, int]:
    """:func:`stage_population` of a study's ``stage``: its population size and stage 1's number of K."""
    steps = config.timesteps
    return stage_population(stage, getattr(config, stage).population_size, steps.k_max - steps.k_min + 1)


def _searched_solvers(config: StudyConfig, evaluator: PlanEvaluator) -> tuple[str, ...] | None:
    """The solvers stage 1 searches (``[sampling] solver = "search"`` or a list), or None."""
    return evaluator.generator.solver_names if config.sampling.searches_solver else None


def shift_mu(evaluator: PlanEvaluator) -> float | None:
    """The ``mu`` the model's pipeline shifts its scheduler's sigmas by (Flux-dev's dynamic shifting), else None."""
    model = evaluator.generator.model
    return model.family.shift_mu(model)


def _initial_plans(config: StudyConfig, evaluator: PlanEvaluator) -> list[Plan]:
    """Hand-designed schedules for every allowed K (under every searched solver), as the first generation's seeds."""
    schedule = evaluator.generator.schedule
    stage = config.timesteps
    names = baseline_names(schedule)
    solvers = _searched_solvers(config, evaluator) or (None,)
    mu = shift_mu(evaluator)
    plans = [
        dataclasses.replace(baseline_plan(name, k, schedule, mu=mu), solver=solver)
        for k in range(stage.k_min, stage.k_max + 1) for name in names for solver in solvers
    ]
    unique = list(dict.fromkeys(plans))
    return unique[: stage.population_size]


def sampler_for(
    stage: str, config: StudyConfig, evaluator: PlanEvaluator, sensitivity: Sensitivity | None = None
) -> optuna.samplers.BaseSampler:
    """The sampler a study runs ``stage`` with: its population split, seed and, for stage 1, the baseline seeds
    and the searched solvers (``[sampling] solver = "search"`` or a list);
    for stage 2, the probes of single changes and their stacks as seeds (``sensitivity``)."""
    seed = config.sampling.seed
    if stage == TIMESTEP_STAGE:
        t = config.timesteps
        return TimestepSampler(
            k_min=t.k_min,
            k_max=t.k_max,
            num_train_timesteps=evaluator.generator.schedule.num_train_timesteps,
            schedule_kind=evaluator.generator.schedule.kind,
            solvers=_searched_solvers(config, evaluator),
            initial_plans=_initial_plans(config, evaluator),
            seed=seed,
            **study_population(stage, config),
        )
    return ArchitectureSampler(
        source_study=config.stage_study_name(TIMESTEP_STAGE),
        blocks=evaluator.generator.switch.blocks,
        k_min=config.timesteps.k_min,
        k_max=config.timesteps.k_max,
        num_train_timesteps=evaluator.generator.schedule.num_train_timesteps,
        schedule_kind=evaluator.generator.schedule.kind,
        sensitivity=sensitivity,
        initial_plans=None if sensitivity is None else sensitivity.stacks[: config.architecture.population_size],
        seed=seed,
        **study_population(stage, config),
    )


