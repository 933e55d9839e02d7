"""Model-guided children of the time-step search: Optuna's TPE and GP fitted on the evaluated plans.

Once a search has found good plans, a uniformly random genome (the exploration slots of the
AutoDiffusion recipe) almost never lands near them, and mutants and crossovers of a few parents stay
in the parents' basin. A *proposal* instead draws from a model of every evaluated plan: Optuna's
multivariate TPE over the sorted time steps ``t0 > t1 > ...`` of the plans with the proposal's K,
fitted on their FID. A *refinement* polishes one plan: Optuna's GPSampler fitted on the evaluated
plans of its K in a trust region around it (every step within ``TRUST_FRACTION`` of the step range),
where FID is smooth enough for a Gaussian process to point at the next better plan. Both keep the
genome, the generations and the seeded first population of the search.

Both work on the plans of one *group* at a time: one K and, when the solver is searched, one solver
(the steps a solver wants are its own: ``benchmarks/per_solver.py``). In a search over several K or
solvers the group is drawn uniformly: the front's selection favours the group whose plans dominate
and would leave the others to random plans. There a refinement may instead *transfer* a plan from
a neighbouring K (:mod:`._timestep_transfer`): the best plan of K - 1 with a step inserted, or of
K + 1 with a step removed, so each K starts from what its neighbours learned.

A group whose best plan has stopped improving has *stalled* in a basin: its proposals then become long
moves of the best plan (one step moved far), and half of its refinements polish the best plan of
another basin, so a basin found by a long move is polished until it wins or loses on its merits.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from .. import compat
from ..baselines import strictly_decreasing
from ..plan import timestep_range
from ._solver_space import SolverSteps, SolverTimestepSpace
from ._timestep_genome import Genome
from ._timestep_mutation import LONG_MOVE_FRACTIONS, long_moves
from ._timestep_space import TimestepSpace
from ._timestep_transfer import insertions, removals

# TPE needs this many evaluated plans of a K before it models them; fewer: the proposal is random.
MIN_EVALUATED = 10
# A refinement models the plans whose every step lies within TRUST_FRACTION of the step range (24 of
# 1,000 steps) of the refined plan's; with fewer than MIN_LOCAL of them it nudges one step instead.
TRUST_FRACTION = 0.024
MIN_LOCAL = 6
# A group whose last STALL_EVALUATIONS plans improved its best FID by less than STALL_GAIN has stalled:
# then its proposals are long moves of the best plan (one step moved by 1/8 to 1/2 of the range) while one
# is left, and RIVAL_PROB of its refinements polish the best plan of another basin (a step farther than the
# shortest long move).
STALL_EVALUATIONS = 40
STALL_GAIN = 0.01
RIVAL_PROB = 0.5
# Over several K, the probability that a refinement transfers a neighbouring K's best plan (while one
# not yet evaluated is left) instead of polishing its own K's best.
TRANSFER_PROB = 0.5

# The plans a child is modelled on: one K and the solver (None when the solver is not searched).
Group = tuple[int, str | None]


@dataclass(frozen=True)
class GuidedTimestepSpace:
    """A time-step space bound to one generation: its operators, TPE proposals and GP refinements.

    Implements :class:`~optuna_diffusion.samplers.GenomeSpace` (``random``, ``mutate`` and
    ``crossover`` are the space's; ``refine`` is model-guided) and ``propose``, the operator of
    :class:`~optuna_diffusion.samplers.ChildGeneration`'s proposal slots.

    Args:
        space: the searched genomes (time steps, or (solver, time steps)).
        evaluated: ``(genome, FID)`` of the evaluated plans (small-sample estimates of plans stopped
            at the low fidelity too: they sort among the worse plans, where TPE's split into good
            and bad plans needs them).
        estimated: the genomes of ``evaluated`` whose FID is such an estimate. The refinements' GP
            leaves them out: it takes every value as exact (common random numbers), and an estimate
            off by the fit's spread would bend the surface it polishes near the best plan.
    """

    space: TimestepSpace | SolverTimestepSpace
    evaluated: tuple[tuple[Genome | SolverSteps, float], ...]
    estimated: frozenset[Genome | SolverSteps] = frozenset()

    def random(self, rng: np.random.Generator) -> Genome | SolverSteps:
        return self.space.random(rng)

    def mutate(self, genome: Any, rng: np.random.Generator, *, replace_prob: float = 0.25) -> Genome | SolverSteps:
        return self.space.mutate(genome, rng, replace_prob=replace_prob)

    def refine(self, genome: Any, rng: np.random.Generator) -> Genome | SolverSteps:
        """A plan near ``genome`` drawn by Optuna's GPSampler fitted on the evaluated plans of its
        group (its K and solver) in its trust region (every step within ``trust_radius`` of its own);
        while fewer than ``MIN_LOCAL`` lie there, the space's refinement (one gene changed). In a
        space of several groups the plan refined is the best evaluated one of a uniformly drawn group
        (``genome`` while that group has none); over several K, with probability ``TRANSFER_PROB``
        (always while the group has no plan) the child is instead a transfer to that group not yet
        evaluated (:meth:`transfers_to`), when one is left. Once the group has stalled
        (:meth:`stalled`), ``RIVAL_PROB`` of its refinements polish the best plan of another basin
        (:meth:`rival_of`) instead: a long move (:meth:`propose`) lands in a new basin, not at its
        bottom, so it must be polished before it can beat the plan a stalled search keeps polishing."""
        if self._spans_several_groups:
            group = self._random_group(rng)
            best = self._best_of(group)
            transfers = self.transfers_to(group)
            if transfers and (best is None or rng.random() < TRANSFER_PROB):
                return transfers[int(rng.integers(len(transfers)))]
            genome = best or genome
        if self.stalled(_group(genome)) and rng.random() < RIVAL_PROB:
            genome = self.rival_of(genome) or genome
        steps, radius = _steps(genome), self.trust_radius
        local = [
            (other, fid) for other, fid in self._evaluated_of(_group(genome))
            if other not in self.estimated and _distance(other, genome) <= radius
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
        return self._draw(gp, local, region, solver=_solver(genome))

    def stalled(self, group: Group) -> bool:
        """Whether the last ``STALL_EVALUATIONS`` plans of ``group`` improved its best FID by less than
        ``STALL_GAIN`` (relative)."""
        fids = [fid for _, fid in self._evaluated_of(group)]
        if len(fids) <= STALL_EVALUATIONS:
            return False
        return min(fids) >= (1 - STALL_GAIN) * min(fids[:-STALL_EVALUATIONS])

    def rival_of(self, genome: Genome | SolverSteps) -> Genome | SolverSteps | None:
        """The best exactly evaluated plan of ``genome``'s group with a step farther from ``genome``'s than
        the shortest long move (another basin), or None. On the digits model a 4-step search stalled at
        [960, 574, 232, 64] (FID 2.60) where [908, 356, 232, 64] scores 2.29 and either step moved alone
        3.13 or 4.31: the way out is to polish the second basin, not to sample it once."""
        low, high = self._step_range
        basin = round(min(LONG_MOVE_FRACTIONS) * (high - low + 1))
        others = [
            (other, fid) for other, fid in self._evaluated_of(_group(genome))
            if other not in self.estimated and _distance(other, genome) > basin
        ]
        return min(others, key=lambda plan: plan[1])[0] if others else None

    def long_moves_of(self, genome: Genome | SolverSteps) -> list[Genome | SolverSteps]:
        """``genome`` with one step moved far (:func:`._timestep_mutation.long_moves`), none within the trust
        radius of an evaluated plan: a stalled best plan improved by a nudge has the same long moves
        give or take a few steps, and each would land where one has already been."""
        low, high = self._step_range
        known = [other for other, _ in self._evaluated_of(_group(genome))]
        return [
            move for move in self._not_evaluated(long_moves(_steps(genome), low, high), _solver(genome))
            if all(_distance(move, other) > self.trust_radius for other in known)
        ]

    def transfers_to(self, group: Group) -> list[Genome | SolverSteps]:
        """The neighbours' best plans moved to ``group`` and not evaluated yet: the best plan of
        K - 1 steps with one step inserted, of K + 1 steps with one removed (same solver)."""
        num_steps, solver = group
        low, high = self._step_range
        fewer, more = self._best_of((num_steps - 1, solver)), self._best_of((num_steps + 1, solver))
        moved = [
            *(insertions(_steps(fewer), low, high) if fewer is not None else ()),
            *(removals(_steps(more)) if more is not None else ()),
        ]
        return self._not_evaluated(dict.fromkeys(moved), solver)

    def _not_evaluated(self, candidates: Iterable[Genome], solver: str | None) -> list[Genome | SolverSteps]:
        """The genomes of ``candidates`` (time steps) under ``solver`` that no evaluated plan has."""
        genomes = (steps if solver is None else SolverSteps(solver, steps) for steps in candidates)
        return [genome for genome in genomes if genome not in self._evaluated_genomes]

    @cached_property
    def _evaluated_genomes(self) -> frozenset[Genome | SolverSteps]:
        return frozenset(genome for genome, _ in self.evaluated)

    def crossover(self, parent_a: Any, parent_b: Any, rng: np.random.Generator) -> Genome | SolverSteps:
        return self.space.crossover(parent_a, parent_b, rng)

    def propose(self, rng: np.random.Generator) -> Genome | SolverSteps:
        """A genome drawn by TPE fitted on the plans of a uniformly drawn group (K and solver),
        thinned to the best plan of each trust region (:meth:`_thinned`); random while fewer than
        ``MIN_EVALUATED`` are left. Once the group has stalled (:meth:`stalled`), a long move of its best
        plan not evaluated yet (:meth:`long_moves_of`) while one is left: by then TPE's proposals have
        stopped finding better plans too, and the long moves, one basin away, are tried within a few
        generations instead of taking a share of the refinements for the rest of the search."""
        group = self._random_group(rng)
        best = self._best_of(group)
        if best is not None and self.stalled(group):
            moves = self.long_moves_of(best)
            if moves:
                return moves[int(rng.integers(len(moves)))]
        plans = self._thinned(self._evaluated_of(group))
        if len(plans) < MIN_EVALUATED:
            return self.space.random(rng)
        tpe = optuna.samplers.TPESampler(
            multivariate=True, constant_liar=False,
            n_startup_trials=MIN_EVALUATED, seed=int(rng.integers(2**32)),
        )
        num_steps, solver = group
        return self._draw(tpe, plans, [self._step_range] * num_steps, solver=solver)

    def _draw(
        self, sampler: optuna.samplers.BaseSampler, plans: list[tuple[Genome | SolverSteps, float]],
        bounds: list[tuple[int, int]], solver: str | None,
    ) -> Genome | SolverSteps:
        """A genome drawn by ``sampler`` (its public ``sample_relative``) fitted on ``plans`` (one
        group's): sorted step ``i`` within ``bounds[i]``, under ``solver`` when the solver is searched."""
        distributions: dict[str, BaseDistribution] = {f"t{i}": IntDistribution(*bound) for i, bound in enumerate(bounds)}
        # An in-memory study to fit the model on, without Optuna's log line for every child.
        compat.quiet_model_studies()
        storage = optuna.storages.InMemoryStorage()
        study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], study_name=compat.MODEL_STUDY_NAME)
        study = optuna.Study(study_name=compat.MODEL_STUDY_NAME, storage=storage)
        study.add_trials(
            [create_trial(params=_params(genome), distributions=distributions, value=fid) for genome, fid in plans]
        )
        pending = storage.get_trial(storage.create_new_trial(study_id, template_trial=create_trial(state=TrialState.RUNNING)))
        values = sampler.sample_relative(study, pending, distributions)
        low, high = self._step_range
        # The model draws each sorted position on its own: equal or crossing values are put back in order.
        steps = strictly_decreasing((values[f"t{i}"] for i in range(len(bounds))), high - low + 1, lowest=low)
        return steps if solver is None else SolverSteps(solver, steps)

    def _thinned(self, plans: list[tuple[Genome | SolverSteps, float]]) -> list[tuple[Genome | SolverSteps, float]]:
        """``plans`` without those within a trust radius of a better one kept.

        The refinements crowd the best plan's trust region with plans; fitted on all of them, TPE's
        good plans would be that crowd, and its proposals would stay in the best plan's basin, where
        the refinements already are (on the digits model a 4-step search then stalled at FID 2.58 in a
        basin 250 steps from the best plan known). Thinned, TPE explores as on a search of its own."""
        kept: list[tuple[Genome | SolverSteps, float]] = []
        for genome, fid in sorted(plans, key=lambda plan: plan[1]):
            if all(_distance(genome, other) > self.trust_radius for other, _ in kept):
                kept.append((genome, fid))
        return kept

    def _random_group(self, rng: np.random.Generator) -> Group:
        """A uniformly drawn K and, when the solver is searched, solver."""
        k_min, k_max = self._steps_space.k_range
        num_steps = k_min if k_min == k_max else int(rng.integers(k_min, k_max + 1))
        solvers = self._solvers
        return num_steps, solvers[0] if len(solvers) == 1 else solvers[int(rng.integers(len(solvers)))]

    def _evaluated_of(self, group: Group) -> list[tuple[Genome | SolverSteps, float]]:
        return [(genome, fid) for genome, fid in self.evaluated if _group(genome) == group]

    def _best_of(self, group: Group) -> Genome | SolverSteps | None:
        plans = self._evaluated_of(group)
        return min(plans, key=lambda plan: plan[1])[0] if plans else None

    @property
    def _spans_several_groups(self) -> bool:
        k_min, k_max = self._steps_space.k_range
        return k_min < k_max or len(self._solvers) > 1

    @property
    def _solvers(self) -> tuple[str | None, ...]:
        """The searched solvers; ``(None,)`` when the solver is not searched."""
        return self.space.solvers if isinstance(self.space, SolverTimestepSpace) else (None,)

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


def _solver(genome: Genome | SolverSteps) -> str | None:
    return genome.solver if isinstance(genome, SolverSteps) else None


def _distance(genome_a: Genome | SolverSteps, genome_b: Genome | SolverSteps) -> int:
    """The largest move of one step between two plans of one K."""
    return max(abs(a - b) for a, b in zip(_steps(genome_a), _steps(genome_b)))


def _group(genome: Genome | SolverSteps) -> Group:
    return len(_steps(genome)), _solver(genome)


def _params(genome: Genome | SolverSteps) -> dict[str, object]:
    return {f"t{i}": t for i, t in enumerate(_steps(genome))}
